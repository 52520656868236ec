//! CSRF rules for cookie-authenticated requests (ADMIN_API.md): a state-changing request must be
//! JSON — a cross-site form can only send `text/plain`, `multipart/form-data` or
//! `application/x-www-form-urlencoded` without a CORS preflight — and, when the browser says
//! where it comes from (`Origin`), it must come from the configured origin.

use axum::http::header::{CONTENT_TYPE, ORIGIN};
use axum::http::{HeaderMap, Method};

use crate::{AdminSettings, ApiError};

/// Methods that change state.
pub(super) fn is_state_changing(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// `Content-Type: application/json` (parameters such as `charset` allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// When `Origin` is present it must be the configured origin (403 otherwise).
pub(super) fn check_origin(headers: &HeaderMap, settings: &AdminSettings) -> Result<(), ApiError> {
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let expected = settings.origin.trim_end_matches('/');
    match origin.to_str() {
        Ok(o) if o.trim_end_matches('/') == expected => Ok(()),
        _ => Err(ApiError::Forbidden(
            "cross-origin request refused (Origin does not match admin.origin)".into(),
        )),
    }
}

/// The checks for a request authenticated by the session cookie.
pub(super) fn check_cookie_request(
    method: &Method,
    headers: &HeaderMap,
    settings: &AdminSettings,
) -> Result<(), ApiError> {
    if !is_state_changing(method) {
        return Ok(());
    }
    if !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    check_origin(headers, settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cookie_writes_must_be_json_from_the_configured_origin() {
        let s = AdminSettings::default();
        let json = [("content-type", "application/json; charset=utf-8")];
        assert!(check_cookie_request(&Method::POST, &headers(&json), &s).is_ok());
        assert!(check_cookie_request(&Method::GET, &headers(&[]), &s).is_ok());
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ] {
            let r = check_cookie_request(&Method::POST, &headers(&[("content-type", ct)]), &s);
            assert!(matches!(r, Err(ApiError::UnsupportedMediaType)), "{ct}");
        }
        assert!(matches!(
            check_cookie_request(&Method::DELETE, &headers(&[]), &s),
            Err(ApiError::UnsupportedMediaType)
        ));
        let evil = [json[0], ("origin", "https://evil.example")];
        assert!(matches!(
            check_cookie_request(&Method::POST, &headers(&evil), &s),
            Err(ApiError::Forbidden(_))
        ));
        let same = [json[0], ("origin", "http://127.0.0.1:8081")];
        assert!(check_cookie_request(&Method::PATCH, &headers(&same), &s).is_ok());
        let null = [json[0], ("origin", "null")];
        assert!(check_cookie_request(&Method::PUT, &headers(&null), &s).is_err());
    }
}
