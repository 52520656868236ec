//! The shutdown signals (OPERATIONS.md "Shutdown"). pingora's own watch, on SIGTERM, stops the
//! listeners and then always sleeps the whole grace period before stopping the runtimes, so an
//! idle guard took `proxy.shutdown_grace_secs` to exit and a `stop; audit verify` met a store
//! still in use. This watch drains first: on SIGTERM the proxy refuses new requests (503
//! `guard_shutting_down`, nothing decided), the watch waits until the requests in flight have
//! been answered — at most the grace period — and only then hands pingora a graceful terminate,
//! with pingora's own grace period set to zero.

use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use proxy::InFlight;
use tokio::signal::unix::{SignalKind, signal};

/// SIGTERM: drain, then graceful terminate; SIGINT: fast shutdown; SIGQUIT: pingora's upgrade.
pub struct DrainThenTerminate {
    pub in_flight: InFlight,
    pub grace: Duration,
}

/// The next delivery of `kind`; never, if the handler cannot be installed (logged).
async fn next(kind: SignalKind, name: &'static str) {
    match signal(kind) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(e) => {
            tracing::error!(signal = name, error = %e, "cannot listen for the signal");
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait]
impl ShutdownSignalWatch for DrainThenTerminate {
    async fn recv(&self) -> ShutdownSignal {
        tokio::select! {
            _ = next(SignalKind::quit(), "SIGQUIT") => return ShutdownSignal::GracefulUpgrade,
            _ = next(SignalKind::interrupt(), "SIGINT") => return ShutdownSignal::FastShutdown,
            _ = next(SignalKind::terminate(), "SIGTERM") => {}
        }
        tracing::info!(
            in_flight = self.in_flight.count(),
            grace_secs = self.grace.as_secs(),
            "SIGTERM: refusing new requests, waiting for those in flight"
        );
        tokio::select! {
            left = self.in_flight.drain(self.grace) => {
                if left > 0 {
                    tracing::warn!(left, "grace period over; stopping with requests in flight");
                }
                ShutdownSignal::GracefulTerminate
            }
            _ = next(SignalKind::interrupt(), "SIGINT") => ShutdownSignal::FastShutdown,
        }
    }
}
