//! The agent's credential: `Authorization: Bearer <token>`, or HTTP Basic with the token as user
//! name (as Stripe allows for curl users).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The token in an `Authorization` header value, if the header is well formed.
pub fn token_from_header(value: &[u8]) -> Option<String> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return (!rest.is_empty()).then(|| rest.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD.decode(rest).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let user = text.split_once(':').map_or(text.as_str(), |(u, _)| u);
        return (!user.is_empty()).then(|| user.to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_are_accepted() {
        assert_eq!(
            token_from_header(b"Bearer pg_agent_x").as_deref(),
            Some("pg_agent_x")
        );
        assert_eq!(
            token_from_header(b"bearer  pg_agent_x ").as_deref(),
            Some("pg_agent_x")
        );
        let basic = format!("Basic {}", STANDARD.encode("pg_agent_y:"));
        assert_eq!(
            token_from_header(basic.as_bytes()).as_deref(),
            Some("pg_agent_y")
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Token abc",
            b"Basic !!!",
            b"\xff\xfe",
        ] {
            assert_eq!(token_from_header(bad), None);
        }
    }
}
