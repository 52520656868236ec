//! Accepting an invitation (ADMIN_API.md "members"): the invitee, not signed in, presents the
//! one-time token the inviter handed them and sets their own password — or, when the email
//! already has an account, proves it with that account's password (and a TOTP code when 2FA is
//! on). No human ever chooses another human's password. Throttled like sign-in, on the
//! invitation's email and the client address.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use store::PASSWORD_MAX_BYTES;

use super::{ClientAddr, csrf, totp};
use crate::dto::AcceptedView;
use crate::error::ErrorBody;
use crate::extract::JsonBody;
use crate::{ApiError, AppState};

/// `POST /api/v1/invitations/accept`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AcceptInvitation {
    /// The `pg_inv_…` token the inviter handed over.
    token: String,
    /// A new account: the password to set (the password rules apply). An existing account:
    /// its current password.
    password: String,
    /// An existing account with 2FA on: a current TOTP code.
    #[serde(default)]
    totp_code: Option<String>,
}

/// Accept an invitation: the membership starts now. Sign in afterwards as usual.
#[utoipa::path(post, path = "/api/v1/invitations/accept", tag = "members", request_body = AcceptInvitation,
    responses((status = 201, description = "joined", body = AcceptedView),
        (status = 401, description = "`invalid_credentials` (an existing account's password is wrong) or `second_factor_required`", body = ErrorBody),
        (status = 403, description = "`Origin` is not the configured origin", body = ErrorBody),
        (status = 404, description = "`invitation_invalid`: unknown, used, revoked or expired", body = ErrorBody),
        (status = 409, description = "already a member", body = ErrorBody),
        (status = 422, description = "the new password breaks the rules", body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub(super) async fn accept(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    JsonBody(b): JsonBody<AcceptInvitation>,
) -> Result<(StatusCode, Json<AcceptedView>), ApiError> {
    csrf::check_origin(&headers, &state.settings)?;
    if b.password.len() > PASSWORD_MAX_BYTES {
        return Err(ApiError::Validation {
            message: format!("passwords are at most {PASSWORD_MAX_BYTES} bytes"),
            details: serde_json::Value::Null,
        });
    }
    let token = b.token.trim().to_string();
    let t2 = token.clone();
    let email = state.blocking(move |s| s.invitation_email(&t2)).await?;
    let (password, code) = (b.password, b.totp_code.map(|c| c.trim().to_string()));
    let now = store::now().unix;
    let accepting = state.blocking(move |s| {
        let check = |s: &store::Store, user: &store::UserId| match &code {
            Some(c) if !c.is_empty() => s.totp_verify(user, c, now, totp::code_at),
            _ => Ok(false),
        };
        s.accept_invitation(&token, &password, &check)
    });
    let accepted = super::throttled(&state, &email, addr, accepting).await?;
    tracing::info!(user = %accepted.user_id, org = %accepted.organization_id, new_account = accepted.new_account, "invitation accepted");
    Ok((StatusCode::CREATED, Json(accepted.into())))
}
