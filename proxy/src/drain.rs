//! SIGTERM drain (OPERATIONS.md "Shutdown"): the proxy counts the requests it is handling; after
//! SIGTERM it takes no new ones and the process exits as soon as the count reaches zero, or when
//! the grace period ends, whichever comes first — instead of always sleeping the whole grace
//! period.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Inner {
    count: AtomicUsize,
    draining: AtomicBool,
    idle: Notify,
}

/// The requests in flight on the proxy, shared by the proxy and the shutdown watch.
#[derive(Clone, Debug, Default)]
pub struct InFlight {
    inner: Arc<Inner>,
}

/// One request in flight; dropping it (when the request's context is dropped, after the answer
/// was written or the connection was lost) ends it.
#[derive(Debug)]
pub struct InFlightGuard {
    inner: Arc<Inner>,
}

impl InFlight {
    /// Count a new request, or `None` once draining began (the caller refuses it).
    pub fn enter(&self) -> Option<InFlightGuard> {
        // Counted first, then checked (both SeqCst): either `drain` sees this count, or this
        // request sees `draining` and leaves. Checking first would let `drain` set the flag and
        // see zero between the check and the count, and stop with this request in flight.
        let guard = InFlightGuard {
            inner: self.inner.clone(),
        };
        self.inner.count.fetch_add(1, Ordering::SeqCst);
        if self.inner.draining.load(Ordering::SeqCst) {
            drop(guard); // uncounts and wakes the drain
            return None;
        }
        Some(guard)
    }

    /// Requests in flight now.
    pub fn count(&self) -> usize {
        self.inner.count.load(Ordering::SeqCst)
    }

    /// Refuse new requests, then wait until none is in flight or `grace` has passed; returns how
    /// many were still in flight (0: all finished).
    pub async fn drain(&self, grace: Duration) -> usize {
        self.inner.draining.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let idle = self.inner.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            let left = self.count();
            if left == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.count();
            }
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.inner.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_returns_when_the_last_request_ends_and_refuses_new_ones() {
        let f = InFlight::default();
        assert_eq!(
            f.drain(Duration::from_secs(5)).await,
            0,
            "nothing in flight"
        );
        let f = InFlight::default();
        let g = f.enter().unwrap();
        let waiter = tokio::spawn({
            let f = f.clone();
            async move { f.drain(Duration::from_secs(30)).await }
        });
        while !f.inner.draining.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        assert!(f.enter().is_none(), "refused while draining");
        drop(g);
        assert_eq!(waiter.await.unwrap(), 0);
    }

    #[tokio::test]
    async fn drain_gives_up_at_the_grace_period() {
        let f = InFlight::default();
        let _g = f.enter().unwrap();
        assert_eq!(f.drain(Duration::from_millis(50)).await, 1);
    }
}
