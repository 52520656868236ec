//! The executor (PROXY.md step 6): sends approved holds upstream exactly once and settles them.
//! Exactly once: the claim (`approved → forwarding`) is durable before anything is sent, so a
//! crash leaves the intent `forwarding` → `unknown` at restart, never `approved` twice; and the
//! upstream key is derived from the intent, so even a resend after `unknown` cannot pay twice.

use std::sync::Arc;
use std::time::Duration;

use store::{Claim, Committer, IntentEvents, IntentId, OrgId, Store};

use crate::forward::{ExactRequest, Forwarder, send_and_settle};

/// How often the executor sweeps the approved queue without a notification.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Sends approved holds.
pub struct Executor {
    store: Arc<Store>,
    committer: Committer,
    forwarder: Forwarder,
    events: IntentEvents,
}

impl Executor {
    /// An executor with its own HTTP client (`forwarder`).
    pub fn new(
        store: Arc<Store>,
        committer: Committer,
        forwarder: Forwarder,
        events: IntentEvents,
    ) -> Self {
        Self {
            store,
            committer,
            forwarder,
            events,
        }
    }

    /// Run until `shutdown` turns true.
    pub async fn run(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        // Subscribed once, before the first sweep: an approval made while a sweep runs marks
        // the subscription changed, so the next wait returns at once.
        let mut approvals = self.events.approvals();
        loop {
            self.sweep().await;
            tokio::select! {
                _ = approvals.next(SWEEP_EVERY) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    async fn sweep(&self) {
        let store = self.store.clone();
        let queue = match tokio::task::spawn_blocking(move || store.approved_queue()).await {
            Ok(Ok(q)) => q,
            _ => {
                tracing::error!("executor cannot read the approved queue");
                return;
            }
        };
        for (org, id) in queue {
            self.execute(org, id).await;
        }
    }

    async fn execute(&self, org: OrgId, id: IntentId) {
        let claimed = match self.committer.claim(org, id.clone()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(intent = %id, error = %e, "executor cannot claim an approved intent");
                return;
            }
        };
        let (intent, rail_key) = match claimed {
            Claim::Execute(intent, rail_key) => (*intent, rail_key),
            Claim::Cancelled(intent) => {
                // The kill switch was on: the agent waiting on it learns it was denied.
                tracing::warn!(intent = %id, reason = %intent.reason, "approved hold cancelled by the kill switch");
                self.events.publish(&id);
                return;
            }
            Claim::Gone => return,
        };
        // PROXY.md step 6: exactly the stored request. Holds stored before headers were kept
        // carry none; they were form posts on the platform account.
        let legacy = [(
            "content-type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        )];
        let headers: &[(String, String)] = if intent.request_headers.is_empty() {
            &legacy
        } else {
            &intent.request_headers
        };
        let exact = ExactRequest {
            query: &intent.query,
            headers,
            body: intent.request_body.clone().unwrap_or_default(),
        };
        let (_, settled) = send_and_settle(
            &self.forwarder,
            &self.committer,
            &self.events,
            &intent,
            &rail_key,
            exact,
        )
        .await;
        match settled {
            Ok(i) => {
                tracing::info!(intent = %id, status = i.status.as_str(), "executed approved hold")
            }
            Err(e) => tracing::error!(intent = %id, error = %e, "settling an executed hold failed"),
        }
    }
}

/// Expires undecided holds (`holds.expire_after_secs`), checking every `every`.
pub async fn expire_holds_loop(
    committer: Committer,
    events: IntentEvents,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    /// Holds expired per round at most (bounded transaction size).
    const PER_ROUND: usize = 1000;
    loop {
        let now = store::now().unix;
        match committer.expire(now, PER_ROUND).await {
            Ok(ids) => {
                for id in &ids {
                    events.publish(id);
                }
                if ids.len() == PER_ROUND {
                    continue;
                }
            }
            Err(e) => tracing::error!(error = %e, "hold expiry round failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
