//! The typed bodies of the admin API: every answer is one of these, so the OpenAPI document
//! (`GET /api/v1/openapi.json`) describes each field.
//!
//! The JSON on the wire is what the handlers answered when they built it with `json!`: the
//! same names, nesting and types, and (serde_json keeps insertion order here) the same order,
//! so fields are declared in that order. Store and policy types keep their own serialization
//! (`#[schema(value_type = …)]` only describes them); the `tests` module checks a few answers
//! byte for byte against the former `json!` builders.

use std::collections::BTreeMap;

use policies::{CapInterval, CapScope, Currency, OnExceed, OperationClass, Outcome};
use serde::Serialize;
use serde_json::Value;
use store::{AgentId, AgentStatus, IntentId, IntentStatus, InvitationStatus, OrgId, Role, UserId};
use utoipa::ToSchema;

/// `"list"`, the `object` of every list envelope.
const LIST: &str = "list";

macro_rules! list_of {
    ($(#[$doc:meta])* $name:ident, $item:ty) => {
        $(#[$doc])*
        #[derive(Serialize, ToSchema)]
        pub(crate) struct $name {
            /// Always `list`.
            #[schema(value_type = String, example = "list")]
            object: &'static str,
            /// The items.
            data: Vec<$item>,
        }

        impl $name {
            pub(crate) fn new(data: Vec<$item>) -> Self {
                Self { object: LIST, data }
            }
        }
    };
}

// ---- organizations ---------------------------------------------------------------------------

/// An organization.
#[derive(Serialize, ToSchema)]
pub(crate) struct OrgView {
    /// `org_…`
    #[schema(value_type = String)]
    id: OrgId,
    /// Display name.
    name: String,
    /// Kill switch: every agent of the organization is refused.
    frozen: bool,
    /// Version number of the active policy set.
    active_policy_version: u64,
    /// Approvers must have 2FA (step-up on every decision).
    require_2fa_for_approvals: bool,
    /// RFC 3339.
    created_at: String,
}

impl From<&store::Org> for OrgView {
    fn from(o: &store::Org) -> Self {
        Self {
            id: o.id.clone(),
            name: o.name.clone(),
            frozen: o.frozen,
            active_policy_version: o.active_policy_version,
            require_2fa_for_approvals: o.require_2fa_for_approvals,
            created_at: o.created_at.clone(),
        }
    }
}

/// An organization the caller belongs to, with the caller's role there.
#[derive(Serialize, ToSchema)]
pub(crate) struct OrgMembershipView {
    #[serde(flatten)]
    org: OrgView,
    /// `owner`, `admin`, `approver` or `viewer`.
    #[schema(value_type = String)]
    role: Role,
}

impl OrgMembershipView {
    pub(crate) fn new(o: &store::Org, role: Role) -> Self {
        Self {
            org: o.into(),
            role,
        }
    }
}

list_of!(
    /// Organizations the caller belongs to.
    OrgList,
    OrgMembershipView
);

/// A resource deleted.
#[derive(Serialize, ToSchema)]
pub(crate) struct Deleted {
    /// Its id.
    id: String,
    /// Always true.
    deleted: bool,
}

impl Deleted {
    pub(crate) fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            deleted: true,
        }
    }
}

// ---- members and invitations -----------------------------------------------------------------

/// A human named in a view.
#[derive(Serialize, ToSchema)]
pub(crate) struct PersonView {
    /// `usr_…`
    #[schema(value_type = String)]
    id: UserId,
    /// Email (`""` when the user no longer exists).
    email: String,
}

impl From<&store::PersonRef> for PersonView {
    fn from(p: &store::PersonRef) -> Self {
        Self {
            id: p.id.clone(),
            email: p.email.clone(),
        }
    }
}

/// A member of the organization.
#[derive(Serialize, ToSchema)]
pub(crate) struct MemberView {
    /// `usr_…`
    #[schema(value_type = String)]
    user_id: UserId,
    /// Email.
    email: String,
    /// `owner`, `admin`, `approver` or `viewer`.
    #[schema(value_type = String)]
    role: Role,
    /// When the membership began (RFC 3339; `""` for memberships older than invitations).
    accepted_at: String,
    /// Who invited them (null for an organization's creator).
    #[schema(required = true)]
    invited_by: Option<PersonView>,
}

impl From<&store::MemberView> for MemberView {
    fn from(m: &store::MemberView) -> Self {
        Self {
            user_id: m.user_id.clone(),
            email: m.email.clone(),
            role: m.role,
            accepted_at: m.accepted_at.clone(),
            invited_by: m.invited_by.as_ref().map(PersonView::from),
        }
    }
}

list_of!(
    /// Members of the active organization.
    MemberList,
    MemberView
);

/// A member removed.
#[derive(Serialize, ToSchema)]
pub(crate) struct Removed {
    /// `usr_…`
    #[schema(value_type = String)]
    user_id: UserId,
    /// Always true.
    removed: bool,
}

impl Removed {
    pub(crate) fn new(user_id: UserId) -> Self {
        Self {
            user_id,
            removed: true,
        }
    }
}

/// An invitation (never its token once created).
#[derive(Serialize, ToSchema)]
pub(crate) struct InvitationView {
    /// `inv_…`
    id: String,
    /// The invited email (lower-cased).
    email: String,
    /// The role the membership will have.
    #[schema(value_type = String)]
    role: Role,
    /// `pending`, `accepted`, `revoked` or `expired`.
    #[schema(value_type = String)]
    status: InvitationStatus,
    /// Who invited.
    invited_by: PersonView,
    /// RFC 3339.
    created_at: String,
    /// RFC 3339.
    expires_at: String,
    /// Who accepted (`usr_…`), null until then.
    #[schema(value_type = Option<String>, required = true)]
    accepted_by: Option<UserId>,
    /// RFC 3339, null until accepted.
    #[schema(required = true)]
    accepted_at: Option<String>,
}

impl From<&store::InvitationView> for InvitationView {
    fn from(i: &store::InvitationView) -> Self {
        Self {
            id: i.id.clone(),
            email: i.email.clone(),
            role: i.role,
            status: i.status,
            invited_by: (&i.invited_by).into(),
            created_at: i.created_at.clone(),
            expires_at: i.expires_at.clone(),
            accepted_by: i.accepted_by.clone(),
            accepted_at: i.accepted_at.clone(),
        }
    }
}

list_of!(
    /// Invitations of the active organization.
    InvitationList,
    InvitationView
);

/// An invitation just created, with its one-time token.
#[derive(Serialize, ToSchema)]
pub(crate) struct InvitationCreated {
    #[serde(flatten)]
    invitation: InvitationView,
    /// Always `invitation`.
    #[schema(value_type = String, example = "invitation")]
    object: &'static str,
    /// `pg_inv_…`, shown once: the inviter hands it to the invitee.
    token: String,
}

impl InvitationCreated {
    pub(crate) fn new(i: &store::InvitationView, token: String) -> Self {
        Self {
            invitation: i.into(),
            object: "invitation",
            token,
        }
    }
}

/// What accepting an invitation did.
#[derive(Serialize, ToSchema)]
pub(crate) struct AcceptedView {
    /// The organization joined (`org_…`).
    #[schema(value_type = String)]
    organization_id: OrgId,
    /// The account that joined (`usr_…`).
    #[schema(value_type = String)]
    user_id: UserId,
    /// Its role there.
    #[schema(value_type = String)]
    role: Role,
    /// Whether the account was created by this acceptance.
    new_account: bool,
}

impl From<store::Accepted> for AcceptedView {
    fn from(a: store::Accepted) -> Self {
        Self {
            organization_id: a.organization_id,
            user_id: a.user_id,
            role: a.role,
            new_account: a.new_account,
        }
    }
}

// ---- agents ----------------------------------------------------------------------------------

/// An agent (never its token digest).
#[derive(Serialize, ToSchema)]
pub(crate) struct AgentView {
    /// `agt_…`
    #[schema(value_type = String)]
    id: AgentId,
    /// Display name (Cedar `principal.name`).
    name: String,
    /// Cedar `principal.tags`.
    tags: Vec<String>,
    /// `active`, `frozen` or `revoked`.
    #[schema(value_type = String)]
    status: AgentStatus,
    /// RFC 3339.
    created_at: String,
}

impl From<&store::Agent> for AgentView {
    fn from(a: &store::Agent) -> Self {
        Self {
            id: a.id.clone(),
            name: a.name.clone(),
            tags: a.tags.clone(),
            status: a.status,
            created_at: a.created_at.clone(),
        }
    }
}

list_of!(
    /// Agents of the active organization.
    AgentList,
    AgentView
);

/// An agent with its new token.
#[derive(Serialize, ToSchema)]
pub(crate) struct AgentWithToken {
    #[serde(flatten)]
    agent: AgentView,
    /// `pg_agt_…`, shown once.
    token: String,
}

impl AgentWithToken {
    pub(crate) fn new(a: &store::Agent, token: String) -> Self {
        Self {
            agent: a.into(),
            token,
        }
    }
}

// ---- policies --------------------------------------------------------------------------------

/// A stored policy set.
#[derive(Serialize, ToSchema)]
pub(crate) struct PolicyVersionView {
    /// 1, 2, 3…
    version: u64,
    /// Cedar text as submitted.
    text: String,
    /// Who stored it (`user:usr_…`, `system:…`).
    author: String,
    /// RFC 3339.
    created_at: String,
}

impl From<store::PolicyVersion> for PolicyVersionView {
    fn from(p: store::PolicyVersion) -> Self {
        Self {
            version: p.version,
            text: p.text,
            author: p.author,
            created_at: p.created_at,
        }
    }
}

/// A policy version as listed (without its text).
#[derive(Serialize, ToSchema)]
pub(crate) struct PolicyVersionSummary {
    /// 1, 2, 3…
    version: u64,
    /// Who stored it.
    author: String,
    /// RFC 3339.
    created_at: String,
    /// Whether it is the active set.
    active: bool,
}

impl PolicyVersionSummary {
    pub(crate) fn new(p: &store::PolicyVersion, active: u64) -> Self {
        Self {
            version: p.version,
            author: p.author.clone(),
            created_at: p.created_at.clone(),
            active: p.version == active,
        }
    }
}

list_of!(
    /// Every stored policy version, oldest first.
    PolicyVersionList,
    PolicyVersionSummary
);

/// The policy version now active.
#[derive(Serialize, ToSchema)]
pub(crate) struct PolicyActivated {
    /// Its number.
    version: u64,
    /// Always true.
    active: bool,
}

impl PolicyActivated {
    pub(crate) fn new(version: u64) -> Self {
        Self {
            version,
            active: true,
        }
    }
}

/// A decision with everything that explains it.
#[derive(Serialize, ToSchema)]
pub(crate) struct VerdictView {
    /// `allow`, `hold` or `deny`.
    #[schema(value_type = String)]
    outcome: Outcome,
    /// Determining policy ids in text order.
    policies: Vec<String>,
    /// Ids of the caps the request would exceed.
    caps: Vec<String>,
    /// Why, for the agent and the approver.
    reason: String,
    /// Distinct human approvals needed; 0 unless the outcome is `hold`.
    approvals_required: u32,
    /// Cedar evaluation errors (each one is a reason to deny).
    errors: Vec<String>,
}

impl From<policies::Verdict> for VerdictView {
    fn from(v: policies::Verdict) -> Self {
        Self {
            outcome: v.outcome,
            policies: v.policies,
            caps: v.caps,
            reason: v.reason,
            approvals_required: v.approvals_required,
            errors: v.errors,
        }
    }
}

/// Schema only (`policies::RequestFacts` serializes itself): an amount of money.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct Amount {
    /// Minor units (cents for USD; units for zero-decimal currencies).
    minor: i64,
    /// Lower-case ISO 4217.
    currency: String,
}

/// Schema only (`policies::RequestFacts` serializes itself): what the guard knows about a
/// request once classified; the input to policies and caps.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct RequestFacts {
    /// Operation name, also the Cedar action id (`payment_intents.create`, `unknown`).
    operation: String,
    /// `move_money`, `commit_money`, `admin`, `write`, `read` or `unknown`.
    class: String,
    /// HTTP method, upper case.
    method: String,
    /// Path without the query string.
    path: String,
    /// What the request is worth, when the guard can tell.
    #[schema(required = true)]
    amount: Option<Amount>,
    /// Minor units that count toward caps; null when the request adds nothing to spend.
    #[schema(required = true)]
    counted: Option<i64>,
    /// Whether the guard could value the request.
    valued: bool,
    /// Customer, destination or connected account id; `""` when none.
    counterparty: String,
    /// The object whose creation counted the money this request moves; `""` when none.
    settles: String,
    /// The connected account acted on; `""` = platform.
    account: String,
    /// A subscription's billing interval; `""` when none.
    interval: String,
    /// `expand[]` values.
    expand: Vec<String>,
    /// Stripe metadata pairs.
    metadata: BTreeMap<String, String>,
}

/// What the guard would decide for a request.
#[derive(Serialize, ToSchema)]
pub(crate) struct SimulateResult {
    /// The facts the classifier extracted from the request, as the policies see them.
    #[schema(value_type = RequestFacts)]
    facts: policies::RequestFacts,
    /// The decision.
    verdict: VerdictView,
}

impl SimulateResult {
    pub(crate) fn new(facts: policies::RequestFacts, verdict: policies::Verdict) -> Self {
        Self {
            facts,
            verdict: verdict.into(),
        }
    }
}

// ---- caps ------------------------------------------------------------------------------------

/// A spend cap.
#[derive(Serialize, ToSchema)]
pub(crate) struct CapView {
    /// `cap_…`
    id: String,
    /// `org` or `agent:agt_…`.
    #[schema(value_type = String)]
    scope: CapScope,
    /// Lower-case ISO 4217.
    #[schema(value_type = String)]
    currency: Currency,
    /// `per_transaction`, `daily`, `weekly`, `monthly` or `all_time`.
    #[schema(value_type = String)]
    interval: CapInterval,
    /// Most spend allowed in the window, in minor units.
    limit: i64,
    /// `hold` or `deny`.
    #[schema(value_type = String)]
    on_exceed: OnExceed,
    /// Operations counted; null means every `move_money` operation.
    #[schema(required = true)]
    operations: Option<Vec<String>>,
}

impl From<policies::Cap> for CapView {
    fn from(c: policies::Cap) -> Self {
        Self {
            id: c.id,
            scope: c.scope,
            currency: c.currency,
            interval: c.interval,
            limit: c.limit,
            on_exceed: c.on_exceed,
            operations: c.operations,
        }
    }
}

list_of!(
    /// Caps of the active organization.
    CapList,
    CapView
);

// ---- rail ------------------------------------------------------------------------------------

/// The rail key: never the key itself.
#[derive(Serialize, ToSchema)]
pub(crate) struct RailInfoView {
    /// `test` or `live`.
    mode: String,
    /// Last four characters.
    last4: String,
    /// RFC 3339.
    updated_at: String,
}

/// Whether a Stripe key is configured.
#[derive(Serialize, ToSchema)]
pub(crate) struct RailStatus {
    /// Whether a key is set.
    configured: bool,
    /// The key's mode and last 4 characters; null when none is set.
    #[schema(required = true)]
    rail: Option<RailInfoView>,
}

impl RailStatus {
    pub(crate) fn new(info: Option<store::RailInfo>) -> Self {
        Self {
            configured: info.is_some(),
            rail: info.map(|r| RailInfoView {
                mode: r.mode,
                last4: r.last4,
                updated_at: r.updated_at,
            }),
        }
    }
}

// ---- intents ---------------------------------------------------------------------------------

/// A human approval or denial.
#[derive(Serialize, ToSchema)]
pub(crate) struct ApprovalView {
    /// `usr_…`
    #[schema(value_type = String)]
    user: UserId,
    /// `approve` or `deny`.
    verdict: String,
    /// Optional comment.
    #[schema(required = true)]
    comment: Option<String>,
    /// RFC 3339.
    at: String,
}

/// The amount reserved against caps.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReservationView {
    /// Minor units.
    amount: i64,
    /// Unix seconds whose windows `amount` was added to.
    window_unix: i64,
    /// Counter keys of records stored before `window_unix` existed; absent when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    counters: Vec<String>,
    /// True once released (failed upstream).
    released: bool,
}

/// One decided mutation of an agent (the admin view: the held request as text, the upstream
/// status, never the stored response bytes).
///
/// Field order is the one the former builder produced (the stored intent with `request_body`
/// and `response` swapped out, then `request` and `upstream_status`).
#[derive(Serialize, ToSchema)]
pub(crate) struct IntentView {
    /// `int_…`
    #[schema(value_type = String)]
    id: IntentId,
    /// `org_…`
    #[schema(value_type = String)]
    org: OrgId,
    /// `agt_…`
    #[schema(value_type = String)]
    agent: AgentId,
    /// The agent's Idempotency-Key.
    idempotency_key: String,
    /// SHA-256 of method, path and body.
    request_digest: String,
    /// HTTP method.
    method: String,
    /// Path (no query).
    path: String,
    /// Operation name (Cedar action).
    operation: String,
    /// `move_money`, `commit_money`, `admin`, `write`, `read` or `unknown`.
    #[schema(value_type = String)]
    class: OperationClass,
    /// Minor units, when the operation carries an amount.
    #[schema(required = true)]
    amount: Option<i64>,
    /// Lower-case ISO 4217, when it carries one.
    #[schema(required = true)]
    currency: Option<String>,
    /// Customer / destination / account.
    counterparty: String,
    /// Connected account acted on; `""` = platform.
    account: String,
    /// Minor units counted toward caps.
    #[schema(required = true)]
    counted: Option<i64>,
    /// Whether the guard could value the request.
    valued: bool,
    /// Stripe metadata.
    metadata: BTreeMap<String, String>,
    /// `allow`, `hold` or `deny`.
    #[schema(value_type = String)]
    decision: Outcome,
    /// `pending_approval`, `approved`, `denied`, `expired`, `forwarding`, `succeeded`,
    /// `failed` or `unknown`.
    #[schema(value_type = String)]
    status: IntentStatus,
    /// Determining policies.
    policies: Vec<String>,
    /// Exceeded caps.
    caps: Vec<String>,
    /// Human-readable reason.
    reason: String,
    /// Distinct human approvals needed (holds).
    approvals_required: u32,
    /// Human decisions so far.
    approvals: Vec<ApprovalView>,
    /// RFC 3339.
    created_at: String,
    /// RFC 3339 of the decision (policy or human).
    decided_at: String,
    /// Unix seconds after which an undecided hold expires.
    #[schema(required = true)]
    expires_at_unix: Option<i64>,
    /// Reservation against caps.
    #[schema(required = true)]
    reservation: Option<ReservationView>,
    /// Upstream object id, when the response carried one.
    #[schema(required = true)]
    upstream_id: Option<String>,
    /// Query string of the request (`""` when none).
    query: String,
    /// Allowlisted request headers, as `[name, value]` pairs.
    #[schema(value_type = Vec<Vec<String>>)]
    request_headers: Vec<(String, String)>,
    /// Idempotency-Key sent upstream.
    upstream_idempotency_key: String,
    /// Upstream attempts so far.
    attempts: u32,
    /// The held request body as text (lossy UTF-8), when kept.
    #[schema(required = true)]
    request: Option<String>,
    /// Upstream HTTP status, once answered.
    #[schema(required = true)]
    upstream_status: Option<u16>,
}

impl From<&store::Intent> for IntentView {
    fn from(i: &store::Intent) -> Self {
        Self {
            id: i.id.clone(),
            org: i.org.clone(),
            agent: i.agent.clone(),
            idempotency_key: i.idempotency_key.clone(),
            request_digest: i.request_digest.clone(),
            method: i.method.clone(),
            path: i.path.clone(),
            operation: i.operation.clone(),
            class: i.class,
            amount: i.amount.minor(),
            currency: i.amount.currency().map(|c| c.as_str().to_string()),
            counterparty: i.counterparty.clone(),
            account: i.account.clone(),
            counted: i.counted,
            valued: i.valued,
            metadata: i.metadata.clone(),
            decision: i.decision,
            status: i.status,
            policies: i.policies.clone(),
            caps: i.caps.clone(),
            reason: i.reason.clone(),
            approvals_required: i.approvals_required,
            approvals: i
                .approvals
                .iter()
                .map(|a| ApprovalView {
                    user: a.user.clone(),
                    verdict: a.verdict.clone(),
                    comment: a.comment.clone(),
                    at: a.at.clone(),
                })
                .collect(),
            created_at: i.created_at.clone(),
            decided_at: i.decided_at.clone(),
            expires_at_unix: i.expires_at_unix,
            reservation: i.reservation.as_ref().map(|r| ReservationView {
                amount: r.amount,
                window_unix: r.window_unix,
                counters: r.legacy_counters.clone(),
                released: r.released,
            }),
            upstream_id: i.upstream_id.clone(),
            query: i.query.clone(),
            request_headers: i.request_headers.clone(),
            upstream_idempotency_key: i.upstream_idempotency_key.clone(),
            attempts: i.attempts,
            request: i
                .request_body
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned()),
            upstream_status: i.response.as_ref().map(|r| r.status),
        }
    }
}

/// A page of intents, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct IntentList {
    /// Always `list`.
    #[schema(value_type = String, example = "list")]
    object: &'static str,
    /// The intents.
    data: Vec<IntentView>,
    /// Whether more follow (`starting_after` the last id).
    has_more: bool,
}

impl IntentList {
    pub(crate) fn new(data: Vec<IntentView>, has_more: bool) -> Self {
        Self {
            object: LIST,
            data,
            has_more,
        }
    }
}

/// Schema only (the store builds it): the agent of a hold, for the approver.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct HoldAgent {
    /// `agt_…`
    id: String,
    /// Display name.
    name: String,
    /// `active`, `frozen` or `revoked`.
    status: String,
    /// RFC 3339.
    created_at: String,
    /// The human who created it, when known.
    #[schema(required = true)]
    created_by: Option<PersonView>,
}

/// Schema only (the store builds it): one human decision on a hold, with who invited the human.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct HoldDecider {
    /// The human.
    user: PersonView,
    /// `approve` or `deny`.
    verdict: String,
    /// RFC 3339.
    at: String,
    /// When their membership began; null when they are no longer a member.
    #[schema(required = true)]
    member_since: Option<String>,
    /// Who invited them.
    #[schema(required = true)]
    invited_by: Option<PersonView>,
}

/// Schema only (the store builds it): who is behind a hold.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct HoldContext {
    /// The requesting agent; null if it no longer exists.
    #[schema(required = true)]
    agent: Option<HoldAgent>,
    /// Every human decision so far.
    decisions: Vec<HoldDecider>,
}

/// An intent with who created its agent and who decided it.
#[derive(Serialize, ToSchema)]
pub(crate) struct IntentDetail {
    #[serde(flatten)]
    intent: IntentView,
    /// Who created the requesting agent, and who invited each human who decided.
    #[schema(value_type = HoldContext)]
    context: Value,
}

impl IntentDetail {
    pub(crate) fn new(i: &store::Intent, context: Value) -> Self {
        Self {
            intent: i.into(),
            context,
        }
    }
}

// ---- audit -----------------------------------------------------------------------------------

/// Schema only: who caused an audit event.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct AuditActor {
    /// `agent`, `user` or `system`.
    r#type: String,
    /// The agent or user id, or the system component.
    id: String,
}

/// Schema only (events are passed through as stored, JCS key order): one hash-chained event.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct AuditEvent {
    /// `org_…` (an organization's trail).
    org: Option<String>,
    /// `usr_…` (a user's own trail).
    user: Option<String>,
    /// 1, 2, 3… within the trail.
    seq: u64,
    /// RFC 3339.
    at: String,
    /// Who caused it.
    actor: AuditActor,
    /// Event type.
    kind: String,
    /// Event-specific data.
    #[schema(value_type = Object)]
    data: Value,
    /// The previous event's hash.
    prev: String,
    /// SHA-256 (hex) of the JCS form without `hash`.
    hash: String,
}

/// A page of audit events, oldest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditList {
    /// Always `list`.
    #[schema(value_type = String, example = "list")]
    object: &'static str,
    /// The events.
    #[schema(value_type = Vec<AuditEvent>)]
    data: Vec<Value>,
}

impl AuditList {
    pub(crate) fn new(data: Vec<Value>) -> Self {
        Self { object: LIST, data }
    }
}

/// The newest event of a verified trail.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditHeadView {
    /// Its seq (0 when the trail is empty).
    seq: u64,
    /// Its hash.
    hash: String,
}

/// The outcome of verifying a trail: `ok`, `events` and `head` when it checks out; `ok`,
/// `first_bad_seq` and `reason` when it does not.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditVerifyView {
    /// Whether every event checks out.
    ok: bool,
    /// Number of events (when ok).
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<u64>,
    /// The newest event (when ok).
    #[serde(skip_serializing_if = "Option::is_none")]
    head: Option<AuditHeadView>,
    /// The first seq that fails (when not ok).
    #[serde(skip_serializing_if = "Option::is_none")]
    first_bad_seq: Option<u64>,
    /// Why (when not ok).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl From<store::VerifyReport> for AuditVerifyView {
    fn from(r: store::VerifyReport) -> Self {
        use store::VerifyReport;
        match r {
            VerifyReport::Ok { ok, events, head } => Self {
                ok,
                events: Some(events),
                head: Some(AuditHeadView {
                    seq: head.seq,
                    hash: head.hash,
                }),
                first_bad_seq: None,
                reason: None,
            },
            VerifyReport::Broken {
                ok,
                first_bad_seq,
                reason,
            } => Self {
                ok,
                events: None,
                head: None,
                first_bad_seq: Some(first_bad_seq),
                reason: Some(reason),
            },
        }
    }
}

// ---- webhooks --------------------------------------------------------------------------------

/// A webhook endpoint (never its secret once created).
#[derive(Serialize, ToSchema)]
pub(crate) struct WebhookView {
    /// `wh_…`
    id: String,
    /// `http(s)://…`
    url: String,
    /// Subscribed event types; null = all.
    #[schema(required = true)]
    events: Option<Vec<String>>,
    /// Disabled endpoints get no new deliveries.
    enabled: bool,
    /// Why it was disabled.
    #[schema(required = true)]
    disabled_reason: Option<String>,
    /// Failed attempts in a row (reset by a success).
    consecutive_failures: u32,
    /// RFC 3339.
    created_at: String,
}

impl From<&store::WebhookEndpoint> for WebhookView {
    fn from(e: &store::WebhookEndpoint) -> Self {
        Self {
            id: e.id.clone(),
            url: e.url.clone(),
            events: e.events.clone(),
            enabled: e.enabled,
            disabled_reason: e.disabled_reason.clone(),
            consecutive_failures: e.consecutive_failures,
            created_at: e.created_at.clone(),
        }
    }
}

list_of!(
    /// Webhook endpoints of the active organization.
    WebhookList,
    WebhookView
);

/// A webhook endpoint just created, with its signing secret.
#[derive(Serialize, ToSchema)]
pub(crate) struct WebhookCreated {
    #[serde(flatten)]
    endpoint: WebhookView,
    /// `whsec_…`, shown once.
    secret: String,
}

impl WebhookCreated {
    pub(crate) fn new(e: &store::WebhookEndpoint, secret: String) -> Self {
        Self {
            endpoint: e.into(),
            secret,
        }
    }
}

/// A webhook endpoint whose secret was rotated.
#[derive(Serialize, ToSchema)]
pub(crate) struct WebhookRotated {
    #[serde(flatten)]
    endpoint: WebhookView,
    /// The new secret, shown once.
    secret: String,
    /// Seconds the previous secret keeps signing too.
    previous_secret_valid_for_secs: i64,
}

impl WebhookRotated {
    pub(crate) fn new(e: &store::WebhookEndpoint, secret: String, overlap_secs: i64) -> Self {
        Self {
            endpoint: e.into(),
            secret,
            previous_secret_valid_for_secs: overlap_secs,
        }
    }
}

/// One attempt to deliver.
#[derive(Serialize, ToSchema)]
pub(crate) struct AttemptView {
    /// Unix milliseconds when it started.
    at_ms: i64,
    /// HTTP status, when one arrived.
    #[schema(required = true)]
    status: Option<u16>,
    /// Milliseconds it took.
    duration_ms: u64,
    /// What went wrong, if anything.
    #[schema(required = true)]
    error: Option<String>,
}

/// A delivery of one event to one endpoint.
#[derive(Serialize, ToSchema)]
pub(crate) struct DeliveryView {
    /// `dlv_…`
    id: String,
    /// `org_…`
    #[schema(value_type = String)]
    org: OrgId,
    /// `wh_…`
    endpoint: String,
    /// `evt_…`
    event_id: String,
    /// Event type.
    kind: String,
    /// Body (JSON text) sent on every attempt.
    body: String,
    /// `pending`, `delivered`, `failed` or `abandoned`.
    state: String,
    /// Why a delivery was abandoned (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// Every attempt.
    attempts: Vec<AttemptView>,
    /// Next attempt (unix ms), while pending.
    #[schema(required = true)]
    next_attempt_ms: Option<i64>,
}

impl From<store::Delivery> for DeliveryView {
    fn from(d: store::Delivery) -> Self {
        Self {
            id: d.id,
            org: d.org,
            endpoint: d.endpoint,
            event_id: d.event_id,
            kind: d.kind,
            body: d.body,
            state: d.state,
            reason: d.reason,
            attempts: d
                .attempts
                .into_iter()
                .map(|a| AttemptView {
                    at_ms: a.at_ms,
                    status: a.status,
                    duration_ms: a.duration_ms,
                    error: a.error,
                })
                .collect(),
            next_attempt_ms: d.next_attempt_ms,
        }
    }
}

list_of!(
    /// Deliveries of one endpoint, newest first.
    DeliveryList,
    DeliveryView
);

#[cfg(test)]
mod tests {
    //! The typed answers against the `json!` builders they replaced, byte for byte.

    use serde_json::{Value, json};

    use super::*;

    fn same<T: Serialize>(typed: &T, former: &Value) {
        assert_eq!(
            serde_json::to_string(typed).unwrap(),
            serde_json::to_string(former).unwrap()
        );
    }

    fn org() -> store::Org {
        store::Org {
            id: OrgId::generate(),
            name: "Acme".into(),
            frozen: false,
            active_policy_version: 3,
            latest_policy_version: 4,
            require_2fa_for_approvals: true,
            created_at: "2026-12-01T00:00:00.000000Z".into(),
        }
    }

    fn agent() -> store::Agent {
        store::Agent {
            id: AgentId::generate(),
            org: OrgId::generate(),
            name: "bot".into(),
            tags: vec!["a".into(), "b".into()],
            status: AgentStatus::Frozen,
            token_id: "tid".into(),
            token_digest: "digest".into(),
            created_at: "2026-12-01T00:00:00.000000Z".into(),
            created_by: Some(UserId::generate()),
        }
    }

    fn intent(held: bool) -> store::Intent {
        store::Intent {
            id: IntentId::generate(),
            org: OrgId::generate(),
            agent: AgentId::generate(),
            idempotency_key: "k1".into(),
            request_digest: "d".into(),
            method: "POST".into(),
            path: "/v1/refunds".into(),
            operation: "refunds.create".into(),
            class: OperationClass::MoveMoney,
            amount: store::IntentAmount(held.then(|| policies::Amount {
                minor: 500,
                currency: policies::Currency::parse("usd").unwrap(),
            })),
            counterparty: "cus_1".into(),
            account: String::new(),
            counted: None,
            valued: true,
            metadata: [("order".to_string(), "42".to_string())].into(),
            decision: if held { Outcome::Hold } else { Outcome::Allow },
            status: if held {
                IntentStatus::PendingApproval
            } else {
                IntentStatus::Succeeded
            },
            policies: vec!["p1".into()],
            caps: vec![],
            reason: "because".into(),
            approvals_required: 2,
            approvals: vec![store::Approval {
                user: UserId::generate(),
                verdict: "approve".into(),
                comment: None,
                at: "2026-12-01T00:00:01.000000Z".into(),
            }],
            created_at: "2026-12-01T00:00:00.000000Z".into(),
            decided_at: "2026-12-01T00:00:02.000000Z".into(),
            expires_at_unix: held.then_some(1_800_000_000),
            reservation: held.then(|| store::Reservation {
                amount: 500,
                window_unix: 1_700_000_000,
                legacy_counters: if held { vec!["c".into()] } else { vec![] },
                released: false,
            }),
            request_body: held.then(|| b"amount=500&currency=usd".to_vec()),
            query: String::new(),
            request_headers: vec![("Stripe-Version".into(), "2024-06-20".into())],
            upstream_idempotency_key: "pg_up".into(),
            attempts: 1,
            response: (!held).then(|| store::StoredResponse {
                status: 200,
                headers: vec![],
                body: b"{}".to_vec(),
            }),
            upstream_id: (!held).then(|| "re_1".into()),
        }
    }

    /// The former `resources::intent_json`.
    fn former_intent_json(i: &store::Intent) -> Value {
        let mut v = serde_json::to_value(i).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.remove("request_body");
            o.remove("response");
            o.insert(
                "request".into(),
                json!(
                    i.request_body
                        .as_ref()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                ),
            );
            o.insert(
                "upstream_status".into(),
                json!(i.response.as_ref().map(|r| r.status)),
            );
        }
        v
    }

    #[test]
    fn intents_answer_as_before() {
        for held in [true, false] {
            let i = intent(held);
            same(&IntentView::from(&i), &former_intent_json(&i));
            let context = json!({"agent": null, "decisions": []});
            let mut former = former_intent_json(&i);
            former["context"] = context.clone();
            same(&IntentDetail::new(&i, context), &former);
            let former_list =
                json!({"object": "list", "data": [former_intent_json(&i)], "has_more": held});
            same(&IntentList::new(vec![(&i).into()], held), &former_list);
        }
    }

    #[test]
    fn organizations_and_agents_answer_as_before() {
        let o = org();
        let former = json!({"id": o.id, "name": o.name, "frozen": o.frozen, "active_policy_version": o.active_policy_version,
            "require_2fa_for_approvals": o.require_2fa_for_approvals, "created_at": o.created_at});
        same(&OrgView::from(&o), &former);
        let mut with_role = former.clone();
        with_role["role"] = json!(Role::Approver);
        same(
            &OrgList::new(vec![OrgMembershipView::new(&o, Role::Approver)]),
            &json!({"object": "list", "data": [with_role]}),
        );
        same(
            &Deleted::new(o.id.as_str()),
            &json!({"id": o.id, "deleted": true}),
        );

        let a = agent();
        let mut former = json!({"id": a.id, "name": a.name, "tags": a.tags, "status": a.status, "created_at": a.created_at});
        same(&AgentView::from(&a), &former);
        former["token"] = json!("pg_agt_x");
        same(&AgentWithToken::new(&a, "pg_agt_x".into()), &former);
    }

    #[test]
    fn store_views_answer_as_before() {
        let person = store::PersonRef {
            id: UserId::generate(),
            email: "a@example.com".into(),
        };
        for invited_by in [None, Some(person.clone())] {
            let m = store::MemberView {
                user_id: UserId::generate(),
                email: "b@example.com".into(),
                role: Role::Viewer,
                accepted_at: String::new(),
                invited_by,
            };
            same(&MemberView::from(&m), &json!(m));
        }
        let inv = store::InvitationView {
            id: "inv_1".into(),
            email: "c@example.com".into(),
            role: Role::Admin,
            status: InvitationStatus::Pending,
            invited_by: person,
            created_at: "t0".into(),
            expires_at: "t1".into(),
            accepted_by: None,
            accepted_at: None,
        };
        same(&InvitationView::from(&inv), &json!(inv));
        let mut former = json!(inv);
        former["object"] = json!("invitation");
        former["token"] = json!("pg_inv_x");
        same(&InvitationCreated::new(&inv, "pg_inv_x".into()), &former);

        let pv = store::PolicyVersion {
            version: 2,
            text: "permit(principal, action, resource);".into(),
            author: "user:usr_1".into(),
            created_at: "t".into(),
        };
        same(&PolicyVersionView::from(pv.clone()), &json!(pv));
        same(
            &PolicyVersionSummary::new(&pv, 2),
            &json!({"version": pv.version, "author": pv.author, "created_at": pv.created_at, "active": true}),
        );

        let cap = policies::Cap {
            id: "cap_1".into(),
            scope: "org".parse().unwrap(),
            currency: Currency::parse("usd").unwrap(),
            interval: CapInterval::Daily,
            limit: 10_000,
            on_exceed: OnExceed::Hold,
            operations: None,
        };
        same(&CapView::from(cap.clone()), &json!(cap));

        let info = store::RailInfo {
            mode: "test".into(),
            last4: "abcd".into(),
            updated_at: "t".into(),
        };
        same(
            &RailStatus::new(Some(info.clone())),
            &json!({"configured": true, "rail": info}),
        );
        same(
            &RailStatus::new(None),
            &json!({"configured": false, "rail": null}),
        );

        let accepted = store::Accepted {
            organization_id: OrgId::generate(),
            user_id: UserId::generate(),
            role: Role::Approver,
            new_account: true,
        };
        same(&AcceptedView::from(accepted.clone()), &json!(accepted));
    }

    #[test]
    fn audit_reports_answer_as_before() {
        let reports = [
            store::VerifyReport::Ok {
                ok: true,
                events: 7,
                head: store::AuditHead {
                    seq: 7,
                    hash: "h".into(),
                },
            },
            store::VerifyReport::Broken {
                ok: false,
                first_bad_seq: 3,
                reason: "hash mismatch".into(),
            },
        ];
        for r in reports {
            same(&AuditVerifyView::from(r.clone()), &json!(r));
        }
        let events = vec![json!({"actor": {"id": "t", "type": "system"}, "at": "x", "seq": 1})];
        same(
            &AuditList::new(events.clone()),
            &json!({"object": "list", "data": events}),
        );
    }

    #[test]
    fn simulations_answer_as_before() {
        let raw = policies::RawRequest {
            method: "POST",
            path: "/v1/refunds",
            query: "",
            content_type: Some("application/x-www-form-urlencoded"),
            body: b"amount=500&currency=usd&metadata[order]=42",
            account: "",
        };
        let facts = policies::classify_request(
            &raw,
            &policies::FormLimits::default(),
            &policies::Lookups::offline(),
        )
        .unwrap();
        let verdict = policies::Verdict {
            outcome: Outcome::Hold,
            policies: vec!["p".into()],
            caps: vec![],
            reason: "r".into(),
            approvals_required: 1,
            errors: vec![],
        };
        same(
            &SimulateResult::new(facts.clone(), verdict.clone()),
            &json!({"facts": facts, "verdict": verdict}),
        );
    }

    #[test]
    fn webhooks_answer_as_before() {
        let d = store::Delivery {
            id: "dlv_1".into(),
            org: OrgId::generate(),
            endpoint: "wh_1".into(),
            event_id: "evt_1".into(),
            kind: "intent.held".into(),
            body: "{}".into(),
            state: "pending".into(),
            reason: None,
            attempts: vec![store::Attempt {
                at_ms: 1,
                status: None,
                duration_ms: 2,
                error: Some("refused".into()),
            }],
            next_attempt_ms: Some(3),
        };
        same(&DeliveryView::from(d.clone()), &json!(d));
        let mut abandoned = d;
        abandoned.reason = Some("endpoint disabled".into());
        same(&DeliveryView::from(abandoned.clone()), &json!(abandoned));

        // Its secrets are the store's own: read one as stored.
        let e: store::WebhookEndpoint = serde_json::from_value(json!({"id": "wh_1",
            "org": OrgId::generate(), "url": "https://example.com/h", "events": null,
            "enabled": false, "disabled_reason": "failing", "secret": "sealed",
            "previous_secret": null, "consecutive_failures": 9, "created_at": "t"}))
        .unwrap();
        let former = json!({"id": e.id, "url": e.url, "events": e.events, "enabled": e.enabled,
            "disabled_reason": e.disabled_reason, "consecutive_failures": e.consecutive_failures, "created_at": e.created_at});
        same(&WebhookView::from(&e), &former);
        let mut created = former.clone();
        created["secret"] = json!("whsec_x");
        same(&WebhookCreated::new(&e, "whsec_x".into()), &created);
        created["previous_secret_valid_for_secs"] = json!(86_400);
        same(&WebhookRotated::new(&e, "whsec_x".into(), 86_400), &created);
        same(
            &WebhookList::new(vec![(&e).into()]),
            &json!({"object": "list", "data": [former]}),
        );
    }
}
