//! Outgoing webhooks (WEBHOOKS.md): endpoints, the durable outbox, deliveries and their attempts.
//! An event worth telling is put in the outbox by the same transaction that appends its audit
//! event ([`enqueue_in`]), so a crash can neither lose nor invent one. The delivery worker fans
//! outbox entries out to the subscribed endpoints, attempts them, and records every attempt.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Store;
use crate::audit::{self, AuditHead};
use crate::audit_event::AuditEvent;
use crate::error::{Result, StoreError};
use crate::ids::{Actor, OrgId, random_hex};
use crate::tables::*;
use crate::time_util::now;

/// Every event type an endpoint can subscribe to (WEBHOOKS.md).
pub const EVENT_TYPES: [&str; 13] = [
    "intent.held",
    "intent.approved",
    "intent.denied",
    "intent.expired",
    "intent.succeeded",
    "intent.failed",
    "intent.unknown",
    "policy.updated",
    "cap.changed",
    "agent.created",
    "agent.frozen",
    "agent.revoked",
    "member.role_changed",
];

/// A receiver of webhooks.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    /// `wh_…`.
    pub id: String,
    /// Organization.
    pub org: OrgId,
    /// `http(s)://…`.
    pub url: String,
    /// Subscribed types; `None` = all.
    pub events: Option<Vec<String>>,
    /// Disabled endpoints get no new deliveries.
    pub enabled: bool,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// Current secret, sealed.
    pub(crate) secret: String,
    /// Previous secret during a rotation overlap, sealed, with its end (unix seconds).
    pub(crate) previous_secret: Option<(String, i64)>,
    /// Failed attempts in a row (reset by a success).
    pub consecutive_failures: u32,
    /// RFC 3339.
    pub created_at: String,
}

/// One event in the outbox.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// The JSON body every endpoint receives.
    pub body: Value,
    /// `evt_…` (the `webhook-id`).
    pub event_id: String,
    /// Event type.
    pub kind: String,
}

/// One attempt to deliver.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attempt {
    /// Unix milliseconds when it started.
    pub at_ms: i64,
    /// HTTP status, when one arrived.
    pub status: Option<u16>,
    /// Milliseconds it took.
    pub duration_ms: u64,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// A delivery of one event to one endpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Delivery {
    /// `dlv_…`.
    pub id: String,
    /// Organization.
    pub org: OrgId,
    /// Endpoint.
    pub endpoint: String,
    /// `evt_…`.
    pub event_id: String,
    /// Event type.
    pub kind: String,
    /// Body bytes (JSON text) sent on every attempt.
    pub body: String,
    /// `pending`, `delivered`, `failed` (attempts exhausted) or `abandoned` (its endpoint was
    /// disabled or deleted: no further attempt is made).
    pub state: String,
    /// Why a delivery was abandoned (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Every attempt.
    pub attempts: Vec<Attempt>,
    /// Next attempt (unix ms), while pending.
    pub next_attempt_ms: Option<i64>,
}

/// What the worker needs to send one delivery.
#[derive(Clone, Debug)]
pub struct DueDelivery {
    /// The delivery.
    pub delivery: Delivery,
    /// Endpoint URL.
    pub url: String,
    /// Secrets to sign with (current first; previous during rotation).
    pub secrets: Vec<String>,
}

/// Retry policy of deliveries.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// First retry delay (ms); doubles per attempt, with ±20 % jitter.
    pub base_ms: i64,
    /// Longest delay between attempts (ms).
    pub max_delay_ms: i64,
    /// Attempts before a delivery is given up.
    pub max_attempts: usize,
    /// Failures in a row after which the endpoint is disabled.
    pub disable_after_failures: u32,
}

impl Default for RetryPolicy {
    /// 5 s doubling to 2 h between attempts, 30 attempts: more than 24 hours of retries.
    fn default() -> Self {
        Self {
            base_ms: 5_000,
            max_delay_ms: 2 * 3_600_000,
            max_attempts: 30,
            disable_after_failures: 100,
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `n + 1` after `n` failed attempts, with jitter from `rand` (0..1000).
    pub fn delay_ms(&self, failed: usize, rand: u16) -> i64 {
        let exp = self
            .base_ms
            .saturating_mul(1i64 << failed.saturating_sub(1).min(30));
        let d = exp.min(self.max_delay_ms);
        let jitter = d / 5 * (i64::from(rand % 1000) - 500) / 500;
        (d + jitter).max(1)
    }
}

fn webhook_type(kind: &str, data: &Value) -> Option<&'static str> {
    let t = match kind {
        "decision" => match data.get("outcome").and_then(Value::as_str) {
            Some("hold") => "intent.held",
            Some("deny") => "intent.denied",
            _ => return None,
        },
        other => *EVENT_TYPES.iter().find(|t| **t == other)?,
    };
    Some(t)
}

/// Put an outbox entry for an audit event when it is worth telling and the organization has an
/// enabled endpoint. Called inside the audit append, in the same transaction.
pub(crate) fn enqueue_in(
    txn: &crate::ledger::Tx<'_>,
    org: &OrgId,
    kind: &str,
    event: &Value,
    head: &AuditHead,
) -> Result<()> {
    let data = event.get("data").cloned().unwrap_or(Value::Null);
    let Some(t) = webhook_type(kind, &data) else {
        return Ok(());
    };
    let endpoints: Vec<WebhookEndpoint> = scan_org(&txn.open_table(WEBHOOKS)?, org.as_str())?;
    if !endpoints.iter().any(|e| e.enabled) {
        return Ok(());
    }
    let event_id = format!("evt_{}", random_hex(12));
    let created = time::OffsetDateTime::parse(
        event.get("at").and_then(Value::as_str).unwrap_or(""),
        &time::format_description::well_known::Rfc3339,
    )
    .map(|t| t.unix_timestamp())
    .unwrap_or_else(|_| now().unix);
    let body = json!({"id": event_id, "type": t, "created": created, "org": org, "data": data,
        "audit_head": {"seq": head.seq, "hash": head.hash}});
    let entry = OutboxEvent {
        body,
        event_id,
        kind: t.to_string(),
    };
    put_json(
        &mut txn.open_table(OUTBOX)?,
        &format!("{org}|{:020}", head.seq),
        &entry,
    )
}

fn queue_key<'a>(
    due_ms: i64,
    org: &'a OrgId,
    endpoint: &'a str,
    id: &'a str,
) -> (u64, &'a str, &'a str, &'a str) {
    let due = u64::try_from(due_ms).unwrap_or(0);
    (due, org.as_str(), endpoint, id)
}

/// Every delivery of one endpoint, in id order.
fn deliveries_of(
    t: &impl redb::ReadableTable<(S, S, S), &'static [u8]>,
    org: &OrgId,
    endpoint: &str,
) -> Result<Vec<Delivery>> {
    let mut out = Vec::new();
    for row in t.range((org.as_str(), endpoint, "")..)? {
        let (k, v) = row?;
        let (o, e, _) = k.value();
        if o != org.as_str() || e != endpoint {
            break;
        }
        out.push(serde_json::from_slice(v.value())?);
    }
    Ok(out)
}

/// Refuse URLs that are not http(s) (the private-range check needs DNS and is the caller's).
pub fn check_url_shape(url: &str) -> Result<()> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() <= 2048
        && !url.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(
            "url must be an http:// or https:// URL".into(),
        ))
    }
}

impl Store {
    /// Create an endpoint; returns it with its secret (`whsec_…`), shown once.
    pub fn create_webhook(
        &self,
        org: &OrgId,
        url: &str,
        events: Option<Vec<String>>,
        secret: &str,
        actor: &Actor,
    ) -> Result<WebhookEndpoint> {
        check_url_shape(url)?;
        check_types(events.as_deref())?;
        self.write(|txn| {
            crate::orgs::load_org(txn, org)?;
            let t = now();
            let ep = WebhookEndpoint {
                id: format!("wh_{}", random_hex(12)),
                org: org.clone(),
                url: url.to_string(),
                events,
                enabled: true,
                disabled_reason: None,
                secret: self
                    .master
                    .seal(&format!("webhook|{org}"), secret.as_bytes()),
                previous_secret: None,
                consecutive_failures: 0,
                created_at: t.text.clone(),
            };
            put_rec(
                &mut txn.open_table(WEBHOOKS)?,
                (org.as_str(), ep.id.as_str()),
                &ep,
            )?;
            audit::append(
                txn,
                org,
                actor,
                &AuditEvent::WebhookCreated {
                    webhook: ep.id.clone(),
                    url: ep.url.clone(),
                    events: ep.events.clone(),
                },
                &t.text,
            )?;
            Ok(ep)
        })
    }

    /// Endpoints of an organization.
    pub fn list_webhooks(&self, org: &OrgId) -> Result<Vec<WebhookEndpoint>> {
        let r = self.read()?;
        scan_org(&r.open_table(WEBHOOKS)?, org.as_str())
    }

    /// Change url, subscriptions or enabled state.
    pub fn update_webhook(
        &self,
        org: &OrgId,
        id: &str,
        url: Option<String>,
        events: Option<Option<Vec<String>>>,
        enabled: Option<bool>,
        actor: &Actor,
    ) -> Result<WebhookEndpoint> {
        if let Some(u) = &url {
            check_url_shape(u)?;
        }
        if let Some(e) = &events {
            check_types(e.as_deref())?;
        }
        self.write(|txn| {
            let mut t = txn.open_table(WEBHOOKS)?;
            let key = (org.as_str(), id);
            let mut ep: WebhookEndpoint =
                get_rec(&t, &key)?.ok_or(StoreError::NotFound("webhook"))?;
            if let Some(u) = url {
                ep.url = u;
            }
            if let Some(e) = events {
                ep.events = e;
            }
            let disabling = enabled == Some(false) && ep.enabled;
            if let Some(en) = enabled {
                ep.enabled = en;
                if en {
                    ep.disabled_reason = None;
                    ep.consecutive_failures = 0;
                }
            }
            if disabling {
                ep.disabled_reason = Some("disabled by an administrator".into());
            }
            put_rec(&mut t, &key, &ep)?;
            drop(t);
            audit::append(
                txn,
                org,
                actor,
                &AuditEvent::WebhookUpdated {
                    webhook: id.to_string(),
                    url: ep.url.clone(),
                    events: ep.events.clone(),
                    enabled: ep.enabled,
                },
                &now().text,
            )?;
            if disabling {
                abandon_pending_in(txn, org, id, "endpoint disabled by an administrator", actor)?;
            }
            Ok(ep)
        })
    }

    /// Delete an endpoint (its delivery records stay for the audit trail's sake).
    pub fn delete_webhook(&self, org: &OrgId, id: &str, actor: &Actor) -> Result<()> {
        self.write(|txn| {
            if !txn.open_table(WEBHOOKS)?.remove((org.as_str(), id))? {
                return Err(StoreError::NotFound("webhook"));
            }
            audit::append(
                txn,
                org,
                actor,
                &AuditEvent::WebhookDeleted {
                    webhook: id.to_string(),
                },
                &now().text,
            )?;
            abandon_pending_in(txn, org, id, "endpoint deleted", actor)?;
            Ok(())
        })
    }

    /// New secret; the previous one keeps signing (both signatures sent) for `overlap_secs`.
    pub fn rotate_webhook_secret(
        &self,
        org: &OrgId,
        id: &str,
        new_secret: &str,
        overlap_secs: i64,
        actor: &Actor,
    ) -> Result<WebhookEndpoint> {
        self.write(|txn| {
            let mut t = txn.open_table(WEBHOOKS)?;
            let key = (org.as_str(), id);
            let mut ep: WebhookEndpoint =
                get_rec(&t, &key)?.ok_or(StoreError::NotFound("webhook"))?;
            let clock = now();
            ep.previous_secret = Some((ep.secret.clone(), clock.unix.saturating_add(overlap_secs)));
            ep.secret = self
                .master
                .seal(&format!("webhook|{org}"), new_secret.as_bytes());
            put_rec(&mut t, &key, &ep)?;
            drop(t);
            audit::append(
                txn,
                org,
                actor,
                &AuditEvent::WebhookSecretRotated {
                    webhook: id.to_string(),
                    overlap_secs,
                },
                &clock.text,
            )?;
            Ok(ep)
        })
    }

    /// Deliveries of one endpoint, newest last.
    pub fn list_deliveries(
        &self,
        org: &OrgId,
        endpoint: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        let r = self.read()?;
        if get_rec::<_, WebhookEndpoint>(&r.open_table(WEBHOOKS)?, (org.as_str(), endpoint))?
            .is_none()
        {
            return Err(StoreError::NotFound("webhook"));
        }
        let mut all: Vec<Delivery> = deliveries_of(&r.open_table(DELIVERIES)?, org, endpoint)?;
        all.sort_by_key(|d| d.attempts.first().map_or(i64::MAX, |a| a.at_ms));
        let skip = all.len().saturating_sub(limit);
        Ok(all.into_iter().skip(skip).collect())
    }

    /// Schedule another attempt of a delivery now.
    pub fn retry_delivery(
        &self,
        org: &OrgId,
        endpoint: &str,
        id: &str,
        actor: &Actor,
    ) -> Result<Delivery> {
        self.write(|txn| {
            let ep: WebhookEndpoint =
                get_rec(&txn.open_table(WEBHOOKS)?, (org.as_str(), endpoint))?
                    .ok_or(StoreError::NotFound("webhook"))?;
            let mut t = txn.open_table(DELIVERIES)?;
            let key = (org.as_str(), endpoint, id);
            let mut d: Delivery = get_rec(&t, &key)?.ok_or(StoreError::NotFound("delivery"))?;
            // Disabled endpoints get no attempts; re-enabling is the administrator's first step.
            if !ep.enabled {
                return Err(StoreError::Conflict(
                    "the endpoint is disabled; enable it before retrying a delivery".into(),
                ));
            }
            let due = now_ms();
            if let Some(old) = d.next_attempt_ms {
                txn.open_table(DELIVERY_QUEUE)?
                    .remove(queue_key(old, org, endpoint, id))?;
            }
            d.state = "pending".into();
            d.reason = None;
            d.next_attempt_ms = Some(due);
            put_rec(&mut t, &key, &d)?;
            drop(t);
            txn.open_table(DELIVERY_QUEUE)?
                .insert(queue_key(due, org, endpoint, id), [].as_slice())?;
            audit::append(
                txn,
                org,
                actor,
                &AuditEvent::WebhookDeliveryRetried {
                    webhook: endpoint.to_string(),
                    delivery: id.to_string(),
                },
                &now().text,
            )?;
            Ok(d)
        })
    }

    /// Fan outbox entries out to the endpoints subscribed now (one transaction, up to `max`).
    pub fn fan_out_outbox(&self, max: usize) -> Result<usize> {
        self.write(|txn| {
            let entries: Vec<(String, OutboxEvent)> = {
                let t = txn.open_table(OUTBOX)?;
                let mut v = Vec::new();
                for row in t.iter()?.take(max) {
                    let (k, val) = row?;
                    v.push((k.value().to_string(), serde_json::from_slice(val.value())?));
                }
                v
            };
            let due = now_ms();
            for (key, entry) in &entries {
                let org = key
                    .split('|')
                    .next()
                    .and_then(OrgId::parse)
                    .ok_or_else(|| StoreError::Corrupt("outbox key".into()))?;
                let endpoints: Vec<WebhookEndpoint> =
                    scan_org(&txn.open_table(WEBHOOKS)?, org.as_str())?;
                for ep in endpoints.iter().filter(|e| {
                    e.enabled && e.events.as_ref().is_none_or(|l| l.contains(&entry.kind))
                }) {
                    let d = Delivery {
                        id: format!("dlv_{}", random_hex(12)),
                        org: org.clone(),
                        endpoint: ep.id.clone(),
                        event_id: entry.event_id.clone(),
                        kind: entry.kind.clone(),
                        body: entry.body.to_string(),
                        state: "pending".into(),
                        reason: None,
                        attempts: Vec::new(),
                        next_attempt_ms: Some(due),
                    };
                    put_rec(
                        &mut txn.open_table(DELIVERIES)?,
                        (org.as_str(), ep.id.as_str(), d.id.as_str()),
                        &d,
                    )?;
                    txn.open_table(DELIVERY_QUEUE)?
                        .insert(queue_key(due, &org, &ep.id, &d.id), [].as_slice())?;
                }
                txn.open_table(OUTBOX)?.remove(key.as_str())?;
            }
            Ok(entries.len())
        })
    }

    /// Claim the deliveries due now (up to `max`), with what is needed to sign and send them.
    ///
    /// The endpoint is read in the same write transaction that hands a delivery out: a delivery
    /// whose endpoint is disabled or gone is not handed out but marked `abandoned` with the
    /// reason, so a disabled endpoint gets no further attempt and the state says why.
    pub fn claim_due_deliveries(&self, now_ms: i64, max: usize) -> Result<Vec<DueDelivery>> {
        // Every entry due at or before `now_ms`: the first key past it is `(now_ms + 1, "", …)`.
        let end = u64::try_from(now_ms).unwrap_or(0).saturating_add(1);
        let end = (end, "", "", "");
        // Most polls find nothing due: only those that do open a write transaction.
        if self
            .read()?
            .open_table(DELIVERY_QUEUE)?
            .range(..end)?
            .next()
            .is_none()
        {
            return Ok(Vec::new());
        }
        self.write(|txn| {
            let keys: Vec<(u64, String, String, String)> = {
                let q = txn.open_table(DELIVERY_QUEUE)?;
                let mut v = Vec::new();
                for row in q.range(..end)?.take(max) {
                    let (k, _) = row?;
                    let (due, org, endpoint, id) = k.value();
                    v.push((due, org.to_string(), endpoint.to_string(), id.to_string()));
                }
                v
            };
            let mut out = Vec::new();
            for (due, org, endpoint, id) in &keys {
                let entry = (*due, org.as_str(), endpoint.as_str(), id.as_str());
                let Some(org) = OrgId::parse(org) else {
                    continue;
                };
                if let Some(d) = self.claim_one(txn, entry, &org, endpoint, id, now_ms)? {
                    out.push(d);
                }
            }
            Ok(out)
        })
    }

    /// One queue entry: the delivery to attempt, or `None` when there is nothing to attempt (the
    /// entry is stale, or the endpoint is disabled or deleted and the delivery is abandoned).
    fn claim_one(
        &self,
        txn: &crate::ledger::Tx<'_>,
        queue_entry: (u64, &str, &str, &str),
        org: &OrgId,
        endpoint: &str,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<DueDelivery>> {
        let d: Option<Delivery> =
            get_rec(&txn.open_table(DELIVERIES)?, (org.as_str(), endpoint, id))?;
        let Some(d) = d.filter(|d| d.state == "pending") else {
            txn.open_table(DELIVERY_QUEUE)?.remove(queue_entry)?;
            return Ok(None);
        };
        let ep: Option<WebhookEndpoint> =
            get_rec(&txn.open_table(WEBHOOKS)?, (org.as_str(), endpoint))?;
        let ep = match ep {
            Some(ep) if ep.enabled => ep,
            gone_or_disabled => {
                let reason = if gone_or_disabled.is_some() {
                    "endpoint disabled"
                } else {
                    "endpoint deleted"
                };
                let event = AuditEvent::WebhookDeliveryAbandoned {
                    webhook: endpoint.to_string(),
                    delivery: id.to_string(),
                    reason: reason.to_string(),
                };
                abandon_in(txn, d, reason)?;
                let system = Actor::System("webhooks".into());
                audit::append(txn, org, &system, &event, &now().text)?;
                return Ok(None);
            }
        };
        let ctx = format!("webhook|{org}");
        let mut secrets = vec![
            String::from_utf8(self.master.open(&ctx, &ep.secret)?)
                .map_err(|_| StoreError::Crypto)?,
        ];
        if let Some((prev, until)) = &ep.previous_secret
            && *until > now_ms / 1000
        {
            secrets.push(
                String::from_utf8(self.master.open(&ctx, prev)?).map_err(|_| StoreError::Crypto)?,
            );
        }
        Ok(Some(DueDelivery {
            delivery: d,
            url: ep.url,
            secrets,
        }))
    }

    /// Record an attempt: a 2xx ends the delivery; otherwise it is scheduled again with backoff,
    /// given up after `policy.max_attempts`, or abandoned when its endpoint is (now) disabled or
    /// gone; an endpoint failing `disable_after_failures` in a row is disabled with an event, and
    /// its pending deliveries are abandoned. Each attempt is an audit event.
    pub fn record_attempt(
        &self,
        org: &OrgId,
        endpoint: &str,
        id: &str,
        attempt: Attempt,
        policy: &RetryPolicy,
        jitter: u16,
    ) -> Result<Delivery> {
        self.write(|txn| {
            let key = (org.as_str(), endpoint, id);
            let mut d: Delivery = get_rec(&txn.open_table(DELIVERIES)?, &key)?
                .ok_or(StoreError::NotFound("delivery"))?;
            if let Some(old) = d.next_attempt_ms.take() {
                txn.open_table(DELIVERY_QUEUE)?
                    .remove(queue_key(old, org, endpoint, id))?;
            }
            let ok =
                attempt.status.is_some_and(|s| (200..300).contains(&s)) && attempt.error.is_none();
            let health = self.track_endpoint_health(txn, org, endpoint, ok, policy)?;
            d.attempts.push(attempt.clone());
            if ok {
                // An attempt in flight when the endpoint was disabled may still have arrived.
                d.state = "delivered".into();
                d.reason = None;
            } else if d.state == "abandoned" {
                // Abandoned while this attempt was in flight: it stays so, with its reason.
            } else if let Some(reason) = health.stopped_reason() {
                d.state = "abandoned".into();
                d.reason = Some(reason.into());
            } else if d.attempts.len() >= policy.max_attempts {
                d.state = "failed".into();
            } else {
                let due = attempt
                    .at_ms
                    .saturating_add(policy.delay_ms(d.attempts.len(), jitter));
                d.next_attempt_ms = Some(due);
                txn.open_table(DELIVERY_QUEUE)?
                    .insert(queue_key(due, org, endpoint, id), [].as_slice())?;
            }
            put_rec(&mut txn.open_table(DELIVERIES)?, &key, &d)?;
            let event = AuditEvent::WebhookDeliveryAttempted {
                webhook: endpoint.to_string(),
                delivery: id.to_string(),
                event: d.event_id.clone(),
                attempt: d.attempts.len(),
                status: attempt.status,
                duration_ms: attempt.duration_ms,
                error: attempt.error.clone(),
                state: d.state.clone(),
            };
            let system = Actor::System("webhooks".into());
            audit::append(txn, org, &system, &event, &now().text)?;
            if let Health::JustDisabled(reason) = &health {
                let event = AuditEvent::WebhookDisabled {
                    webhook: endpoint.to_string(),
                    reason: reason.clone(),
                };
                audit::append(txn, org, &system, &event, &now().text)?;
                abandon_pending_in(
                    txn,
                    org,
                    endpoint,
                    "endpoint disabled after repeated failures",
                    &system,
                )?;
            }
            Ok(d)
        })
    }

    /// Count the endpoint's failure streak, disabling it at `disable_after_failures`.
    fn track_endpoint_health(
        &self,
        txn: &crate::ledger::Tx<'_>,
        org: &OrgId,
        endpoint: &str,
        ok: bool,
        policy: &RetryPolicy,
    ) -> Result<Health> {
        let mut t = txn.open_table(WEBHOOKS)?;
        let key = (org.as_str(), endpoint);
        let Some(mut ep): Option<WebhookEndpoint> = get_rec(&t, &key)? else {
            return Ok(Health::Gone);
        };
        ep.consecutive_failures = if ok {
            0
        } else {
            ep.consecutive_failures.saturating_add(1)
        };
        let was_enabled = ep.enabled;
        if ep.enabled && ep.consecutive_failures >= policy.disable_after_failures {
            ep.enabled = false;
            ep.disabled_reason = Some(format!(
                "{} failed attempts in a row",
                ep.consecutive_failures
            ));
        }
        put_rec(&mut t, &key, &ep)?;
        Ok(match (was_enabled, ep.enabled) {
            (_, true) => Health::Enabled,
            (true, false) => Health::JustDisabled(ep.disabled_reason.unwrap_or_default()),
            (false, false) => Health::Disabled,
        })
    }
}

/// An endpoint's state after an attempt was counted.
enum Health {
    Enabled,
    /// Disabled by this attempt, with the reason.
    JustDisabled(String),
    /// Was already disabled (while the attempt was in flight).
    Disabled,
    /// Deleted (while the attempt was in flight).
    Gone,
}

impl Health {
    /// Why no further attempt is made, when none is.
    fn stopped_reason(&self) -> Option<&'static str> {
        match self {
            Health::Enabled => None,
            Health::JustDisabled(_) => Some("endpoint disabled after repeated failures"),
            Health::Disabled => Some("endpoint disabled"),
            Health::Gone => Some("endpoint deleted"),
        }
    }
}

/// Mark one pending delivery abandoned: out of the queue, no next attempt, the reason kept.
fn abandon_in(txn: &crate::ledger::Tx<'_>, mut d: Delivery, reason: &str) -> Result<()> {
    if let Some(old) = d.next_attempt_ms.take() {
        txn.open_table(DELIVERY_QUEUE)?
            .remove(queue_key(old, &d.org, &d.endpoint, &d.id))?;
    }
    d.state = "abandoned".into();
    d.reason = Some(reason.to_string());
    put_rec(
        &mut txn.open_table(DELIVERIES)?,
        (d.org.as_str(), d.endpoint.as_str(), d.id.as_str()),
        &d,
    )
}

/// Abandon every pending delivery of an endpoint that was just disabled or deleted, in the
/// transaction that disabled it, with one audit event naming how many.
fn abandon_pending_in(
    txn: &crate::ledger::Tx<'_>,
    org: &OrgId,
    endpoint: &str,
    reason: &str,
    actor: &Actor,
) -> Result<()> {
    let all: Vec<Delivery> = deliveries_of(&txn.open_table(DELIVERIES)?, org, endpoint)?;
    let pending: Vec<Delivery> = all.into_iter().filter(|d| d.state == "pending").collect();
    if pending.is_empty() {
        return Ok(());
    }
    let count = pending.len();
    for d in pending {
        abandon_in(txn, d, reason)?;
    }
    audit::append(
        txn,
        org,
        actor,
        &AuditEvent::WebhookDeliveriesAbandoned {
            webhook: endpoint.to_string(),
            count,
            reason: reason.to_string(),
        },
        &now().text,
    )?;
    Ok(())
}

fn check_types(events: Option<&[String]>) -> Result<()> {
    if let Some(list) = events {
        if list.is_empty() || list.len() > EVENT_TYPES.len() {
            return Err(StoreError::Invalid(
                "events: a non-empty list of event types, or omit it for all".into(),
            ));
        }
        if let Some(bad) = list.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
            return Err(StoreError::Invalid(format!("unknown event type {bad}")));
        }
    }
    Ok(())
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    let t = time::OffsetDateTime::now_utc();
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_bounded_jitter_and_covers_a_day() {
        let p = RetryPolicy::default();
        let mut total = 0i64;
        for n in 1..p.max_attempts {
            let lo = p.delay_ms(n, 0);
            let hi = p.delay_ms(n, 999);
            let mid = p.delay_ms(n, 500);
            assert!(lo <= mid && mid <= hi, "{n}: {lo} {mid} {hi}");
            total += lo;
        }
        assert!(
            total >= 24 * 3_600_000,
            "retries span {total} ms, less than 24 h"
        );
        assert!(p.delay_ms(2, 500) == 2 * p.delay_ms(1, 500));
    }

    #[test]
    fn only_events_worth_telling_are_typed() {
        assert_eq!(
            webhook_type("decision", &json!({"outcome": "hold"})),
            Some("intent.held")
        );
        assert_eq!(webhook_type("decision", &json!({"outcome": "allow"})), None);
        assert_eq!(
            webhook_type("intent.succeeded", &json!({})),
            Some("intent.succeeded")
        );
        assert_eq!(webhook_type("webhook.delivery_attempted", &json!({})), None);
    }
}
