//! pingora background services around the proxy: the admin API (axum), the executor of approved
//! holds, and the hold-expiry worker. Each runs in its own pingora runtime; the executor builds
//! its own HTTP client there (a client must not cross runtimes).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::serve::ListenerExt;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use store::{Committer, IntentEvents, Store};

/// The admin API on its own listener, over TLS when `tls` is set.
pub struct AdminService {
    pub listen: String,
    pub state: admin::AppState,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let listener = match tokio::net::TcpListener::bind(&self.listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(listen = %self.listen, error = %e, "admin API cannot listen");
                return;
            }
        };
        let app = admin::build_router(self.state.clone())
            .into_make_service_with_connect_info::<SocketAddr>();
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        let served = match &self.tls {
            // `tap_io` with no tap: axum gives `ConnectInfo<SocketAddr>` to any listener
            // wrapped this way (its blanket impl), as it does to a bare TcpListener.
            Some(config) => {
                let tls = crate::tls::TlsListener::new(listener, config.clone()).tap_io(|_| {});
                axum::serve(tls, app).with_graceful_shutdown(stop).await
            }
            None => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "admin API stopped with an error");
        }
    }
}

/// The executor of approved holds.
pub struct ExecutorService {
    pub store: Arc<Store>,
    pub committer: Committer,
    pub events: IntentEvents,
    pub base_url: String,
    pub timeout: Duration,
    pub max_response_bytes: usize,
}

#[async_trait]
impl BackgroundService for ExecutorService {
    async fn start(&self, shutdown: ShutdownWatch) {
        let forwarder =
            match proxy::Forwarder::new(&self.base_url, self.timeout, self.max_response_bytes) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(error = %e, "executor cannot start");
                    return;
                }
            };
        let exec = proxy::Executor::new(
            self.store.clone(),
            self.committer.clone(),
            forwarder,
            self.events.clone(),
        );
        exec.run(shutdown).await;
    }
}

/// Expires undecided holds.
pub struct ExpiryService {
    pub committer: store::Committer,
    pub events: IntentEvents,
    pub every: Duration,
}

#[async_trait]
impl BackgroundService for ExpiryService {
    async fn start(&self, shutdown: ShutdownWatch) {
        proxy::expire_holds_loop(
            self.committer.clone(),
            self.events.clone(),
            self.every,
            shutdown,
        )
        .await;
    }
}

/// Removes agents' idempotency records older than `store.idempotency_retention_hours`, in
/// bounded rounds through the ledger writer (`Command::Prune`), one pass every `every`.
pub struct PruneService {
    pub committer: store::Committer,
    pub retention: Duration,
    pub every: Duration,
}

/// Records looked at per round: one round is one bounded ledger command.
const PRUNE_SCAN_PER_ROUND: usize = 500;

#[async_trait]
impl BackgroundService for PruneService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let before = store::now().unix - self.retention.as_secs() as i64;
            let (mut after, mut removed) = (None, 0usize);
            loop {
                match self
                    .committer
                    .prune(before, after.take(), PRUNE_SCAN_PER_ROUND)
                    .await
                {
                    Ok(round) => {
                        removed += round.removed;
                        match round.next {
                            Some(next) => after = Some(next),
                            None => break,
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "pruning idempotency records failed");
                        break;
                    }
                }
                if *shutdown.borrow() {
                    return;
                }
            }
            if removed > 0 {
                tracing::info!(removed, "pruned idempotency records past their retention");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}
