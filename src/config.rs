//! Configuration (OPERATIONS.md): one TOML file, every key overridable by `GUARD_<SECTION>_<KEY>`,
//! unknown keys refused.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub proxy: ProxyCfg,
    pub admin: AdminCfg,
    pub store: StoreCfg,
    pub upstream: UpstreamCfg,
    pub holds: HoldsCfg,
    pub webhooks: WebhooksCfg,
    pub secrets: SecretsCfg,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyCfg {
    pub listen: String,
    pub max_body_bytes: usize,
    pub max_hold_wait_secs: u64,
    pub in_flight_wait_ms: u64,
    pub threads: usize,
    /// SIGTERM: seconds in-flight requests get to finish before the runtimes stop.
    pub shutdown_grace_secs: u64,
    /// TLS on the proxy listener: certificate chain (PEM, leaf first). With `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// TLS on the proxy listener: private key (PEM: PKCS#8, PKCS#1 or SEC1). With `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// A TLS-terminating proxy in front of this listener is declared (production accepts a
    /// plain-HTTP listener then).
    pub tls_terminator: bool,
}

impl Default for ProxyCfg {
    fn default() -> Self {
        Self {
            shutdown_grace_secs: 10,
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 65_536,
            max_hold_wait_secs: 60,
            in_flight_wait_ms: 5_000,
            threads: 2,
            tls_cert: None,
            tls_key: None,
            tls_terminator: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminCfg {
    pub listen: String,
    pub origin: String,
    pub production: bool,
    /// A session ends after this long without a request.
    pub session_idle_secs: i64,
    /// A session ends this long after sign-in.
    pub session_absolute_secs: i64,
    /// Reverse proxies (addresses or CIDR blocks) whose `X-Forwarded-For` names the client for
    /// sign-in throttling; empty: the connection's peer is the client. A TOML list, or one
    /// comma-separated string (`GUARD_ADMIN_TRUSTED_PROXIES=10.0.0.0/8,127.0.0.1`).
    pub trusted_proxies: StringList,
    /// TLS on the admin listener: certificate chain (PEM, leaf first). With `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// TLS on the admin listener: private key (PEM: PKCS#8, PKCS#1 or SEC1). With `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// A TLS-terminating proxy in front of this listener is declared (production accepts a
    /// plain-HTTP listener then).
    pub tls_terminator: bool,
}

/// A list of strings: a TOML array, or one comma-separated string (environment overrides).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(untagged)]
pub enum StringList {
    /// `["a", "b"]`.
    List(Vec<String>),
    /// `"a,b"`.
    Text(String),
    /// Not set.
    #[default]
    #[serde(skip)]
    Empty,
}

impl StringList {
    /// The items, trimmed, empty ones dropped.
    pub fn items(&self) -> Vec<String> {
        let raw: Vec<&str> = match self {
            StringList::List(v) => v.iter().map(String::as_str).collect(),
            StringList::Text(t) => t.split(',').collect(),
            StringList::Empty => Vec::new(),
        };
        raw.into_iter()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

impl AdminCfg {
    /// `trusted_proxies` parsed: a bare address is a /32 (or /128) block.
    pub fn trusted_proxy_nets(&self) -> anyhow::Result<Vec<ipnet::IpNet>> {
        self.trusted_proxies
            .items()
            .iter()
            .map(|t| {
                t.parse::<ipnet::IpNet>()
                    .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "admin.trusted_proxies: {t:?} is not an address or CIDR block"
                        )
                    })
            })
            .collect()
    }
}

impl Default for AdminCfg {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".into(),
            origin: "http://127.0.0.1:8081".into(),
            production: false,
            session_idle_secs: 30 * 60,
            session_absolute_secs: 12 * 3600,
            trusted_proxies: StringList::Empty,
            tls_cert: None,
            tls_key: None,
            tls_terminator: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreCfg {
    pub data_dir: PathBuf,
    /// Longest time between durable redb commits; the write-ahead log covers the batches in
    /// between, and a restart after a crash replays at most this much.
    pub checkpoint_interval_ms: u64,
    /// How long an agent's Idempotency-Key is remembered (hours). A retry with an older key is
    /// a new request. Never under Stripe's own 24 hours; intents and the audit chain stay.
    pub idempotency_retention_hours: u64,
    /// redb's page cache, MiB (`store::StoreOptions`): bounds the guard's resident memory; redb's
    /// own default would be 1 GiB.
    pub cache_mb: u64,
}

impl Default for StoreCfg {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./guard-data"),
            checkpoint_interval_ms: 1_000,
            idempotency_retention_hours: 7 * 24,
            cache_mb: store::StoreOptions::DEFAULT_CACHE_MB,
        }
    }
}

impl StoreCfg {
    /// How every command opens the store.
    pub fn options(&self) -> store::StoreOptions {
        store::StoreOptions {
            cache_mb: self.cache_mb,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamCfg {
    pub base_url: String,
    pub timeout_secs: u64,
}

impl Default for UpstreamCfg {
    fn default() -> Self {
        Self {
            base_url: "https://api.stripe.com".into(),
            timeout_secs: 30,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HoldsCfg {
    pub expire_after_secs: i64,
}

impl Default for HoldsCfg {
    fn default() -> Self {
        Self {
            expire_after_secs: 86_400,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksCfg {
    pub allow_private_targets: bool,
    /// First retry delay; doubles per attempt (±20 % jitter) up to `max_delay_ms`.
    pub retry_base_ms: i64,
    pub max_delay_ms: i64,
    /// Attempts per delivery (the defaults retry for more than 24 h).
    pub max_attempts: usize,
    /// Failed attempts in a row that disable an endpoint.
    pub disable_after_failures: u32,
    pub timeout_secs: u64,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// How often the worker looks for due deliveries.
    pub poll_ms: u64,
    /// TESTS ONLY: a JSON file `{"name.invalid": ["ip", ...]}` answering lookups of webhook
    /// hosts under `.invalid` (read at every lookup), so end-to-end tests can change what a name
    /// resolves to. Refused when `admin.production` is on; no other name is affected.
    pub unsafe_test_hosts_file: Option<PathBuf>,
}

impl Default for WebhooksCfg {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            retry_base_ms: 5_000,
            max_delay_ms: 2 * 3_600_000,
            max_attempts: 30,
            disable_after_failures: 100,
            timeout_secs: 10,
            concurrency: 8,
            poll_ms: 250,
            unsafe_test_hosts_file: None,
        }
    }
}

#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsCfg {
    /// The master key, base64 of 32 bytes (in production: only from `GUARD_SECRETS_MASTER_KEY`).
    pub master_key: Option<String>,
    /// A file holding the master key, outside the data directory, mode 0600 or stricter.
    pub master_key_file: Option<PathBuf>,
    /// Set by [`Config::load`]: `master_key` was written in the configuration file itself.
    #[serde(skip)]
    pub master_key_in_file: bool,
}

impl std::fmt::Debug for SecretsCfg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsCfg")
            .field(
                "master_key",
                &self.master_key.as_ref().map(|_| "<redacted>"),
            )
            .field("master_key_file", &self.master_key_file)
            .finish()
    }
}

/// The log filter variable (read by the logging setup, not a configuration key).
pub const LOG_FILTER_VAR: &str = "GUARD_LOG";

const SECTIONS: [&str; 7] = [
    "proxy", "admin", "store", "upstream", "holds", "webhooks", "secrets",
];

impl Config {
    /// Load `file` (optional) and apply `GUARD_*` environment overrides.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                toml::from_str::<toml::Table>(&text)
                    .with_context(|| format!("{} is not valid TOML", path.display()))?
            }
            None => toml::Table::new(),
        };
        let key_in_file = table
            .get("secrets")
            .and_then(|s| s.get("master_key"))
            .is_some();
        apply_env(&mut table, std::env::vars())?;
        let mut cfg: Config = toml::Value::Table(table)
            .try_into()
            .context("invalid configuration")?;
        // An environment variable overrides the file's value, so the file's key is not used.
        cfg.secrets.master_key_in_file =
            key_in_file && std::env::var_os("GUARD_SECRETS_MASTER_KEY").is_none();
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.proxy.max_body_bytes == 0 || self.proxy.max_body_bytes > 65_536 {
            bail!("proxy.max_body_bytes must be 1..=65536 (pingora's retry buffer holds 64 KiB)");
        }
        if self.upstream.timeout_secs == 0 || self.upstream.timeout_secs > 600 {
            bail!("upstream.timeout_secs must be 1..=600");
        }
        let a = &self.admin;
        a.trusted_proxy_nets()?;
        if a.session_idle_secs < 60 || a.session_absolute_secs < a.session_idle_secs {
            bail!("admin: need 60 ≤ session_idle_secs ≤ session_absolute_secs");
        }
        let w = &self.webhooks;
        if w.retry_base_ms < 1
            || w.max_delay_ms < w.retry_base_ms
            || w.max_attempts == 0
            || w.max_attempts > 100
        {
            bail!("webhooks: need 1 ≤ retry_base_ms ≤ max_delay_ms and 1 ≤ max_attempts ≤ 100");
        }
        if w.concurrency == 0
            || w.concurrency > 64
            || w.timeout_secs == 0
            || w.timeout_secs > 120
            || w.poll_ms == 0
            || w.poll_ms > 60_000
        {
            bail!("webhooks: concurrency 1..=64, timeout_secs 1..=120, poll_ms 1..=60000");
        }
        if w.unsafe_test_hosts_file.is_some() && self.admin.production {
            bail!("webhooks.unsafe_test_hosts_file is for tests and is refused in production");
        }
        if self.store.checkpoint_interval_ms < 10 || self.store.checkpoint_interval_ms > 60_000 {
            bail!("store.checkpoint_interval_ms must be 10..=60000");
        }
        if !(24..=24 * 3660).contains(&self.store.idempotency_retention_hours) {
            bail!(
                "store.idempotency_retention_hours must be 24..=87840 (never under the rail's own \
                 24 hours of idempotency)"
            );
        }
        let cache = store::StoreOptions::CACHE_MB_MIN..=store::StoreOptions::CACHE_MB_MAX;
        if !cache.contains(&self.store.cache_mb) {
            bail!(
                "store.cache_mb must be {}..={} (MiB of redb page cache), not {}",
                cache.start(),
                cache.end(),
                self.store.cache_mb
            );
        }
        if self.admin.production && self.secrets.master_key_in_file {
            bail!(
                "admin.production is on: secrets.master_key must not be written in the \
                 configuration file; set GUARD_SECRETS_MASTER_KEY or secrets.master_key_file"
            );
        }
        if self.proxy.threads == 0 || self.proxy.threads > 64 {
            bail!("proxy.threads must be 1..=64");
        }
        self.check_tls()
    }

    /// A certificate needs its key.
    fn check_tls(&self) -> anyhow::Result<()> {
        for (section, cert, key) in [
            ("proxy", &self.proxy.tls_cert, &self.proxy.tls_key),
            ("admin", &self.admin.tls_cert, &self.admin.tls_key),
        ] {
            if cert.is_some() != key.is_some() {
                bail!("{section}: tls_cert and tls_key go together (set both or neither)");
            }
        }
        Ok(())
    }

    /// `serve` only (store commands open no listener): production refuses plain HTTP where the
    /// bytes could leave the host (DECISIONS.md, "TLS on both listeners").
    pub fn check_listeners(&self) -> anyhow::Result<()> {
        let p = &self.proxy;
        let a = &self.admin;
        if !a.production {
            return Ok(());
        }
        if a.tls_cert.is_none() && !a.tls_terminator {
            bail!(
                "admin.production = true refuses plain HTTP on the admin listener {}: set \
                 admin.tls_cert and admin.tls_key, or declare admin.tls_terminator = true when a \
                 TLS-terminating proxy is in front",
                a.listen
            );
        }
        if !a.origin.starts_with("https://") {
            bail!(
                "admin.production = true needs an https:// admin.origin (Secure cookies and HSTS \
                 are sent), not {}",
                a.origin
            );
        }
        if p.tls_cert.is_none() && !p.tls_terminator && !is_loopback(&p.listen) {
            bail!(
                "admin.production = true refuses plain HTTP on the proxy listener {} (not a \
                 loopback address): set proxy.tls_cert and proxy.tls_key, declare \
                 proxy.tls_terminator = true when a TLS-terminating proxy is in front, or listen \
                 on loopback for agents on the same host",
                p.listen
            );
        }
        Ok(())
    }
}

/// A listen address whose IP is loopback (`127.0.0.0/8`, `::1`). Host names are not resolved:
/// `localhost:8080` is not loopback here, so it needs TLS in production.
fn is_loopback(listen: &str) -> bool {
    listen
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback())
}

/// `GUARD_PROXY_MAX_BODY_BYTES=1024` → `[proxy] max_body_bytes = 1024`.
fn apply_env(
    table: &mut toml::Table,
    vars: impl Iterator<Item = (String, String)>,
) -> anyhow::Result<()> {
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix("GUARD_") else {
            continue;
        };
        if name == LOG_FILTER_VAR {
            continue;
        }
        let rest = rest.to_ascii_lowercase();
        let Some((section, key)) = SECTIONS
            .iter()
            .find_map(|s| Some((*s, rest.strip_prefix(s)?.strip_prefix('_')?)))
        else {
            bail!("unknown configuration variable {name}");
        };
        let value = if let Ok(i) = raw.parse::<i64>() {
            toml::Value::Integer(i)
        } else if let Ok(b) = raw.parse::<bool>() {
            toml::Value::Boolean(b)
        } else {
            toml::Value::String(raw)
        };
        let entry = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(sec) = entry.as_table_mut() else {
            bail!("[{section}] must be a table")
        };
        sec.insert(key.to_string(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_with(toml_text: &str, env: &[(&str, &str)]) -> anyhow::Result<Config> {
        let mut t: toml::Table = toml::from_str(toml_text)?;
        apply_env(
            &mut t,
            env.iter().map(|(a, b)| (a.to_string(), b.to_string())),
        )?;
        let c: Config = toml::Value::Table(t).try_into()?;
        c.check()?;
        Ok(c)
    }

    #[test]
    fn defaults_match_operations_md() {
        let c = load_with("", &[]).unwrap();
        assert_eq!(c.proxy.listen, "127.0.0.1:8080");
        assert_eq!(c.proxy.max_body_bytes, 65_536);
        assert_eq!(c.admin.listen, "127.0.0.1:8081");
        assert_eq!(c.upstream.base_url, "https://api.stripe.com");
        assert_eq!(c.holds.expire_after_secs, 86_400);
        assert!(!c.webhooks.allow_private_targets);
        assert_eq!(c.store.checkpoint_interval_ms, 1_000);
        assert!(load_with("", &[("GUARD_STORE_CHECKPOINT_INTERVAL_MS", "5")]).is_err());
        assert_eq!(c.store.idempotency_retention_hours, 168);
        assert!(load_with("", &[("GUARD_STORE_IDEMPOTENCY_RETENTION_HOURS", "23")]).is_err());
        let day = load_with("", &[("GUARD_STORE_IDEMPOTENCY_RETENTION_HOURS", "24")]).unwrap();
        assert_eq!(day.store.idempotency_retention_hours, 24);
        assert_eq!(c.store.cache_mb, 64);
        assert_eq!(c.store.options(), store::StoreOptions { cache_mb: 64 });
    }

    #[test]
    fn the_store_cache_is_configurable_within_bounds() {
        let c = load_with("[store]\ncache_mb = 256\n", &[]).unwrap();
        assert_eq!(c.store.options().cache_mb, 256);
        let env = load_with("", &[("GUARD_STORE_CACHE_MB", "8")]).unwrap();
        assert_eq!(env.store.cache_mb, 8);
        for bad in ["7", "65537", "0"] {
            let err = load_with("", &[("GUARD_STORE_CACHE_MB", bad)])
                .unwrap_err()
                .to_string();
            assert_eq!(
                err,
                format!("store.cache_mb must be 8..=65536 (MiB of redb page cache), not {bad}")
            );
        }
        assert!(load_with("", &[("GUARD_STORE_CACHE_MB", "-1")]).is_err());
    }

    #[test]
    fn test_hosts_hook_is_refused_in_production() {
        let hook = ("GUARD_WEBHOOKS_UNSAFE_TEST_HOSTS_FILE", "/tmp/hosts.json");
        let c = load_with("", &[hook]).unwrap();
        assert_eq!(
            c.webhooks.unsafe_test_hosts_file,
            Some(PathBuf::from("/tmp/hosts.json"))
        );
        assert!(
            load_with("", &[])
                .unwrap()
                .webhooks
                .unsafe_test_hosts_file
                .is_none()
        );
        let err = load_with("", &[hook, ("GUARD_ADMIN_PRODUCTION", "true")]).unwrap_err();
        assert!(err.to_string().contains("refused in production"), "{err}");
    }

    #[test]
    fn env_overrides_file() {
        let c = load_with(
            "[proxy]\nlisten = \"0.0.0.0:1\"\n",
            &[
                ("GUARD_PROXY_LISTEN", "127.0.0.1:9"),
                ("GUARD_PROXY_MAX_BODY_BYTES", "1024"),
            ],
        )
        .unwrap();
        assert_eq!(c.proxy.listen, "127.0.0.1:9");
        assert_eq!(c.proxy.max_body_bytes, 1024);
    }

    #[test]
    fn the_log_filter_variable_is_not_configuration() {
        assert!(load_with("", &[("GUARD_LOG", "debug")]).is_ok());
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(load_with("[proxy]\nlisten_typo = \"x\"\n", &[]).is_err());
        assert!(load_with("[nope]\n", &[]).is_err());
        assert!(load_with("", &[("GUARD_NOPE_X", "1")]).is_err());
        assert!(load_with("", &[("GUARD_PROXY_NOPE", "1")]).is_err());
    }

    #[test]
    fn production_refuses_a_master_key_written_in_the_file() {
        let mut c = load_with("[admin]\nproduction = true\n", &[]).unwrap();
        c.secrets.master_key_in_file = true;
        let err = c.check().unwrap_err().to_string();
        assert!(
            err.contains("must not be written in the configuration file"),
            "{err}"
        );
        c.admin.production = false;
        assert!(c.check().is_ok());
        let file = load_with("[secrets]\nmaster_key_file = \"/etc/pg/master.key\"\n", &[]).unwrap();
        assert_eq!(
            file.secrets.master_key_file.as_deref(),
            Some(Path::new("/etc/pg/master.key"))
        );
        assert!(
            !format!(
                "{:?}",
                load_with("[secrets]\nmaster_key = \"c2VjcmV0\"\n", &[])
                    .unwrap()
                    .secrets
            )
            .contains("c2VjcmV0")
        );
    }

    #[test]
    fn body_limit_is_bounded_by_the_retry_buffer() {
        assert!(load_with("", &[("GUARD_PROXY_MAX_BODY_BYTES", "70000")]).is_err());
    }

    #[test]
    fn a_tls_certificate_needs_its_key() {
        assert!(load_with("[admin]\ntls_cert = \"c.pem\"\n", &[]).is_err());
        assert!(load_with("", &[("GUARD_PROXY_TLS_KEY", "k.pem")]).is_err());
        let c = load_with("[proxy]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n", &[]).unwrap();
        assert_eq!(c.proxy.tls_cert, Some(PathBuf::from("c.pem")));
    }

    #[test]
    fn production_refuses_plain_http_listeners() {
        let prod = [
            ("GUARD_ADMIN_PRODUCTION", "true"),
            ("GUARD_ADMIN_ORIGIN", "https://guard.example"),
        ];
        // Store commands still load a production configuration; only `serve` checks listeners.
        let c = load_with("", &prod).unwrap();
        assert!(c.check_listeners().is_err(), "plain admin listener");
        let tls = "[admin]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n";
        load_with(tls, &prod).unwrap().check_listeners().unwrap();
        let term = [prod[0], prod[1], ("GUARD_ADMIN_TLS_TERMINATOR", "true")];
        load_with("", &term).unwrap().check_listeners().unwrap();
        let http_origin = [prod[0], ("GUARD_ADMIN_TLS_TERMINATOR", "true")];
        assert!(
            load_with("", &http_origin)
                .unwrap()
                .check_listeners()
                .is_err()
        );
        // The proxy: loopback is the sidecar case; any other address needs TLS or a terminator.
        let wide = [
            term[0],
            term[1],
            term[2],
            ("GUARD_PROXY_LISTEN", "0.0.0.0:8080"),
        ];
        assert!(load_with("", &wide).unwrap().check_listeners().is_err());
        let host = [
            term[0],
            term[1],
            term[2],
            ("GUARD_PROXY_LISTEN", "localhost:8080"),
        ];
        assert!(load_with("", &host).unwrap().check_listeners().is_err());
        let fronted = [
            wide[0],
            wide[1],
            wide[2],
            wide[3],
            ("GUARD_PROXY_TLS_TERMINATOR", "true"),
        ];
        load_with("", &fronted).unwrap().check_listeners().unwrap();
        let v6 = [
            term[0],
            term[1],
            term[2],
            ("GUARD_PROXY_LISTEN", "[::1]:8080"),
        ];
        load_with("", &v6).unwrap().check_listeners().unwrap();
        // Not production: anything goes.
        load_with("", &[("GUARD_PROXY_LISTEN", "0.0.0.0:8080")])
            .unwrap()
            .check_listeners()
            .unwrap();
    }
}
