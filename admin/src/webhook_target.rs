//! Webhook targets (WEBHOOKS.md: only `http(s)` URLs; loopback, link-local and private ranges are
//! refused unless `webhooks.allow_private_targets` is on).
//!
//! One flow, used the same way by the admin API when an endpoint is created or changed and by the
//! delivery worker before every attempt (a name may resolve elsewhere later: DNS rebinding):
//!
//! 1. [`parse`]: the text becomes a `url::Url` once. Text another parser could read differently
//!    (whitespace, control characters, backslashes, user info, a fragment) is refused outright.
//! 2. [`resolve`]: the host's addresses, looked up once (an IP literal is its own answer).
//! 3. [`special_use`]: every address against the IANA special-purpose registries (IPv4 and IPv6),
//!    with IPv4 embedded in IPv6 judged as IPv4. One special address refuses the whole target.
//!
//! [`check`] runs the three and returns a [`Target`]: the same `Url` and exactly the addresses
//! that were checked. The worker hands that `Url` to the HTTP client and pins the client to those
//! addresses, so nothing is parsed or looked up a second time between the check and the connect.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use url::{Host, Url};

/// Longest URL accepted, in bytes.
pub const URL_MAX_BYTES: usize = 2048;
/// Longest a name lookup may take.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Addresses kept from one lookup (the first ones); only these are checked and connected to.
pub const ADDRS_MAX: usize = 16;
/// Largest test hosts file read (see [`TargetPolicy::test_hosts_file`]).
pub const TEST_HOSTS_FILE_MAX_BYTES: u64 = 64 * 1024;
/// The only names the test hosts file may answer: RFC 6761 reserves `.invalid`, so the hook can
/// never shadow a real name.
pub const TEST_HOSTS_SUFFIX: &str = ".invalid";

/// How targets are judged.
#[derive(Clone, Debug, Default)]
pub struct TargetPolicy {
    /// `webhooks.allow_private_targets`: skip the special-use check (addresses are still pinned).
    pub allow_private: bool,
    /// `webhooks.unsafe_test_hosts_file`, for end-to-end tests only (refused in production by the
    /// configuration): a JSON object `{"name.invalid": ["127.0.0.1", ...]}` read at every lookup
    /// of a name under `.invalid`; other names always use the system resolver.
    pub test_hosts_file: Option<PathBuf>,
}

/// A target that passed: the URL to request and the only addresses the request may connect to.
#[derive(Clone, Debug)]
pub struct Target {
    /// The one parse of the URL; the request is made with this value.
    pub url: Url,
    /// The checked addresses (port included); never empty.
    pub addrs: Vec<SocketAddr>,
}

impl Target {
    /// The host name to pin to [`Target::addrs`], when the host is a name (an IP literal needs no
    /// lookup).
    pub fn domain(&self) -> Option<&str> {
        match self.url.host() {
            Some(Host::Domain(d)) => Some(d),
            _ => None,
        }
    }
}

/// Why a target is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not an acceptable `http(s)` URL.
    Malformed(String),
    /// The name has no address (or the lookup failed or timed out).
    Unresolvable(String),
    /// An address is special-use.
    SpecialUse {
        /// The host as written in the URL.
        host: String,
        /// The offending address.
        addr: IpAddr,
        /// What makes it special.
        class: SpecialUse,
    },
}

impl Refusal {
    /// Stable machine-readable reason (`details.reason` in the admin API).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "malformed_url",
            Refusal::Unresolvable(_) => "unresolvable_host",
            Refusal::SpecialUse { .. } => "special_use_address",
        }
    }

    /// Structured details for an API error.
    pub fn details(&self) -> Value {
        match self {
            Refusal::SpecialUse { host, addr, class } => json!({
                "field": "url", "reason": self.reason(), "host": host, "address": addr.to_string(),
                "block": class.block, "block_name": class.name,
                "embedded_ipv4": class.embedded.map(|v4| v4.to_string()),
            }),
            _ => json!({"field": "url", "reason": self.reason()}),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Malformed(m) | Refusal::Unresolvable(m) => f.write_str(m),
            Refusal::SpecialUse { host, addr, class } => {
                write!(f, "{host} resolves to {addr}")?;
                if let Some(v4) = class.embedded {
                    write!(f, " (embedding IPv4 {v4})")?;
                }
                write!(
                    f,
                    ", in {} ({}); webhook targets must be public unless webhooks.allow_private_targets is on",
                    class.block, class.name
                )
            }
        }
    }
}

fn malformed(m: &str) -> Refusal {
    Refusal::Malformed(format!("url: {m}"))
}

/// Parse, resolve and (unless allowed) check a target. Called at creation and before each attempt.
pub async fn check(raw: &str, policy: &TargetPolicy) -> Result<Target, Refusal> {
    let url = parse(raw)?;
    let addrs = resolve(&url, policy).await?;
    if !policy.allow_private {
        let host = url.host_str().unwrap_or_default().to_string();
        for a in &addrs {
            if let Some(class) = special_use(a.ip()) {
                return Err(Refusal::SpecialUse {
                    host,
                    addr: a.ip(),
                    class,
                });
            }
        }
    }
    Ok(Target { url, addrs })
}

/// The one parse of a target URL. Its serialization (`Url::as_str`) is what is stored.
pub fn parse(raw: &str) -> Result<Url, Refusal> {
    if raw.len() > URL_MAX_BYTES {
        return Err(malformed("at most 2048 bytes"));
    }
    // The WHATWG parser drops tabs and newlines and reads `\` as `/`; other parsers do not.
    // Refusing them leaves no text that two parsers could read as two hosts.
    if raw
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    {
        return Err(malformed(
            "no whitespace, control characters or backslashes",
        ));
    }
    let url = Url::parse(raw).map_err(|e| Refusal::Malformed(format!("url: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(malformed("must be http:// or https://"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(malformed("no user info (user@host)"));
    }
    if url.fragment().is_some() {
        return Err(malformed("no fragment (#...)"));
    }
    match url.host() {
        Some(Host::Domain(d)) if !d.is_empty() => {}
        Some(Host::Ipv4(_) | Host::Ipv6(_)) => {}
        _ => return Err(malformed("needs a host")),
    }
    Ok(url)
}

/// The addresses of the URL's host, looked up once, deduplicated, at most [`ADDRS_MAX`].
pub async fn resolve(url: &Url, policy: &TargetPolicy) -> Result<Vec<SocketAddr>, Refusal> {
    let port = url
        .port_or_known_default()
        .ok_or_else(|| malformed("needs a port"))?;
    let ips: Vec<IpAddr> = match url.host() {
        Some(Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        Some(Host::Domain(name)) => lookup(name, port, policy).await?,
        None => return Err(malformed("needs a host")),
    };
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for ip in ips {
        let a = SocketAddr::new(ip, port);
        if !addrs.contains(&a) && addrs.len() < ADDRS_MAX {
            addrs.push(a);
        }
    }
    if addrs.is_empty() {
        return Err(Refusal::Unresolvable(format!(
            "{} has no address",
            url.host_str().unwrap_or_default()
        )));
    }
    Ok(addrs)
}

async fn lookup(name: &str, port: u16, policy: &TargetPolicy) -> Result<Vec<IpAddr>, Refusal> {
    let cannot = || Refusal::Unresolvable(format!("cannot resolve {name}"));
    if let Some(file) = &policy.test_hosts_file
        && is_test_name(name)
    {
        return test_hosts_lookup(file, name).await.ok_or_else(cannot);
    }
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port))).await {
        Ok(Ok(it)) => Ok(it.map(|a| a.ip()).collect()),
        Ok(Err(_)) => Err(cannot()),
        Err(_) => Err(Refusal::Unresolvable(format!(
            "resolving {name} took longer than {} s",
            RESOLVE_TIMEOUT.as_secs()
        ))),
    }
}

fn is_test_name(name: &str) -> bool {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    n.len() > TEST_HOSTS_SUFFIX.len() && n.ends_with(TEST_HOSTS_SUFFIX)
}

/// The test hosts file's answer for `name`; `None` when absent, unreadable or not listed.
async fn test_hosts_lookup(file: &Path, name: &str) -> Option<Vec<IpAddr>> {
    let (file, key) = (
        file.to_path_buf(),
        name.trim_end_matches('.').to_ascii_lowercase(),
    );
    tokio::task::spawn_blocking(move || {
        let meta = std::fs::metadata(&file).ok()?;
        if meta.len() > TEST_HOSTS_FILE_MAX_BYTES {
            return None;
        }
        let bytes = std::fs::read(&file).ok()?;
        let map: HashMap<String, Vec<IpAddr>> = serde_json::from_slice(&bytes).ok()?;
        map.into_iter()
            .find(|(k, _)| k.to_ascii_lowercase() == key)
            .map(|(_, v)| v)
    })
    .await
    .ok()
    .flatten()
}

// ------------------------------------------------------------------------------ the classifier

/// What makes an address special-use: the registry block it falls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecialUse {
    /// The block, in CIDR notation.
    pub block: &'static str,
    /// Its registry name.
    pub name: &'static str,
    /// The IPv4 address embedded in an IPv6 one, when that is what was judged.
    pub embedded: Option<Ipv4Addr>,
}

struct V4Block {
    net: u32,
    len: u32,
    block: &'static str,
    name: &'static str,
}

const fn v4(a: [u8; 4], len: u32, block: &'static str, name: &'static str) -> V4Block {
    V4Block {
        net: u32::from_be_bytes(a),
        len,
        block,
        name,
    }
}

/// IANA IPv4 Special-Purpose Address Registry (RFC 6890 and later), plus multicast and the
/// reserved 240/4. A block is refused whole even where the registry marks a few addresses inside
/// it globally reachable (192.0.0.9, 192.0.0.10): no webhook receiver lives there. Most specific
/// first.
#[rustfmt::skip]
const V4_BLOCKS: &[V4Block] = &[
    v4([0, 0, 0, 0], 8, "0.0.0.0/8", "this network"),
    v4([10, 0, 0, 0], 8, "10.0.0.0/8", "private use"),
    v4([100, 64, 0, 0], 10, "100.64.0.0/10", "shared address space (CGNAT)"),
    v4([127, 0, 0, 0], 8, "127.0.0.0/8", "loopback"),
    v4([169, 254, 0, 0], 16, "169.254.0.0/16", "link-local"),
    v4([172, 16, 0, 0], 12, "172.16.0.0/12", "private use"),
    v4([192, 0, 0, 0], 24, "192.0.0.0/24", "IETF protocol assignments"),
    v4([192, 0, 2, 0], 24, "192.0.2.0/24", "documentation (TEST-NET-1)"),
    v4([192, 88, 99, 0], 24, "192.88.99.0/24", "6to4 relay anycast"),
    v4([192, 168, 0, 0], 16, "192.168.0.0/16", "private use"),
    v4([198, 18, 0, 0], 15, "198.18.0.0/15", "benchmarking"),
    v4([198, 51, 100, 0], 24, "198.51.100.0/24", "documentation (TEST-NET-2)"),
    v4([203, 0, 113, 0], 24, "203.0.113.0/24", "documentation (TEST-NET-3)"),
    v4([224, 0, 0, 0], 4, "224.0.0.0/4", "multicast"),
    v4([255, 255, 255, 255], 32, "255.255.255.255/32", "limited broadcast"),
    v4([240, 0, 0, 0], 4, "240.0.0.0/4", "reserved"),
];

struct V6Block {
    net: u128,
    len: u32,
    block: &'static str,
    name: &'static str,
    /// Where an IPv4 address is embedded, for the reason (the block is refused whatever it is).
    embeds: Embeds,
}

#[derive(Clone, Copy)]
enum Embeds {
    Nothing,
    /// 6to4: bits 16..48.
    SixToFour,
    /// Teredo: the client address, bit-inverted, in the low 32 bits.
    Teredo,
}

const fn v6(
    s: [u16; 8],
    len: u32,
    block: &'static str,
    name: &'static str,
    embeds: Embeds,
) -> V6Block {
    V6Block {
        net: Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]).to_bits(),
        len,
        block,
        name,
        embeds,
    }
}

/// IANA IPv6 Special-Purpose Address Registry, plus ULA, site-local and multicast, most specific
/// first. `::ffff:0:0/96` (IPv4-mapped) and `64:ff9b::/96` (NAT64) are not here: for them the
/// embedded IPv4 address is what the connection reaches, so it is judged as IPv4 instead.
#[rustfmt::skip]
const V6_BLOCKS: &[V6Block] = {
    use Embeds::{Nothing, SixToFour, Teredo};
    &[
    v6([0; 8], 128, "::/128", "unspecified", Nothing),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, "::1/128", "loopback", Nothing),
    v6([0; 8], 96, "::/96", "IPv4-compatible (deprecated)", Nothing),
    v6([0, 0, 0, 0, 0xffff, 0, 0, 0], 96, "::ffff:0:0:0/96", "IPv4-translated (SIIT)", Nothing),
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, "64:ff9b:1::/48", "NAT64 local use", Nothing),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "100::/64", "discard-only", Nothing),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, "2001::/32", "Teredo", Teredo),
    v6([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28, "2001:10::/28", "ORCHID (deprecated)", Nothing),
    v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28, "2001:20::/28", "ORCHIDv2", Nothing),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, "2001::/23", "IETF protocol assignments", Nothing),
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "2001:db8::/32", "documentation", Nothing),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, "2002::/16", "6to4", SixToFour),
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "3fff::/20", "documentation", Nothing),
    v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, "5f00::/16", "segment routing (SRv6) SIDs", Nothing),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "fc00::/7", "unique local", Nothing),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "fe80::/10", "link-local", Nothing),
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "fec0::/10", "site-local (deprecated)", Nothing),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "ff00::/8", "multicast", Nothing),
    ]
};

/// Global unicast (`2000::/3`): everything outside it that is not listed is unallocated.
const V6_GLOBAL_UNICAST: (u128, u32) = (0x2000_u128 << 112, 3);

const fn mask(len: u32, width: u32) -> u128 {
    if len == 0 {
        0
    } else {
        (u128::MAX << (128 - len)) >> (128 - width)
    }
}

fn in_v4(ip: u32, net: u32, len: u32) -> bool {
    // Truncation is exact: a 32-bit mask fits in u32.
    let m = mask(len, 32) as u32;
    ip & m == net & m
}

fn in_v6(ip: u128, net: u128, len: u32) -> bool {
    let m = mask(len, 128);
    ip & m == net & m
}

/// The special-use block an address is in, if any; `None` means globally reachable unicast.
pub fn special_use(ip: IpAddr) -> Option<SpecialUse> {
    match ip {
        IpAddr::V4(v) => special_v4(v),
        IpAddr::V6(v) => special_v6(v),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<SpecialUse> {
    let bits = ip.to_bits();
    V4_BLOCKS
        .iter()
        .find(|b| in_v4(bits, b.net, b.len))
        .map(|b| SpecialUse {
            block: b.block,
            name: b.name,
            embedded: None,
        })
}

fn special_v6(ip: Ipv6Addr) -> Option<SpecialUse> {
    let bits = ip.to_bits();
    // The low 32 bits are the IPv4 address reached through these prefixes.
    let low = Ipv4Addr::from_bits((bits & 0xffff_ffff) as u32);
    if in_v6(
        bits,
        Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0).to_bits(),
        96,
    ) || in_v6(
        bits,
        Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0).to_bits(),
        96,
    ) {
        return special_v4(low).map(|s| SpecialUse {
            embedded: Some(low),
            ..s
        });
    }
    if let Some(b) = V6_BLOCKS.iter().find(|b| in_v6(bits, b.net, b.len)) {
        let embedded = match b.embeds {
            Embeds::Nothing => None,
            Embeds::SixToFour => Some(Ipv4Addr::from_bits((bits >> 80) as u32)),
            Embeds::Teredo => Some(Ipv4Addr::from_bits(!((bits & 0xffff_ffff) as u32))),
        };
        return Some(SpecialUse {
            block: b.block,
            name: b.name,
            embedded,
        });
    }
    let (net, len) = V6_GLOBAL_UNICAST;
    if !in_v6(bits, net, len) {
        return Some(SpecialUse {
            block: "outside 2000::/3",
            name: "not global unicast",
            embedded: None,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(ip: &str) -> Option<&'static str> {
        special_use(ip.parse().unwrap()).map(|s| s.block)
    }

    /// Every IPv4 block: first and last address inside, the neighbours outside (or in the
    /// neighbouring block named).
    #[test]
    fn ipv4_blocks_both_sides_of_each_boundary() {
        #[rustfmt::skip]
        let cases: &[(&str, Option<&str>)] = &[
            ("0.0.0.0", Some("0.0.0.0/8")),
            ("0.255.255.255", Some("0.0.0.0/8")),
            ("1.0.0.0", None),
            ("9.255.255.255", None),
            ("10.0.0.0", Some("10.0.0.0/8")),
            ("10.255.255.255", Some("10.0.0.0/8")),
            ("11.0.0.0", None),
            ("100.63.255.255", None),
            ("100.64.0.0", Some("100.64.0.0/10")),
            ("100.127.255.255", Some("100.64.0.0/10")),
            ("100.128.0.0", None),
            ("126.255.255.255", None),
            ("127.0.0.0", Some("127.0.0.0/8")),
            ("127.0.0.1", Some("127.0.0.0/8")),
            ("127.255.255.255", Some("127.0.0.0/8")),
            ("128.0.0.0", None),
            ("169.253.255.255", None),
            ("169.254.0.0", Some("169.254.0.0/16")),
            ("169.254.169.254", Some("169.254.0.0/16")),
            ("169.254.255.255", Some("169.254.0.0/16")),
            ("169.255.0.0", None),
            ("172.15.255.255", None),
            ("172.16.0.0", Some("172.16.0.0/12")),
            ("172.31.255.255", Some("172.16.0.0/12")),
            ("172.32.0.0", None),
            ("191.255.255.255", None),
            ("192.0.0.0", Some("192.0.0.0/24")),
            ("192.0.0.255", Some("192.0.0.0/24")),
            ("192.0.1.0", None),
            ("192.0.1.255", None),
            ("192.0.2.0", Some("192.0.2.0/24")),
            ("192.0.2.255", Some("192.0.2.0/24")),
            ("192.0.3.0", None),
            ("192.88.98.255", None),
            ("192.88.99.0", Some("192.88.99.0/24")),
            ("192.88.99.255", Some("192.88.99.0/24")),
            ("192.88.100.0", None),
            ("192.167.255.255", None),
            ("192.168.0.0", Some("192.168.0.0/16")),
            ("192.168.255.255", Some("192.168.0.0/16")),
            ("192.169.0.0", None),
            ("198.17.255.255", None),
            ("198.18.0.0", Some("198.18.0.0/15")),
            ("198.19.255.255", Some("198.18.0.0/15")),
            ("198.20.0.0", None),
            ("198.51.99.255", None),
            ("198.51.100.0", Some("198.51.100.0/24")),
            ("198.51.100.255", Some("198.51.100.0/24")),
            ("198.51.101.0", None),
            ("203.0.112.255", None),
            ("203.0.113.0", Some("203.0.113.0/24")),
            ("203.0.113.255", Some("203.0.113.0/24")),
            ("203.0.114.0", None),
            ("223.255.255.255", None),
            ("224.0.0.0", Some("224.0.0.0/4")),
            ("239.255.255.255", Some("224.0.0.0/4")),
            ("240.0.0.0", Some("240.0.0.0/4")),
            ("255.255.255.254", Some("240.0.0.0/4")),
            ("255.255.255.255", Some("255.255.255.255/32")),
            ("8.8.8.8", None),
            ("1.1.1.1", None),
        ];
        for (ip, want) in cases {
            assert_eq!(block(ip), *want, "{ip}");
        }
    }

    /// Every IPv6 block: first and last address inside, the neighbours outside (or in the
    /// neighbouring block named).
    #[test]
    fn ipv6_blocks_both_sides_of_each_boundary() {
        const OUT: Option<&str> = Some("outside 2000::/3");
        #[rustfmt::skip]
        let cases: &[(&str, Option<&str>)] = &[
            ("::", Some("::/128")),
            ("::1", Some("::1/128")),
            ("::2", Some("::/96")),
            ("::ffff:ffff", Some("::/96")),
            ("::1:0:0", OUT),
            ("::ffff:0:0:0", Some("::ffff:0:0:0/96")),
            ("::ffff:0:ffff:ffff", Some("::ffff:0:0:0/96")),
            ("64:ff9b:1::", Some("64:ff9b:1::/48")),
            ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", Some("64:ff9b:1::/48")),
            ("64:ff9b:2::", OUT),
            ("64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff", OUT),
            ("100::", Some("100::/64")),
            ("100::ffff:ffff:ffff:ffff", Some("100::/64")),
            ("100:0:0:1::", OUT),
            ("1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", OUT),
            ("2000::", None),
            ("2001::", Some("2001::/32")),
            ("2001:0:ffff:ffff:ffff:ffff:ffff:ffff", Some("2001::/32")),
            ("2001:1::", Some("2001::/23")),
            ("2001:f:ffff::", Some("2001::/23")),
            ("2001:10::", Some("2001:10::/28")),
            ("2001:1f:ffff:ffff:ffff:ffff:ffff:ffff", Some("2001:10::/28")),
            ("2001:20::", Some("2001:20::/28")),
            ("2001:2f:ffff:ffff:ffff:ffff:ffff:ffff", Some("2001:20::/28")),
            ("2001:30::", Some("2001::/23")),
            ("2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", Some("2001::/23")),
            ("2001:200::", None),
            ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("2001:db8::", Some("2001:db8::/32")),
            ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", Some("2001:db8::/32")),
            ("2001:db9::", None),
            ("2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("2002::", Some("2002::/16")),
            ("2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("2002::/16")),
            ("2003::", None),
            ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("3fff::", Some("3fff::/20")),
            ("3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", Some("3fff::/20")),
            ("3fff:1000::", None),
            ("3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("4000::", OUT),
            ("5eff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", OUT),
            ("5f00::", Some("5f00::/16")),
            ("5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("5f00::/16")),
            ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", OUT),
            ("fc00::", Some("fc00::/7")),
            ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("fc00::/7")),
            ("fe00::", OUT),
            ("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", OUT),
            ("fe80::", Some("fe80::/10")),
            ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("fe80::/10")),
            ("fec0::", Some("fec0::/10")),
            ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("fec0::/10")),
            ("ff00::", Some("ff00::/8")),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("ff00::/8")),
            ("2606:4700:4700::1111", None),
        ];
        for (ip, want) in cases {
            assert_eq!(block(ip), *want, "{ip}");
        }
    }

    /// IPv4-mapped and NAT64 (well-known prefix) addresses reach their embedded IPv4 address, so
    /// that is what is judged; 6to4 and Teredo are refused whole, naming what they embed.
    #[test]
    fn embedded_ipv4_is_judged_as_ipv4() {
        #[rustfmt::skip]
        let cases: &[(&str, Embedded)] = &[
            ("::ffff:127.0.0.1", Some(("127.0.0.0/8", Some("127.0.0.1")))),
            ("::ffff:7f00:1", Some(("127.0.0.0/8", Some("127.0.0.1")))),
            ("::ffff:0.0.0.0", Some(("0.0.0.0/8", Some("0.0.0.0")))),
            ("::ffff:169.254.169.254", Some(("169.254.0.0/16", Some("169.254.169.254")))),
            ("::ffff:255.255.255.255", Some(("255.255.255.255/32", Some("255.255.255.255")))),
            ("::ffff:8.8.8.8", None),
            ("::7f00:1", Some(("::/96", None))),
            ("::1:0:0:0", OUT_NONE),
            ("64:ff9b::7f00:1", Some(("127.0.0.0/8", Some("127.0.0.1")))),
            ("64:ff9b::10.0.0.1", Some(("10.0.0.0/8", Some("10.0.0.1")))),
            ("64:ff9b::ffff:ffff", Some(("255.255.255.255/32", Some("255.255.255.255")))),
            ("64:ff9b::", Some(("0.0.0.0/8", Some("0.0.0.0")))),
            ("64:ff9b::8.8.8.8", None),
            ("64:ff9b:0:0:0:1::", OUT_NONE),
            ("2002:7f00:1::", Some(("2002::/16", Some("127.0.0.1")))),
            ("2002:808:808::", Some(("2002::/16", Some("8.8.8.8")))),
            (
                "2001:0:4136:e378:8000:63bf:80ff:fffe",
                Some(("2001::/32", Some("127.0.0.1"))),
            ),
        ];
        for (ip, want) in cases {
            let got = special_use(ip.parse().unwrap())
                .map(|s| (s.block, s.embedded.map(|v| v.to_string())));
            let want = want.map(|(b, e)| (b, e.map(str::to_string)));
            assert_eq!(got, want, "{ip}");
        }
    }

    /// The block expected, and the embedded IPv4 it names.
    type Embedded = Option<(&'static str, Option<&'static str>)>;

    const OUT_NONE: Embedded = Some(("outside 2000::/3", None));

    #[test]
    fn parse_refuses_text_two_parsers_could_read_differently() {
        for raw in [
            "http://public.example\\@127.0.0.1:9/",
            "http://public.example\t@127.0.0.1:9/",
            "http://127.0.0.1:9\n/",
            "http://user@8.8.8.8/",
            "http://user:pw@8.8.8.8/",
            "http://127.0.0.1:9#@example.com/",
            "http://8.8.8.8/ x",
            "ftp://example.com/",
            "javascript:alert(1)",
            "http://",
            "not a url",
            "file:///etc/passwd",
        ] {
            assert!(
                matches!(parse(raw), Err(Refusal::Malformed(_))),
                "{raw:?}: {:?}",
                parse(raw)
            );
        }
        let long = format!("https://8.8.8.8/{}", "a".repeat(URL_MAX_BYTES));
        assert!(parse(&long).is_err());
        assert_eq!(
            parse("HTTPS://Example.COM:443/hook").unwrap().as_str(),
            "https://example.com/hook"
        );
    }

    #[test]
    fn ipv4_aliases_parse_to_the_address_they_mean() {
        for raw in [
            "http://127.1/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f.0.0.1/",
            "http://127.0.0.1./",
        ] {
            let u = parse(raw).unwrap();
            assert_eq!(u.host(), Some(Host::Ipv4(Ipv4Addr::LOCALHOST)), "{raw}");
        }
    }

    #[tokio::test]
    async fn check_refuses_special_targets_unless_allowed_and_keeps_the_checked_addresses() {
        let deny = TargetPolicy::default();
        let allow = TargetPolicy {
            allow_private: true,
            test_hosts_file: None,
        };
        for url in [
            "http://127.0.0.1:9/x",
            "http://127.1:9/",
            "http://10.1.2.3/",
            "https://192.168.0.1",
            "http://169.254.169.254/latest",
            "http://[::1]:8080/",
            "http://[::ffff:127.0.0.1]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[2002:7f00:1::]/",
            "http://[fe80::1]/",
            "http://0.0.0.0/",
        ] {
            let err = check(url, &deny).await.unwrap_err();
            assert_eq!(err.reason(), "special_use_address", "{url}: {err}");
            let t = check(url, &allow).await.unwrap();
            assert_eq!(t.addrs.len(), 1, "{url}");
        }
        let t = check("https://8.8.8.8/hook", &deny).await.unwrap();
        assert_eq!(t.addrs, vec!["8.8.8.8:443".parse().unwrap()]);
        assert_eq!(t.domain(), None);
    }

    #[tokio::test]
    async fn test_hosts_file_answers_only_invalid_names_and_is_read_every_lookup() {
        let dir = std::env::temp_dir().join(format!("pg-hosts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("hosts.json");
        let policy = TargetPolicy {
            allow_private: false,
            test_hosts_file: Some(file.clone()),
        };
        std::fs::write(&file, r#"{"hook.rebind.invalid": ["8.8.8.8"]}"#).unwrap();
        let t = check("http://hook.rebind.invalid:81/", &policy)
            .await
            .unwrap();
        assert_eq!(t.addrs, vec!["8.8.8.8:81".parse().unwrap()]);
        assert_eq!(t.domain(), Some("hook.rebind.invalid"));
        std::fs::write(
            &file,
            r#"{"hook.rebind.invalid": ["8.8.8.8", "127.0.0.1"]}"#,
        )
        .unwrap();
        let err = check("http://hook.rebind.invalid:81/", &policy)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "special_use_address");
        let err = check("http://other.invalid/", &policy).await.unwrap_err();
        assert_eq!(err.reason(), "unresolvable_host");
        assert!(!is_test_name("invalid") && !is_test_name("example.com"));
        assert!(is_test_name("a.INVALID."));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
