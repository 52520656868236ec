//! TLS on both listeners (DECISIONS.md, "TLS on both listeners"): rustls with the ring provider,
//! TLS 1.2 and 1.3 only, the certificate chain and private key read from PEM files named in the
//! configuration, and reloaded on SIGHUP without closing a listener.
//!
//! Both listeners take their certificate from a [`ReloadableCert`], a rustls
//! [`ResolvesServerCert`] whose current certificate is swapped on reload: every new handshake
//! asks the resolver, so it gets the new certificate while established connections keep theirs.
//! pingora 0.9 accepts such a resolver (`TlsSettings::set_cert_resolver`); the admin listener
//! wraps its TCP listener in [`TlsListener`], an axum [`Listener`] over tokio-rustls.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::serve::Listener;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use zeroize::Zeroizing;

/// Largest PEM file read (a chain of a few certificates is a few KiB).
const MAX_PEM_BYTES: u64 = 1 << 20;
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once on the admin listener; further connections wait in the
/// kernel's accept queue.
const MAX_PENDING_HANDSHAKES: usize = 256;
/// Back-off after an accept error that is not about one connection (e.g. out of descriptors).
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// The protocol versions both listeners speak.
pub static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS12, &rustls::version::TLS13];

/// The ring provider (ARCHITECTURE.md: one provider, ring, for the whole process).
fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A listener's certificate and key, reloadable from their files.
#[derive(Debug)]
pub struct ReloadableCert {
    /// `proxy` or `admin`, for the logs.
    listener: &'static str,
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    /// Load the files now; an unreadable or inconsistent pair is a startup error.
    pub fn load(
        listener: &'static str,
        cert_path: &Path,
        key_path: &Path,
    ) -> anyhow::Result<Arc<Self>> {
        let key = load_certified_key(cert_path, key_path)
            .with_context(|| format!("{listener} TLS certificate"))?;
        Ok(Arc::new(Self {
            listener,
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(Arc::new(key)),
        }))
    }

    /// Read the files again. On success new handshakes present the new certificate; on error
    /// the current one stays and the error is returned.
    pub fn reload(&self) -> anyhow::Result<()> {
        let key = load_certified_key(&self.cert_path, &self.key_path)?;
        // A poisoned lock only means a writer panicked between two whole-value assignments.
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(key);
        Ok(())
    }

    /// Reload and log the outcome (SIGHUP).
    pub fn reload_and_log(&self) {
        match self.reload() {
            Ok(()) => tracing::info!(
                listener = self.listener,
                cert = %self.cert_path.display(),
                "TLS certificate reloaded; new handshakes present it"
            ),
            Err(e) => tracing::error!(
                listener = self.listener,
                cert = %self.cert_path.display(),
                key = %self.key_path.display(),
                error = %format!("{e:#}"),
                "TLS certificate reload failed; the previous certificate stays in use"
            ),
        }
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Read at most [`MAX_PEM_BYTES`] of `path`; the buffer is wiped when dropped (it may hold a key).
fn read_bounded(path: &Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut buf = Zeroizing::new(Vec::new());
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if buf.len() as u64 > MAX_PEM_BYTES {
        bail!("{} is larger than {MAX_PEM_BYTES} bytes", path.display());
    }
    Ok(buf)
}

/// The chain of `cert_path` (leaf first) with the key of `key_path`, checked to match.
fn load_certified_key(cert_path: &Path, key_path: &Path) -> anyhow::Result<CertifiedKey> {
    let cert_pem = read_bounded(cert_path)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow::anyhow!(
                "{} is not a PEM certificate chain: {e}",
                cert_path.display()
            )
        })?;
    if chain.is_empty() {
        bail!("{} holds no PEM certificate", cert_path.display());
    }
    let key_pem = read_bounded(key_path)?;
    // The parser's error is not repeated: it could quote part of the key file.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        anyhow::anyhow!(
            "{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            key_path.display()
        )
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        anyhow::anyhow!(
            "the key in {} is not usable with the certificate in {}: {e}",
            key_path.display(),
            cert_path.display()
        )
    })
}

/// The certificates of the listeners that have one.
pub struct ListenerCerts {
    pub proxy: Option<Arc<ReloadableCert>>,
    pub admin: Option<Arc<ReloadableCert>>,
}

impl ListenerCerts {
    /// Load what the configuration names (`[proxy]`/`[admin]` `tls_cert` and `tls_key`).
    pub fn load(cfg: &crate::config::Config) -> anyhow::Result<Self> {
        let load = |name, cert: &Option<PathBuf>, key: &Option<PathBuf>| match (cert, key) {
            (Some(c), Some(k)) => ReloadableCert::load(name, c, k).map(Some),
            _ => Ok(None),
        };
        Ok(Self {
            proxy: load("proxy", &cfg.proxy.tls_cert, &cfg.proxy.tls_key)?,
            admin: load("admin", &cfg.admin.tls_cert, &cfg.admin.tls_key)?,
        })
    }

    /// Every loaded certificate (what SIGHUP reloads).
    pub fn all(&self) -> Vec<Arc<ReloadableCert>> {
        self.proxy
            .iter()
            .chain(self.admin.iter())
            .cloned()
            .collect()
    }
}

/// The proxy listener's pingora settings: TLS 1.2 and 1.3 (pingora's rustls backend builds
/// exactly these versions, with the process provider, ring) and the reloadable certificate.
pub fn pingora_settings(
    cert: Arc<ReloadableCert>,
) -> anyhow::Result<pingora::listeners::tls::TlsSettings> {
    // With a resolver set, pingora ignores the (empty) certificate and key paths.
    let mut settings = pingora::listeners::tls::TlsSettings::intermediate("", "")
        .map_err(|e| anyhow::anyhow!("proxy TLS settings: {e}"))?;
    settings.set_cert_resolver(cert);
    Ok(settings)
}

/// The admin listener's rustls configuration: TLS 1.2 and 1.3, ring, HTTP/1.1.
pub fn admin_server_config(cert: Arc<ReloadableCert>) -> anyhow::Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .context("admin TLS configuration")?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An axum listener that completes TLS handshakes before handing connections to axum.
/// Handshakes run in their own tasks (a slow client delays nobody), bounded in number and in
/// time; dropping the listener (shutdown) aborts those still running.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> Self {
        Self {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
        }
    }

    fn start_handshake(&mut self, stream: TcpStream, peer: SocketAddr) {
        let acceptor = self.acceptor.clone();
        self.handshakes.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => Some((tls, peer)),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "admin TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "admin TLS handshake timed out");
                    None
                }
            }
        });
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let room = self.handshakes.len() < MAX_PENDING_HANDSHAKES;
            tokio::select! {
                accepted = self.tcp.accept(), if room => match accepted {
                    Ok((stream, peer)) => self.start_handshake(stream, peer),
                    Err(e) => accept_error(e).await,
                },
                Some(done) = self.handshakes.join_next() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
                // Unreachable (with no room there are handshakes to join); never a busy panic.
                else => tokio::task::yield_now().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// As axum's own TCP listener does: errors about one connection are skipped, others (out of
/// descriptors) back off before the next accept.
async fn accept_error(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "admin listener accept failed");
    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
}

/// SIGHUP reloads every certificate in `certs`. The handler is installed before the listeners
/// open (pingora does not use SIGHUP, and its default action would end the process); it runs on
/// a thread of its own so a reload never waits on a busy runtime.
pub fn reload_on_sighup(certs: Vec<Arc<ReloadableCert>>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("SIGHUP handler runtime")?;
    let mut hangups = runtime
        .block_on(async { tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) })
        .context("cannot install the SIGHUP handler")?;
    std::thread::Builder::new()
        .name("sighup-reload".into())
        .spawn(move || {
            runtime.block_on(async move {
                while hangups.recv().await.is_some() {
                    if certs.is_empty() {
                        tracing::info!("SIGHUP: no TLS certificate configured, nothing to reload");
                    }
                    for cert in &certs {
                        cert.reload_and_log();
                    }
                }
            });
        })
        .context("cannot start the SIGHUP handler thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_malformed_files_are_clear_errors() {
        let dir = std::env::temp_dir().join(format!("pg-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, b"not a pem file").unwrap();
        let missing = dir.join("missing.pem");
        let e = format!("{:#}", load_certified_key(&missing, &missing).unwrap_err());
        assert!(e.contains("cannot open"), "{e}");
        let e = format!("{:#}", load_certified_key(&garbage, &garbage).unwrap_err());
        assert!(e.contains("holds no PEM certificate"), "{e}");
        let big = dir.join("big.pem");
        std::fs::write(&big, vec![b'a'; (MAX_PEM_BYTES + 1) as usize]).unwrap();
        let e = format!("{:#}", load_certified_key(&big, &big).unwrap_err());
        assert!(e.contains("larger than"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
