//! The decision transaction and the settlement transaction (PROXY.md steps 3–5).

use policies::{EvalInput, OperationClass, Outcome, RequestFacts, SpendContext, Verdict};
use redb::ReadableTable;
use sha2::{Digest, Sha256};

use crate::Store;
use crate::audit;
use crate::audit_event::{AuditEvent, DecisionEvent, UnknownCause, UpstreamResult};
use crate::error::{Result, StoreError};
use crate::ids::{Actor, AgentId, IntentId, OrgId};
use crate::ledger::Tx;
use crate::ledger::{record, spend};
use crate::model::{
    Agent, AgentStatus, IdempotencyRecord, Intent, IntentStatus, Reservation, StoredResponse,
};
use crate::tables::*;
use crate::time_util::{Clock, now};

/// A mutation an authenticated agent asks for.
#[derive(Clone, Debug)]
pub struct DecisionRequest {
    /// The agent's organization.
    pub org: OrgId,
    /// The agent.
    pub agent: AgentId,
    /// The agent's Idempotency-Key (validated by the caller).
    pub idempotency_key: String,
    /// HTTP method.
    pub method: String,
    /// Path without query.
    pub path: String,
    /// Query string without `?` (`""` when none).
    pub query: String,
    /// The allowlisted request headers, forwarded as they are (stored with holds).
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// What `policies::classify` made of it.
    pub facts: RequestFacts,
    /// Seconds an undecided hold waits before expiring.
    pub hold_expiry_secs: i64,
    /// The part of the verdict prepared outside the transaction ([`Store::prepare_decision`]);
    /// used only when it still fits the organization's active set, the agent and the rail mode.
    pub prepared: Option<policies::Prepared>,
}

/// What the proxy must do.
#[derive(Debug)]
pub enum Decision {
    /// Forward upstream with this key; the intent is `forwarding`.
    Forward {
        /// The intent.
        intent: Box<Intent>,
        /// The organization's Stripe key.
        rail_key: String,
    },
    /// Answer from the intent (deny, hold, or a replay of an earlier outcome).
    Respond(Box<Intent>),
    /// The same key is being processed now.
    InFlight(IntentId),
    /// The same key was used for a different request.
    KeyReused,
    /// The agent or its organization is frozen.
    Frozen,
    /// The organization has no Stripe key.
    RailNotConfigured,
}

/// How the upstream call ended.
#[derive(Clone, Debug)]
pub enum UpstreamOutcome {
    /// An HTTP response arrived completely.
    Response {
        /// What the agent received.
        response: StoredResponse,
        /// The Stripe object id from the body, when there is one.
        upstream_id: Option<String>,
    },
    /// No (complete) response: refused, timed out, reset.
    Lost(String),
}

/// SHA-256 over method, path, query, connected account and body: what "the same request"
/// means for idempotency. The query and the account enter only when present, so a digest of a
/// platform request without a query is the one earlier versions stored.
pub fn request_digest(method: &str, path: &str, query: &str, account: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update(b"\n");
    h.update(path.as_bytes());
    if !query.is_empty() {
        h.update(b"?");
        h.update(query.as_bytes());
    }
    if !account.is_empty() {
        // A byte that cannot appear in a path or query separates the account.
        h.update(b"\0account=");
        h.update(account.as_bytes());
    }
    h.update(b"\n");
    h.update(body);
    hex::encode(h.finalize())
}

pub(crate) fn intent_key(org: &OrgId, id: &IntentId) -> String {
    format!("{org}|{id}")
}

pub(crate) fn load_intent(txn: &Tx<'_>, org: &OrgId, id: &IntentId) -> Result<Intent> {
    record::get_intent(&txn.open_table(INTENTS)?, &intent_key(org, id))?
        .ok_or(StoreError::NotFound("intent"))
}

pub(crate) fn save_intent(txn: &Tx<'_>, intent: &Intent) -> Result<()> {
    write_intent(txn, intent, false)
}

/// Store a just-created intent: it cannot be in a status index yet. Refuses an id in use.
pub(crate) fn insert_new_intent(txn: &Tx<'_>, intent: &Intent) -> Result<()> {
    write_intent(txn, intent, true)
}

fn write_intent(txn: &Tx<'_>, intent: &Intent, new: bool) -> Result<()> {
    let key = intent_key(&intent.org, &intent.id);
    let bytes = record::encode_intent(intent)?;
    let previous = txn.open_table(INTENTS)?.insert(key.as_str(), &bytes)?;
    if new && previous {
        return Err(StoreError::Corrupt(format!(
            "intent id {} is already used",
            intent.id
        )));
    }
    // Status indexes, so recovery, the executor and the expiry worker never scan every intent.
    let mut in_flight = txn.open_table(IN_FLIGHT)?;
    let mut pending = txn.open_table(PENDING)?;
    let mut by_expiry = txn.open_table(PENDING_BY_EXPIRY)?;
    let mut approved = txn.open_table(APPROVED)?;
    // A hold's expiry never changes, so its `pending_by_expiry` key is known from the intent.
    let expiry_key = expiry_key(intent.expires_at_unix, &key);
    if !new {
        in_flight.remove(key.as_str())?;
        if pending.remove(key.as_str())? {
            by_expiry.remove(expiry_key.as_str())?;
        }
        approved.remove(key.as_str())?;
    }
    match intent.status {
        IntentStatus::Forwarding => {
            in_flight.insert(key.as_str(), &[])?;
        }
        IntentStatus::PendingApproval => {
            let expiry = intent.expires_at_unix.unwrap_or(i64::MAX);
            pending.insert(key.as_str(), &expiry.to_le_bytes())?;
            by_expiry.insert(expiry_key.as_str(), &[])?;
        }
        IntentStatus::Approved => {
            approved.insert(key.as_str(), &[])?;
        }
        _ => {}
    }
    Ok(())
}

impl Store {
    /// The decision, inside the writer's ledger transaction ([`crate::Command::Decide`]).
    pub(crate) fn decide_in(
        &self,
        txn: &Tx<'_>,
        req: &DecisionRequest,
        clock: &Clock,
    ) -> Result<Decision> {
        let org = self.hot_org(txn, &req.org)?;
        let agent = self.hot_agent(txn, &req.org, &req.agent)?;
        if org.frozen || agent.status != AgentStatus::Active {
            return Ok(Decision::Frozen);
        }
        let digest = request_digest(
            &req.method,
            &req.path,
            &req.query,
            &req.facts.account,
            &req.body,
        );
        let idem_key = format!("{}|{}|{}", req.org, req.agent, req.idempotency_key);
        let existing = record::get_idempotency(&txn.open_table(IDEMPOTENCY)?, &idem_key)?;
        if let Some(rec) = existing {
            return self.replay_in(txn, &req.org, rec, &digest, clock);
        }
        let rail = self.hot_rail(txn, &req.org)?;
        let Some((rail_key, livemode)) = rail.as_ref().clone() else {
            return Ok(Decision::RailNotConfigured);
        };
        let counted_here;
        let req = match uncounted_settlement(
            || txn.open_table(UPSTREAM_OBJECTS),
            &req.org,
            &req.facts,
        )? {
            Some(facts) => {
                counted_here = DecisionRequest {
                    facts,
                    prepared: None,
                    ..req.clone()
                };
                &counted_here
            }
            None => req,
        };
        let verdict = self.evaluate_in(txn, &org, &agent, req, livemode, clock)?;
        let intent = new_intent(req, digest, &verdict, clock);
        let intent = self.record_decision_in(txn, intent, &verdict, clock)?;
        let rec = record::encode_idempotency(&IdempotencyRecord {
            request_digest: intent.request_digest.clone(),
            intent: intent.id.clone(),
            created_at: clock.text.clone(),
        })?;
        txn.open_table(IDEMPOTENCY)?
            .insert(idem_key.as_str(), &rec)?;
        Ok(match verdict.outcome {
            Outcome::Allow => Decision::Forward {
                intent: Box::new(intent),
                rail_key,
            },
            Outcome::Hold | Outcome::Deny => Decision::Respond(Box::new(intent)),
        })
    }

    /// A key seen before: the original outcome, never a second decision.
    fn replay_in(
        &self,
        txn: &Tx<'_>,
        org: &OrgId,
        rec: IdempotencyRecord,
        digest: &str,
        clock: &Clock,
    ) -> Result<Decision> {
        if rec.request_digest != digest {
            return Ok(Decision::KeyReused);
        }
        let mut intent = load_intent(txn, org, &rec.intent)?;
        match intent.status {
            IntentStatus::Forwarding | IntentStatus::Approved => Ok(Decision::InFlight(intent.id)),
            IntentStatus::Unknown => {
                // PROXY.md: a retry forwards again with the same upstream key.
                let Some((rail_key, _)) = self.rail_key_in(txn, org)? else {
                    return Ok(Decision::RailNotConfigured);
                };
                intent.status = intent.status.transition(IntentStatus::Forwarding)?;
                save_intent(txn, &intent)?;
                let actor = Actor::Agent(intent.agent.clone());
                let event = AuditEvent::IntentRetry {
                    intent: intent.id.clone(),
                    attempt: intent.attempts + 1,
                };
                audit::append(txn, org, &actor, &event, &clock.text)?;
                Ok(Decision::Forward {
                    intent: Box::new(intent),
                    rail_key,
                })
            }
            _ => Ok(Decision::Respond(Box::new(intent))),
        }
    }

    /// Policies and caps against current spend, fail closed.
    fn evaluate_in(
        &self,
        txn: &Tx<'_>,
        org: &crate::model::Org,
        agent: &Agent,
        req: &DecisionRequest,
        livemode: bool,
        clock: &Clock,
    ) -> Result<Verdict> {
        let facts = &req.facts;
        let policy_set = self.active_policies(|| txn.open_table(POLICY_VERSIONS), org)?;
        let caps = self.hot_caps(txn, &org.id)?;
        let spend_t = txn.open_table(SPEND)?;
        let money = spend::view(&spend_t, &caps, &org.id, &agent.id, facts, clock.unix)?;
        drop(spend_t);
        let requests_last_minute = spend::count_request(txn, &org.id, &agent.id, clock.unix)?;
        let input = EvalInput {
            spend: money.agent,
            org_spend: money.org,
            now_unix: clock.unix,
            requests_last_minute,
            ..static_input(&org.id, agent, facts, livemode)
        };
        // Only the policies that read `context` are evaluated here when the preparation fits.
        Ok(policies::evaluate_prepared(
            &policy_set,
            req.prepared.as_ref(),
            &input,
            &money.caps,
        ))
    }

    /// Prepare a decision outside the writer (read transaction, no wait): the Cedar entities
    /// and the verdict of the policies that do not read `context`. The decision transaction
    /// checks that it still fits (same compiled set, agent, request and rail mode) and
    /// evaluates everything itself when it does not, so a stale preparation costs time, never
    /// correctness. `None` when there is nothing to prepare (no organization or agent).
    pub fn prepare_decision(
        &self,
        agent: &Agent,
        facts: &RequestFacts,
    ) -> Result<Option<policies::Prepared>> {
        let r = self.read()?;
        let Some(org): Option<crate::model::Org> =
            get_json(&r.open_table(ORGS)?, agent.org.as_str())?
        else {
            return Ok(None);
        };
        let livemode = self.rail_mode_from(&r.open_table(RAIL_KEYS)?, &org.id)? == Some(true);
        let policy_set = self.active_policies(|| Ok(r.open_table(POLICY_VERSIONS)?), &org)?;
        let input = static_input(&org.id, agent, facts, livemode);
        Ok(Some(policies::prepare(&policy_set, &input)))
    }

    /// Reserve (allow), write the intent and its `decision` event.
    fn record_decision_in(
        &self,
        txn: &Tx<'_>,
        mut intent: Intent,
        verdict: &Verdict,
        clock: &Clock,
    ) -> Result<Intent> {
        if verdict.outcome == Outcome::Allow {
            intent.reservation = reserve_in(txn, &intent, clock)?;
        }
        insert_new_intent(txn, &intent)?;
        let event = AuditEvent::Decision(DecisionEvent {
            intent: intent.id.clone(),
            agent: intent.agent.clone(),
            operation: intent.operation.clone(),
            method: intent.method.clone(),
            path: intent.path.clone(),
            amount: intent.amount.minor(),
            currency: intent.amount.currency().map(|c| c.as_str().to_string()),
            counterparty: intent.counterparty.clone(),
            account: intent.account.clone(),
            class: intent.class,
            valued: intent.valued,
            outcome: verdict.outcome,
            status: intent.status,
            policies: verdict.policies.clone(),
            caps: verdict.caps.clone(),
            reason: verdict.reason.clone(),
            errors: verdict.errors.clone(),
            reserved: intent.reservation.as_ref().map(|r| r.amount),
        });
        audit::append(
            txn,
            &intent.org,
            &Actor::Agent(intent.agent.clone()),
            &event,
            &clock.text,
        )?;
        Ok(intent)
    }

    /// Evaluate a read (GET) against the active policies, without writing anything: reads move no
    /// money and create no intent. Returns the verdict and the rail key to forward with.
    pub fn evaluate_read(
        &self,
        org_id: &OrgId,
        agent_id: &AgentId,
        facts: &RequestFacts,
    ) -> Result<(Verdict, Option<String>)> {
        let r = self.read()?;
        let org: crate::model::Org = get_rec(&r.open_table(ORGS)?, org_id.as_str())?
            .ok_or(StoreError::NotFound("organization"))?;
        let agent: Agent = get_rec(&r.open_table(AGENTS)?, (org_id.as_str(), agent_id.as_str()))?
            .ok_or(StoreError::NotFound("agent"))?;
        let rail = self.rail_key_from(&r.open_table(RAIL_KEYS)?, org_id)?;
        let policy_set = self.active_policies(|| Ok(r.open_table(POLICY_VERSIONS)?), &org)?;
        let clock = now();
        let livemode = rail.as_ref().is_some_and(|(_, live)| *live);
        let input = EvalInput {
            now_unix: clock.unix,
            ..static_input(&org.id, &agent, facts, livemode)
        };
        let verdict = policies::evaluate(&policy_set, &input, &[]);
        Ok((verdict, rail.map(|(k, _)| k)))
    }

    /// One intent of an organization.
    pub fn intent(&self, org: &OrgId, id: &IntentId) -> Result<Option<Intent>> {
        let r = self.read()?;
        record::get_intent(&r.open_table(INTENTS)?, &intent_key(org, id))
    }

    /// Every intent of an organization, in id order.
    pub fn list_intents(&self, org: &OrgId) -> Result<Vec<Intent>> {
        let r = self.read()?;
        record::scan_intents(&r.open_table(INTENTS)?, &format!("{org}|"))
    }
}

/// The inputs of a verdict that do not change within a decision: who asks, for what, in which
/// mode. Spend, time and rate start empty; callers that evaluate `context` fill them in.
fn static_input<'a>(
    org: &'a OrgId,
    agent: &'a Agent,
    facts: &'a RequestFacts,
    livemode: bool,
) -> EvalInput<'a> {
    EvalInput {
        org_id: org.as_str(),
        agent_id: agent.id.as_str(),
        agent_name: &agent.name,
        agent_tags: &agent.tags,
        facts,
        livemode,
        spend: SpendContext::default(),
        org_spend: SpendContext::default(),
        now_unix: 0,
        requests_last_minute: 0,
    }
}

fn new_intent(req: &DecisionRequest, digest: String, verdict: &Verdict, clock: &Clock) -> Intent {
    let id = IntentId::generate_time_ordered();
    let status = match verdict.outcome {
        Outcome::Allow => IntentStatus::Forwarding,
        Outcome::Hold => IntentStatus::PendingApproval,
        Outcome::Deny => IntentStatus::Denied,
    };
    let held = verdict.outcome == Outcome::Hold;
    Intent {
        upstream_idempotency_key: format!("pg-{id}"),
        id,
        org: req.org.clone(),
        agent: req.agent.clone(),
        idempotency_key: req.idempotency_key.clone(),
        request_digest: digest,
        method: req.method.clone(),
        path: req.path.clone(),
        operation: req.facts.operation.clone(),
        class: req.facts.class,
        amount: crate::model::IntentAmount(req.facts.amount.clone()),
        counterparty: req.facts.counterparty.clone(),
        account: req.facts.account.clone(),
        counted: req.facts.counted,
        valued: req.facts.valued,
        metadata: req.facts.metadata.clone(),
        decision: verdict.outcome,
        status,
        policies: verdict.policies.clone(),
        caps: verdict.caps.clone(),
        reason: verdict.reason.clone(),
        approvals_required: if held {
            verdict.approvals_required.max(1)
        } else {
            0
        },
        approvals: Vec::new(),
        created_at: clock.text.clone(),
        decided_at: clock.text.clone(),
        expires_at_unix: held.then(|| clock.unix.saturating_add(req.hold_expiry_secs)),
        reservation: None,
        request_body: held.then(|| req.body.clone()),
        query: if held {
            req.query.clone()
        } else {
            String::new()
        },
        request_headers: if held {
            req.headers.clone()
        } else {
            Vec::new()
        },
        attempts: 0,
        response: None,
        upstream_id: None,
    }
}

/// Add an allowed money movement to the spend counters.
pub(crate) fn reserve_in(
    txn: &Tx<'_>,
    intent: &Intent,
    clock: &Clock,
) -> Result<Option<Reservation>> {
    let (Some(amount), Some(currency)) = (counted_amount(intent), intent.amount.currency()) else {
        return Ok(None);
    };
    let counters = spend::counters_for(
        &intent.org,
        &intent.agent,
        &intent.account,
        currency.as_str(),
        &intent.operation,
        clock.unix,
    );
    spend::add(txn, &counters, amount)?;
    Ok(Some(Reservation {
        amount,
        window_unix: clock.unix,
        legacy_counters: Vec::new(),
        released: false,
    }))
}

/// What an intent adds to spend: its `counted` amount (the increase of an authorization, the
/// excess of a capture, the whole value of a payment). Intents stored before `counted` existed
/// count their amount when they moved money, except confirm and capture, whose amount was
/// counted at creation.
fn counted_amount(intent: &Intent) -> Option<i64> {
    if intent.counted.is_some() {
        return intent.counted.filter(|_| intent.amount.0.is_some());
    }
    let legacy_counted = intent.class == OperationClass::MoveMoney
        && !matches!(
            intent.operation.as_str(),
            "payment_intents.confirm" | "payment_intents.capture"
        );
    intent.amount.minor().filter(|_| legacy_counted)
}

/// The state an upstream status leads to: 2xx spends, a definitive 4xx releases, anything else
/// (5xx, 409 concurrent, 429 rate limited) leaves the outcome unknown.
fn status_after(code: u16) -> IntentStatus {
    match code {
        200..=299 => IntentStatus::Succeeded,
        409 | 429 => IntentStatus::Unknown,
        400..=499 => IntentStatus::Failed,
        _ => IntentStatus::Unknown,
    }
}

pub(crate) fn settle_in(
    txn: &Tx<'_>,
    org: &OrgId,
    id: &IntentId,
    outcome: UpstreamOutcome,
    clock: &Clock,
) -> Result<Intent> {
    let mut intent = load_intent(txn, org, id)?;
    let (next, code, error) = match &outcome {
        UpstreamOutcome::Response { response, .. } => {
            (status_after(response.status), Some(response.status), None)
        }
        UpstreamOutcome::Lost(e) => (IntentStatus::Unknown, None, Some(e.clone())),
    };
    intent.status = intent.status.transition(next)?;
    intent.attempts += 1;
    if let UpstreamOutcome::Response {
        response,
        upstream_id,
    } = outcome
        && next != IntentStatus::Unknown
    {
        intent.response = Some(response);
        intent.upstream_id = upstream_id;
    }
    if next == IntentStatus::Failed {
        release_in(txn, &mut intent)?;
    }
    // Remember what this intent created and counted, so settling it later (a confirm, a
    // capture) is not counted a second time.
    if next == IntentStatus::Succeeded
        && intent.reservation.is_some()
        && let Some(object) = intent.upstream_id.as_deref()
    {
        txn.open_table(UPSTREAM_OBJECTS)?.insert(
            format!("{org}|{object}").as_str(),
            intent.id.as_str().as_bytes(),
        )?;
    }
    save_intent(txn, &intent)?;
    let result = UpstreamResult {
        intent: intent.id.clone(),
        upstream_status: code,
        error,
        upstream_id: intent.upstream_id.clone(),
        attempt: intent.attempts,
    };
    let event = match next {
        IntentStatus::Succeeded => AuditEvent::IntentSucceeded(result),
        IntentStatus::Failed => AuditEvent::IntentFailed(result),
        IntentStatus::Unknown => AuditEvent::IntentUnknown(UnknownCause::Upstream(result)),
        // `status_after` gives only the three above.
        other => {
            return Err(StoreError::Corrupt(format!(
                "no upstream result leads to {}",
                other.as_str()
            )));
        }
    };
    audit::append(
        txn,
        org,
        &Actor::System("upstream".into()),
        &event,
        &clock.text,
    )?;
    Ok(intent)
}

pub(crate) fn release_in(txn: &Tx<'_>, intent: &mut Intent) -> Result<()> {
    let currency = intent
        .amount
        .currency()
        .map(|c| c.as_str().to_string())
        .unwrap_or_default();
    if let Some(r) = intent.reservation.as_mut()
        && !r.released
    {
        // The same keys `reserve_in` added to: same intent fields, same window time.
        let counters = if r.legacy_counters.is_empty() {
            spend::counters_for(
                &intent.org,
                &intent.agent,
                &intent.account,
                &currency,
                &intent.operation,
                r.window_unix,
            )
        } else {
            r.legacy_counters.clone()
        };
        spend::add(txn, &counters, -r.amount)?;
        r.released = true;
    }
    Ok(())
}

/// A request that moves money counted at an object's creation (a confirm or capture of a
/// PaymentIntent: `RequestFacts::settles`) counts in full when no creation of that object was
/// counted here: the object was made outside the guard, so this is the first time its money
/// is seen moving. `None` when the facts stand as they are.
fn uncounted_settlement<T: ReadableTable<&'static str, &'static [u8]>>(
    open_objects: impl FnOnce() -> Result<T>,
    org: &OrgId,
    facts: &RequestFacts,
) -> Result<Option<RequestFacts>> {
    // Most requests settle nothing: the table is opened only for those that do (opening a
    // table is a measurable part of the writer's time per job).
    let Some(amount) = facts.amount.as_ref() else {
        return Ok(None);
    };
    if facts.settles.is_empty() {
        return Ok(None);
    }
    if open_objects()?
        .get(format!("{org}|{}", facts.settles).as_str())?
        .is_some()
    {
        return Ok(None);
    }
    Ok(Some(RequestFacts {
        counted: Some(amount.minor),
        ..facts.clone()
    }))
}

impl Store {
    /// POLICIES.md "Simulation": evaluate a request for an agent against the active set or a
    /// candidate text, with current spend, changing nothing.
    pub fn simulate(
        &self,
        org_id: &OrgId,
        agent_id: &AgentId,
        facts: &RequestFacts,
        candidate: Option<&str>,
    ) -> Result<Verdict> {
        let r = self.read()?;
        let org: crate::model::Org = get_rec(&r.open_table(ORGS)?, org_id.as_str())?
            .ok_or(StoreError::NotFound("organization"))?;
        let agent: Agent = get_rec(&r.open_table(AGENTS)?, (org_id.as_str(), agent_id.as_str()))?
            .ok_or(StoreError::NotFound("agent"))?;
        let policy_set = match candidate {
            Some(text) => {
                std::sync::Arc::new(policies::compile(text).map_err(StoreError::PolicyRejected)?)
            }
            None => self.active_policies(|| Ok(r.open_table(POLICY_VERSIONS)?), &org)?,
        };
        let clock = now();
        let adjusted = uncounted_settlement(|| Ok(r.open_table(UPSTREAM_OBJECTS)?), org_id, facts)?;
        let facts = adjusted.as_ref().unwrap_or(facts);
        let caps: Vec<policies::Cap> = scan_org(&r.open_table(CAPS)?, org_id.as_str())?;
        let money = spend::view(
            &r.open_table(SPEND)?,
            &caps,
            org_id,
            agent_id,
            facts,
            clock.unix,
        )?;
        let livemode = self
            .rail_key_from(&r.open_table(RAIL_KEYS)?, org_id)?
            .is_some_and(|(_, l)| l);
        let input = EvalInput {
            spend: money.agent,
            org_spend: money.org,
            now_unix: clock.unix,
            ..static_input(&org.id, &agent, facts, livemode)
        };
        Ok(policies::evaluate(&policy_set, &input, &money.caps))
    }
}

/// Give every hold in `pending` its `pending_by_expiry` entry: stores written before that
/// index existed have none (run by [`crate::Command::Recover`] at start; one read of the pending
/// holds, and nothing written when they are all indexed). Returns how many were added.
pub(crate) fn index_pending_by_expiry_in(txn: &Tx<'_>) -> Result<usize> {
    let missing: Vec<String> = {
        let pending = txn.open_table(PENDING)?;
        let by_expiry = txn.open_table(PENDING_BY_EXPIRY)?;
        let mut missing = Vec::new();
        for row in pending.iter()? {
            let (k, v) = row?;
            // A damaged entry never stops the start: it is left to the expiry worker, which
            // reads only the expiry index (such a hold then waits for a human or the operator).
            let Ok(at) = <[u8; 8]>::try_from(v.value()).map(i64::from_le_bytes) else {
                tracing::error!(
                    key = k.value(),
                    "a pending-hold entry is damaged; not indexed by expiry"
                );
                continue;
            };
            let key = expiry_key((at != i64::MAX).then_some(at), k.value());
            if by_expiry.get(key.as_str())?.is_none() {
                missing.push(key);
            }
        }
        missing
    };
    let mut by_expiry = txn.open_table(PENDING_BY_EXPIRY)?;
    for key in &missing {
        by_expiry.insert(key.as_str(), &[])?;
    }
    Ok(missing.len())
}

/// Mark every intent left `forwarding` by a previous process as `unknown` (nothing is in flight
/// after a restart), after indexing pending holds by expiry; returns how many became `unknown`
/// ([`crate::Command::Recover`]).
pub(crate) fn recover_in_flight_in(txn: &Tx<'_>, clock: &Clock) -> Result<usize> {
    let indexed = index_pending_by_expiry_in(txn)?;
    if indexed > 0 {
        tracing::info!(holds = indexed, "indexed pending holds by expiry");
    }
    let keys: Vec<String> = {
        let t = txn.open_table(IN_FLIGHT)?;
        let mut keys = Vec::new();
        for row in t.iter()? {
            keys.push(row?.0.value().to_string());
        }
        keys
    };
    for key in &keys {
        let mut intent = record::get_intent(&txn.open_table(INTENTS)?, key)?
            .ok_or(StoreError::NotFound("intent"))?;
        intent.status = intent.status.transition(IntentStatus::Unknown)?;
        save_intent(txn, &intent)?;
        let event = AuditEvent::IntentUnknown(UnknownCause::Restarted {
            intent: intent.id.clone(),
        });
        audit::append(
            txn,
            &intent.org,
            &Actor::System("recovery".into()),
            &event,
            &clock.text,
        )?;
    }
    Ok(keys.len())
}

/// Remove the idempotency records created before `created_before_unix` whose intent is
/// finished, looking at most at `max_scan` records after the key `after`
/// ([`crate::Command::Prune`]). A retry with a pruned key is a new request, as with Stripe's own
/// keys; the intent it named stays, with its key.
///
/// A record whose intent may still move money is kept whatever its age: a hold waiting for
/// humans or the executor, an intent in flight, and an `unknown` one, whose retry must resend
/// with the same upstream key (a new intent would get a new one and could pay twice). A record
/// that does not decode is kept and logged, never a reason to stop pruning the rest.
pub(crate) fn prune_idempotency_in(
    txn: &Tx<'_>,
    created_before_unix: i64,
    after: Option<&str>,
    max_scan: usize,
) -> Result<crate::ledger::Pruned> {
    use std::ops::Bound;
    let (old, next) = {
        let t = txn.open_table(IDEMPOTENCY)?;
        let intents = txn.open_table(INTENTS)?;
        let start = match after {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        let mut old = Vec::new();
        let mut scanned = 0usize;
        let mut last = None;
        for row in t.range::<&str>((start, Bound::Unbounded))? {
            let (k, v) = row?;
            let key = k.value();
            scanned += 1;
            last = Some(key.to_string());
            let expired = match record::decode_idempotency(v.value()) {
                Ok(rec) => crate::time_util::unix_of(&rec.created_at)
                    .is_some_and(|at| at < created_before_unix)
                    .then_some(rec),
                Err(e) => {
                    tracing::error!(key, error = %e, "an idempotency record does not decode; kept");
                    None
                }
            };
            if let Some(rec) = expired
                && let Some((org, _)) = key.split_once('|')
            {
                // An intent that does not decode keeps its record, like a live one.
                let intent = record::get_intent(&intents, &format!("{org}|{}", rec.intent));
                let finished = intent.is_ok_and(|i| {
                    i.is_none_or(|i| {
                        matches!(
                            i.status,
                            IntentStatus::Succeeded
                                | IntentStatus::Failed
                                | IntentStatus::Denied
                                | IntentStatus::Expired
                        )
                    })
                });
                if finished {
                    old.push(key.to_string());
                }
            }
            if scanned >= max_scan {
                break;
            }
        }
        // A round that stopped short of the end resumes after its last key.
        (old, if scanned >= max_scan { last } else { None })
    };
    let mut t = txn.open_table(IDEMPOTENCY)?;
    for k in &old {
        t.remove(k.as_str())?;
    }
    Ok(crate::ledger::Pruned {
        removed: old.len(),
        next,
    })
}
