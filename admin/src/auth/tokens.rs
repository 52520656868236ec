//! Personal API tokens (ADMIN_API.md): `Authorization: Bearer pg_user_…` for automation. A token
//! is bound to the organization it was created in (the session's active organization) and acts
//! nowhere else; it carries its user's role there while they are a member. It is shown once and
//! stored as a SHA-256 digest; `GET /me/tokens` lists and `DELETE /me/tokens/{id}` revokes; a
//! password change or a 2FA reset revokes them all. Approvals refuse it
//! (`rbac::Member::require_session`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::Principal;
use crate::error::ErrorBody;
use crate::extract::JsonBody;
use crate::{ApiError, AppState};

/// `POST /api/v1/me/tokens`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateToken {
    /// A label (1..=200 bytes), e.g. the script that uses it.
    name: String,
}

/// A new token: the only time its secret is shown.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct CreatedToken {
    /// Token id (the lookup part of the token).
    id: String,
    /// Label.
    name: String,
    /// `org_…` it is bound to (the session's active organization).
    organization_id: Option<String>,
    /// `pg_user_<id>_<secret>`: store it now, it cannot be shown again.
    token: String,
    /// RFC 3339.
    created_at: String,
}

/// Create a personal API token bound to the active organization.
#[utoipa::path(post, path = "/api/v1/me/tokens", tag = "auth", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 401, body = ErrorBody),
        (status = 403, description = "needs a signed-in session", body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub(super) async fn create_token(
    State(state): State<AppState>,
    p: Principal,
    JsonBody(b): JsonBody<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    p.session_hash()?;
    let user = p.user.clone();
    let org = p.active_org.clone().ok_or_else(|| {
        ApiError::Forbidden(
            "a token is bound to an organization: choose an active one first".into(),
        )
    })?;
    let (t, token) = state
        .blocking(move |s| s.create_user_token(&user, &org, &b.name))
        .await?;
    tracing::info!(user = %p.user, token_id = %t.id, "personal API token created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            id: t.id,
            name: t.name,
            organization_id: t.org.map(|o| o.to_string()),
            token,
            created_at: t.created_at,
        }),
    ))
}

/// A token as listed: never its secret.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct TokenView {
    /// Token id (the lookup part of the token).
    id: String,
    /// Label.
    name: String,
    /// `org_…` it is bound to.
    organization_id: Option<String>,
    /// RFC 3339.
    created_at: String,
}

/// The signed-in user's tokens.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct TokenList {
    /// Always `list`.
    object: &'static str,
    /// Tokens, oldest first.
    data: Vec<TokenView>,
}

/// List the caller's personal API tokens (any organization; ids and names, never secrets).
#[utoipa::path(get, path = "/api/v1/me/tokens", tag = "auth",
    responses((status = 200, body = TokenList), (status = 401, body = ErrorBody),
        (status = 403, description = "needs a signed-in session", body = ErrorBody)))]
pub(super) async fn list_tokens(
    State(state): State<AppState>,
    p: Principal,
) -> Result<Json<TokenList>, ApiError> {
    p.session_hash()?;
    let user = p.user.clone();
    let mut tokens = state.blocking(move |s| s.list_user_tokens(&user)).await?;
    tokens.sort_by(|a, b| a.created_at.cmp(&b.created_at));
    Ok(Json(TokenList {
        object: "list",
        data: tokens
            .into_iter()
            .map(|t| TokenView {
                id: t.id,
                name: t.name,
                organization_id: t.org.map(|o| o.to_string()),
                created_at: t.created_at,
            })
            .collect(),
    }))
}

/// A revoked token.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct RevokedToken {
    /// Token id.
    id: String,
    /// Always true.
    revoked: bool,
}

/// Revoke one of the caller's personal API tokens; it stops working at once.
#[utoipa::path(delete, path = "/api/v1/me/tokens/{id}", tag = "auth", params(("id" = String, Path)),
    responses((status = 200, body = RevokedToken), (status = 401, body = ErrorBody),
        (status = 403, description = "needs a signed-in session", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(super) async fn revoke_token(
    State(state): State<AppState>,
    p: Principal,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<RevokedToken>, ApiError> {
    p.session_hash()?;
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::NotFound);
    }
    let (user, tid) = (p.user.clone(), id.clone());
    state
        .blocking(move |s| s.revoke_user_token(&user, &tid))
        .await?;
    tracing::info!(user = %p.user, token_id = %id, "personal API token revoked");
    Ok(Json(RevokedToken { id, revoked: true }))
}
