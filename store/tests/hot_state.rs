//! Issue 13: the writer keeps the organization, agent, rail key and caps decoded between
//! batches (ledger/hot.rs). A control-plane commit must be seen by the very next decision: the
//! kill switch, a new cap and a new rail key take effect at once.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use common::{ALLOW_MONEY, PAYMENT_INTENTS, TestOrg, form_facts};
use serde_json::json;
use store::{Actor, AgentStatus, Command, Decision};

fn setup() -> TestOrg {
    common::org("hot-org", ALLOW_MONEY, "sk_test_first")
}

fn decide(s: &TestOrg, key: &str, amount: i64) -> Decision {
    s.pay(key, &format!("amount={amount}&currency=usd"))
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

    s.add_cap(json!({"scope": "org", "currency": "usd", "interval": "daily", "limit": 150, "on_exceed": "deny"}));
    // 100 + 100 were reserved today before the cap existed: 50 more is past 150.
    match decide(&s, "k5", 50) {
        Decision::Respond(i) => assert_eq!(i.decision, policies::Outcome::Deny, "{}", i.reason),
        other => panic!("expected a deny by the new cap, got {other:?}"),
    }
}

#[test]
fn one_organization_s_kill_switch_does_not_reach_another_s_cached_state() {
    let a = setup();
    let actor = Actor::System("test".into());
    // A second organization in the same store (and writer), with its own agent and rail key.
    let (org_b, _) = a
        .store
        .init_org_with_owner("hot-org-b", "hot-b@example.com", common::PASSWORD)
        .unwrap();
    a.store.set_policy(&org_b.id, ALLOW_MONEY, &actor).unwrap();
    let (agent_b, _) = a
        .store
        .create_agent(&org_b.id, "hot-agent-b", vec![], &actor)
        .unwrap();
    a.store
        .set_rail_key(&org_b.id, "sk_test_other", &actor)
        .unwrap();
    let b = TestOrg {
        dir: tempfile::tempdir().unwrap(),
        store: a.store.clone(),
        committer: a.committer.clone(),
        org: org_b.id.clone(),
        owner: a.owner.clone(),
        agent: agent_b.id.clone(),
    };
    // Both cached, each with its own rail key.
    assert_eq!(rail_key(&decide(&a, "a1", 100)), "sk_test_first");
    assert_eq!(rail_key(&decide(&b, "b1", 100)), "sk_test_other");
    // B's agent frozen: B stops, A goes on with its own key.
    a.store
        .set_agent_status(&org_b.id, &agent_b.id, AgentStatus::Frozen, &actor)
        .unwrap();
    assert!(matches!(decide(&b, "b2", 100), Decision::Frozen));
    assert_eq!(rail_key(&decide(&a, "a2", 100)), "sk_test_first");
    // The same agent id asked under the other organization is not found, cached or not.
    let body = "amount=100&currency=usd";
    let mut req = a.request(
        "x1",
        PAYMENT_INTENTS,
        body,
        form_facts(PAYMENT_INTENTS, body),
    );
    req.agent = agent_b.id.clone();
    let err = a
        .committer
        .apply_blocking(Command::Decide(Box::new(req)))
        .unwrap_err();
    assert!(matches!(err, store::StoreError::NotFound("agent")), "{err}");
}
