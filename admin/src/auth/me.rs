//! The signed-in user's own account: who am I, change my password, switch organization.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use store::{OrgId, Role, Store, User};

use super::{AuthVia, ClientAddr, Principal};
use crate::dto::{AuditList, AuditVerifyView};
use crate::error::ErrorBody;
use crate::extract::JsonBody;
use crate::{ApiError, AppState};

/// The user.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct UserView {
    /// `usr_…`
    id: String,
    /// Lower-cased email.
    email: String,
    /// RFC 3339.
    created_at: String,
}

/// An organization, by id and name.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct OrgRef {
    /// `org_…`
    id: String,
    /// Display name.
    name: String,
}

/// A membership.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct MembershipView {
    /// `org_…`
    organization_id: String,
    /// Its name.
    organization_name: String,
    /// `owner`, `admin`, `approver` or `viewer`.
    role: String,
}

/// `GET /api/v1/me`, also the answer to a sign-in.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct MeResponse {
    /// The user.
    user: UserView,
    /// Every organization the user belongs to, with the role there.
    memberships: Vec<MembershipView>,
    /// The organization requests act on.
    active_organization: Option<OrgRef>,
    /// Whether TOTP 2FA is on.
    totp_enabled: bool,
    /// `session` or `api_token`.
    authenticated_via: String,
}

pub(super) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Owner => "owner",
        Role::Admin => "admin",
        Role::Approver => "approver",
        Role::Viewer => "viewer",
    }
}

/// Build the view of `user` acting in `active` (blocking: store reads).
pub(super) fn view(
    s: &Store,
    user: &User,
    active: Option<&OrgId>,
    via: &AuthVia,
) -> store::Result<MeResponse> {
    // An API token is bound to one organization: it does not see the others.
    let memberships: Vec<_> = s
        .memberships_of(&user.id)?
        .into_iter()
        .filter(|(o, _)| match via {
            AuthVia::Session(_) => true,
            AuthVia::ApiToken(_) => active == Some(&o.id),
        })
        .collect();
    let active_organization = active.and_then(|id| {
        memberships
            .iter()
            .find(|(o, _)| &o.id == id)
            .map(|(o, _)| OrgRef {
                id: o.id.to_string(),
                name: o.name.clone(),
            })
    });
    Ok(MeResponse {
        user: UserView {
            id: user.id.to_string(),
            email: user.email.clone(),
            created_at: user.created_at.clone(),
        },
        memberships: memberships
            .iter()
            .map(|(o, r)| MembershipView {
                organization_id: o.id.to_string(),
                organization_name: o.name.clone(),
                role: role_name(*r).to_string(),
            })
            .collect(),
        active_organization,
        totp_enabled: s.totp_enabled(&user.id)?,
        authenticated_via: match via {
            AuthVia::Session(_) => "session".into(),
            AuthVia::ApiToken(_) => "api_token".into(),
        },
    })
}

/// The caller's view, read fresh.
async fn current_view(state: &AppState, p: Principal) -> Result<Json<MeResponse>, ApiError> {
    let v = state
        .blocking(move |s| {
            let user = s
                .user(&p.user)?
                .ok_or(store::StoreError::NotFound("user"))?;
            view(s, &user, p.active_org.as_ref(), &p.via)
        })
        .await?;
    Ok(Json(v))
}

/// Who is signed in.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth",
    responses((status = 200, body = MeResponse), (status = 401, body = ErrorBody)))]
pub(super) async fn me(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<MeResponse>, ApiError> {
    current_view(&state, p).await
}

/// `POST /api/v1/me/password`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ChangePassword {
    /// The password now.
    current_password: String,
    /// At least 10 characters with a letter and a digit, at most 72 bytes.
    new_password: String,
}

/// Result of a password change.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct PasswordChanged {
    /// Always true.
    changed: bool,
}

/// Change the password; every other session of the user ends.
#[utoipa::path(post, path = "/api/v1/me/password", tag = "auth", request_body = ChangePassword,
    responses((status = 200, body = PasswordChanged), (status = 401, body = ErrorBody),
        (status = 422, description = "wrong current password or the new one breaks the rules", body = ErrorBody)))]
pub(super) async fn change_password(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    p: Principal,
    JsonBody(b): JsonBody<ChangePassword>,
) -> Result<Json<PasswordChanged>, ApiError> {
    let keep = p.session_hash()?.to_string();
    let user = p.user.clone();
    let change = state.blocking(move |s| {
        s.change_password(&user, &b.current_password, &b.new_password, Some(&keep))
    });
    super::throttled(&state, &p.throttle_subject(), addr, change).await?;
    tracing::info!(user = %p.user, "password changed; other sessions and API tokens ended");
    Ok(Json(PasswordChanged { changed: true }))
}

/// `POST /api/v1/me/active-organization`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SetActiveOrganization {
    /// `org_…`, one the caller belongs to.
    organization_id: String,
}

/// Switch the session's organization (404 unless the caller is a member).
#[utoipa::path(post, path = "/api/v1/me/active-organization", tag = "auth",
    request_body = SetActiveOrganization,
    responses((status = 200, body = MeResponse), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(super) async fn set_active_organization(
    State(state): State<AppState>,
    mut p: Principal,
    JsonBody(b): JsonBody<SetActiveOrganization>,
) -> Result<Json<MeResponse>, ApiError> {
    let hash = p.session_hash()?.to_string();
    let org = OrgId::parse(&b.organization_id).ok_or(ApiError::NotFound)?;
    let o = org.clone();
    state
        .blocking(move |s| s.set_session_org(&hash, &o))
        .await?;
    p.active_org = Some(org);
    current_view(&state, p).await
}

/// `GET /api/v1/me/audit` paging.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    /// Events after this seq.
    after: Option<u64>,
    /// Page size (1..=500, default 50).
    limit: Option<usize>,
}

/// The signed-in user's own trail: their credential events (password, 2FA, recovery codes,
/// invitations accepted), hash-chained like an organization's and never written into one.
#[utoipa::path(get, path = "/api/v1/me/audit", tag = "auth", params(AuditQuery),
    responses((status = 200, body = AuditList), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub(super) async fn my_audit(
    State(state): State<AppState>,
    p: Principal,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> Result<Json<AuditList>, ApiError> {
    // A person's own trail is theirs to read signed in, not through an org-bound token.
    p.session_hash()?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 500 {
        return Err(ApiError::Validation {
            message: "limit: 1..=500".into(),
            details: serde_json::json!({"field": "limit"}),
        });
    }
    let user = p.user.clone();
    let data = state
        .blocking(move |s| s.user_audit_page(&user, q.after.unwrap_or(0), limit))
        .await?;
    Ok(Json(AuditList::new(data)))
}

/// Verify the signed-in user's own trail.
#[utoipa::path(get, path = "/api/v1/me/audit/verify", tag = "auth",
    responses((status = 200, body = AuditVerifyView), (status = 401, body = ErrorBody)))]
pub(super) async fn verify_my_audit(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<AuditVerifyView>, ApiError> {
    p.session_hash()?;
    let user = p.user.clone();
    let report = state.blocking(move |s| s.user_audit_verify(&user)).await?;
    Ok(Json(report.into()))
}
