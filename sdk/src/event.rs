//! The body of a delivery (WEBHOOKS.md "Body") and the event type names.

use serde::{Deserialize, Serialize};

/// One event, as delivered in a webhook body.
///
/// Unknown fields are ignored, so that a receiver built against this version keeps working when
/// the guard adds fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The event id (`evt_…`); also the `webhook-id` header, stable across retries, so it is the
    /// key to deduplicate on (delivery is at least once).
    pub id: String,
    /// The event type, one of [`event_types`] (receivers should ignore types they do not know).
    #[serde(rename = "type")]
    pub kind: String,
    /// When the event happened, in Unix seconds.
    pub created: i64,
    /// The organization (`org_…`) the event belongs to.
    pub org: String,
    /// The type-specific payload.
    pub data: serde_json::Value,
    /// The head of the organization's audit chain right after this event, to check an audit
    /// export against (`examples/verify_audit.py --head seq:hash`).
    pub audit_head: AuditHead,
}

/// The head of an organization's audit chain (spec `AUDIT.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// Sequence number of the last audit event, counting from 1.
    pub seq: u64,
    /// Hex SHA-256 hash of that audit event.
    pub hash: String,
}

/// The event type names (`Event::kind`) listed in WEBHOOKS.md.
pub mod event_types {
    /// A payment intent was held for human approval.
    pub const INTENT_HELD: &str = "intent.held";
    /// A held intent was approved.
    pub const INTENT_APPROVED: &str = "intent.approved";
    /// An intent was denied: by a policy or a cap, or by a human after a hold.
    pub const INTENT_DENIED: &str = "intent.denied";
    /// A held intent expired undecided.
    pub const INTENT_EXPIRED: &str = "intent.expired";
    /// The upstream accepted the request (2xx).
    pub const INTENT_SUCCEEDED: &str = "intent.succeeded";
    /// The upstream refused the request definitively (4xx); its reservation is released.
    pub const INTENT_FAILED: &str = "intent.failed";
    /// The upstream outcome is unknown (5xx, timeout or lost connection); the reservation is held
    /// until a retry with the same key resolves it.
    pub const INTENT_UNKNOWN: &str = "intent.unknown";
    /// The organization's policies were changed.
    pub const POLICY_UPDATED: &str = "policy.updated";
    /// A spending cap was created, changed or removed.
    pub const CAP_CHANGED: &str = "cap.changed";
    /// An agent was created.
    pub const AGENT_CREATED: &str = "agent.created";
    /// An agent was frozen.
    pub const AGENT_FROZEN: &str = "agent.frozen";
    /// An agent was revoked.
    pub const AGENT_REVOKED: &str = "agent.revoked";
    /// A member's role changed.
    pub const MEMBER_ROLE_CHANGED: &str = "member.role_changed";

    /// Every type above, for subscription lists and exhaustive tests.
    pub const ALL: &[&str] = &[
        INTENT_HELD,
        INTENT_APPROVED,
        INTENT_DENIED,
        INTENT_EXPIRED,
        INTENT_SUCCEEDED,
        INTENT_FAILED,
        INTENT_UNKNOWN,
        POLICY_UPDATED,
        CAP_CHANGED,
        AGENT_CREATED,
        AGENT_FROZEN,
        AGENT_REVOKED,
        MEMBER_ROLE_CHANGED,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_body_parses_and_round_trips() {
        let body = r#"{"id": "evt_1", "type": "intent.held", "created": 1764000000,
            "org": "org_1", "data": {"amount": 60000}, "audit_head": {"seq": 42, "hash": "ab"},
            "added_later": true}"#;
        let event: Event = serde_json::from_str(body).expect("spec example parses");
        assert_eq!(event.kind, event_types::INTENT_HELD);
        assert_eq!(
            event.audit_head,
            AuditHead {
                seq: 42,
                hash: "ab".into()
            }
        );
        let again: Event =
            serde_json::from_str(&serde_json::to_string(&event).expect("serializes"))
                .expect("reparses");
        assert_eq!(again, event);
    }

    #[test]
    fn event_types_are_distinct_and_dotted() {
        let mut all = event_types::ALL.to_vec();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), event_types::ALL.len());
        assert!(event_types::ALL.iter().all(|t| t.split_once('.').is_some()));
    }
}
