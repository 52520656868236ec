//! The audit events (AUDIT.md): one [`AuditEvent`] variant per `kind`, each with typed fields.
//! It is the only thing the chain's append accepts, so a kind cannot be misspelled and a kind's
//! `data` cannot lose or change a member at one call site.
//!
//! [`AuditEvent::data`] builds exactly the JSON the call sites built by hand before this enum
//! (same members, same value types, same nulls), so chains written before it verify and read
//! the same; the tests below pin every kind's `data` to a hand-written literal.

use policies::{Cap, OperationClass, Outcome};
use serde_json::{Value, json};

use crate::humans::SignInFactor;
use crate::ids::{AgentId, IntentId, OrgId, UserId};
use crate::ledger::approvals::HumanVerdict;
use crate::model::{IntentStatus, Role};

/// One audit event: its `kind` and its `data` (AUDIT.md). Events of an organization's trail
/// and of a user's own trail (`User*` credential and membership events) share the enum.
#[derive(Clone, Debug, PartialEq)]
pub enum AuditEvent {
    /// `decision`: the guard decided on a request.
    Decision(DecisionEvent),
    /// `intent.retry`: a retry of an intent left `unknown` forwards again.
    IntentRetry {
        /// The intent.
        intent: IntentId,
        /// The attempt about to be made (1-based).
        attempt: u32,
    },
    /// `intent.succeeded`: the upstream answered 2xx.
    IntentSucceeded(UpstreamResult),
    /// `intent.failed`: the upstream refused (4xx other than 409/429).
    IntentFailed(UpstreamResult),
    /// `intent.unknown`: whether the upstream acted is not known.
    IntentUnknown(UnknownCause),
    /// `intent.denied`: a human denied a hold.
    IntentDenied(HumanDecision),
    /// `intent.approved`: the last approval a hold needed.
    IntentApproved(HumanDecision),
    /// `intent.approval_recorded`: an approval, more still needed.
    IntentApprovalRecorded(HumanDecision),
    /// `intent.cancelled`: an approved intent stopped before execution (status `denied`).
    IntentCancelled {
        /// The intent.
        intent: IntentId,
        /// Why.
        reason: String,
    },
    /// `intent.executing`: the executor forwards an approved intent (status `forwarding`).
    IntentExecuting {
        /// The intent.
        intent: IntentId,
    },
    /// `intent.expired`: a hold's time passed undecided.
    IntentExpired {
        /// The intent.
        intent: IntentId,
    },
    /// `org.created`.
    OrgCreated {
        /// The organization's name.
        name: String,
    },
    /// `org.updated`: settings changed.
    OrgUpdated {
        /// Name after the change.
        name: String,
        /// Setting after the change.
        require_2fa_for_approvals: bool,
    },
    /// `org.frozen`: the kill switch for every agent.
    OrgFrozen,
    /// `org.unfrozen`.
    OrgUnfrozen,
    /// `org.deleted`.
    OrgDeleted,
    /// `member.added`.
    MemberAdded(MemberAdded),
    /// `member.invited`.
    MemberInvited {
        /// Invitation id.
        invitation: String,
        /// The invited email.
        email: String,
        /// The role it grants.
        role: Role,
        /// RFC 3339.
        expires_at: String,
    },
    /// `member.invitation_revoked`.
    MemberInvitationRevoked {
        /// Invitation id.
        invitation: String,
        /// The invited email.
        email: String,
    },
    /// `member.role_changed`.
    MemberRoleChanged {
        /// The member.
        user: UserId,
        /// Role before.
        from: Role,
        /// Role after.
        to: Role,
    },
    /// `member.removed`.
    MemberRemoved {
        /// The former member.
        user: UserId,
        /// Their API tokens bound to the organization, ended with the membership.
        api_tokens_revoked: usize,
    },
    /// `agent.created`.
    AgentCreated {
        /// The agent.
        agent: AgentId,
        /// Its name.
        name: String,
    },
    /// `agent.frozen`.
    AgentFrozen {
        /// The agent.
        agent: AgentId,
    },
    /// `agent.unfrozen`.
    AgentUnfrozen {
        /// The agent.
        agent: AgentId,
    },
    /// `agent.revoked` (final).
    AgentRevoked {
        /// The agent.
        agent: AgentId,
    },
    /// `agent.token_rotated`.
    AgentTokenRotated {
        /// The agent.
        agent: AgentId,
    },
    /// `policy.updated`: a new policy version, now active.
    PolicyUpdated {
        /// The version.
        version: u64,
        /// SHA-256 (hex) of its text.
        sha256: String,
    },
    /// `policy.activated`: a stored version made active (rollback or forward).
    PolicyActivated {
        /// The version.
        version: u64,
    },
    /// `cap.changed`.
    CapChanged(CapChange),
    /// `rail.updated`: the Stripe key was set.
    RailUpdated {
        /// `live` or `test`.
        mode: String,
        /// The key's last four characters.
        last4: String,
    },
    /// `secrets.master_key_rotated`: sealed secrets re-sealed under a new master key.
    SecretsMasterKeyRotated {
        /// Rail keys re-sealed.
        rail_keys: u64,
        /// Webhook secrets re-sealed.
        webhook_secrets: u64,
    },
    /// `user.signed_in` (organization trail: the organization signed in to).
    UserSignedIn {
        /// The user.
        user: UserId,
        /// The second step used.
        factor: SignInFactor,
    },
    /// `user.token_created` (organization trail: the token's organization).
    UserTokenCreated {
        /// The user.
        user: UserId,
        /// Token id.
        token_id: String,
        /// Token name.
        name: String,
    },
    /// `user.token_revoked` (organization trail: the token's organization).
    UserTokenRevoked {
        /// The user.
        user: UserId,
        /// Token id.
        token_id: String,
    },
    /// `webhook.created`.
    WebhookCreated {
        /// Endpoint id.
        webhook: String,
        /// Target URL.
        url: String,
        /// Subscribed types (`None`: all).
        events: Option<Vec<String>>,
    },
    /// `webhook.updated`.
    WebhookUpdated {
        /// Endpoint id.
        webhook: String,
        /// Target URL after the change.
        url: String,
        /// Subscribed types after the change.
        events: Option<Vec<String>>,
        /// Enabled after the change.
        enabled: bool,
    },
    /// `webhook.deleted`.
    WebhookDeleted {
        /// Endpoint id.
        webhook: String,
    },
    /// `webhook.secret_rotated`.
    WebhookSecretRotated {
        /// Endpoint id.
        webhook: String,
        /// Seconds the previous secret keeps signing.
        overlap_secs: i64,
    },
    /// `webhook.delivery_retried`: an administrator queued a delivery again.
    WebhookDeliveryRetried {
        /// Endpoint id.
        webhook: String,
        /// Delivery id.
        delivery: String,
    },
    /// `webhook.delivery_attempted`.
    WebhookDeliveryAttempted {
        /// Endpoint id.
        webhook: String,
        /// Delivery id.
        delivery: String,
        /// The webhook event id.
        event: String,
        /// Attempts so far, this one included.
        attempt: usize,
        /// HTTP status, when the receiver answered.
        status: Option<u16>,
        /// Duration of the attempt.
        duration_ms: u64,
        /// Transport error, when it did not.
        error: Option<String>,
        /// Delivery state after the attempt.
        state: String,
    },
    /// `webhook.delivery_abandoned`: a due delivery whose endpoint is gone or disabled.
    WebhookDeliveryAbandoned {
        /// Endpoint id.
        webhook: String,
        /// Delivery id.
        delivery: String,
        /// Why.
        reason: String,
    },
    /// `webhook.deliveries_abandoned`: the pending deliveries of an endpoint, at once.
    WebhookDeliveriesAbandoned {
        /// Endpoint id.
        webhook: String,
        /// How many.
        count: usize,
        /// Why.
        reason: String,
    },
    /// `webhook.disabled`: too many failures in a row.
    WebhookDisabled {
        /// Endpoint id.
        webhook: String,
        /// Why.
        reason: String,
    },
    /// `user.created` (user trail): an account made by accepting an invitation.
    UserCreated {
        /// The account's email.
        email: String,
    },
    /// `user.invitation_accepted` (user trail).
    UserInvitationAccepted {
        /// The organization joined.
        organization: OrgId,
        /// The role there.
        role: Role,
        /// Invitation id.
        invitation: String,
        /// The inviter.
        invited_by: UserId,
    },
    /// `user.password_changed` (user trail).
    UserPasswordChanged {
        /// The user.
        user: UserId,
        /// Sessions ended (all but the one that changed it).
        other_sessions_ended: usize,
        /// Personal API tokens ended.
        api_tokens_revoked: usize,
    },
    /// `user.2fa_enabled` (user trail).
    User2faEnabled {
        /// The user.
        user: UserId,
    },
    /// `user.2fa_disabled` (user trail).
    User2faDisabled {
        /// The user.
        user: UserId,
        /// Personal API tokens ended.
        api_tokens_revoked: usize,
    },
    /// `user.recovery_codes_regenerated` (user trail).
    UserRecoveryCodesRegenerated {
        /// The user.
        user: UserId,
    },
}

/// The `data` of a `decision` event.
#[derive(Clone, Debug, PartialEq)]
pub struct DecisionEvent {
    /// The new intent.
    pub intent: IntentId,
    /// The requesting agent.
    pub agent: AgentId,
    /// Operation name.
    pub operation: String,
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Minor units, when the operation carries an amount.
    pub amount: Option<i64>,
    /// Currency, when it carries one.
    pub currency: Option<String>,
    /// Counterparty.
    pub counterparty: String,
    /// Connected account (`""` = platform).
    pub account: String,
    /// Operation class.
    pub class: OperationClass,
    /// Whether the guard could value the request.
    pub valued: bool,
    /// The verdict's outcome.
    pub outcome: Outcome,
    /// The intent's status after the decision.
    pub status: IntentStatus,
    /// Determining policies.
    pub policies: Vec<String>,
    /// Exceeded caps.
    pub caps: Vec<String>,
    /// Why.
    pub reason: String,
    /// Cedar evaluation errors.
    pub errors: Vec<String>,
    /// Minor units reserved against caps (allowed requests).
    pub reserved: Option<i64>,
}

/// The `data` of `intent.succeeded`, `intent.failed` and an upstream `intent.unknown`; the
/// status is the kind's.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamResult {
    /// The intent.
    pub intent: IntentId,
    /// The upstream's HTTP status, when it answered.
    pub upstream_status: Option<u16>,
    /// Why the answer was lost, when it was.
    pub error: Option<String>,
    /// The Stripe object the request created or acted on.
    pub upstream_id: Option<String>,
    /// Attempts so far.
    pub attempt: u32,
}

/// Why an intent became `unknown`.
#[derive(Clone, Debug, PartialEq)]
pub enum UnknownCause {
    /// The upstream's answer was lost or not final.
    Upstream(UpstreamResult),
    /// The guard restarted while forwarding it (actor `system:recovery`).
    Restarted {
        /// The intent.
        intent: IntentId,
    },
}

/// The `data` of a human's decision on a hold.
#[derive(Clone, Debug, PartialEq)]
pub struct HumanDecision {
    /// The intent.
    pub intent: IntentId,
    /// Approve or deny.
    pub verdict: HumanVerdict,
    /// The approver's comment.
    pub comment: Option<String>,
    /// Approvals so far.
    pub approvals: u32,
    /// Approvals needed.
    pub approvals_required: u32,
    /// The intent's status after the decision.
    pub status: IntentStatus,
    /// Minor units reserved (when approved).
    pub reserved: Option<i64>,
    /// Whether the decision carried a fresh TOTP code.
    pub step_up: bool,
    /// RFC 3339: since when the human is a member.
    pub member_since: String,
    /// Who invited them (`None`: a founding owner).
    pub invited_by: Option<UserId>,
}

/// How a member was added (the `data` of `member.added`). The role of the first two is
/// always owner.
#[derive(Clone, Debug, PartialEq)]
pub enum MemberAdded {
    /// The first owner, made with the organization at bootstrap (`init`, first start).
    Bootstrap {
        /// The owner.
        user: UserId,
        /// Their email.
        email: String,
    },
    /// A signed-in user who created an organization.
    Creator {
        /// The owner.
        user: UserId,
    },
    /// A user who accepted an invitation.
    Invited {
        /// The new member.
        user: UserId,
        /// Their email.
        email: String,
        /// Their role.
        role: Role,
        /// Invitation id.
        invitation: String,
        /// The inviter.
        invited_by: UserId,
    },
}

/// What changed about a cap (the `data` of `cap.changed`).
#[derive(Clone, Debug, PartialEq)]
pub enum CapChange {
    /// A new cap.
    Added(Cap),
    /// A cap after its change.
    Updated(Cap),
    /// A removed cap.
    Deleted {
        /// Its id.
        cap: String,
    },
}

impl AuditEvent {
    /// The event's `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            AuditEvent::Decision(_) => "decision",
            AuditEvent::IntentRetry { .. } => "intent.retry",
            AuditEvent::IntentSucceeded(_) => "intent.succeeded",
            AuditEvent::IntentFailed(_) => "intent.failed",
            AuditEvent::IntentUnknown(_) => "intent.unknown",
            AuditEvent::IntentDenied(_) => "intent.denied",
            AuditEvent::IntentApproved(_) => "intent.approved",
            AuditEvent::IntentApprovalRecorded(_) => "intent.approval_recorded",
            AuditEvent::IntentCancelled { .. } => "intent.cancelled",
            AuditEvent::IntentExecuting { .. } => "intent.executing",
            AuditEvent::IntentExpired { .. } => "intent.expired",
            AuditEvent::OrgCreated { .. } => "org.created",
            AuditEvent::OrgUpdated { .. } => "org.updated",
            AuditEvent::OrgFrozen => "org.frozen",
            AuditEvent::OrgUnfrozen => "org.unfrozen",
            AuditEvent::OrgDeleted => "org.deleted",
            AuditEvent::MemberAdded(_) => "member.added",
            AuditEvent::MemberInvited { .. } => "member.invited",
            AuditEvent::MemberInvitationRevoked { .. } => "member.invitation_revoked",
            AuditEvent::MemberRoleChanged { .. } => "member.role_changed",
            AuditEvent::MemberRemoved { .. } => "member.removed",
            AuditEvent::AgentCreated { .. } => "agent.created",
            AuditEvent::AgentFrozen { .. } => "agent.frozen",
            AuditEvent::AgentUnfrozen { .. } => "agent.unfrozen",
            AuditEvent::AgentRevoked { .. } => "agent.revoked",
            AuditEvent::AgentTokenRotated { .. } => "agent.token_rotated",
            AuditEvent::PolicyUpdated { .. } => "policy.updated",
            AuditEvent::PolicyActivated { .. } => "policy.activated",
            AuditEvent::CapChanged(_) => "cap.changed",
            AuditEvent::RailUpdated { .. } => "rail.updated",
            AuditEvent::SecretsMasterKeyRotated { .. } => "secrets.master_key_rotated",
            AuditEvent::UserSignedIn { .. } => "user.signed_in",
            AuditEvent::UserTokenCreated { .. } => "user.token_created",
            AuditEvent::UserTokenRevoked { .. } => "user.token_revoked",
            AuditEvent::WebhookCreated { .. } => "webhook.created",
            AuditEvent::WebhookUpdated { .. } => "webhook.updated",
            AuditEvent::WebhookDeleted { .. } => "webhook.deleted",
            AuditEvent::WebhookSecretRotated { .. } => "webhook.secret_rotated",
            AuditEvent::WebhookDeliveryRetried { .. } => "webhook.delivery_retried",
            AuditEvent::WebhookDeliveryAttempted { .. } => "webhook.delivery_attempted",
            AuditEvent::WebhookDeliveryAbandoned { .. } => "webhook.delivery_abandoned",
            AuditEvent::WebhookDeliveriesAbandoned { .. } => "webhook.deliveries_abandoned",
            AuditEvent::WebhookDisabled { .. } => "webhook.disabled",
            AuditEvent::UserCreated { .. } => "user.created",
            AuditEvent::UserInvitationAccepted { .. } => "user.invitation_accepted",
            AuditEvent::UserPasswordChanged { .. } => "user.password_changed",
            AuditEvent::User2faEnabled { .. } => "user.2fa_enabled",
            AuditEvent::User2faDisabled { .. } => "user.2fa_disabled",
            AuditEvent::UserRecoveryCodesRegenerated { .. } => "user.recovery_codes_regenerated",
        }
    }

    /// The event's `data`: the wire format hashed into the chain, kept member for member as
    /// the call sites wrote it before this enum (the tests below pin it).
    pub fn data(&self) -> Value {
        match self {
            AuditEvent::Decision(d) => json!({
                "intent": d.intent, "agent": d.agent, "operation": d.operation,
                "method": d.method, "path": d.path, "amount": d.amount,
                "currency": d.currency, "counterparty": d.counterparty,
                "account": d.account, "class": d.class, "valued": d.valued,
                "outcome": d.outcome, "status": d.status.as_str(), "policies": d.policies,
                "caps": d.caps, "reason": d.reason, "errors": d.errors,
                "reserved": d.reserved,
            }),
            AuditEvent::IntentRetry { intent, attempt } => {
                json!({"intent": intent, "status": "forwarding", "attempt": attempt})
            }
            AuditEvent::IntentSucceeded(r) => upstream_data(r, IntentStatus::Succeeded),
            AuditEvent::IntentFailed(r) => upstream_data(r, IntentStatus::Failed),
            AuditEvent::IntentUnknown(UnknownCause::Upstream(r)) => {
                upstream_data(r, IntentStatus::Unknown)
            }
            AuditEvent::IntentUnknown(UnknownCause::Restarted { intent }) => json!({
                "intent": intent, "status": "unknown",
                "reason": "guard restarted while forwarding",
            }),
            AuditEvent::IntentDenied(h)
            | AuditEvent::IntentApproved(h)
            | AuditEvent::IntentApprovalRecorded(h) => json!({
                "intent": h.intent, "verdict": h.verdict.as_str(), "comment": h.comment,
                "approvals": h.approvals, "approvals_required": h.approvals_required,
                "status": h.status.as_str(), "reserved": h.reserved,
                "step_up": h.step_up, "member_since": h.member_since,
                "invited_by": h.invited_by,
            }),
            AuditEvent::IntentCancelled { intent, reason } => {
                json!({"intent": intent, "status": "denied", "reason": reason})
            }
            AuditEvent::IntentExecuting { intent } => {
                json!({"intent": intent, "status": "forwarding", "executor": true})
            }
            AuditEvent::IntentExpired { intent } => json!({"intent": intent}),
            AuditEvent::OrgCreated { name } => json!({"name": name}),
            AuditEvent::OrgUpdated {
                name,
                require_2fa_for_approvals,
            } => json!({"name": name, "require_2fa_for_approvals": require_2fa_for_approvals}),
            AuditEvent::OrgFrozen | AuditEvent::OrgUnfrozen | AuditEvent::OrgDeleted => json!({}),
            AuditEvent::MemberAdded(MemberAdded::Bootstrap { user, email }) => {
                json!({"user": user, "email": email, "role": "owner"})
            }
            AuditEvent::MemberAdded(MemberAdded::Creator { user }) => {
                json!({"user": user, "role": "owner"})
            }
            AuditEvent::MemberAdded(MemberAdded::Invited {
                user,
                email,
                role,
                invitation,
                invited_by,
            }) => json!({"user": user, "email": email, "role": role,
                "invitation": invitation, "invited_by": invited_by}),
            AuditEvent::MemberInvited {
                invitation,
                email,
                role,
                expires_at,
            } => json!({"invitation": invitation, "email": email, "role": role,
                "expires_at": expires_at}),
            AuditEvent::MemberInvitationRevoked { invitation, email } => {
                json!({"invitation": invitation, "email": email})
            }
            AuditEvent::MemberRoleChanged { user, from, to } => {
                json!({"user": user, "from": from, "to": to})
            }
            AuditEvent::MemberRemoved {
                user,
                api_tokens_revoked,
            } => json!({"user": user, "api_tokens_revoked": api_tokens_revoked}),
            AuditEvent::AgentCreated { agent, name } => json!({"agent": agent, "name": name}),
            AuditEvent::AgentFrozen { agent }
            | AuditEvent::AgentUnfrozen { agent }
            | AuditEvent::AgentRevoked { agent }
            | AuditEvent::AgentTokenRotated { agent } => json!({"agent": agent}),
            AuditEvent::PolicyUpdated { version, sha256 } => {
                json!({"version": version, "sha256": sha256})
            }
            AuditEvent::PolicyActivated { version } => json!({"version": version}),
            AuditEvent::CapChanged(CapChange::Added(cap)) => {
                json!({"change": "added", "cap": cap})
            }
            AuditEvent::CapChanged(CapChange::Updated(cap)) => {
                json!({"change": "updated", "cap": cap})
            }
            AuditEvent::CapChanged(CapChange::Deleted { cap }) => {
                json!({"change": "deleted", "cap": cap})
            }
            AuditEvent::RailUpdated { mode, last4 } => json!({"mode": mode, "last4": last4}),
            AuditEvent::SecretsMasterKeyRotated {
                rail_keys,
                webhook_secrets,
            } => json!({"rail_keys": rail_keys, "webhook_secrets": webhook_secrets}),
            AuditEvent::UserSignedIn { user, factor } => {
                json!({"user": user, "factor": factor.as_str()})
            }
            AuditEvent::UserTokenCreated {
                user,
                token_id,
                name,
            } => json!({"user": user, "token_id": token_id, "name": name}),
            AuditEvent::UserTokenRevoked { user, token_id } => {
                json!({"user": user, "token_id": token_id})
            }
            AuditEvent::WebhookCreated {
                webhook,
                url,
                events,
            } => json!({"webhook": webhook, "url": url, "events": events}),
            AuditEvent::WebhookUpdated {
                webhook,
                url,
                events,
                enabled,
            } => json!({"webhook": webhook, "url": url, "events": events, "enabled": enabled}),
            AuditEvent::WebhookDeleted { webhook } => json!({"webhook": webhook}),
            AuditEvent::WebhookSecretRotated {
                webhook,
                overlap_secs,
            } => json!({"webhook": webhook, "overlap_secs": overlap_secs}),
            AuditEvent::WebhookDeliveryRetried { webhook, delivery } => {
                json!({"webhook": webhook, "delivery": delivery})
            }
            AuditEvent::WebhookDeliveryAttempted {
                webhook,
                delivery,
                event,
                attempt,
                status,
                duration_ms,
                error,
                state,
            } => json!({"webhook": webhook, "delivery": delivery, "event": event,
                "attempt": attempt, "status": status, "duration_ms": duration_ms,
                "error": error, "state": state}),
            AuditEvent::WebhookDeliveryAbandoned {
                webhook,
                delivery,
                reason,
            } => json!({"webhook": webhook, "delivery": delivery, "reason": reason}),
            AuditEvent::WebhookDeliveriesAbandoned {
                webhook,
                count,
                reason,
            } => json!({"webhook": webhook, "count": count, "reason": reason}),
            AuditEvent::WebhookDisabled { webhook, reason } => {
                json!({"webhook": webhook, "reason": reason})
            }
            AuditEvent::UserCreated { email } => json!({"email": email}),
            AuditEvent::UserInvitationAccepted {
                organization,
                role,
                invitation,
                invited_by,
            } => json!({"organization": organization, "role": role,
                "invitation": invitation, "invited_by": invited_by}),
            AuditEvent::UserPasswordChanged {
                user,
                other_sessions_ended,
                api_tokens_revoked,
            } => json!({"user": user, "other_sessions_ended": other_sessions_ended,
                "api_tokens_revoked": api_tokens_revoked}),
            AuditEvent::User2faEnabled { user }
            | AuditEvent::UserRecoveryCodesRegenerated { user } => {
                json!({"user": user})
            }
            AuditEvent::User2faDisabled {
                user,
                api_tokens_revoked,
            } => json!({"user": user, "api_tokens_revoked": api_tokens_revoked}),
        }
    }
}

/// The `data` of an upstream result; `status` is the kind's.
fn upstream_data(r: &UpstreamResult, status: IntentStatus) -> Value {
    json!({"intent": r.intent, "status": status.as_str(), "upstream_status": r.upstream_status,
        "error": r.error, "upstream_id": r.upstream_id, "attempt": r.attempt})
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use policies::{CapInterval, CapScope, Currency, OnExceed};

    use super::*;

    fn intent() -> IntentId {
        IntentId::parse("int_1").expect("valid id")
    }
    fn agent() -> AgentId {
        AgentId::parse("agt_1").expect("valid id")
    }
    fn user(n: &str) -> UserId {
        UserId::parse(&format!("usr_{n}")).expect("valid id")
    }
    fn cap() -> Cap {
        Cap {
            id: "cap_1".into(),
            scope: CapScope::Agent("agt_1".into()),
            currency: Currency::parse("usd").expect("valid currency"),
            interval: CapInterval::Daily,
            limit: 50_000,
            on_exceed: OnExceed::Deny,
            operations: None,
        }
    }
    fn upstream(status: Option<u16>, error: Option<&str>) -> UpstreamResult {
        UpstreamResult {
            intent: intent(),
            upstream_status: status,
            error: error.map(str::to_string),
            upstream_id: status.map(|_| "pi_1".to_string()),
            attempt: 1,
        }
    }
    fn human(verdict: HumanVerdict, status: IntentStatus, approvals: u32) -> HumanDecision {
        HumanDecision {
            intent: intent(),
            verdict,
            comment: (verdict == HumanVerdict::Deny).then(|| "too much".to_string()),
            approvals,
            approvals_required: 2,
            status,
            reserved: (status == IntentStatus::Approved).then_some(60_000),
            step_up: true,
            member_since: "2026-11-01T00:00:00.000000Z".into(),
            invited_by: (approvals == 1).then(|| user("2")),
        }
    }

    /// Every variant (and every shape of a kind that has several), with the exact `kind` and
    /// `data` the call sites wrote by hand before [`AuditEvent`] existed. Written out literally
    /// so that a change to the wire format (and so to every hash of the chain) fails here.
    fn cases() -> Vec<(AuditEvent, &'static str, Value)> {
        vec![
            (
                AuditEvent::Decision(DecisionEvent {
                    intent: intent(),
                    agent: agent(),
                    operation: "payment_intents.create".into(),
                    method: "POST".into(),
                    path: "/v1/payment_intents".into(),
                    amount: Some(60_000),
                    currency: Some("usd".into()),
                    counterparty: "cus_1".into(),
                    account: String::new(),
                    class: OperationClass::MoveMoney,
                    valued: true,
                    outcome: Outcome::Hold,
                    status: IntentStatus::PendingApproval,
                    policies: vec!["hold_large".into()],
                    caps: vec![],
                    reason: "over 500 usd".into(),
                    errors: vec![],
                    reserved: None,
                }),
                "decision",
                json!({"intent": "int_1", "agent": "agt_1", "operation": "payment_intents.create",
                    "method": "POST", "path": "/v1/payment_intents", "amount": 60000,
                    "currency": "usd", "counterparty": "cus_1", "account": "",
                    "class": "move_money", "valued": true, "outcome": "hold",
                    "status": "pending_approval", "policies": ["hold_large"], "caps": [],
                    "reason": "over 500 usd", "errors": [], "reserved": null}),
            ),
            (
                AuditEvent::Decision(DecisionEvent {
                    intent: intent(),
                    agent: agent(),
                    operation: "customers.update".into(),
                    method: "POST".into(),
                    path: "/v1/customers/cus_1".into(),
                    amount: None,
                    currency: None,
                    counterparty: "cus_1".into(),
                    account: "acct_1".into(),
                    class: OperationClass::Write,
                    valued: false,
                    outcome: Outcome::Allow,
                    status: IntentStatus::Forwarding,
                    policies: vec![],
                    caps: vec!["cap_1".into()],
                    reason: String::new(),
                    errors: vec!["e1".into()],
                    reserved: Some(0),
                }),
                "decision",
                json!({"intent": "int_1", "agent": "agt_1", "operation": "customers.update",
                    "method": "POST", "path": "/v1/customers/cus_1", "amount": null,
                    "currency": null, "counterparty": "cus_1", "account": "acct_1",
                    "class": "write", "valued": false, "outcome": "allow",
                    "status": "forwarding", "policies": [], "caps": ["cap_1"], "reason": "",
                    "errors": ["e1"], "reserved": 0}),
            ),
            (
                AuditEvent::IntentRetry {
                    intent: intent(),
                    attempt: 2,
                },
                "intent.retry",
                json!({"intent": "int_1", "status": "forwarding", "attempt": 2}),
            ),
            (
                AuditEvent::IntentSucceeded(upstream(Some(200), None)),
                "intent.succeeded",
                json!({"intent": "int_1", "status": "succeeded", "upstream_status": 200,
                    "error": null, "upstream_id": "pi_1", "attempt": 1}),
            ),
            (
                AuditEvent::IntentFailed(upstream(Some(402), None)),
                "intent.failed",
                json!({"intent": "int_1", "status": "failed", "upstream_status": 402,
                    "error": null, "upstream_id": "pi_1", "attempt": 1}),
            ),
            (
                AuditEvent::IntentUnknown(UnknownCause::Upstream(upstream(
                    None,
                    Some("connection reset"),
                ))),
                "intent.unknown",
                json!({"intent": "int_1", "status": "unknown", "upstream_status": null,
                    "error": "connection reset", "upstream_id": null, "attempt": 1}),
            ),
            (
                AuditEvent::IntentUnknown(UnknownCause::Restarted { intent: intent() }),
                "intent.unknown",
                json!({"intent": "int_1", "status": "unknown",
                    "reason": "guard restarted while forwarding"}),
            ),
            (
                AuditEvent::IntentDenied(human(HumanVerdict::Deny, IntentStatus::Denied, 0)),
                "intent.denied",
                json!({"intent": "int_1", "verdict": "deny", "comment": "too much",
                    "approvals": 0, "approvals_required": 2, "status": "denied",
                    "reserved": null, "step_up": true,
                    "member_since": "2026-11-01T00:00:00.000000Z", "invited_by": null}),
            ),
            (
                AuditEvent::IntentApproved(human(HumanVerdict::Approve, IntentStatus::Approved, 2)),
                "intent.approved",
                json!({"intent": "int_1", "verdict": "approve", "comment": null,
                    "approvals": 2, "approvals_required": 2, "status": "approved",
                    "reserved": 60000, "step_up": true,
                    "member_since": "2026-11-01T00:00:00.000000Z", "invited_by": null}),
            ),
            (
                AuditEvent::IntentApprovalRecorded(human(
                    HumanVerdict::Approve,
                    IntentStatus::PendingApproval,
                    1,
                )),
                "intent.approval_recorded",
                json!({"intent": "int_1", "verdict": "approve", "comment": null,
                    "approvals": 1, "approvals_required": 2, "status": "pending_approval",
                    "reserved": null, "step_up": true,
                    "member_since": "2026-11-01T00:00:00.000000Z", "invited_by": "usr_2"}),
            ),
            (
                AuditEvent::IntentCancelled {
                    intent: intent(),
                    reason: "cancelled before execution: the agent is frozen".into(),
                },
                "intent.cancelled",
                json!({"intent": "int_1", "status": "denied",
                    "reason": "cancelled before execution: the agent is frozen"}),
            ),
            (
                AuditEvent::IntentExecuting { intent: intent() },
                "intent.executing",
                json!({"intent": "int_1", "status": "forwarding", "executor": true}),
            ),
            (
                AuditEvent::IntentExpired { intent: intent() },
                "intent.expired",
                json!({"intent": "int_1"}),
            ),
            (
                AuditEvent::OrgCreated {
                    name: "Acme".into(),
                },
                "org.created",
                json!({"name": "Acme"}),
            ),
            (
                AuditEvent::OrgUpdated {
                    name: "Acme".into(),
                    require_2fa_for_approvals: true,
                },
                "org.updated",
                json!({"name": "Acme", "require_2fa_for_approvals": true}),
            ),
            (AuditEvent::OrgFrozen, "org.frozen", json!({})),
            (AuditEvent::OrgUnfrozen, "org.unfrozen", json!({})),
            (AuditEvent::OrgDeleted, "org.deleted", json!({})),
            (
                AuditEvent::MemberAdded(MemberAdded::Bootstrap {
                    user: user("1"),
                    email: "a@example.com".into(),
                }),
                "member.added",
                json!({"user": "usr_1", "email": "a@example.com", "role": "owner"}),
            ),
            (
                AuditEvent::MemberAdded(MemberAdded::Creator { user: user("1") }),
                "member.added",
                json!({"user": "usr_1", "role": "owner"}),
            ),
            (
                AuditEvent::MemberAdded(MemberAdded::Invited {
                    user: user("1"),
                    email: "a@example.com".into(),
                    role: Role::Approver,
                    invitation: "inv_1".into(),
                    invited_by: user("2"),
                }),
                "member.added",
                json!({"user": "usr_1", "email": "a@example.com", "role": "approver",
                    "invitation": "inv_1", "invited_by": "usr_2"}),
            ),
            (
                AuditEvent::MemberInvited {
                    invitation: "inv_1".into(),
                    email: "a@example.com".into(),
                    role: Role::Admin,
                    expires_at: "2026-11-08T00:00:00.000000Z".into(),
                },
                "member.invited",
                json!({"invitation": "inv_1", "email": "a@example.com", "role": "admin",
                    "expires_at": "2026-11-08T00:00:00.000000Z"}),
            ),
            (
                AuditEvent::MemberInvitationRevoked {
                    invitation: "inv_1".into(),
                    email: "a@example.com".into(),
                },
                "member.invitation_revoked",
                json!({"invitation": "inv_1", "email": "a@example.com"}),
            ),
            (
                AuditEvent::MemberRoleChanged {
                    user: user("1"),
                    from: Role::Viewer,
                    to: Role::Owner,
                },
                "member.role_changed",
                json!({"user": "usr_1", "from": "viewer", "to": "owner"}),
            ),
            (
                AuditEvent::MemberRemoved {
                    user: user("1"),
                    api_tokens_revoked: 3,
                },
                "member.removed",
                json!({"user": "usr_1", "api_tokens_revoked": 3}),
            ),
            (
                AuditEvent::AgentCreated {
                    agent: agent(),
                    name: "billing bot".into(),
                },
                "agent.created",
                json!({"agent": "agt_1", "name": "billing bot"}),
            ),
            (
                AuditEvent::AgentFrozen { agent: agent() },
                "agent.frozen",
                json!({"agent": "agt_1"}),
            ),
            (
                AuditEvent::AgentUnfrozen { agent: agent() },
                "agent.unfrozen",
                json!({"agent": "agt_1"}),
            ),
            (
                AuditEvent::AgentRevoked { agent: agent() },
                "agent.revoked",
                json!({"agent": "agt_1"}),
            ),
            (
                AuditEvent::AgentTokenRotated { agent: agent() },
                "agent.token_rotated",
                json!({"agent": "agt_1"}),
            ),
            (
                AuditEvent::PolicyUpdated {
                    version: 3,
                    sha256: "ab".repeat(32),
                },
                "policy.updated",
                json!({"version": 3, "sha256": "ab".repeat(32)}),
            ),
            (
                AuditEvent::PolicyActivated { version: 2 },
                "policy.activated",
                json!({"version": 2}),
            ),
            (
                AuditEvent::CapChanged(CapChange::Added(cap())),
                "cap.changed",
                json!({"change": "added", "cap": {"id": "cap_1", "scope": "agent:agt_1",
                    "currency": "usd", "interval": "daily", "limit": 50000,
                    "on_exceed": "deny", "operations": null}}),
            ),
            (
                AuditEvent::CapChanged(CapChange::Updated(Cap {
                    scope: CapScope::Org,
                    interval: CapInterval::PerTransaction,
                    on_exceed: OnExceed::Hold,
                    operations: Some(vec!["refunds.create".into()]),
                    ..cap()
                })),
                "cap.changed",
                json!({"change": "updated", "cap": {"id": "cap_1", "scope": "org",
                    "currency": "usd", "interval": "per_transaction", "limit": 50000,
                    "on_exceed": "hold", "operations": ["refunds.create"]}}),
            ),
            (
                AuditEvent::CapChanged(CapChange::Deleted {
                    cap: "cap_1".into(),
                }),
                "cap.changed",
                json!({"change": "deleted", "cap": "cap_1"}),
            ),
            (
                AuditEvent::RailUpdated {
                    mode: "test".into(),
                    last4: "a1B2".into(),
                },
                "rail.updated",
                json!({"mode": "test", "last4": "a1B2"}),
            ),
            (
                AuditEvent::SecretsMasterKeyRotated {
                    rail_keys: 1,
                    webhook_secrets: 0,
                },
                "secrets.master_key_rotated",
                json!({"rail_keys": 1, "webhook_secrets": 0}),
            ),
            (
                AuditEvent::UserSignedIn {
                    user: user("1"),
                    factor: SignInFactor::RecoveryCode,
                },
                "user.signed_in",
                json!({"user": "usr_1", "factor": "recovery_code"}),
            ),
            (
                AuditEvent::UserTokenCreated {
                    user: user("1"),
                    token_id: "0123abcd".into(),
                    name: "ci".into(),
                },
                "user.token_created",
                json!({"user": "usr_1", "token_id": "0123abcd", "name": "ci"}),
            ),
            (
                AuditEvent::UserTokenRevoked {
                    user: user("1"),
                    token_id: "0123abcd".into(),
                },
                "user.token_revoked",
                json!({"user": "usr_1", "token_id": "0123abcd"}),
            ),
            (
                AuditEvent::WebhookCreated {
                    webhook: "we_1".into(),
                    url: "https://hooks.example.com/pg".into(),
                    events: None,
                },
                "webhook.created",
                json!({"webhook": "we_1", "url": "https://hooks.example.com/pg",
                    "events": null}),
            ),
            (
                AuditEvent::WebhookUpdated {
                    webhook: "we_1".into(),
                    url: "https://hooks.example.com/pg".into(),
                    events: Some(vec!["intent.held".into()]),
                    enabled: false,
                },
                "webhook.updated",
                json!({"webhook": "we_1", "url": "https://hooks.example.com/pg",
                    "events": ["intent.held"], "enabled": false}),
            ),
            (
                AuditEvent::WebhookDeleted {
                    webhook: "we_1".into(),
                },
                "webhook.deleted",
                json!({"webhook": "we_1"}),
            ),
            (
                AuditEvent::WebhookSecretRotated {
                    webhook: "we_1".into(),
                    overlap_secs: 86_400,
                },
                "webhook.secret_rotated",
                json!({"webhook": "we_1", "overlap_secs": 86400}),
            ),
            (
                AuditEvent::WebhookDeliveryRetried {
                    webhook: "we_1".into(),
                    delivery: "dlv_1".into(),
                },
                "webhook.delivery_retried",
                json!({"webhook": "we_1", "delivery": "dlv_1"}),
            ),
            (
                AuditEvent::WebhookDeliveryAttempted {
                    webhook: "we_1".into(),
                    delivery: "dlv_1".into(),
                    event: "evt_1".into(),
                    attempt: 2,
                    status: Some(500),
                    duration_ms: 31,
                    error: None,
                    state: "pending".into(),
                },
                "webhook.delivery_attempted",
                json!({"webhook": "we_1", "delivery": "dlv_1", "event": "evt_1",
                    "attempt": 2, "status": 500, "duration_ms": 31, "error": null,
                    "state": "pending"}),
            ),
            (
                AuditEvent::WebhookDeliveryAttempted {
                    webhook: "we_1".into(),
                    delivery: "dlv_1".into(),
                    event: "evt_1".into(),
                    attempt: 1,
                    status: None,
                    duration_ms: 0,
                    error: Some("connection refused".into()),
                    state: "failed".into(),
                },
                "webhook.delivery_attempted",
                json!({"webhook": "we_1", "delivery": "dlv_1", "event": "evt_1",
                    "attempt": 1, "status": null, "duration_ms": 0,
                    "error": "connection refused", "state": "failed"}),
            ),
            (
                AuditEvent::WebhookDeliveryAbandoned {
                    webhook: "we_1".into(),
                    delivery: "dlv_1".into(),
                    reason: "endpoint deleted".into(),
                },
                "webhook.delivery_abandoned",
                json!({"webhook": "we_1", "delivery": "dlv_1", "reason": "endpoint deleted"}),
            ),
            (
                AuditEvent::WebhookDeliveriesAbandoned {
                    webhook: "we_1".into(),
                    count: 4,
                    reason: "endpoint disabled by an administrator".into(),
                },
                "webhook.deliveries_abandoned",
                json!({"webhook": "we_1", "count": 4,
                    "reason": "endpoint disabled by an administrator"}),
            ),
            (
                AuditEvent::WebhookDisabled {
                    webhook: "we_1".into(),
                    reason: "20 failures in a row".into(),
                },
                "webhook.disabled",
                json!({"webhook": "we_1", "reason": "20 failures in a row"}),
            ),
            (
                AuditEvent::UserCreated {
                    email: "a@example.com".into(),
                },
                "user.created",
                json!({"email": "a@example.com"}),
            ),
            (
                AuditEvent::UserInvitationAccepted {
                    organization: OrgId::parse("org_1").expect("valid id"),
                    role: Role::Viewer,
                    invitation: "inv_1".into(),
                    invited_by: user("2"),
                },
                "user.invitation_accepted",
                json!({"organization": "org_1", "role": "viewer", "invitation": "inv_1",
                    "invited_by": "usr_2"}),
            ),
            (
                AuditEvent::UserPasswordChanged {
                    user: user("1"),
                    other_sessions_ended: 2,
                    api_tokens_revoked: 1,
                },
                "user.password_changed",
                json!({"user": "usr_1", "other_sessions_ended": 2, "api_tokens_revoked": 1}),
            ),
            (
                AuditEvent::User2faEnabled { user: user("1") },
                "user.2fa_enabled",
                json!({"user": "usr_1"}),
            ),
            (
                AuditEvent::User2faDisabled {
                    user: user("1"),
                    api_tokens_revoked: 0,
                },
                "user.2fa_disabled",
                json!({"user": "usr_1", "api_tokens_revoked": 0}),
            ),
            (
                AuditEvent::UserRecoveryCodesRegenerated { user: user("1") },
                "user.recovery_codes_regenerated",
                json!({"user": "usr_1"}),
            ),
        ]
    }

    /// Every kind the guard has ever written (AUDIT.md; the list the call sites used).
    const KINDS: [&str; 49] = [
        "decision",
        "intent.retry",
        "intent.succeeded",
        "intent.failed",
        "intent.unknown",
        "intent.denied",
        "intent.approved",
        "intent.approval_recorded",
        "intent.cancelled",
        "intent.executing",
        "intent.expired",
        "org.created",
        "org.updated",
        "org.frozen",
        "org.unfrozen",
        "org.deleted",
        "member.added",
        "member.invited",
        "member.invitation_revoked",
        "member.role_changed",
        "member.removed",
        "agent.created",
        "agent.frozen",
        "agent.unfrozen",
        "agent.revoked",
        "agent.token_rotated",
        "policy.updated",
        "policy.activated",
        "cap.changed",
        "rail.updated",
        "secrets.master_key_rotated",
        "user.signed_in",
        "user.token_created",
        "user.token_revoked",
        "webhook.created",
        "webhook.updated",
        "webhook.deleted",
        "webhook.secret_rotated",
        "webhook.delivery_retried",
        "webhook.delivery_attempted",
        "webhook.delivery_abandoned",
        "webhook.deliveries_abandoned",
        "webhook.disabled",
        "user.created",
        "user.invitation_accepted",
        "user.password_changed",
        "user.2fa_enabled",
        "user.2fa_disabled",
        "user.recovery_codes_regenerated",
    ];

    #[test]
    fn every_variant_writes_the_exact_kind_and_data_of_before() {
        for (event, kind, data) in cases() {
            assert_eq!(event.kind(), kind, "{event:?}");
            assert_eq!(event.data(), data, "{kind}: {event:?}");
            // The bytes that get hashed, not just equal values (a u64 and an i64 of the
            // same number are equal `Value`s; their canonical text must be too).
            assert_eq!(
                crate::jcs::to_vec(&event.data()).expect("canonical"),
                crate::jcs::to_vec(&data).expect("canonical"),
                "{kind}"
            );
        }
    }

    /// Every kind is stored compact (audit_record.rs) and reads back as its canonical line.
    #[test]
    fn every_kind_is_stored_compact() {
        use sha2::{Digest, Sha256};
        let org = "org_0123456789abcdef01234567";
        let prev = crate::audit::GENESIS;
        for (seq, (event, kind, _)) in (1u64..).zip(cases()) {
            let mut ev = json!({
                "org": org, "seq": seq, "at": "2026-12-03T10:00:00.000000Z",
                "actor": {"type": "system", "id": "t"}, "kind": kind, "data": event.data(),
                "prev": prev,
            });
            let canonical = crate::jcs::to_vec(&ev).expect("canonical");
            let hash = hex::encode(Sha256::digest(&canonical));
            let stored = crate::audit_record::compact(&canonical, &hash, kind, org, prev, seq)
                .unwrap_or_else(|| panic!("{kind} is not stored compact"));
            ev["hash"] = Value::String(hash);
            let line = crate::audit_record::expand(&stored, org, seq, prev);
            assert_eq!(
                line,
                serde_json_canonicalizer::to_vec(&ev).expect("canonical"),
                "{kind}"
            );
        }
    }

    #[test]
    fn the_cases_cover_every_kind_and_the_kinds_are_distinct() {
        let listed: BTreeSet<&str> = KINDS.into_iter().collect();
        assert_eq!(listed.len(), KINDS.len());
        let covered: BTreeSet<&str> = cases().iter().map(|(e, _, _)| e.kind()).collect();
        assert_eq!(covered, listed);
        // Webhook types other than the decision's `intent.held` are audit kinds.
        for t in crate::webhooks::EVENT_TYPES {
            assert!(t == "intent.held" || listed.contains(t), "{t}");
        }
    }
}
