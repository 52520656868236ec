//! Signing in and out. Sign-in, in order: CSRF origin → throttle → password (bcrypt, same work
//! for unknown emails) → second factor when enrolled → a new session and its cookie.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::SET_COOKIE;
use axum::response::IntoResponse;
use axum_extra::extract::cookie::CookieJar;
use serde::{Deserialize, Serialize};
use store::{PASSWORD_MAX_BYTES, SignInFactor, UserId};

use super::me::{MeResponse, view};
use super::session::{ClientAddr, SESSION_COOKIE, cleared_cookie, session_cookie};
use super::{AuthVia, Principal, csrf, totp};
use crate::error::ErrorBody;
use crate::extract::JsonBody;
use crate::{ApiError, AppState};

/// `POST /api/v1/auth/login`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginRequest {
    /// Email (case-insensitive).
    email: String,
    /// Password (at most 72 bytes).
    password: String,
    /// Current 6-digit TOTP code, when 2FA is on.
    #[serde(default)]
    totp_code: Option<String>,
    /// An unused recovery code, instead of a TOTP code.
    #[serde(default)]
    recovery_code: Option<String>,
}

/// Outcome of the second-factor step.
enum SecondFactor {
    Passed(SignInFactor),
    Missing,
    Wrong,
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.map(|c| c.trim().to_string()).filter(|c| !c.is_empty())
}

/// Check the second factor of a user whose password was right (blocking).
fn second_factor(
    s: &store::Store,
    user: &UserId,
    totp_code: Option<String>,
    recovery_code: Option<String>,
    now_unix: i64,
) -> store::Result<SecondFactor> {
    if !s.totp_enabled(user)? {
        return Ok(SecondFactor::Passed(SignInFactor::Password));
    }
    let passed = if let Some(code) = totp_code {
        s.totp_verify(user, &code, now_unix, totp::code_at)?
            .then_some(SignInFactor::Totp)
    } else if let Some(code) = recovery_code {
        s.use_recovery_code(user, &code)?
            .then_some(SignInFactor::RecoveryCode)
    } else {
        return Ok(SecondFactor::Missing);
    };
    Ok(passed.map_or(SecondFactor::Wrong, SecondFactor::Passed))
}

/// End the session the browser held (if any), start a new one in the user's first organization
/// (audited there as `user.signed_in`), and build the answer (blocking).
fn start_session(
    s: &store::Store,
    user: &store::User,
    previous: Option<String>,
    now_unix: i64,
    idle_secs: i64,
    absolute_secs: i64,
    factor: SignInFactor,
) -> store::Result<(String, MeResponse)> {
    if let Some(hash) = previous {
        s.end_session(&hash)?;
    }
    let org = s.first_org_of(&user.id)?.map(|o| o.id);
    let raw = s.create_session(
        &user.id,
        org.as_ref(),
        now_unix,
        idle_secs,
        absolute_secs,
        factor,
    )?;
    let via = AuthVia::Session(store::session_hash(&raw));
    let me = view(s, user, org.as_ref(), &via)?;
    Ok((raw, me))
}

/// Sign in. Unknown email and wrong password get the same answer after the same bcrypt work;
/// failures are throttled per account and per client address.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "signed in; sets the `pg_session` cookie", body = MeResponse),
        (status = 401, description = "`invalid_credentials`, or `second_factor_required` when 2FA is on and the code is missing or wrong", body = ErrorBody),
        (status = 403, description = "`Origin` is not the configured origin", body = ErrorBody),
        (status = 422, description = "password longer than 72 bytes", body = ErrorBody),
        (status = 429, description = "too many failures for this account or address", body = ErrorBody)))]
pub(super) async fn login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<impl IntoResponse, ApiError> {
    csrf::check_origin(&headers, &state.settings)?;
    if req.password.len() > PASSWORD_MAX_BYTES {
        return Err(ApiError::Validation {
            message: format!("passwords are at most {PASSWORD_MAX_BYTES} bytes"),
            details: serde_json::Value::Null,
        });
    }
    let throttle = state.throttle.clone();
    let email = req.email;
    // Counted before bcrypt, atomically with the budget check (throttle.rs).
    if !throttle.begin(&email, addr, Instant::now()) {
        tracing::warn!(client = %addr, "sign-in throttled");
        return Err(ApiError::Throttled);
    }
    let (e, password) = (email.clone(), req.password);
    let Some(user) = state
        .blocking(move |s| s.verify_login(&e, &password))
        .await?
    else {
        tracing::info!(client = %addr, "sign-in refused: invalid credentials");
        return Err(ApiError::InvalidCredentials);
    };
    let (totp_code, recovery_code) = (nonempty(req.totp_code), nonempty(req.recovery_code));
    let (uid, now) = (user.id.clone(), store::now().unix);
    let second = state
        .blocking(move |s| second_factor(s, &uid, totp_code, recovery_code, now))
        .await?;
    let factor = match second {
        SecondFactor::Passed(f) => f,
        SecondFactor::Missing => {
            // The password was right and no code was tried: not a guess.
            throttle.give_back(&email, addr);
            return Err(ApiError::SecondFactor(
                "two-factor authentication is on: send totp_code or recovery_code",
            ));
        }
        SecondFactor::Wrong => {
            tracing::info!(client = %addr, user = %user.id, "sign-in refused: wrong second factor");
            return Err(ApiError::SecondFactor(
                "the code is wrong, expired or already used",
            ));
        }
    };
    throttle.succeeded(&email, addr);
    // A new id at every sign-in; a session id the browser already held ends here, so an id
    // planted before sign-in (session fixation) never becomes an authenticated one.
    let previous = CookieJar::from_headers(&headers)
        .get(SESSION_COOKIE)
        .map(|c| store::session_hash(c.value()));
    let (idle, absolute) = (
        state.settings.session_idle_secs,
        state.settings.session_absolute_secs,
    );
    let uid = user.id.clone();
    let (raw, me) = state
        .blocking(move |s| start_session(s, &user, previous, now, idle, absolute, factor))
        .await?;
    tracing::info!(client = %addr, user = %uid, ?factor, "signed in");
    let cookie = session_cookie(raw, &state.settings);
    Ok(([(SET_COOKIE, cookie)], Json(me)))
}

/// Result of signing out.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct SignedOut {
    /// Always true.
    signed_out: bool,
}

/// Sign out: the session ends server-side and the cookie is cleared.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses((status = 200, body = SignedOut), (status = 401, body = ErrorBody),
        (status = 403, description = "an API token cannot sign out (revoke it)", body = ErrorBody),
        (status = 415, description = "cookie requests that change state must be JSON", body = ErrorBody)))]
pub(super) async fn logout(
    State(state): State<AppState>,
    p: Principal,
) -> Result<impl IntoResponse, ApiError> {
    let hash = p.session_hash()?.to_string();
    state.blocking(move |s| s.end_session(&hash)).await?;
    tracing::info!(user = %p.user, "signed out");
    let cookie = cleared_cookie(&state.settings);
    Ok(([(SET_COOKIE, cookie)], Json(SignedOut { signed_out: true })))
}
