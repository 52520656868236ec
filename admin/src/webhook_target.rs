//! Webhook targets (WEBHOOKS.md): only http(s); loopback, link-local and private ranges are
//! refused unless `webhooks.allow_private_targets` is on. Checked at creation and again before
//! every attempt (the name may resolve elsewhere later).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a target is refused.
pub type TargetError = String;

fn private_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || (o[0] == 100 && (64..128).contains(&o[1])) // carrier-grade NAT
        || o[0] == 0
}

fn private_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || ip.to_ipv4_mapped().is_some_and(private_v4)
}

/// Whether an address is loopback, link-local or private.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => private_v4(v4),
        IpAddr::V6(v6) => private_v6(v6),
    }
}

/// Check a target URL: scheme, host, and (unless allowed) that no resolved address is private.
pub async fn check_target(url: &str, allow_private: bool) -> Result<(), TargetError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("url must be http:// or https://")?;
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return Err("url must be http:// or https://".into()),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err("url needs a host (and no user info)".into());
    }
    let (host, port) = split_host_port(authority, default_port)?;
    if allow_private {
        return Ok(());
    }
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| format!("cannot resolve {host}"))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() {
        return Err(format!("cannot resolve {host}"));
    }
    if let Some(ip) = addrs.into_iter().find(|ip| is_private(*ip)) {
        return Err(format!(
            "{host} resolves to {ip}, a loopback, link-local or private address (webhooks.allow_private_targets is off)"
        ));
    }
    Ok(())
}

fn split_host_port(authority: &str, default_port: u16) -> Result<(String, u16), TargetError> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or("bad IPv6 host")?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| "bad port")?,
            None => default_port,
        };
        return Ok((h.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_string(), p.parse().map_err(|_| "bad port")?)),
        None => Ok((authority.to_string(), default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn private_targets_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:9/x",
            "http://10.1.2.3/",
            "https://192.168.0.1",
            "http://169.254.169.254/latest",
            "http://[::1]:8080/",
            "http://[fe80::1]/",
            "http://localhost:1/",
        ] {
            assert!(check_target(url, false).await.is_err(), "{url}");
            assert!(check_target(url, true).await.is_ok(), "{url}");
        }
        for url in [
            "ftp://example.com",
            "http://",
            "http://user@8.8.8.8/",
            "javascript:alert(1)",
        ] {
            assert!(check_target(url, true).await.is_err(), "{url}");
        }
        assert!(check_target("https://8.8.8.8/hook", false).await.is_ok());
    }
}
