//! Personal API tokens (ADMIN_API.md): `Authorization: Bearer pg_user_…` for automation. A token
//! carries its user's role in the organization it was created in; it is shown once and stored
//! as a SHA-256 digest. Approvals refuse it (`rbac::Member::require_session`).

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
    /// `org_…` it acts in (the session's active organization).
    organization_id: Option<String>,
    /// `pg_user_<id>_<secret>`: store it now, it cannot be shown again.
    token: String,
    /// RFC 3339.
    created_at: String,
}

/// Create a personal API token acting in the active organization.
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
    let (user, org) = (p.user.clone(), p.active_org.clone());
    let (t, token) = state
        .blocking(move |s| s.create_user_token(&user, org.as_ref(), &b.name))
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
