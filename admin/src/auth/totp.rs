//! TOTP second factor (RFC 6238: SHA-1, 6 digits, 30 s, ±1 step) and recovery codes. The code
//! arithmetic is totp-rs; the store keeps the sealed secret, the last accepted step (replay
//! refusal) and the recovery code digests.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use totp_rs::{Algorithm, TOTP};

use super::{ClientAddr, Principal};
use crate::error::ErrorBody;
use crate::extract::JsonBody;
use crate::{ApiError, AppState};

/// Issuer shown by authenticator apps.
const ISSUER: &str = "Payment Guard";
/// Secret length: 160 bits, RFC 4226's recommendation for HMAC-SHA-1.
const SECRET_BYTES: usize = 20;

fn totp(secret: Vec<u8>, account: String) -> TOTP {
    // Unchecked: the secret length is ours (SECRET_BYTES ≥ 128 bits), and the account name is
    // URL-encoded into the label by `get_url`.
    TOTP::new_unchecked(
        Algorithm::SHA1,
        store::TOTP_DIGITS,
        store::TOTP_SKEW_STEPS as u8,
        store::TOTP_STEP_SECS,
        secret,
        Some(ISSUER.to_string()),
        account,
    )
}

/// RFC 6238 code of `secret` at time step `step` ([`store::TotpCodeFn`]).
pub fn code_at(secret: &[u8], step: u64) -> String {
    totp(secret.to_vec(), String::new()).generate(step * store::TOTP_STEP_SECS)
}

/// A new pending secret.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct TotpSetup {
    /// Base32 (RFC 4648, no padding), for typing into an authenticator.
    secret: String,
    /// `otpauth://totp/…` for a QR code.
    otpauth_uri: String,
}

/// Start enrolling: a new secret, not active until confirmed with a code from it.
/// `POST /api/v1/me/totp/setup`: enrolling asks for the password again.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TotpSetupRequest {
    /// The account's current password.
    password: String,
}

#[utoipa::path(post, path = "/api/v1/me/totp/setup", tag = "auth", request_body = TotpSetupRequest,
    responses((status = 200, body = TotpSetup), (status = 401, body = ErrorBody),
        (status = 422, description = "wrong password", body = ErrorBody),
        (status = 429, body = ErrorBody),
        (status = 409, description = "2FA is already on", body = ErrorBody)))]
pub(super) async fn setup(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    p: Principal,
    JsonBody(b): JsonBody<TotpSetupRequest>,
) -> Result<Json<TotpSetup>, ApiError> {
    p.session_hash()?;
    let mut secret = vec![0u8; SECRET_BYTES];
    getrandom::fill(&mut secret).map_err(|_| ApiError::Internal)?;
    let (user, stored) = (p.user.clone(), secret.clone());
    let begin = state.blocking(move |s| s.totp_begin_setup(&user, &b.password, &stored));
    super::throttled(&state, &p.throttle_subject(), addr, begin).await?;
    let t = totp(secret, p.email.clone());
    Ok(Json(TotpSetup {
        secret: t.get_secret_base32(),
        otpauth_uri: t.get_url(),
    }))
}

/// `POST /api/v1/me/totp/confirm`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TotpConfirm {
    /// Current 6-digit code from the new secret.
    code: String,
}

/// Recovery codes, shown once.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct RecoveryCodes {
    /// 10 single-use codes (`xxxxx-xxxxx`); only their digests are stored.
    recovery_codes: Vec<String>,
}

/// Activate 2FA; returns 10 recovery codes, shown once.
#[utoipa::path(post, path = "/api/v1/me/totp/confirm", tag = "auth", request_body = TotpConfirm,
    responses((status = 200, body = RecoveryCodes), (status = 401, body = ErrorBody),
        (status = 409, description = "no setup started", body = ErrorBody),
        (status = 422, description = "wrong code", body = ErrorBody)))]
pub(super) async fn confirm(
    State(state): State<AppState>,
    p: Principal,
    JsonBody(b): JsonBody<TotpConfirm>,
) -> Result<Json<RecoveryCodes>, ApiError> {
    p.session_hash()?;
    let user = p.user.clone();
    let now = store::now().unix;
    let codes = state
        .blocking(move |s| s.totp_confirm(&user, b.code.trim(), now, code_at))
        .await?;
    tracing::info!(user = %p.user, "2FA enabled");
    Ok(Json(RecoveryCodes {
        recovery_codes: codes,
    }))
}

/// `POST /api/v1/me/totp/disable`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TotpDisable {
    /// The account password.
    password: String,
    /// A current TOTP code, or an unused recovery code.
    code: String,
}

/// Whether 2FA is on.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct TotpState {
    /// Whether 2FA is on.
    totp_enabled: bool,
}

/// Turn 2FA off (password and a code).
#[utoipa::path(post, path = "/api/v1/me/totp/disable", tag = "auth", request_body = TotpDisable,
    responses((status = 200, body = TotpState), (status = 401, body = ErrorBody),
        (status = 409, description = "2FA is not on", body = ErrorBody),
        (status = 422, description = "wrong password or code", body = ErrorBody)))]
pub(super) async fn disable(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    p: Principal,
    JsonBody(b): JsonBody<TotpDisable>,
) -> Result<Json<TotpState>, ApiError> {
    p.session_hash()?;
    let user = p.user.clone();
    let now = store::now().unix;
    let off =
        state.blocking(move |s| s.totp_disable(&user, &b.password, b.code.trim(), now, code_at));
    super::throttled(&state, &p.throttle_subject(), addr, off).await?;
    tracing::info!(user = %p.user, "2FA disabled; API tokens revoked");
    Ok(Json(TotpState {
        totp_enabled: false,
    }))
}

/// `POST /api/v1/me/recovery-codes`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RegenerateCodes {
    /// The account password.
    password: String,
}

/// A new set of recovery codes; the old set stops working.
#[utoipa::path(post, path = "/api/v1/me/recovery-codes", tag = "auth", request_body = RegenerateCodes,
    responses((status = 200, body = RecoveryCodes), (status = 401, body = ErrorBody),
        (status = 409, description = "2FA is not on", body = ErrorBody),
        (status = 422, description = "wrong password", body = ErrorBody)))]
pub(super) async fn regenerate_recovery_codes(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    p: Principal,
    JsonBody(b): JsonBody<RegenerateCodes>,
) -> Result<Json<RecoveryCodes>, ApiError> {
    p.session_hash()?;
    let user = p.user.clone();
    let regen = state.blocking(move |s| s.regenerate_recovery_codes(&user, &b.password));
    let codes = super::throttled(&state, &p.throttle_subject(), addr, regen).await?;
    Ok(Json(RecoveryCodes {
        recovery_codes: codes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 rows (8 digits there; the last 6 digits are the 6-digit code,
    /// since both are the same truncated value modulo a power of ten).
    #[test]
    fn codes_match_rfc_6238_test_vectors() {
        let secret = b"12345678901234567890";
        for (time, eight) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(code_at(secret, time / 30), eight[2..], "t={time}");
        }
    }

    #[test]
    fn otpauth_uri_names_issuer_and_account() {
        let t = totp(b"12345678901234567890".to_vec(), "a@example.com".into());
        let url = t.get_url();
        assert!(
            url.starts_with("otpauth://totp/Payment%20Guard:a%40example.com?"),
            "{url}"
        );
        assert!(
            url.contains("secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
            "{url}"
        );
        assert!(url.contains("issuer=Payment%20Guard"), "{url}");
    }
}
