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
use store::{OrgId, Store, StoreError};

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

/// The client's address, for throttling: the connection's peer, unless the peer is one of the
/// configured `admin.trusted_proxies`. Then `X-Forwarded-For` is read from the right (the entry
/// the nearest proxy appended) past every trusted hop; the first address that is not a trusted
/// proxy is the client. A client cannot choose its bucket by sending the header itself: the
/// header is ignored from untrusted peers, and entries left of the first untrusted one are
/// never read. Needs the server to run with `into_make_service_with_connect_info::<SocketAddr>()`;
/// without it every client shares one bucket (still throttled, never unthrottled).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientAddr(pub IpAddr);

/// Most `X-Forwarded-For` entries read (a longer chain is cut at this many from the right).
const FORWARDED_HOPS_MAX: usize = 16;

/// The client address for a connection from `peer` carrying `headers`.
pub(crate) fn client_addr(
    peer: IpAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> IpAddr {
    // `::ffff:10.0.0.1` (an IPv4 peer on a dual-stack listener) is 10.0.0.1.
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .flat_map(|v| {
            let text = v.to_str().unwrap_or("");
            text.rsplit(',').map(str::trim).collect::<Vec<_>>()
        })
        .take(FORWARDED_HOPS_MAX);
    for hop in hops {
        match hop.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // Not an address: what the nearest trusted hop saw is all we know.
            Err(_) => break,
        }
    }
    client
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        Ok(ClientAddr(client_addr(
            peer,
            &parts.headers,
            &state.settings.trusted_proxies,
        )))
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

/// A personal API token: it acts in the organization it was created in, and nowhere else,
/// while its user is still a member there.
fn resolve_token(s: &Store, token: &str) -> store::Result<Resolved> {
    let Some(t) = s.authenticate_user_token(token)? else {
        return Ok(Resolved::Nobody);
    };
    let Some(user) = s.user(&t.user)? else {
        return Ok(Resolved::Nobody);
    };
    // Bound to one organization (the store refuses tokens without one): it acts there, and
    // only while its user is still a member there.
    let active_org = match t.org {
        Some(org) if s.member_role(&org, &user.id)?.is_some() => Some(org),
        _ => return Ok(Resolved::Nobody),
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
    /// The throttle budget of this human's signed-in secret checks (step-up codes, password
    /// change, 2FA changes): their own, keyed by user id, apart from the sign-in budget keyed
    /// by email — anyone may spend the latter with wrong passwords, and must not thereby lock a
    /// signed-in approver out of deciding holds.
    pub fn throttle_subject(&self) -> String {
        format!("user:{}", self.user)
    }

    /// Whether this principal may act on `org` named in a path: a session may act on any of
    /// its user's organizations; an API token only on the one it is bound to.
    pub fn may_act_on(&self, org: &OrgId) -> bool {
        match self.via {
            AuthVia::Session(_) => true,
            AuthVia::ApiToken(_) => self.active_org.as_ref() == Some(org),
        }
    }

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
    fn forwarded_for_is_read_only_from_trusted_proxies_and_from_the_right() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let with = |v: &[&str]| {
            let mut h = axum::http::HeaderMap::new();
            for x in v {
                h.append("x-forwarded-for", x.parse().unwrap());
            }
            h
        };
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_addr(ip("203.0.113.9"), &with(&["198.51.100.1"]), &trusted),
            ip("203.0.113.9")
        );
        // A trusted proxy: the rightmost untrusted entry, whatever the client put on the left.
        let h = with(&["1.2.3.4, 198.51.100.7, 10.0.0.5"]);
        assert_eq!(
            client_addr(ip("10.0.0.1"), &h, &trusted),
            ip("198.51.100.7")
        );
        // Several header lines are one list, in order.
        let h = with(&["6.6.6.6", "198.51.100.8"]);
        assert_eq!(
            client_addr(ip("10.0.0.1"), &h, &trusted),
            ip("198.51.100.8")
        );
        // Garbage right of any address: the proxy itself is the bucket.
        let h = with(&["198.51.100.1, not-an-ip"]);
        assert_eq!(client_addr(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.1"));
        // No header: the proxy.
        assert_eq!(
            client_addr(ip("10.0.0.1"), &with(&[]), &trusted),
            ip("10.0.0.1")
        );
        // Nothing trusted: the peer, always.
        assert_eq!(client_addr(ip("10.0.0.1"), &h, &[]), ip("10.0.0.1"));
    }

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
