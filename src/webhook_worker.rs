//! The webhook delivery worker (WEBHOOKS.md): fans the durable outbox out to endpoints, signs each
//! attempt per Standard Webhooks, POSTs with a timeout and no redirects, and records every
//! attempt (status, duration, error) with backoff. Pending deliveries survive restarts because
//! they live in the store; receivers dedupe on `webhook-id` (the event id, stable across retries).
//!
//! SSRF: before each attempt the stored URL is parsed once, resolved once and checked
//! (`admin::webhook_target::check`); the request is then made with that same `Url` by a client
//! pinned to exactly the checked addresses, with no DNS resolver of its own, no proxy from the
//! environment and no redirects. TLS still verifies the certificate against the host name.

use std::sync::Arc;
use std::time::{Duration, Instant};

use admin::webhook_target::{self, Target, TargetPolicy};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use store::{Attempt, DueDelivery, RetryPolicy, Store};

/// Outbox entries fanned out per round, and due deliveries taken per round.
const FAN_OUT_PER_ROUND: usize = 500;

/// Worker settings.
pub struct WebhookService {
    pub store: Arc<Store>,
    pub policy: RetryPolicy,
    /// How targets are checked (the same policy as the admin API's).
    pub targets: TargetPolicy,
    pub timeout: Duration,
    pub concurrency: usize,
    pub poll: Duration,
}

#[async_trait]
impl BackgroundService for WebhookService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let busy = self.round().await;
            if !busy {
                tokio::select! {
                    _ = tokio::time::sleep(self.poll) => {}
                    _ = shutdown.changed() => return,
                }
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}

impl WebhookService {
    /// One round: fan out, then attempt what is due. True when there may be more work now.
    async fn round(&self) -> bool {
        let s = self.store.clone();
        let fanned = tokio::task::spawn_blocking(move || s.fan_out_outbox(FAN_OUT_PER_ROUND)).await;
        let fanned = match fanned {
            Ok(Ok(n)) => n,
            _ => {
                tracing::error!("webhook outbox fan-out failed");
                0
            }
        };
        let s = self.store.clone();
        let max = self.concurrency * 4;
        let due =
            match tokio::task::spawn_blocking(move || s.claim_due_deliveries(store::now_ms(), max))
                .await
            {
                Ok(Ok(d)) => d,
                _ => {
                    tracing::error!("reading due webhook deliveries failed");
                    return false;
                }
            };
        let busy = fanned == FAN_OUT_PER_ROUND || due.len() == max;
        for chunk in due.chunks(self.concurrency) {
            let mut set = tokio::task::JoinSet::new();
            for d in chunk.iter().cloned() {
                let (store, policy, targets, timeout) = (
                    self.store.clone(),
                    self.policy,
                    self.targets.clone(),
                    self.timeout,
                );
                set.spawn(async move { attempt(&store, d, &policy, &targets, timeout).await });
            }
            while set.join_next().await.is_some() {}
        }
        busy
    }
}

fn jitter() -> u16 {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    u16::from_le_bytes(b)
}

async fn attempt(
    store: &Arc<Store>,
    due: DueDelivery,
    policy: &RetryPolicy,
    targets: &TargetPolicy,
    timeout: Duration,
) {
    let started_ms = store::now_ms();
    let started = Instant::now();
    let (status, error) = match send(&due, targets, timeout).await {
        Ok(code) if (200..300).contains(&code) => (Some(code), None),
        Ok(code) if (300..400).contains(&code) => (
            Some(code),
            Some(format!("HTTP {code}: redirects are not followed")),
        ),
        Ok(code) => (Some(code), Some(format!("HTTP {code}"))),
        Err(e) => (None, Some(e)),
    };
    let a = Attempt {
        at_ms: started_ms,
        status,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        error,
    };
    let d = due.delivery;
    let (s, policy, j) = (store.clone(), *policy, jitter());
    let recorded = tokio::task::spawn_blocking(move || {
        s.record_attempt(&d.org, &d.endpoint, &d.id, a, &policy, j)
    })
    .await;
    if !matches!(recorded, Ok(Ok(_))) {
        tracing::error!("recording a webhook attempt failed");
    }
}

async fn send(due: &DueDelivery, targets: &TargetPolicy, timeout: Duration) -> Result<u16, String> {
    // Re-resolved and re-checked on every attempt: the name may point elsewhere since creation.
    let target = webhook_target::check(&due.url, targets)
        .await
        .map_err(|r| format!("target refused ({}): {r}", r.reason()))?;
    let client = pinned_client(&target, timeout)?;
    let secrets: Vec<payment_guard_sdk::Secret> = due
        .secrets
        .iter()
        .filter_map(|s| payment_guard_sdk::Secret::parse(s).ok())
        .collect();
    let refs: Vec<&payment_guard_sdk::Secret> = secrets.iter().collect();
    let ts = store::now().unix;
    let body = due.delivery.body.as_bytes();
    let signature = payment_guard_sdk::signature_header(&refs, &due.delivery.event_id, ts, body);
    let resp = client
        .post(target.url)
        .header("content-type", "application/json")
        .header("webhook-id", &due.delivery.event_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(due.delivery.body.clone())
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "timeout".to_string()
            } else {
                format!("request failed: {e}")
            }
        })?;
    Ok(resp.status().as_u16())
}

/// A client for one attempt that can reach only the checked addresses: the host name is pinned
/// to them, any other lookup fails ([`NoLookups`]), no proxy is taken from the environment, and
/// redirects are not followed. Certificates are still verified against the host name (the URL
/// keeps it; only the connect address is fixed).
fn pinned_client(target: &Target, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(NoLookups));
    if let Some(domain) = target.domain() {
        b = b.resolve_to_addrs(domain, &target.addrs);
    }
    b.build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// The pinned client's resolver: refuses every lookup, so a name the pin does not cover fails
/// closed instead of being resolved a second time.
struct NoLookups;

impl reqwest::dns::Resolve for NoLookups {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let msg = format!("no lookup of {} outside the checked target", name.as_str());
        Box::pin(std::future::ready(Err(msg.into())))
    }
}
