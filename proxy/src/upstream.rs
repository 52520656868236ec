//! The payment rail's address: parsed from `upstream.base_url` once, resolved without blocking a
//! worker (pingora's `HttpPeer::new` would resolve DNS synchronously and panic on failure).

use std::net::SocketAddr;
use std::sync::RwLock;

/// Where allowed requests go.
#[derive(Debug)]
pub struct Upstream {
    /// Host name (Host header and TLS SNI).
    pub host: String,
    /// Port.
    pub port: u16,
    /// HTTPS?
    pub tls: bool,
    resolved: RwLock<Option<SocketAddr>>,
}

impl Upstream {
    /// Parse `http(s)://host[:port]` (no path).
    pub fn parse(base_url: &str) -> Result<Upstream, String> {
        let (tls, rest) = if let Some(r) = base_url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = base_url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!(
                "upstream.base_url must start with http:// or https://: {base_url}"
            ));
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err("upstream.base_url must be scheme://host[:port] without a path".into());
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("bad port in upstream.base_url: {p}"))?;
                (
                    h.trim_start_matches('[').trim_end_matches(']').to_string(),
                    port,
                )
            }
            _ => (authority.to_string(), if tls { 443 } else { 80 }),
        };
        Ok(Upstream {
            host,
            port,
            tls,
            resolved: RwLock::new(None),
        })
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The socket address, resolved asynchronously on first use and cached.
    pub async fn addr(&self) -> Option<SocketAddr> {
        if let Some(a) = self.resolved.read().ok().and_then(|g| *g) {
            return Some(a);
        }
        let found = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .ok()?
            .next()?;
        if let Ok(mut g) = self.resolved.write() {
            *g = Some(found);
        }
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_base_urls() {
        let u = Upstream::parse("https://api.stripe.com").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.tls),
            ("api.stripe.com", 443, true)
        );
        assert_eq!(u.host_header(), "api.stripe.com");
        let u = Upstream::parse("http://127.0.0.1:8420/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("127.0.0.1", 8420, false));
        assert_eq!(u.host_header(), "127.0.0.1:8420");
        assert!(Upstream::parse("ftp://x").is_err());
        assert!(Upstream::parse("http://x/v1").is_err());
        assert!(Upstream::parse("http://x:notaport").is_err());
    }
}
