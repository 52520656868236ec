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
    AgentId, AgentStatus, CapPatch, CapSpec, HumanVerdict, Intent, IntentId, IntentStatus, OrgId,
    Role,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{ClientAddr, Principal};
use crate::extract::JsonBody;
use crate::rbac::{Member, Perm};
use crate::{ApiError, AppState};

type ApiResult<T = Json<Value>> = Result<T, ApiError>;

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

fn org_json(o: &store::Org) -> Value {
    json!({"id": o.id, "name": o.name, "frozen": o.frozen, "active_policy_version": o.active_policy_version,
        "require_2fa_for_approvals": o.require_2fa_for_approvals, "created_at": o.created_at})
}

fn agent_json(a: &store::Agent) -> Value {
    json!({"id": a.id, "name": a.name, "tags": a.tags, "status": a.status, "created_at": a.created_at})
}

/// The admin view of an intent: everything but the stored bytes, plus the held request as text.
pub fn intent_json(i: &Intent) -> Value {
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

#[utoipa::path(get, path = "/api/v1/organizations", tag = "organizations", responses((status = 200, description = "Organizations the caller belongs to", body = Value)))]
async fn list_orgs(State(state): State<AppState>, p: Principal) -> ApiResult {
    let user = p.user.clone();
    let ms = state.blocking(move |s| s.memberships_of(&user)).await?;
    let data: Vec<Value> = ms
        .iter()
        .filter(|(o, _)| p.may_act_on(&o.id))
        .map(|(o, r)| {
            let mut v = org_json(o);
            v["role"] = json!(r);
            v
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateOrg {
    name: String,
}

#[utoipa::path(post, path = "/api/v1/organizations", tag = "organizations", request_body = CreateOrg, responses((status = 201, body = Value)))]
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
    Ok((StatusCode::CREATED, Json(org_json(&org))).into_response())
}

#[utoipa::path(delete, path = "/api/v1/organizations/{id}", tag = "organizations", params(("id" = String, Path)), responses((status = 200, body = Value)))]
async fn delete_org(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult {
    let org = parse_org(&id)?;
    if !crate::rbac::allows(member_of(&state, &p, &org).await?, Perm::Owner) {
        return Err(ApiError::Forbidden(
            "only an owner may delete the organization".into(),
        ));
    }
    let actor = store::Actor::User(p.user.clone());
    let o = org.clone();
    state.blocking(move |s| s.delete_org(&o, &actor)).await?;
    Ok(Json(json!({"id": org, "deleted": true})))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateOrg {
    name: Option<String>,
    require_2fa_for_approvals: Option<bool>,
}

#[utoipa::path(patch, path = "/api/v1/organizations/{id}", tag = "organizations", params(("id" = String, Path)), request_body = UpdateOrg, responses((status = 200, body = Value)))]
async fn update_org(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<UpdateOrg>,
) -> ApiResult {
    let org = parse_org(&id)?;
    let role = member_of(&state, &p, &org).await?;
    if !crate::rbac::allows(role, Perm::ManageConfig) {
        return Err(ApiError::Forbidden("owners and admins only".into()));
    }
    let actor = store::Actor::User(p.user.clone());
    let o = state
        .blocking(move |s| s.update_org(&org, b.name, b.require_2fa_for_approvals, &actor))
        .await?;
    Ok(Json(org_json(&o)))
}

async fn set_frozen(state: AppState, p: Principal, id: String, frozen: bool) -> ApiResult {
    let org = parse_org(&id)?;
    let role = member_of(&state, &p, &org).await?;
    if !crate::rbac::allows(role, Perm::ManageAgents) {
        return Err(ApiError::Forbidden("owners and admins only".into()));
    }
    let actor = store::Actor::User(p.user.clone());
    let o = state
        .blocking(move |s| s.set_org_frozen(&org, frozen, &actor))
        .await?;
    Ok(Json(org_json(&o)))
}

#[utoipa::path(post, path = "/api/v1/organizations/{id}/freeze", tag = "organizations", params(("id" = String, Path)), responses((status = 200, body = Value)))]
async fn freeze_org(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult {
    set_frozen(state, p, id, true).await
}

#[utoipa::path(post, path = "/api/v1/organizations/{id}/unfreeze", tag = "organizations", params(("id" = String, Path)), responses((status = 200, body = Value)))]
async fn unfreeze_org(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult {
    set_frozen(state, p, id, false).await
}

// ---- members ----------------------------------------------------------------------------------

#[utoipa::path(get, path = "/api/v1/members", tag = "members", responses((status = 200, body = Value)))]
async fn list_members(State(state): State<AppState>, m: Member) -> ApiResult {
    m.require(Perm::Read)?;
    let org = m.org.clone();
    let data = state.blocking(move |s| s.list_members(&org)).await?;
    Ok(Json(json!({"object": "list", "data": data})))
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
    responses((status = 201, description = "the invitation and its token (shown once)", body = Value),
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
    let mut v = json!(inv);
    v["object"] = json!("invitation");
    v["token"] = json!(token);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

#[utoipa::path(get, path = "/api/v1/invitations", tag = "members", responses((status = 200, body = Value), (status = 403, body = crate::error::ErrorBody)))]
async fn list_invitations(State(state): State<AppState>, m: Member) -> ApiResult {
    m.require(Perm::ManageMembers)?;
    let org = m.org.clone();
    let data = state.blocking(move |s| s.list_invitations(&org)).await?;
    Ok(Json(json!({"object": "list", "data": data})))
}

#[utoipa::path(delete, path = "/api/v1/invitations/{id}", tag = "members", params(("id" = String, Path)), responses((status = 200, body = Value), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody), (status = 409, description = "not pending", body = crate::error::ErrorBody)))]
async fn revoke_invitation(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
) -> ApiResult {
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
    Ok(Json(json!(v)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateMember {
    role: String,
}

#[utoipa::path(patch, path = "/api/v1/members/{user_id}", tag = "members", params(("user_id" = String, Path)), request_body = UpdateMember, responses((status = 200, body = Value)))]
async fn update_member(
    State(state): State<AppState>,
    m: Member,
    Path(user_id): Path<String>,
    JsonBody(b): JsonBody<UpdateMember>,
) -> ApiResult {
    m.require(Perm::ManageMembers)?;
    let user = store::UserId::parse(&user_id).ok_or(ApiError::NotFound)?;
    let role = parse_role(&b.role)?;
    let (org, by, actor) = (m.org.clone(), m.role, m.actor());
    let v = state
        .blocking(move |s| s.set_member_role(&org, &user, role, by, &actor))
        .await?;
    Ok(Json(json!(v)))
}

#[utoipa::path(delete, path = "/api/v1/members/{user_id}", tag = "members", params(("user_id" = String, Path)), responses((status = 200, body = Value)))]
async fn remove_member(
    State(state): State<AppState>,
    m: Member,
    Path(user_id): Path<String>,
) -> ApiResult {
    m.require(Perm::ManageMembers)?;
    let user = store::UserId::parse(&user_id).ok_or(ApiError::NotFound)?;
    let (org, by, actor) = (m.org.clone(), m.role, m.actor());
    let u = user.clone();
    state
        .blocking(move |s| s.remove_member(&org, &u, by, &actor))
        .await?;
    Ok(Json(json!({"user_id": user, "removed": true})))
}

// ---- agents -----------------------------------------------------------------------------------

#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", responses((status = 200, body = Value)))]
async fn list_agents(State(state): State<AppState>, m: Member) -> ApiResult {
    m.require(Perm::Read)?;
    let org = m.org.clone();
    let agents = state.blocking(move |s| s.list_agents(&org)).await?;
    Ok(Json(
        json!({"object": "list", "data": agents.iter().map(agent_json).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateAgent {
    name: String,
    #[serde(default)]
    tags: Vec<String>,
}

#[utoipa::path(post, path = "/api/v1/agents", tag = "agents", request_body = CreateAgent, responses((status = 201, description = "The token is shown once", body = Value)))]
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
    let mut v = agent_json(&agent);
    v["token"] = json!(token);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

#[utoipa::path(get, path = "/api/v1/agents/{id}", tag = "agents", params(("id" = String, Path)), responses((status = 200, body = Value)))]
async fn get_agent(State(state): State<AppState>, m: Member, Path(id): Path<String>) -> ApiResult {
    m.require(Perm::Read)?;
    let (org, id) = (m.org.clone(), parse_agent(&id)?);
    let a = state
        .blocking(move |s| s.agent(&org, &id))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(agent_json(&a)))
}

#[utoipa::path(post, path = "/api/v1/agents/{id}/rotate", tag = "agents", params(("id" = String, Path)), responses((status = 200, description = "The new token is shown once", body = Value)))]
async fn rotate_agent(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
) -> ApiResult {
    m.require(Perm::ManageAgents)?;
    let (org, id, actor) = (m.org.clone(), parse_agent(&id)?, m.actor());
    let (a, token) = state
        .blocking(move |s| s.rotate_agent_token(&org, &id, &actor))
        .await?;
    let mut v = agent_json(&a);
    v["token"] = json!(token);
    Ok(Json(v))
}

async fn set_agent(state: AppState, m: Member, id: String, status: AgentStatus) -> ApiResult {
    m.require(Perm::ManageAgents)?;
    let (org, id, actor) = (m.org.clone(), parse_agent(&id)?, m.actor());
    let a = state
        .blocking(move |s| s.set_agent_status(&org, &id, status, &actor))
        .await?;
    Ok(Json(agent_json(&a)))
}

#[utoipa::path(post, path = "/api/v1/agents/{id}/freeze", tag = "agents", params(("id" = String, Path)), responses((status = 200, body = Value)))]
async fn freeze_agent(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
) -> ApiResult {
    set_agent(state, m, id, AgentStatus::Frozen).await
}

#[utoipa::path(post, path = "/api/v1/agents/{id}/unfreeze", tag = "agents", params(("id" = String, Path)), responses((status = 200, body = Value)))]
async fn unfreeze_agent(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
) -> ApiResult {
    set_agent(state, m, id, AgentStatus::Active).await
}

#[utoipa::path(post, path = "/api/v1/agents/{id}/revoke", tag = "agents", params(("id" = String, Path)), responses((status = 200, body = Value)))]
async fn revoke_agent(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
) -> ApiResult {
    set_agent(state, m, id, AgentStatus::Revoked).await
}

// ---- policies ---------------------------------------------------------------------------------

#[utoipa::path(get, path = "/api/v1/policies", tag = "policies", responses((status = 200, body = Value)))]
async fn get_policies(State(state): State<AppState>, m: Member) -> ApiResult {
    m.require(Perm::Read)?;
    let org = m.org.clone();
    let pv = state.blocking(move |s| s.active_policy(&org)).await?;
    Ok(Json(json!(pv)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PutPolicies {
    text: String,
}

#[utoipa::path(put, path = "/api/v1/policies", tag = "policies", request_body = PutPolicies, responses((status = 200, body = Value), (status = 422, description = "Diagnostics with line and column", body = crate::error::ErrorBody)))]
async fn put_policies(
    State(state): State<AppState>,
    m: Member,
    JsonBody(b): JsonBody<PutPolicies>,
) -> ApiResult {
    m.require(Perm::ManageConfig)?;
    let (org, actor) = (m.org.clone(), m.actor());
    let version = state
        .blocking(move |s| s.set_policy(&org, &b.text, &actor))
        .await?;
    Ok(Json(json!({"version": version, "active": true})))
}

#[utoipa::path(get, path = "/api/v1/policies/versions", tag = "policies", responses((status = 200, body = Value)))]
async fn policy_versions(State(state): State<AppState>, m: Member) -> ApiResult {
    m.require(Perm::Read)?;
    let org = m.org.clone();
    let o2 = org.clone();
    let active = state
        .blocking(move |s| s.org(&o2))
        .await?
        .active_policy_version;
    let versions = state.blocking(move |s| s.policy_versions(&org)).await?;
    let data: Vec<Value> = versions
        .iter()
        .map(|v| json!({"version": v.version, "author": v.author, "created_at": v.created_at, "active": v.version == active}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

#[utoipa::path(post, path = "/api/v1/policies/versions/{n}/activate", tag = "policies", params(("n" = u64, Path)), responses((status = 200, body = Value)))]
async fn activate_policy(
    State(state): State<AppState>,
    m: Member,
    Path(n): Path<String>,
) -> ApiResult {
    m.require(Perm::ManageConfig)?;
    let n: u64 = n.parse().map_err(|_| ApiError::NotFound)?;
    let (org, actor) = (m.org.clone(), m.actor());
    let v = state
        .blocking(move |s| s.activate_policy_version(&org, n, &actor))
        .await?;
    Ok(Json(json!({"version": v, "active": true})))
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

#[utoipa::path(post, path = "/api/v1/policies/simulate", tag = "policies", request_body = Simulate, responses((status = 200, body = Value)))]
async fn simulate(
    State(state): State<AppState>,
    m: Member,
    JsonBody(b): JsonBody<Simulate>,
) -> ApiResult {
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
    Ok(Json(json!({"facts": facts, "verdict": verdict})))
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

#[utoipa::path(get, path = "/api/v1/caps", tag = "caps", responses((status = 200, body = Value)))]
async fn list_caps(State(state): State<AppState>, m: Member) -> ApiResult {
    m.require(Perm::Read)?;
    let org = m.org.clone();
    let caps = state.blocking(move |s| s.list_caps(&org)).await?;
    Ok(Json(json!({"object": "list", "data": caps})))
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

#[utoipa::path(post, path = "/api/v1/caps", tag = "caps", request_body = AddCap, responses((status = 201, body = Value)))]
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
    Ok((StatusCode::CREATED, Json(json!(cap))).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PatchCap {
    limit: Option<i64>,
    on_exceed: Option<String>,
}

#[utoipa::path(patch, path = "/api/v1/caps/{id}", tag = "caps", params(("id" = String, Path)), request_body = PatchCap, responses((status = 200, body = Value)))]
async fn update_cap(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<PatchCap>,
) -> ApiResult {
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
    Ok(Json(json!(cap)))
}

#[utoipa::path(delete, path = "/api/v1/caps/{id}", tag = "caps", params(("id" = String, Path)), responses((status = 200, body = Value)))]
async fn delete_cap(State(state): State<AppState>, m: Member, Path(id): Path<String>) -> ApiResult {
    m.require(Perm::ManageConfig)?;
    let cap_id = store::CapId::parse(&id).ok_or(ApiError::NotFound)?;
    let (org, actor) = (m.org.clone(), m.actor());
    let c2 = cap_id.clone();
    state
        .blocking(move |s| s.delete_cap(&org, c2.as_str(), &actor))
        .await?;
    Ok(Json(json!({"id": cap_id, "deleted": true})))
}

// ---- rail -------------------------------------------------------------------------------------

#[utoipa::path(get, path = "/api/v1/rail", tag = "rail", responses((status = 200, description = "Mode and last 4 characters; never the key", body = Value)))]
async fn get_rail(State(state): State<AppState>, m: Member) -> ApiResult {
    m.require(Perm::ManageConfig)?;
    let org = m.org.clone();
    let info = state.blocking(move |s| s.rail_info(&org)).await?;
    Ok(Json(json!({"configured": info.is_some(), "rail": info})))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PutRail {
    stripe_secret_key: String,
}

#[utoipa::path(put, path = "/api/v1/rail", tag = "rail", request_body = PutRail, responses((status = 200, body = Value)))]
async fn put_rail(
    State(state): State<AppState>,
    m: Member,
    JsonBody(b): JsonBody<PutRail>,
) -> ApiResult {
    m.require(Perm::ManageConfig)?;
    let (org, actor) = (m.org.clone(), m.actor());
    let info = state
        .blocking(move |s| s.set_rail_key(&org, &b.stripe_secret_key, &actor))
        .await?;
    Ok(Json(json!({"configured": true, "rail": info})))
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

#[utoipa::path(get, path = "/api/v1/intents", tag = "intents", params(IntentQuery), responses((status = 200, body = Value)))]
async fn list_intents(
    State(state): State<AppState>,
    m: Member,
    Query(q): Query<IntentQuery>,
) -> ApiResult {
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
    let data: Vec<Value> = page.iter().take(limit).map(intent_json).collect();
    Ok(Json(
        json!({"object": "list", "data": data, "has_more": has_more}),
    ))
}

#[utoipa::path(get, path = "/api/v1/intents/{id}", tag = "intents", params(("id" = String, Path)), responses((status = 200, body = Value)))]
async fn get_intent(State(state): State<AppState>, m: Member, Path(id): Path<String>) -> ApiResult {
    m.require(Perm::Read)?;
    let (org, id) = (m.org.clone(), parse_intent(&id)?);
    let (o2, i) = (
        org.clone(),
        state.blocking(move |s| s.intent(&org, &id)).await?,
    );
    let i = i.ok_or(ApiError::NotFound)?;
    let i2 = i.clone();
    let context = state.blocking(move |s| s.hold_context(&o2, &i2)).await?;
    let mut v = intent_json(&i);
    // Who created the requesting agent, and who invited each human who decided.
    v["context"] = context;
    Ok(Json(v))
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
) -> ApiResult {
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
    let i = state
        .committer
        .decide_hold(org, id, user, verdict, comment, stepped_up)
        .await?;
    // Wake the executor and any agent waiting with `Prefer: wait`.
    state.events.publish(&i.id);
    Ok(Json(intent_json(&i)))
}

#[utoipa::path(post, path = "/api/v1/intents/{id}/approve", tag = "intents", params(("id" = String, Path)), request_body = DecideBody, responses((status = 200, body = Value),
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
) -> ApiResult {
    decide(state, addr, m, id, b, HumanVerdict::Approve).await
}

#[utoipa::path(post, path = "/api/v1/intents/{id}/deny", tag = "intents", params(("id" = String, Path)), request_body = DecideBody, responses((status = 200, body = Value),
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
) -> ApiResult {
    decide(state, addr, m, id, b, HumanVerdict::Deny).await
}

// ---- audit ------------------------------------------------------------------------------------

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery), responses((status = 200, body = Value)))]
async fn list_audit(
    State(state): State<AppState>,
    m: Member,
    Query(q): Query<AuditQuery>,
) -> ApiResult {
    m.require(Perm::Read)?;
    let limit = q.limit.unwrap_or(PAGE_DEFAULT);
    if limit == 0 || limit > PAGE_MAX {
        return Err(invalid("limit", format!("1..={PAGE_MAX}")));
    }
    let org = m.org.clone();
    let events = state
        .blocking(move |s| s.audit_page(&org, q.after.unwrap_or(0), limit))
        .await?;
    Ok(Json(json!({"object": "list", "data": events})))
}

#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", responses((status = 200, body = Value)))]
async fn verify_audit(State(state): State<AppState>, m: Member) -> ApiResult {
    m.require(Perm::Read)?;
    let org = m.org.clone();
    let report = state.blocking(move |s| s.audit_verify(&org)).await?;
    Ok(Json(json!(report)))
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
