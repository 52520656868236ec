//! Who is calling: the `pg_session` cookie (a signed-in human) or a personal API token
//! (`Authorization: Bearer pg_user_…`), resolved into a [`Principal`] once per request.
//!
//! Cookie (ADMIN_API.md): `HttpOnly`, `SameSite=Lax`, `Path=/`, `Secure` when
//! `admin.production`; the value is the raw 256-bit id, the store keeps only its SHA-256.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use store::{Store, StoreError};

use super::{AuthVia, Principal, csrf};
use crate::{AdminSettings, ApiError, AppState};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "pg_session";

/// The `Set-Cookie` value that hands a new session id to the browser.
pub(super) fn session_cookie(raw_id: String, settings: &AdminSettings) -> String {
    Cookie::build((SESSION_COOKIE, raw_id))
        .http_only(true)
        .same_site(SameSite::Lax)
        .path("/")
        .secure(settings.production)
        .max_age(time::Duration::seconds(settings.session_absolute_secs))
        .build()
        .to_string()
}

/// The `Set-Cookie` value that removes the cookie (sign-out, dead session).
pub(super) fn cleared_cookie(settings: &AdminSettings) -> String {
    Cookie::build((SESSION_COOKIE, ""))
        .http_only(true)
        .same_site(SameSite::Lax)
        .path("/")
        .secure(settings.production)
        .max_age(time::Duration::ZERO)
        .build()
        .to_string()
}

/// The client's address, for throttling. Needs the server to be run with
/// `into_make_service_with_connect_info::<SocketAddr>()`; without it every client shares one
/// bucket (still throttled, never unthrottled).
#[derive(Clone, Copy, Debug)]
pub(super) struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        Ok(ClientAddr(ip))
    }
}

/// What the credentials presented resolve to.
enum Resolved {
    Principal(Principal),
    /// Unknown, expired, revoked or malformed.
    Nobody,
    /// The session's active organization was deleted: the session has been ended.
    OrgGone,
}

fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A session id: resolve, refresh, and default the active organization to the first
/// membership when there is none.
fn resolve_session(s: &Store, raw: &str, now: i64, idle: i64) -> store::Result<Resolved> {
    let Some(info) = s.session(raw, now, idle)? else {
        return Ok(Resolved::Nobody);
    };
    let Some(user) = s.user(&info.user)? else {
        s.end_session(&info.hash)?;
        return Ok(Resolved::Nobody);
    };
    let active_org = match info.active_org {
        Some(org) => match s.org(&org) {
            Ok(_) => Some(org),
            Err(StoreError::NotFound(_)) => {
                // ADMIN_API.md: every request of that session gets 401 and the session ends.
                s.end_session(&info.hash)?;
                return Ok(Resolved::OrgGone);
            }
            Err(e) => return Err(e),
        },
        None => match s.first_org_of(&user.id)? {
            Some(org) => {
                s.set_session_org(&info.hash, &org.id)?;
                Some(org.id)
            }
            None => None,
        },
    };
    Ok(Resolved::Principal(Principal {
        totp_enabled: s.totp_enabled(&user.id)?,
        user: user.id,
        email: user.email,
        via: AuthVia::Session(info.hash),
        active_org,
    }))
}

/// A personal API token: it acts in the organization it was created in, while its user is
/// still a member there.
fn resolve_token(s: &Store, token: &str) -> store::Result<Resolved> {
    let Some(t) = s.authenticate_user_token(token)? else {
        return Ok(Resolved::Nobody);
    };
    let Some(user) = s.user(&t.user)? else {
        return Ok(Resolved::Nobody);
    };
    let active_org = match t.org {
        Some(org) if s.member_role(&org, &user.id)?.is_some() => Some(org),
        Some(_) => return Ok(Resolved::Nobody),
        None => s.first_org_of(&user.id)?.map(|o| o.id),
    };
    Ok(Resolved::Principal(Principal {
        totp_enabled: s.totp_enabled(&user.id)?,
        user: user.id,
        email: user.email,
        via: AuthVia::ApiToken(t.id),
        active_org,
    }))
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Resolved once per request, whichever extractors (Principal, Member) ask.
        if let Some(p) = parts.extensions.get::<Principal>() {
            return Ok(p.clone());
        }
        let resolved = if let Some(token) = bearer(parts) {
            // A bearer token is never sent by a browser on its own: no CSRF rule applies. An
            // agent token (`pg_agent_…`) does not parse as a user token and ends here as 401.
            let token = token.to_string();
            state.blocking(move |s| resolve_token(s, &token)).await?
        } else if let Some(c) = CookieJar::from_headers(&parts.headers).get(SESSION_COOKIE) {
            let raw = c.value().to_string();
            let (now, idle) = (store::now().unix, state.settings.session_idle_secs);
            let r = state
                .blocking(move |s| resolve_session(s, &raw, now, idle))
                .await?;
            if matches!(r, Resolved::Principal(_)) {
                csrf::check_cookie_request(&parts.method, &parts.headers, &state.settings)?;
            }
            r
        } else {
            Resolved::Nobody
        };
        match resolved {
            Resolved::Principal(p) => {
                parts.extensions.insert(p.clone());
                Ok(p)
            }
            Resolved::Nobody => Err(ApiError::Unauthenticated),
            Resolved::OrgGone => Err(ApiError::ReauthenticationRequired),
        }
    }
}

impl Principal {
    /// The session's storage key, or 403 for an API token: managing one's own credentials and
    /// switching organization are acts of a signed-in human.
    pub fn session_hash(&self) -> Result<&str, ApiError> {
        match &self.via {
            AuthVia::Session(hash) => Ok(hash),
            AuthVia::ApiToken(_) => Err(ApiError::Forbidden(
                "this needs a signed-in session, not an API token".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_has_the_attributes_admin_api_md_requires() {
        let mut s = AdminSettings::default();
        let c = session_cookie("abc".into(), &s);
        for attr in ["pg_session=abc", "HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(c.contains(attr), "{c}");
        }
        assert!(!c.contains("Secure"), "{c}");
        s.production = true;
        assert!(session_cookie("abc".into(), &s).contains("Secure"));
        assert!(cleared_cookie(&s).contains("Max-Age=0"));
    }
}
