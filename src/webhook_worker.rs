//! The webhook delivery worker (WEBHOOKS.md): fans the durable outbox out to endpoints, signs each
//! attempt per Standard Webhooks, POSTs with a timeout and no redirects, and records every
//! attempt (status, duration, error) with backoff. Pending deliveries survive restarts because
//! they live in the store; receivers dedupe on `webhook-id` (the event id, stable across retries).

use std::sync::Arc;
use std::time::{Duration, Instant};

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
    pub allow_private: bool,
    pub timeout: Duration,
    pub concurrency: usize,
    pub poll: Duration,
}

#[async_trait]
impl BackgroundService for WebhookService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let client = match reqwest::Client::builder()
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "webhook worker cannot build its HTTP client");
                return;
            }
        };
        loop {
            let busy = self.round(&client).await;
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
    async fn round(&self, client: &reqwest::Client) -> bool {
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
        let due = match tokio::task::spawn_blocking(move || s.due_deliveries(store::now_ms(), max))
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
                let (client, store, policy, allow) = (
                    client.clone(),
                    self.store.clone(),
                    self.policy,
                    self.allow_private,
                );
                set.spawn(async move { attempt(&client, &store, d, &policy, allow).await });
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
    client: &reqwest::Client,
    store: &Arc<Store>,
    due: DueDelivery,
    policy: &RetryPolicy,
    allow_private: bool,
) {
    let started_ms = store::now_ms();
    let started = Instant::now();
    let (status, error) = match send(client, &due, allow_private).await {
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

async fn send(
    client: &reqwest::Client,
    due: &DueDelivery,
    allow_private: bool,
) -> Result<u16, String> {
    admin::webhook_target::check_target(&due.url, allow_private).await?;
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
        .post(&due.url)
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
