//! Setup shared by the store's integration tests: an organization with its owner, a policy set,
//! an agent and a rail key, a started group-commit writer, and decisions made the way the proxy
//! makes them (classify, then `Command::Decide` through the writer).
#![allow(dead_code)] // each test file uses its own part
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::sync::Arc;

use policies::{FormLimits, Lookups, RawRequest, RequestFacts};
use store::{
    Actor, AgentId, CapSpec, Command, Committer, Decision, DecisionRequest, MasterKey, OrgId,
    Store, UserId, WriterLimits,
};

/// The one payment operation the tests make.
pub const PAYMENT_INTENTS: &str = "/v1/payment_intents";

/// Allows every money movement.
pub const ALLOW_MONEY: &str =
    r#"@id("agents-may-move-money") permit (principal, action in Action::"move_money", resource);"#;

/// A fresh store with one organization, and the writer that applies its ledger commands.
pub struct TestOrg {
    pub dir: tempfile::TempDir,
    pub store: Arc<Store>,
    pub committer: Committer,
    pub org: OrgId,
    pub owner: UserId,
    pub agent: AgentId,
}

/// The owner's password in every test organization.
pub const PASSWORD: &str = "test-Password-12345";

/// `name`'s organization (owner `{name}@example.com`) with `policy`, one agent created by the
/// owner, and `rail_key`.
pub fn org(name: &str, policy: &str, rail_key: &str) -> TestOrg {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), MasterKey::generate()).unwrap());
    let committer = Committer::start(store.clone(), WriterLimits::default());
    let system = Actor::System("test".into());
    let (org, owner) = store
        .init_org_with_owner(name, &format!("{name}@example.com"), PASSWORD)
        .unwrap();
    store.set_policy(&org.id, policy, &system).unwrap();
    let (agent, _) = store
        .create_agent(
            &org.id,
            &format!("{name}-agent"),
            vec![],
            &Actor::User(owner.id.clone()),
        )
        .unwrap();
    store.set_rail_key(&org.id, rail_key, &system).unwrap();
    TestOrg {
        dir,
        store,
        committer,
        org: org.id,
        owner: owner.id,
        agent: agent.id,
    }
}

impl TestOrg {
    /// Add a cap given as its admin API JSON.
    pub fn add_cap(&self, cap: serde_json::Value) {
        self.store
            .add_cap(
                &self.org,
                serde_json::from_value::<CapSpec>(cap).unwrap(),
                &Actor::System("test".into()),
            )
            .unwrap();
    }

    /// The agent's request to the writer, as the proxy builds it (not prepared).
    pub fn request(
        &self,
        key: &str,
        path: &str,
        body: &str,
        facts: RequestFacts,
    ) -> DecisionRequest {
        DecisionRequest {
            org: self.org.clone(),
            agent: self.agent.clone(),
            idempotency_key: key.into(),
            method: "POST".into(),
            path: path.into(),
            query: String::new(),
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
            facts,
            hold_expiry_secs: 3600,
            prepared: None,
        }
    }

    /// Decide `req` through the writer.
    pub fn decide(&self, req: DecisionRequest) -> Decision {
        self.committer
            .apply_blocking(Command::Decide(Box::new(req)))
            .unwrap()
            .decision()
            .unwrap()
    }

    /// Decide a form-encoded `POST /v1/payment_intents` of `body`.
    pub fn pay(&self, key: &str, body: &str) -> Decision {
        let facts = form_facts(PAYMENT_INTENTS, body);
        self.decide(self.request(key, PAYMENT_INTENTS, body, facts))
    }
}

/// The facts of a form-encoded POST on the platform account, classified offline.
pub fn form_facts(path: &str, body: &str) -> RequestFacts {
    let raw = RawRequest {
        method: "POST",
        path,
        query: "",
        content_type: Some("application/x-www-form-urlencoded"),
        body: body.as_bytes(),
        account: "",
    };
    policies::classify_request(&raw, &FormLimits::default(), &Lookups::offline()).unwrap()
}
