//! Human authentication (ADMIN_API.md "Authentication"): passwords (bcrypt), TOTP 2FA with
//! single-use recovery codes, session cookies, personal API tokens, CSRF rules, throttling.
//! [`Principal`] is the extractor every protected handler takes.
//!
//! The flow, one file per step: [`login`] (throttle → password → second factor → new session),
//! [`session`] (cookie or bearer token → [`Principal`], with [`csrf`] for cookie writes), [`me`]
//! (the signed-in user's own account), [`totp`] (enrollment, recovery codes), [`tokens`].

mod csrf;
mod invitations;
mod login;
mod me;
mod session;
mod throttle;
mod tokens;
mod totp;

use store::{OrgId, UserId};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

pub(crate) use session::ClientAddr;
pub use session::SESSION_COOKIE;
pub use throttle::Throttle;
pub use totp::code_at as totp_code_at;

/// How the caller proved who they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthVia {
    /// A `pg_session` cookie (a signed-in human). Holds the session's storage key (hash).
    Session(String),
    /// A personal API token (`Authorization: Bearer pg_user_…`): automation, never approvals.
    /// Holds the token's id (not its secret).
    ApiToken(String),
}

/// An authenticated human.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The user.
    pub user: UserId,
    /// Their email.
    pub email: String,
    /// Session or API token.
    pub via: AuthVia,
    /// The organization requests act on (None when the user has none).
    pub active_org: Option<OrgId>,
    /// Whether TOTP 2FA is enabled for the user.
    pub totp_enabled: bool,
}

/// The authentication routes (ADMIN_API.md "Authentication"), each described in the OpenAPI
/// document under the `auth` tag.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login::login))
        .routes(routes!(login::logout))
        .routes(routes!(me::me))
        .routes(routes!(me::change_password))
        .routes(routes!(me::set_active_organization))
        .routes(routes!(totp::setup))
        .routes(routes!(totp::confirm))
        .routes(routes!(totp::disable))
        .routes(routes!(totp::regenerate_recovery_codes))
        .routes(routes!(tokens::list_tokens, tokens::create_token))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(me::my_audit))
        .routes(routes!(me::verify_my_audit))
        .routes(routes!(invitations::accept))
}

/// Run `check` (which verifies a secret the human typed: password, TOTP or recovery code)
/// under the throttle of `subject` (the account's email for anonymous checks, the user's own
/// budget `Principal::throttle_subject` for signed-in ones) and `addr`:
/// counted before it runs, given back as a success only when it succeeds.
pub(crate) async fn throttled<T>(
    state: &AppState,
    subject: &str,
    addr: std::net::IpAddr,
    check: impl std::future::Future<Output = Result<T, crate::ApiError>>,
) -> Result<T, crate::ApiError> {
    if !state
        .throttle
        .begin(subject, addr, std::time::Instant::now())
    {
        tracing::warn!(client = %addr, "throttled");
        return Err(crate::ApiError::Throttled);
    }
    let out = check.await;
    if out.is_ok() {
        state.throttle.succeeded(subject, addr);
    }
    out
}
