//! In-process notification when an intent changes state (settled, approved, denied), so a
//! replay that finds its key in flight, or an agent waiting with `Prefer: wait=N`, wakes up at
//! once instead of polling. Bounded: a broadcast channel of intent ids; a lagging waiter re-reads
//! the store.

use std::time::Duration;

use crate::ids::IntentId;
use tokio::sync::broadcast;

/// Capacity of the notification channel (ids, not payloads).
const CHANNEL_CAPACITY: usize = 4096;

/// Publishes intent changes.
#[derive(Clone, Debug)]
pub struct IntentEvents {
    tx: broadcast::Sender<IntentId>,
}

impl Default for IntentEvents {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self { tx }
    }
}

impl IntentEvents {
    /// Tell waiters that `id` changed.
    pub fn publish(&self, id: &IntentId) {
        let _ = self.tx.send(id.clone());
    }

    /// Subscribe before checking the state, then [`Subscription::changed`] never misses a change.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
        }
    }
}

/// A subscription to intent changes.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<IntentId>,
}

impl Subscription {
    /// Wait until any intent changed (true) or `timeout` passed (false).
    pub async fn any(&mut self, timeout: Duration) -> bool {
        let wait = async {
            match self.rx.recv().await {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => true,
                Err(broadcast::error::RecvError::Closed) => false,
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }

    /// Wait until `id` may have changed (true) or `timeout` passed (false).
    pub async fn changed(&mut self, id: &IntentId, timeout: Duration) -> bool {
        let wait = async {
            loop {
                match self.rx.recv().await {
                    Ok(got) if &got == id => return true,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => return true,
                    Err(broadcast::error::RecvError::Closed) => return false,
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }
}
