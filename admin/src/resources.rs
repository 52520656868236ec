//! Everything admins manage (ADMIN_API.md "Resources"). Each handler: extract the member of the
//! active organization, check the role, call the store with the organization id, answer JSON.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use policies::{CapInterval, CapScope, Currency, FormLimits, OnExceed};
use serde::Deserialize;
use serde_json::{Value, json};
use store::{
    AgentId, AgentStatus, CapPatch, CapSpec, HumanVerdict, IntentId, IntentStatus, OrgId, Role,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{ClientAddr, Principal};
use crate::dto::{
    AgentList, AgentView, AgentWithToken, AuditList, AuditVerifyView, CapList, CapView, Deleted,
    IntentDetail, IntentList, IntentView, InvitationCreated, InvitationList, InvitationView,
    MemberList, MemberView, OrgList, OrgMembershipView, OrgView, PolicyActivated,
    PolicyVersionList, PolicyVersionSummary, PolicyVersionView, RailStatus, Removed,
    SimulateResult,
};
use crate::extract::JsonBody;
use crate::rbac::{Member, Perm};
use crate::{ApiError, AppState};

type ApiResult<T> = Result<T, ApiError>;

/// Default and largest page sizes (ADMIN_API.md: default 50, max 500).
const PAGE_DEFAULT: usize = 50;
const PAGE_MAX: usize = 500;

/// The resource routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_orgs, create_org))
        .routes(routes!(delete_org, update_org))
        .routes(routes!(freeze_org))
        .routes(routes!(unfreeze_org))
        .routes(routes!(list_members, add_member))
        .routes(routes!(list_invitations))
        .routes(routes!(revoke_invitation))
        .routes(routes!(update_member, remove_member))
        .routes(routes!(list_agents, create_agent))
        .routes(routes!(get_agent))
        .routes(routes!(rotate_agent))
        .routes(routes!(freeze_agent))
        .routes(routes!(unfreeze_agent))
        .routes(routes!(revoke_agent))
        .routes(routes!(get_policies, put_policies))
        .routes(routes!(policy_versions))
        .routes(routes!(activate_policy))
        .routes(routes!(simulate))
        .routes(routes!(policy_schema))
        .routes(routes!(list_caps, add_cap))
        .routes(routes!(update_cap, delete_cap))
        .routes(routes!(get_rail, put_rail))
        .routes(routes!(list_intents))
        .routes(routes!(get_intent))
        .routes(routes!(approve_intent))
        .routes(routes!(deny_intent))
        .routes(routes!(list_audit))
        .routes(routes!(verify_audit))
        .routes(routes!(export_audit))
}

/// The principal's role in `org` (any organization they belong to; for an API token, only the
/// one it is bound to), or 404.
async fn member_of(state: &AppState, p: &Principal, org: &OrgId) -> ApiResult<Role> {
    if !p.may_act_on(org) {
        return Err(ApiError::NotFound);
    }
    let (o, u) = (org.clone(), p.user.clone());
    state
        .blocking(move |s| s.member_role(&o, &u))
        .await?
        .ok_or(ApiError::NotFound)
}

fn parse_org(id: &str) -> ApiResult<OrgId> {
    OrgId::parse(id).ok_or(ApiError::NotFound)
}

fn parse_agent(id: &str) -> ApiResult<AgentId> {
    AgentId::parse(id).ok_or(ApiError::NotFound)
}

fn parse_intent(id: &str) -> ApiResult<IntentId> {
    IntentId::parse(id).ok_or(ApiError::NotFound)
}

// ---- organizations ---------------------------------------------------------------------------

#[utoipa::path(get, path = "/api/v1/organizations", tag = "organizations", responses((status = 200, description = "Organizations the caller belongs to", body = OrgList)))]
async fn list_orgs(State(state): State<AppState>, p: Principal) -> ApiResult<Json<OrgList>> {
    let user = p.user.clone();
    let ms = state.blocking(move |s| s.memberships_of(&user)).await?;
    let data = ms
        .iter()
        .filter(|(o, _)| p.may_act_on(&o.id))
        .map(|(o, r)| OrgMembershipView::new(o, *r))
        .collect();
    Ok(Json(OrgList::new(data)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateOrg {
    name: String,
}

#[utoipa::path(post, path = "/api/v1/organizations", tag = "organizations", request_body = CreateOrg, responses((status = 201, body = OrgView)))]
async fn create_org(
    State(state): State<AppState>,
    p: Principal,
    JsonBody(b): JsonBody<CreateOrg>,
) -> ApiResult<Response> {
    // An API token is bound to its organization: it does not create others.
    p.session_hash()?;
    let user = p.user.clone();
    let org = state
        .blocking(move |s| s.create_org_for(&b.name, &user))
        .await?;
    Ok((StatusCode::CREATED, Json(OrgView::from(&org))).into_response())
}

#[utoipa::path(delete, path = "/api/v1/organizations/{id}", tag = "organizations", params(("id" = String, Path)), responses((status = 200, body = Deleted)))]
async fn delete_org(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Deleted>> {
    let org = parse_org(&id)?;
    if !crate::rbac::allows(member_of(&state, &p, &org).await?, Perm::Owner) {
        return Err(ApiError::Forbidden(
            "only an owner may delete the organization".into(),
        ));
    }
    let actor = store::Actor::User(p.user.clone());
    let o = org.clone();
    state.blocking(move |s| s.delete_org(&o, &actor)).await?;
    Ok(Json(Deleted::new(org.as_str())))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateOrg {
    name: Option<String>,
    require_2fa_for_approvals: Option<bool>,
}

#[utoipa::path(patch, path = "/api/v1/organizations/{id}", tag = "organizations", params(("id" = String, Path)), request_body = UpdateOrg, responses((status = 200, body = OrgView)))]
async fn update_org(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<UpdateOrg>,
) -> ApiResult<Json<OrgView>> {
    let org = parse_org(&id)?;
    let role = member_of(&state, &p, &org).await?;
    if !crate::rbac::allows(role, Perm::ManageConfig) {
        return Err(ApiError::Forbidden("owners and admins only".into()));
    }
    let actor = store::Actor::User(p.user.clone());
    let o = state
        .blocking(move |s| s.update_org(&org, b.name, b.require_2fa_for_approvals, &actor))
        .await?;
    Ok(Json(OrgView::from(&o)))
}

async fn set_frozen(
    state: AppState,
    p: Principal,
    id: String,
    frozen: bool,
) -> ApiResult<Json<OrgView>> {
    let org = parse_org(&id)?;
    let role = member_of(&state, &p, &org).await?;
    if !crate::rbac::allows(role, Perm::ManageAgents) {
        return Err(ApiError::Forbidden("owners and admins only".into()));
    }
    let actor = store::Actor::User(p.user.clone());
    let o = state
        .blocking(move |s| s.set_org_frozen(&org, frozen, &actor))
        .await?;
    Ok(Json(OrgView::from(&o)))
}

#[utoipa::path(post, path = "/api/v1/organizations/{id}/freeze", tag = "organizations", params(("id" = String, Path)), responses((status = 200, body = OrgView)))]
async fn freeze_org(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<OrgView>> {
    set_frozen(state, p, id, true).await
}

#[utoipa::path(post, path = "/api/v1/organizations/{id}/unfreeze", tag = "organizations", params(("id" = String, Path)), responses((status = 200, body = OrgView)))]
async fn unfreeze_org(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<OrgView>> {
    set_frozen(state, p, id, false).await
}

// ---- members ----------------------------------------------------------------------------------

#[utoipa::path(get, path = "/api/v1/members", tag = "members", responses((status = 200, body = MemberList)))]
async fn list_members(State(state): State<AppState>, m: Member) -> ApiResult<Json<MemberList>> {
    m.require(Perm::Read)?;
    let org = m.org.clone();
    let data = state.blocking(move |s| s.list_members(&org)).await?;
    Ok(Json(MemberList::new(
        data.iter().map(MemberView::from).collect(),
    )))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AddMember {
    /// The invitee's email.
    email: String,
    /// The role the membership will have once accepted.
    role: String,
}

fn parse_role(s: &str) -> ApiResult<Role> {
    serde_json::from_value(json!(s)).map_err(|_| ApiError::Validation {
        message: format!("unknown role {s:?}"),
        details: Value::Null,
    })
}

/// Invite a member: creates a one-time, expiring invitation and shows its token once, to the
/// inviter, who hands it to the invitee. The answer is the same whether or not the email has
/// an account; the membership starts when the invitee accepts (`POST /invitations/accept`).
#[utoipa::path(post, path = "/api/v1/members", tag = "members", request_body = AddMember,
    responses((status = 201, description = "the invitation and its token (shown once)", body = InvitationCreated),
        (status = 403, body = crate::error::ErrorBody), (status = 409, description = "already a member, or an invitation for the email is pending", body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
async fn add_member(
    State(state): State<AppState>,
    m: Member,
    JsonBody(b): JsonBody<AddMember>,
) -> ApiResult<Response> {
    m.require(Perm::ManageMembers)?;
    let role = parse_role(&b.role)?;
    let (org, by, inviter) = (m.org.clone(), m.role, m.principal.user.clone());
    let (inv, token) = state
        .blocking(move |s| s.create_invitation(&org, &b.email, role, by, &inviter))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(InvitationCreated::new(&inv, token)),
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/v1/invitations", tag = "members", responses((status = 200, body = InvitationList), (status = 403, body = crate::error::ErrorBody)))]
async fn list_invitations(
    State(state): State<AppState>,
    m: Member,
) -> ApiResult<Json<InvitationList>> {
    m.require(Perm::ManageMembers)?;
    let org = m.org.clone();
    let data = state.blocking(move |s| s.list_invitations(&org)).await?;
    Ok(Json(InvitationList::new(
        data.iter().map(InvitationView::from).collect(),
    )))
}

#[utoipa::path(delete, path = "/api/v1/invitations/{id}", tag = "members", params(("id" = String, Path)), responses((status = 200, body = InvitationView), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody), (status = 409, description = "not pending", body = crate::error::ErrorBody)))]
async fn revoke_invitation(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
) -> ApiResult<Json<InvitationView>> {
    m.require(Perm::ManageMembers)?;
    let ok = id
        .strip_prefix("inv_")
        .is_some_and(|r| r.len() == 24 && r.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        return Err(ApiError::NotFound);
    }
    let (org, by, actor) = (m.org.clone(), m.role, m.actor());
    let v = state
        .blocking(move |s| s.revoke_invitation(&org, &id, by, &actor))
        .await?;
    Ok(Json(InvitationView::from(&v)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateMember {
    role: String,
}

#[utoipa::path(patch, path = "/api/v1/members/{user_id}", tag = "members", params(("user_id" = String, Path)), request_body = UpdateMember, responses((status = 200, body = MemberView)))]
async fn update_member(
    State(state): State<AppState>,
    m: Member,
    Path(user_id): Path<String>,
    JsonBody(b): JsonBody<UpdateMember>,
) -> ApiResult<Json<MemberView>> {
    m.require(Perm::ManageMembers)?;
    let user = store::UserId::parse(&user_id).ok_or(ApiError::NotFound)?;
    let role = parse_role(&b.role)?;
    let (org, by, actor) = (m.org.clone(), m.role, m.actor());
    let v = state
        .blocking(move |s| s.set_member_role(&org, &user, role, by, &actor))
        .await?;
    Ok(Json(MemberView::from(&v)))
}

#[utoipa::path(delete, path = "/api/v1/members/{user_id}", tag = "members", params(("user_id" = String, Path)), responses((status = 200, body = Removed)))]
async fn remove_member(
    State(state): State<AppState>,
    m: Member,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Removed>> {
    m.require(Perm::ManageMembers)?;
    let user = store::UserId::parse(&user_id).ok_or(ApiError::NotFound)?;
    let (org, by, actor) = (m.org.clone(), m.role, m.actor());
    let u = user.clone();
    state
        .blocking(move |s| s.remove_member(&org, &u, by, &actor))
        .await?;
    Ok(Json(Removed::new(user)))
}

// ---- agents -----------------------------------------------------------------------------------

#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", responses((status = 200, body = AgentList)))]
async fn list_agents(State(state): State<AppState>, m: Member) -> ApiResult<Json<AgentList>> {
    m.require(Perm::Read)?;
    let org = m.org.clone();
    let agents = state.blocking(move |s| s.list_agents(&org)).await?;
    Ok(Json(AgentList::new(
        agents.iter().map(AgentView::from).collect(),
    )))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateAgent {
    name: String,
    #[serde(default)]
    tags: Vec<String>,
}

#[utoipa::path(post, path = "/api/v1/agents", tag = "agents", request_body = CreateAgent, responses((status = 201, description = "The token is shown once", body = AgentWithToken)))]
async fn create_agent(
    State(state): State<AppState>,
    m: Member,
    JsonBody(b): JsonBody<CreateAgent>,
) -> ApiResult<Response> {
    m.require(Perm::ManageAgents)?;
    if b.tags.len() > 32 || b.tags.iter().any(|t| t.is_empty() || t.len() > 64) {
        return Err(ApiError::Validation {
            message: "at most 32 tags of 1..=64 bytes".into(),
            details: Value::Null,
        });
    }
    let (org, actor) = (m.org.clone(), m.actor());
    let (agent, token) = state
        .blocking(move |s| s.create_agent(&org, &b.name, b.tags, &actor))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(AgentWithToken::new(&agent, token)),
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/v1/agents/{id}", tag = "agents", params(("id" = String, Path)), responses((status = 200, body = AgentView)))]
async fn get_agent(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentView>> {
    m.require(Perm::Read)?;
    let (org, id) = (m.org.clone(), parse_agent(&id)?);
    let a = state
        .blocking(move |s| s.agent(&org, &id))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(AgentView::from(&a)))
}

#[utoipa::path(post, path = "/api/v1/agents/{id}/rotate", tag = "agents", params(("id" = String, Path)), responses((status = 200, description = "The new token is shown once", body = AgentWithToken)))]
async fn rotate_agent(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentWithToken>> {
    m.require(Perm::ManageAgents)?;
    let (org, id, actor) = (m.org.clone(), parse_agent(&id)?, m.actor());
    let (a, token) = state
        .blocking(move |s| s.rotate_agent_token(&org, &id, &actor))
        .await?;
    Ok(Json(AgentWithToken::new(&a, token)))
}

async fn set_agent(
    state: AppState,
    m: Member,
    id: String,
    status: AgentStatus,
) -> ApiResult<Json<AgentView>> {
    m.require(Perm::ManageAgents)?;
    let (org, id, actor) = (m.org.clone(), parse_agent(&id)?, m.actor());
    let a = state
        .blocking(move |s| s.set_agent_status(&org, &id, status, &actor))
        .await?;
    Ok(Json(AgentView::from(&a)))
}

#[utoipa::path(post, path = "/api/v1/agents/{id}/freeze", tag = "agents", params(("id" = String, Path)), responses((status = 200, body = AgentView)))]
async fn freeze_agent(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentView>> {
    set_agent(state, m, id, AgentStatus::Frozen).await
}

#[utoipa::path(post, path = "/api/v1/agents/{id}/unfreeze", tag = "agents", params(("id" = String, Path)), responses((status = 200, body = AgentView)))]
async fn unfreeze_agent(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentView>> {
    set_agent(state, m, id, AgentStatus::Active).await
}

#[utoipa::path(post, path = "/api/v1/agents/{id}/revoke", tag = "agents", params(("id" = String, Path)), responses((status = 200, body = AgentView)))]
async fn revoke_agent(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentView>> {
    set_agent(state, m, id, AgentStatus::Revoked).await
}

// ---- policies ---------------------------------------------------------------------------------

#[utoipa::path(get, path = "/api/v1/policies", tag = "policies", responses((status = 200, body = PolicyVersionView)))]
async fn get_policies(
    State(state): State<AppState>,
    m: Member,
) -> ApiResult<Json<PolicyVersionView>> {
    m.require(Perm::Read)?;
    let org = m.org.clone();
    let pv = state.blocking(move |s| s.active_policy(&org)).await?;
    Ok(Json(pv.into()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PutPolicies {
    text: String,
}

#[utoipa::path(put, path = "/api/v1/policies", tag = "policies", request_body = PutPolicies, responses((status = 200, body = PolicyActivated), (status = 422, description = "Diagnostics with line and column", body = crate::error::ErrorBody)))]
async fn put_policies(
    State(state): State<AppState>,
    m: Member,
    JsonBody(b): JsonBody<PutPolicies>,
) -> ApiResult<Json<PolicyActivated>> {
    m.require(Perm::ManageConfig)?;
    let (org, actor) = (m.org.clone(), m.actor());
    let version = state
        .blocking(move |s| s.set_policy(&org, &b.text, &actor))
        .await?;
    Ok(Json(PolicyActivated::new(version)))
}

#[utoipa::path(get, path = "/api/v1/policies/versions", tag = "policies", responses((status = 200, body = PolicyVersionList)))]
async fn policy_versions(
    State(state): State<AppState>,
    m: Member,
) -> ApiResult<Json<PolicyVersionList>> {
    m.require(Perm::Read)?;
    let org = m.org.clone();
    let o2 = org.clone();
    let active = state
        .blocking(move |s| s.org(&o2))
        .await?
        .active_policy_version;
    let versions = state.blocking(move |s| s.policy_versions(&org)).await?;
    let data = versions
        .iter()
        .map(|v| PolicyVersionSummary::new(v, active))
        .collect();
    Ok(Json(PolicyVersionList::new(data)))
}

#[utoipa::path(post, path = "/api/v1/policies/versions/{n}/activate", tag = "policies", params(("n" = u64, Path)), responses((status = 200, body = PolicyActivated)))]
async fn activate_policy(
    State(state): State<AppState>,
    m: Member,
    Path(n): Path<String>,
) -> ApiResult<Json<PolicyActivated>> {
    m.require(Perm::ManageConfig)?;
    let n: u64 = n.parse().map_err(|_| ApiError::NotFound)?;
    let (org, actor) = (m.org.clone(), m.actor());
    let v = state
        .blocking(move |s| s.activate_policy_version(&org, n, &actor))
        .await?;
    Ok(Json(PolicyActivated::new(v)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Simulate {
    agent: String,
    method: String,
    path: String,
    #[serde(default)]
    body: String,
    /// Query string without `?` (DELETE parameters, GET `expand[]`).
    #[serde(default)]
    query: String,
    /// Connected account (`Stripe-Account`), `""` for the platform.
    #[serde(default)]
    account: String,
    /// Candidate policy text; the active set when absent.
    text: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/policies/simulate", tag = "policies", request_body = Simulate, responses((status = 200, body = SimulateResult)))]
async fn simulate(
    State(state): State<AppState>,
    m: Member,
    JsonBody(b): JsonBody<Simulate>,
) -> ApiResult<Json<SimulateResult>> {
    m.require(Perm::Read)?;
    let agent = parse_agent(&b.agent)?;
    let method = b.method.to_ascii_uppercase();
    let content_type = if b.path.starts_with("/v2/") {
        "application/json"
    } else {
        "application/x-www-form-urlencoded"
    };
    // No rail is asked from the admin API: an operation valued by lookup simulates as not
    // valued (held unless a policy names it), which is what the guard does when the rail has
    // no such object.
    let raw = policies::RawRequest {
        method: &method,
        path: &b.path,
        query: &b.query,
        content_type: Some(content_type),
        body: b.body.as_bytes(),
        account: &b.account,
    };
    let facts =
        policies::classify_request(&raw, &FormLimits::default(), &policies::Lookups::offline())
            .map_err(|e| ApiError::Validation {
                message: e.to_string(),
                details: Value::Null,
            })?;
    let org = m.org.clone();
    let f2 = facts.clone();
    let verdict = state
        .blocking(move |s| s.simulate(&org, &agent, &f2, b.text.as_deref()))
        .await?;
    Ok(Json(SimulateResult::new(facts, verdict)))
}

#[utoipa::path(get, path = "/api/v1/policies/schema", tag = "policies", responses((status = 200, description = "Cedar schema text", body = String)))]
async fn policy_schema(m: Member) -> ApiResult<Response> {
    m.require(Perm::Read)?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        policies::SCHEMA_TEXT,
    )
        .into_response())
}

// ---- caps -------------------------------------------------------------------------------------

#[utoipa::path(get, path = "/api/v1/caps", tag = "caps", responses((status = 200, body = CapList)))]
async fn list_caps(State(state): State<AppState>, m: Member) -> ApiResult<Json<CapList>> {
    m.require(Perm::Read)?;
    let org = m.org.clone();
    let caps = state.blocking(move |s| s.list_caps(&org)).await?;
    Ok(Json(CapList::new(
        caps.into_iter().map(CapView::from).collect(),
    )))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AddCap {
    scope: String,
    currency: String,
    interval: String,
    limit: i64,
    on_exceed: Option<String>,
    operations: Option<Vec<String>>,
}

/// Whether `action` is a `move_money` or `commit_money` action of the operation table.
fn is_money_action(action: &str) -> bool {
    policies::operation_table()
        .operations()
        .iter()
        .any(|o| o.action == action && o.class.is_money())
}

fn invalid(field: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::Validation {
        message: format!("{field}: {e}"),
        details: json!({"field": field}),
    }
}

#[utoipa::path(post, path = "/api/v1/caps", tag = "caps", request_body = AddCap, responses((status = 201, body = CapView)))]
async fn add_cap(
    State(state): State<AppState>,
    m: Member,
    JsonBody(b): JsonBody<AddCap>,
) -> ApiResult<Response> {
    m.require(Perm::ManageConfig)?;
    if let Some(ops) = &b.operations
        && let Some(bad) = ops.iter().find(|o| !is_money_action(o))
    {
        return Err(invalid(
            "operations",
            format!("{bad} is not an operation that moves or commits money"),
        ));
    }
    let spec = CapSpec {
        scope: b
            .scope
            .parse::<CapScope>()
            .map_err(|e| invalid("scope", e))?,
        currency: Currency::parse(&b.currency).map_err(|e| invalid("currency", e))?,
        interval: b
            .interval
            .parse::<CapInterval>()
            .map_err(|e| invalid("interval", e))?,
        limit: b.limit,
        on_exceed: b
            .on_exceed
            .as_deref()
            .unwrap_or("hold")
            .parse::<OnExceed>()
            .map_err(|e| invalid("on_exceed", e))?,
        operations: b.operations,
    };
    if let CapScope::Agent(a) = &spec.scope {
        let (org, id) = (
            m.org.clone(),
            parse_agent(a).map_err(|_| invalid("scope", "unknown agent"))?,
        );
        state
            .blocking(move |s| s.agent(&org, &id))
            .await?
            .ok_or_else(|| invalid("scope", "unknown agent"))?;
    }
    let (org, actor) = (m.org.clone(), m.actor());
    let cap = state
        .blocking(move |s| s.add_cap(&org, spec, &actor))
        .await?;
    Ok((StatusCode::CREATED, Json(CapView::from(cap))).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PatchCap {
    limit: Option<i64>,
    on_exceed: Option<String>,
}

#[utoipa::path(patch, path = "/api/v1/caps/{id}", tag = "caps", params(("id" = String, Path)), request_body = PatchCap, responses((status = 200, body = CapView)))]
async fn update_cap(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<PatchCap>,
) -> ApiResult<Json<CapView>> {
    m.require(Perm::ManageConfig)?;
    let on_exceed = b
        .on_exceed
        .as_deref()
        .map(str::parse::<OnExceed>)
        .transpose()
        .map_err(|e| invalid("on_exceed", e))?;
    let cap_id = store::CapId::parse(&id).ok_or(ApiError::NotFound)?;
    let (org, actor) = (m.org.clone(), m.actor());
    let cap = state
        .blocking(move |s| {
            s.update_cap(
                &org,
                cap_id.as_str(),
                CapPatch {
                    limit: b.limit,
                    on_exceed,
                },
                &actor,
            )
        })
        .await?;
    Ok(Json(CapView::from(cap)))
}

#[utoipa::path(delete, path = "/api/v1/caps/{id}", tag = "caps", params(("id" = String, Path)), responses((status = 200, body = Deleted)))]
async fn delete_cap(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
) -> ApiResult<Json<Deleted>> {
    m.require(Perm::ManageConfig)?;
    let cap_id = store::CapId::parse(&id).ok_or(ApiError::NotFound)?;
    let (org, actor) = (m.org.clone(), m.actor());
    let c2 = cap_id.clone();
    state
        .blocking(move |s| s.delete_cap(&org, c2.as_str(), &actor))
        .await?;
    Ok(Json(Deleted::new(cap_id.as_str())))
}

// ---- rail -------------------------------------------------------------------------------------

#[utoipa::path(get, path = "/api/v1/rail", tag = "rail", responses((status = 200, description = "Mode and last 4 characters; never the key", body = RailStatus)))]
async fn get_rail(State(state): State<AppState>, m: Member) -> ApiResult<Json<RailStatus>> {
    m.require(Perm::ManageConfig)?;
    let org = m.org.clone();
    let info = state.blocking(move |s| s.rail_info(&org)).await?;
    Ok(Json(RailStatus::new(info)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PutRail {
    stripe_secret_key: String,
}

#[utoipa::path(put, path = "/api/v1/rail", tag = "rail", request_body = PutRail, responses((status = 200, body = RailStatus)))]
async fn put_rail(
    State(state): State<AppState>,
    m: Member,
    JsonBody(b): JsonBody<PutRail>,
) -> ApiResult<Json<RailStatus>> {
    m.require(Perm::ManageConfig)?;
    let (org, actor) = (m.org.clone(), m.actor());
    let info = state
        .blocking(move |s| s.set_rail_key(&org, &b.stripe_secret_key, &actor))
        .await?;
    Ok(Json(RailStatus::new(Some(info))))
}

// ---- intents and approvals --------------------------------------------------------------------

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct IntentQuery {
    status: Option<String>,
    agent: Option<String>,
    limit: Option<usize>,
    starting_after: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/intents", tag = "intents", params(IntentQuery), responses((status = 200, body = IntentList)))]
async fn list_intents(
    State(state): State<AppState>,
    m: Member,
    Query(q): Query<IntentQuery>,
) -> ApiResult<Json<IntentList>> {
    m.require(Perm::Read)?;
    let status = q
        .status
        .as_deref()
        .map(|s| {
            serde_json::from_value::<IntentStatus>(json!(s))
                .map_err(|_| invalid("status", "unknown status"))
        })
        .transpose()?;
    let agent = q
        .agent
        .as_deref()
        .map(|a| AgentId::parse(a).ok_or_else(|| invalid("agent", "not an agent id")))
        .transpose()?;
    let after = q
        .starting_after
        .as_deref()
        .map(|a| IntentId::parse(a).ok_or_else(|| invalid("starting_after", "not an intent id")))
        .transpose()?;
    let limit = q.limit.unwrap_or(PAGE_DEFAULT);
    if limit == 0 || limit > PAGE_MAX {
        return Err(invalid("limit", format!("1..={PAGE_MAX}")));
    }
    let org = m.org.clone();
    let page = state
        .blocking(move |s| s.intents_page(&org, status, agent.as_ref(), limit + 1, after.as_ref()))
        .await?;
    let has_more = page.len() > limit;
    let data = page.iter().take(limit).map(IntentView::from).collect();
    Ok(Json(IntentList::new(data, has_more)))
}

#[utoipa::path(get, path = "/api/v1/intents/{id}", tag = "intents", params(("id" = String, Path)), responses((status = 200, body = IntentDetail)))]
async fn get_intent(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
) -> ApiResult<Json<IntentDetail>> {
    m.require(Perm::Read)?;
    let (org, id) = (m.org.clone(), parse_intent(&id)?);
    let (o2, i) = (
        org.clone(),
        state.blocking(move |s| s.intent(&org, &id)).await?,
    );
    let i = i.ok_or(ApiError::NotFound)?;
    let i2 = i.clone();
    let context = state.blocking(move |s| s.hold_context(&o2, &i2)).await?;
    // Who created the requesting agent, and who invited each human who decided.
    Ok(Json(IntentDetail::new(&i, context)))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    /// At most 1000 bytes.
    comment: Option<String>,
    /// A fresh TOTP code (step-up): required when the organization has
    /// `require_2fa_for_approvals`; a code accepted once is refused for the rest of its window.
    totp_code: Option<String>,
}

async fn decide(
    state: AppState,
    addr: std::net::IpAddr,
    m: Member,
    id: String,
    body: DecideBody,
    verdict: HumanVerdict,
) -> ApiResult<Json<IntentView>> {
    m.require(Perm::Approve)?;
    m.require_session()?;
    if body.comment.as_ref().is_some_and(|c| c.len() > 1000) {
        return Err(invalid("comment", "at most 1000 bytes"));
    }
    let (org, id, user) = (m.org.clone(), parse_intent(&id)?, m.principal.user.clone());
    // Step-up: a code sent is checked (and spent) before the decision, under the sign-in
    // throttle of the account; the store refuses the decision without one when the
    // organization requires it, in the decision's own transaction.
    let code = body
        .totp_code
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    let stepped_up = match code {
        Some(code) => {
            let (u, c, now) = (user.clone(), code.to_string(), store::now().unix);
            let check = async {
                let ok = state
                    .blocking(move |s| s.totp_verify(&u, &c, now, crate::auth::totp_code_at))
                    .await?;
                if ok {
                    Ok(true)
                } else {
                    Err(ApiError::Coded {
                        status: StatusCode::FORBIDDEN,
                        code: "step_up_failed",
                        message:
                            "the TOTP code is wrong, expired or already used (or 2FA is not on)"
                                .into(),
                    })
                }
            };
            crate::auth::throttled(&state, &m.principal.throttle_subject(), addr, check).await?
        }
        None => false,
    };
    let comment = body.comment;
    // In a task of its own: a client that hangs up after the writer committed must not cancel
    // the wake-up of the executor (and of any agent waiting with `Prefer: wait`), which would
    // leave an approved hold to the executor's periodic sweep.
    let (committer, events) = (state.committer.clone(), state.events.clone());
    let decided = tokio::spawn(async move {
        let i = committer
            .decide_hold(org, id, user, verdict, comment, stepped_up)
            .await?;
        events.publish_status(&i.id, i.status);
        Ok::<_, store::StoreError>(i)
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "the decision task failed");
        store::StoreError::Db("the decision task failed".into())
    })??;
    Ok(Json(IntentView::from(&decided)))
}

#[utoipa::path(post, path = "/api/v1/intents/{id}/approve", tag = "intents", params(("id" = String, Path)), request_body = DecideBody, responses((status = 200, body = IntentView),
        (status = 400, description = "`idempotency_key_required`", body = crate::error::ErrorBody),
        (status = 403, description = "`step_up_required`, `step_up_failed`, `joined_after_hold`, or the role may not", body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody),
        (status = 409, description = "`organization_frozen`, `agent_frozen`, `agent_revoked`, or not pending / expired / already decided", body = crate::error::ErrorBody),
        (status = 429, description = "step-up codes throttled", body = crate::error::ErrorBody)))]
async fn approve_intent(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    m: Member,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<DecideBody>,
) -> ApiResult<Json<IntentView>> {
    decide(state, addr, m, id, b, HumanVerdict::Approve).await
}

#[utoipa::path(post, path = "/api/v1/intents/{id}/deny", tag = "intents", params(("id" = String, Path)), request_body = DecideBody, responses((status = 200, body = IntentView),
        (status = 400, description = "`idempotency_key_required`", body = crate::error::ErrorBody),
        (status = 403, description = "`step_up_required`, `step_up_failed`, `joined_after_hold`, or the role may not", body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody),
        (status = 409, description = "`organization_frozen`, `agent_frozen`, `agent_revoked`, or not pending / expired / already decided", body = crate::error::ErrorBody),
        (status = 429, description = "step-up codes throttled", body = crate::error::ErrorBody)))]
async fn deny_intent(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    m: Member,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<DecideBody>,
) -> ApiResult<Json<IntentView>> {
    decide(state, addr, m, id, b, HumanVerdict::Deny).await
}

// ---- audit ------------------------------------------------------------------------------------

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery), responses((status = 200, body = AuditList)))]
async fn list_audit(
    State(state): State<AppState>,
    m: Member,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<AuditList>> {
    m.require(Perm::Read)?;
    let limit = q.limit.unwrap_or(PAGE_DEFAULT);
    if limit == 0 || limit > PAGE_MAX {
        return Err(invalid("limit", format!("1..={PAGE_MAX}")));
    }
    let org = m.org.clone();
    let events = state
        .blocking(move |s| s.audit_page(&org, q.after.unwrap_or(0), limit))
        .await?;
    Ok(Json(AuditList::new(events)))
}

#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", responses((status = 200, body = AuditVerifyView)))]
async fn verify_audit(
    State(state): State<AppState>,
    m: Member,
) -> ApiResult<Json<AuditVerifyView>> {
    m.require(Perm::Read)?;
    let org = m.org.clone();
    let report = state.blocking(move |s| s.audit_verify(&org)).await?;
    Ok(Json(report.into()))
}

#[utoipa::path(get, path = "/api/v1/audit/export", tag = "audit", responses((status = 200, description = "JSON Lines", content_type = "application/x-ndjson", body = String)))]
async fn export_audit(State(state): State<AppState>, m: Member) -> ApiResult<Response> {
    m.require(Perm::Read)?;
    let org = m.org.clone();
    let body = state
        .blocking(move |s| {
            let mut out = Vec::new();
            s.audit_export(&org, |line| {
                out.extend_from_slice(line);
                out.push(b'\n');
                Ok(())
            })?;
            Ok(out)
        })
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}
