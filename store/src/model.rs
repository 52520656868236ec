//! Stored records. Each is JSON in its table (see `tables.rs` for the key layout), except
//! intents and idempotency records, whose on-disk format is `ledger/record.rs`.

use std::collections::BTreeMap;

use policies::{OperationClass, Outcome};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::ids::{AgentId, IntentId, OrgId, UserId};

/// An organization (tenant).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Org {
    /// Id.
    pub id: OrgId,
    /// Display name.
    pub name: String,
    /// Kill switch: every agent of the organization is refused.
    pub frozen: bool,
    /// Version number of the active policy set.
    pub active_policy_version: u64,
    /// Highest policy version stored.
    pub latest_policy_version: u64,
    /// Approvers must have 2FA.
    #[serde(default)]
    pub require_2fa_for_approvals: bool,
    /// RFC 3339.
    pub created_at: String,
}

/// A human user (global; belongs to organizations through memberships).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// Lower-cased email.
    pub email: String,
    /// bcrypt hash.
    pub password_hash: String,
    /// RFC 3339.
    pub created_at: String,
}

/// A human's role in one organization (ADMIN_API.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including owners and deleting the organization.
    Owner,
    /// Everything but owners and deletion.
    Admin,
    /// Reads and approvals.
    Approver,
    /// Reads.
    Viewer,
}

/// A membership of a user in an organization.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Membership {
    /// Organization.
    pub org: OrgId,
    /// User.
    pub user: UserId,
    /// Role.
    pub role: Role,
    /// RFC 3339 (microseconds, UTC) of the moment the membership began: the invitee accepted, or
    /// the organization was created. `""` for memberships stored before invitations existed.
    /// A hold's quorum counts only members whose `accepted_at` is before the hold's creation.
    #[serde(default)]
    pub accepted_at: String,
    /// Who invited this member (`None` for an organization's creator and older memberships).
    #[serde(default)]
    pub invited_by: Option<UserId>,
}

/// Lifecycle of an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// May submit requests.
    Active,
    /// Refused with `guard_agent_frozen` until unfrozen.
    Frozen,
    /// Token no longer authenticates; final.
    Revoked,
}

/// An AI agent with its token digest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Agent {
    /// Id.
    pub id: AgentId,
    /// Organization it acts for.
    pub org: OrgId,
    /// Display name (Cedar `principal.name`).
    pub name: String,
    /// Cedar `principal.tags`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Lifecycle.
    pub status: AgentStatus,
    /// Id part of the current token (lookup key).
    pub token_id: String,
    /// SHA-256 (hex) of the whole current token.
    pub token_digest: String,
    /// RFC 3339.
    pub created_at: String,
    /// The human who created it (`None` for agents made by the system or before this was kept):
    /// an approver sees it next to every hold of this agent.
    #[serde(default)]
    pub created_by: Option<UserId>,
}

/// Where a token id points.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TokenRef {
    pub(crate) org: OrgId,
    pub(crate) agent: AgentId,
}

/// One stored policy set.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// 1, 2, 3…
    pub version: u64,
    /// Cedar text as submitted.
    pub text: String,
    /// Who stored it (`user:usr_…`, `system:…`).
    pub author: String,
    /// RFC 3339.
    pub created_at: String,
}

/// The organization's Stripe key, sealed with the master key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RailKey {
    pub sealed: String,
    pub mode: String,
    pub last4: String,
    pub updated_at: String,
}

/// Public view of the rail key: never the key itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RailInfo {
    /// `test` or `live`.
    pub mode: String,
    /// Last four characters.
    pub last4: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// Intent states (PROXY.md "Intent states").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentStatus {
    /// Held for human approval.
    PendingApproval,
    /// Approved; waiting for the executor.
    Approved,
    /// Denied by policy, cap or human.
    Denied,
    /// Undecided hold past its expiry.
    Expired,
    /// Sent upstream; answer not yet recorded.
    Forwarding,
    /// Upstream answered 2xx.
    Succeeded,
    /// Upstream answered a definitive 4xx.
    Failed,
    /// 5xx, timeout or lost connection: outcome unknown, reservation held.
    Unknown,
}

impl IntentStatus {
    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            IntentStatus::PendingApproval => "pending_approval",
            IntentStatus::Approved => "approved",
            IntentStatus::Denied => "denied",
            IntentStatus::Expired => "expired",
            IntentStatus::Forwarding => "forwarding",
            IntentStatus::Succeeded => "succeeded",
            IntentStatus::Failed => "failed",
            IntentStatus::Unknown => "unknown",
        }
    }

    /// Check a transition against the state machine; every change goes through here.
    pub fn transition(self, to: IntentStatus) -> Result<IntentStatus> {
        use IntentStatus::*;
        let ok = matches!(
            (self, to),
            (PendingApproval, Approved | Denied | Expired)
                // The kill switch: an approved hold of a frozen organization or a frozen or
                // revoked agent is cancelled at the executor's claim, never sent.
                | (Approved, Forwarding | Denied)
                | (Forwarding, Succeeded | Failed | Unknown)
                | (Unknown, Forwarding | Succeeded | Failed | Unknown)
        );
        if ok {
            Ok(to)
        } else {
            Err(StoreError::Conflict(format!(
                "intent cannot go from {} to {}",
                self.as_str(),
                to.as_str()
            )))
        }
    }
}

/// An upstream response as the agent received it, stored for replay byte for byte.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// End-to-end headers, in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes (base64 in JSON).
    #[serde(with = "b64")]
    pub body: Vec<u8>,
}

/// A human approval or denial of a held intent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The human.
    pub user: UserId,
    /// `approve` or `deny`.
    pub verdict: String,
    /// Optional comment.
    pub comment: Option<String>,
    /// RFC 3339.
    pub at: String,
}

/// The amount reserved against caps. The spend counters it was added to follow from the
/// intent (organization, agent, currency, operation) and `window_unix`, so they are derived
/// again on release rather than stored (eight long keys per intent were half its record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Minor units.
    pub amount: i64,
    /// Unix seconds whose daily, weekly, monthly and all-time windows `amount` was added to.
    #[serde(default)]
    pub window_unix: i64,
    /// The counter keys themselves, as records written before `window_unix` stored them; empty
    /// (and not written) for new records. Release uses them when present.
    #[serde(rename = "counters", default, skip_serializing_if = "Vec::is_empty")]
    pub legacy_counters: Vec<String>,
    /// True once released (failed upstream): counters were decremented.
    pub released: bool,
}

/// One decided mutation of an agent.
/// An intent's amount: a typed [`policies::Amount`] in memory, the fields `amount` and
/// `currency` on disk and on the wire (unchanged since the first stored intent).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "AmountFields", into = "AmountFields")]
pub struct IntentAmount(pub Option<policies::Amount>);

impl IntentAmount {
    /// Minor units, when there is an amount.
    pub fn minor(&self) -> Option<i64> {
        self.0.as_ref().map(|a| a.minor)
    }

    /// The currency, when there is an amount.
    pub fn currency(&self) -> Option<&policies::Currency> {
        self.0.as_ref().map(|a| &a.currency)
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct AmountFields {
    pub(crate) amount: Option<i64>,
    pub(crate) currency: Option<String>,
}

impl TryFrom<AmountFields> for IntentAmount {
    type Error = String;

    fn try_from(f: AmountFields) -> std::result::Result<Self, String> {
        match (f.amount, f.currency) {
            (None, None) => Ok(IntentAmount(None)),
            (Some(minor), Some(code)) => {
                let currency = policies::Currency::parse(&code)
                    .map_err(|_| format!("stored currency {code:?} is not a currency code"))?;
                Ok(IntentAmount(Some(policies::Amount { minor, currency })))
            }
            _ => Err("a stored amount needs both `amount` and `currency`".into()),
        }
    }
}

impl From<IntentAmount> for AmountFields {
    fn from(a: IntentAmount) -> AmountFields {
        match a.0 {
            Some(a) => AmountFields {
                amount: Some(a.minor),
                currency: Some(a.currency.as_str().to_string()),
            },
            None => AmountFields {
                amount: None,
                currency: None,
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// Id (`int_…`).
    pub id: IntentId,
    /// Organization.
    pub org: OrgId,
    /// Agent that submitted it.
    pub agent: AgentId,
    /// The agent's Idempotency-Key.
    pub idempotency_key: String,
    /// SHA-256 of method, path and body.
    pub request_digest: String,
    /// HTTP method.
    pub method: String,
    /// Path (no query).
    pub path: String,
    /// Operation name (Cedar action).
    pub operation: String,
    /// Money movement, other write, or read.
    pub class: OperationClass,
    /// The amount, when the operation carries one: stored and shown as the two fields
    /// `amount` (minor units) and `currency` (lower-case ISO 4217), `null` both when absent.
    #[serde(flatten)]
    pub amount: IntentAmount,
    /// Customer / destination / account.
    pub counterparty: String,
    /// The connected account acted on (`Stripe-Account` / `Stripe-Context`); `""` = platform.
    #[serde(default)]
    pub account: String,
    /// Minor units counted toward caps (see `RequestFacts::counted`); `None` for intents stored
    /// before this field existed, which count their whole `amount` when they move money.
    #[serde(default)]
    pub counted: Option<i64>,
    /// Whether the guard could value the request (`false`: held unless a policy names it).
    #[serde(default = "default_true")]
    pub valued: bool,
    /// Stripe metadata.
    pub metadata: BTreeMap<String, String>,
    /// The decision.
    pub decision: Outcome,
    /// Current state.
    pub status: IntentStatus,
    /// Determining policies.
    pub policies: Vec<String>,
    /// Exceeded caps.
    pub caps: Vec<String>,
    /// Human-readable reason.
    pub reason: String,
    /// Distinct human approvals needed (holds).
    pub approvals_required: u32,
    /// Human decisions so far.
    pub approvals: Vec<Approval>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339 of the decision (policy or human).
    pub decided_at: String,
    /// Unix seconds after which an undecided hold expires.
    pub expires_at_unix: Option<i64>,
    /// Reservation against caps.
    pub reservation: Option<Reservation>,
    /// Request bytes, kept for holds (the executor sends them after approval).
    #[serde(default, with = "b64_opt")]
    pub request_body: Option<Vec<u8>>,
    /// The query string of the request (`""` when none; DELETE parameters travel here).
    #[serde(default)]
    pub query: String,
    /// The allowlisted request headers (`Stripe-Version`, `Stripe-Account`, `Stripe-Context`,
    /// `Content-Type`, ...), kept for holds so the executor sends exactly what was asked.
    #[serde(default)]
    pub request_headers: Vec<(String, String)>,
    /// Idempotency-Key sent upstream, derived from the intent id.
    pub upstream_idempotency_key: String,
    /// Upstream attempts so far.
    pub attempts: u32,
    /// Stored upstream response (succeeded / failed).
    pub response: Option<StoredResponse>,
    /// Upstream object id, when the response carried one.
    pub upstream_id: Option<String>,
}

/// An agent's Idempotency-Key record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct IdempotencyRecord {
    pub request_digest: String,
    pub intent: IntentId,
    pub created_at: String,
}

/// Bytes as base64 in JSON (`#[serde(with = "crate::model::b64")]`).
pub(crate) mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

mod b64_opt {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => STANDARD
                .decode(s)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::IntentStatus::*;

    #[test]
    fn state_machine_allows_only_spec_transitions() {
        assert!(PendingApproval.transition(Approved).is_ok());
        assert!(Forwarding.transition(Unknown).is_ok());
        assert!(Unknown.transition(Forwarding).is_ok());
        assert!(Denied.transition(Forwarding).is_err());
        assert!(Succeeded.transition(Forwarding).is_err());
        assert!(PendingApproval.transition(Forwarding).is_err());
        assert!(Expired.transition(Approved).is_err());
    }

    #[test]
    fn reservations_store_their_window_and_still_read_the_old_counter_list() {
        let new = super::Reservation {
            amount: 5,
            window_unix: 1_700_000_000,
            legacy_counters: Vec::new(),
            released: false,
        };
        let text = serde_json::to_string(&new).unwrap();
        assert_eq!(
            text,
            r#"{"amount":5,"window_unix":1700000000,"released":false}"#
        );
        let old: super::Reservation = serde_json::from_str(
            r#"{"amount":5,"counters":["org_a|org|usd|daily|0|x"],"released":false}"#,
        )
        .unwrap();
        assert_eq!(
            old.legacy_counters,
            vec!["org_a|org|usd|daily|0|x".to_string()]
        );
    }
}
