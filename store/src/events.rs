//! In-process notification when an intent changes state (settled, approved, denied), so a
//! replay that finds its key in flight, or an agent waiting with `Prefer: wait=N`, wakes up at
//! once instead of polling. Bounded: a broadcast channel of intent ids; a lagging waiter re-reads
//! the store.

use std::time::Duration;

use crate::ids::IntentId;
use crate::model::IntentStatus;
use tokio::sync::{broadcast, watch};

/// Capacity of the notification channel (ids, not payloads).
const CHANNEL_CAPACITY: usize = 4096;

/// Publishes intent changes.
#[derive(Clone, Debug)]
pub struct IntentEvents {
    tx: broadcast::Sender<IntentId>,
    /// Bumped when a hold becomes `approved`: the executor's only reason to look for work
    /// between its periodic sweeps (it used to wake on every settlement, thousands a second).
    approved: watch::Sender<u64>,
}

impl Default for IntentEvents {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        let (approved, _) = watch::channel(0);
        Self { tx, approved }
    }
}

impl IntentEvents {
    /// Tell waiters that `id` changed.
    pub fn publish(&self, id: &IntentId) {
        let _ = self.tx.send(id.clone());
    }

    /// Tell waiters that `id` changed to `status`; an `approved` one also wakes the executor.
    /// Every path that can approve a hold must call this (today: the admin API's decision,
    /// `admin/src/resources.rs`); one that does not leaves the hold to the executor's sweep
    /// every few seconds.
    pub fn publish_status(&self, id: &IntentId, status: IntentStatus) {
        self.publish(id);
        if status == IntentStatus::Approved {
            self.approved.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Subscribe to approvals (the executor): subscribe before sweeping, then
    /// [`Approvals::next`] never misses one made during the sweep.
    pub fn approvals(&self) -> Approvals {
        let mut rx = self.approved.subscribe();
        rx.mark_unchanged();
        Approvals { rx }
    }

    /// Subscribe before checking the state, then [`Subscription::changed`] never misses a change.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
        }
    }
}

/// A subscription to approvals.
#[derive(Debug)]
pub struct Approvals {
    rx: watch::Receiver<u64>,
}

impl Approvals {
    /// Wait until a hold was approved since the last call (true) or `timeout` passed (false).
    pub async fn next(&mut self, timeout: Duration) -> bool {
        matches!(
            tokio::time::timeout(timeout, self.rx.changed()).await,
            Ok(Ok(()))
        )
    }
}

/// A subscription to intent changes.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<IntentId>,
}

impl Subscription {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    }

    /// Only an approval wakes the executor; one made while it sweeps is not lost.
    #[test]
    fn only_an_approval_wakes_the_executor_and_none_is_missed() {
        let events = IntentEvents::default();
        let id = IntentId::generate();
        let rt = rt();
        let mut approvals = events.approvals();
        let mut changes = events.subscribe();
        // Settlements, denials, holds: waiters on the intent hear them, the executor does not.
        for status in [
            IntentStatus::Succeeded,
            IntentStatus::Denied,
            IntentStatus::PendingApproval,
        ] {
            events.publish_status(&id, status);
        }
        assert!(!rt.block_on(approvals.next(Duration::ZERO)));
        assert!(rt.block_on(changes.changed(&id, Duration::ZERO)));
        // An approval published before the executor waits (during its sweep) wakes it at once,
        // once.
        events.publish_status(&id, IntentStatus::Approved);
        events.publish_status(&id, IntentStatus::Approved);
        assert!(rt.block_on(approvals.next(Duration::ZERO)));
        assert!(!rt.block_on(approvals.next(Duration::ZERO)));
    }
}
