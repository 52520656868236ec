//! Issue 13: the writer keeps the organization, agent, rail key and caps decoded between
//! batches (ledger/hot.rs). A control-plane commit must be seen by the very next decision: the
//! kill switch, a new cap and a new rail key take effect at once.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::sync::Arc;

use policies::{FormLimits, Lookups, RawRequest};
use serde_json::json;
use store::{
    Actor, AgentId, AgentStatus, CapSpec, Command, Committer, Decision, DecisionRequest, MasterKey,
    OrgId, Store, WriterLimits,
};

const POLICY: &str =
    r#"@id("agents-may-move-money") permit (principal, action in Action::"move_money", resource);"#;

struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    committer: Committer,
    org: OrgId,
    agent: AgentId,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), MasterKey::generate()).unwrap());
    let committer = Committer::start(store.clone(), WriterLimits::default());
    let actor = Actor::System("test".into());
    let (org, _) = store
        .init_org_with_owner("hot-org", "hot@example.com", "hot-Password-12345")
        .unwrap();
    store.set_policy(&org.id, POLICY, &actor).unwrap();
    let (agent, _) = store
        .create_agent(&org.id, "hot-agent", vec![], &actor)
        .unwrap();
    store
        .set_rail_key(&org.id, "sk_test_first", &actor)
        .unwrap();
    Setup {
        _dir: dir,
        store,
        committer,
        org: org.id,
        agent: agent.id,
    }
}

fn decide(s: &Setup, key: &str, amount: i64) -> Decision {
    let body = format!("amount={amount}&currency=usd");
    let raw = RawRequest {
        method: "POST",
        path: "/v1/payment_intents",
        query: "",
        content_type: Some("application/x-www-form-urlencoded"),
        body: body.as_bytes(),
        account: "",
    };
    let facts =
        policies::classify_request(&raw, &FormLimits::default(), &Lookups::offline()).unwrap();
    let req = DecisionRequest {
        org: s.org.clone(),
        agent: s.agent.clone(),
        idempotency_key: key.into(),
        method: "POST".into(),
        path: "/v1/payment_intents".into(),
        query: String::new(),
        headers: Vec::new(),
        body: body.into_bytes(),
        facts,
        hold_expiry_secs: 3600,
        prepared: None,
    };
    s.committer
        .apply_blocking(Command::Decide(Box::new(req)))
        .unwrap()
        .decision()
        .unwrap()
}

fn rail_key(d: &Decision) -> &str {
    match d {
        Decision::Forward { rail_key, .. } => rail_key,
        other => panic!("expected a forward, got {other:?}"),
    }
}

#[test]
fn a_control_plane_commit_is_seen_by_the_next_decision() {
    let s = setup();
    let actor = Actor::System("test".into());
    assert_eq!(rail_key(&decide(&s, "k1", 100)), "sk_test_first");

    s.store
        .set_agent_status(&s.org, &s.agent, AgentStatus::Frozen, &actor)
        .unwrap();
    assert!(matches!(decide(&s, "k2", 100), Decision::Frozen));
    s.store
        .set_agent_status(&s.org, &s.agent, AgentStatus::Active, &actor)
        .unwrap();

    s.store.set_org_frozen(&s.org, true, &actor).unwrap();
    assert!(matches!(decide(&s, "k3", 100), Decision::Frozen));
    s.store.set_org_frozen(&s.org, false, &actor).unwrap();

    s.store
        .set_rail_key(&s.org, "sk_test_second", &actor)
        .unwrap();
    assert_eq!(rail_key(&decide(&s, "k4", 100)), "sk_test_second");

    let cap = json!({"scope": "org", "currency": "usd", "interval": "daily", "limit": 150, "on_exceed": "deny"});
    s.store
        .add_cap(
            &s.org,
            serde_json::from_value::<CapSpec>(cap).unwrap(),
            &actor,
        )
        .unwrap();
    // 100 + 100 were reserved today before the cap existed: 50 more is past 150.
    match decide(&s, "k5", 50) {
        Decision::Respond(i) => assert_eq!(i.decision, policies::Outcome::Deny, "{}", i.reason),
        other => panic!("expected a deny by the new cap, got {other:?}"),
    }
}
