//! The data path as pingora `ProxyHttp` phases, in the order of PROXY.md: authenticate → read
//! body → classify → decide (one durable store transaction) → answer or forward → settle.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType};
use policies::{FactsError, FormLimits, Lookups, Outcome, RawRequest, RequestFacts};
use store::{
    Agent, AuthedAgent, Committer, Decision, DecisionRequest, Intent, IntentStatus, OrgId, Store,
    StoredResponse,
};
use store::{IntentEvents, UpstreamOutcome};

use crate::auth::token_from_header;
use crate::errors::GuardError;
use crate::forward::{
    ExactRequest, FORWARDED_REQUEST_HEADERS, Forwarder, allowlisted, send_and_settle,
};
use crate::upstream::Upstream;

/// Limits and timeouts of the data path (OPERATIONS.md configuration).
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// Largest request body accepted (≤ pingora's 64 KiB retry buffer).
    pub max_body_bytes: usize,
    /// Cap on `Prefer: wait=N`.
    pub max_hold_wait_secs: u64,
    /// Upstream connect/read/write timeout.
    pub upstream_timeout_secs: u64,
    /// Seconds an undecided hold lives.
    pub hold_expiry_secs: i64,
    /// How long a replay waits for an in-flight first request before answering 409.
    pub in_flight_wait_ms: u64,
    /// Largest upstream response body stored for replay.
    pub max_stored_response_bytes: usize,
    /// Longest wait for the next piece of a request body (slowloris bound).
    pub body_read_timeout_secs: u64,
    /// Longest time to receive a whole request body.
    pub body_deadline_secs: u64,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 65_536,
            max_hold_wait_secs: 60,
            upstream_timeout_secs: 30,
            hold_expiry_secs: 86_400,
            in_flight_wait_ms: 5_000,
            max_stored_response_bytes: 4 * 1024 * 1024,
            body_read_timeout_secs: 10,
            body_deadline_secs: 15,
        }
    }
}

/// Largest request header block accepted.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Largest `Idempotency-Key` accepted (Stripe's limit).
const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// The guard's `ProxyHttp` implementation.
pub struct Guard {
    store: Arc<Store>,
    committer: Committer,
    forwarder: Forwarder,
    upstream: Arc<Upstream>,
    settings: ProxySettings,
    events: IntentEvents,
    in_flight: crate::drain::InFlight,
}

/// What a forwarded read needs in later phases.
#[derive(Debug)]
struct Forward {
    rail_key: String,
}

/// Per-request state.
#[derive(Debug, Default)]
pub struct Ctx {
    org: Option<OrgId>,
    forward: Option<Forward>,
    /// Counts this request as in flight until the context is dropped (drain.rs).
    in_flight: Option<crate::drain::InFlightGuard>,
}

/// The outcome of the request phase.
enum Step {
    Forward,
    Answered,
}

impl Guard {
    /// A guard over `store`, forwarding to `upstream`.
    pub fn new(
        store: Arc<Store>,
        committer: Committer,
        forwarder: Forwarder,
        upstream: Arc<Upstream>,
        settings: ProxySettings,
        events: IntentEvents,
    ) -> Self {
        Self {
            store,
            committer,
            forwarder,
            upstream,
            settings,
            events,
            in_flight: crate::drain::InFlight::default(),
        }
    }

    /// The proxy's in-flight counter, for the SIGTERM drain.
    pub fn in_flight(&self) -> crate::drain::InFlight {
        self.in_flight.clone()
    }

    /// A store error on the data path fails closed: nothing is forwarded.
    fn store_failed(e: store::StoreError) -> GuardError {
        tracing::error!(error = %e, "store write failed");
        GuardError::StoreUnavailable
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> store::Result<T> + Send + 'static,
    ) -> Result<T, GuardError> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "store operation failed");
                Err(GuardError::StoreUnavailable)
            }
            Err(e) => {
                tracing::error!(error = %e, "store task failed");
                Err(GuardError::StoreUnavailable)
            }
        }
    }

    async fn handle(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Step, GuardError> {
        // pingora accepts up to 1 MiB of headers; a Stripe request needs a few hundred bytes.
        if session.to_h1_raw().len() > MAX_HEADER_BYTES {
            return Err(GuardError::HeadersTooLarge(MAX_HEADER_BYTES));
        }
        let agent = self.authenticate(session).await?;
        ctx.org = Some(agent.agent.org.clone());
        let method = session.req_header().method.as_str().to_string();
        let path = session.req_header().uri.path().to_string();
        if path.starts_with("/v1/guard/") {
            return self.agent_view(session, &agent, &method, &path).await;
        }
        match method.as_str() {
            "GET" => self.read(session, ctx, &agent, &path).await,
            "POST" | "DELETE" => self.mutation(session, &agent, method, path).await,
            other => Err(GuardError::MethodNotAllowed(other.to_string())),
        }
    }

    /// PROXY.md step 1.
    async fn authenticate(&self, session: &Session) -> Result<AuthedAgent, GuardError> {
        let token = session
            .get_header("authorization")
            .and_then(|v| token_from_header(v.as_bytes()))
            .ok_or(GuardError::AuthenticationRequired)?;
        // A read transaction over cached pages: microseconds, never waits for the writer (redb
        // readers are MVCC snapshots), so it runs inline rather than paying a thread hand-off.
        let agent = self
            .store
            .authenticate_agent(&token)
            .map_err(Self::store_failed)?
            .ok_or(GuardError::AuthenticationRequired)?;
        if agent.org_frozen || agent.agent.status != store::AgentStatus::Active {
            return Err(GuardError::AgentFrozen);
        }
        Ok(agent)
    }

    /// Reads are evaluated by policy and forwarded; they create no intent.
    async fn read(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        agent: &AuthedAgent,
        path: &str,
    ) -> Result<Step, GuardError> {
        let account = connected_account(session)?;
        // Only the allowlisted headers go upstream (upstream_request_filter); a duplicate of
        // one of them is refused here as it is for mutations.
        request_headers(session)?;
        let raw = RawRequest {
            method: "GET",
            path,
            query: session.req_header().uri.query().unwrap_or_default(),
            content_type: None,
            body: b"",
            account: &account,
        };
        let facts = policies::classify_request(&raw, &FormLimits::default(), &Lookups::offline())
            .map_err(facts_error)?;
        let (org, id) = (agent.agent.org.clone(), agent.agent.id.clone());
        let (verdict, rail_key) = self
            .blocking(move |s| s.evaluate_read(&org, &id, &facts))
            .await?;
        if verdict.outcome != Outcome::Allow {
            return Err(GuardError::ReadDenied {
                policies: verdict.policies,
                reason: verdict.reason,
            });
        }
        let rail_key = rail_key.ok_or(GuardError::RailNotConfigured)?;
        let _ = session.drain_request_body().await;
        ctx.forward = Some(Forward { rail_key });
        Ok(Step::Forward)
    }

    /// PROXY.md steps 2–5 for POST and DELETE.
    async fn mutation(
        &self,
        session: &mut Session,
        agent: &AuthedAgent,
        method: String,
        path: String,
    ) -> Result<Step, GuardError> {
        let key = idempotency_key(session)?;
        let query = session
            .req_header()
            .uri
            .query()
            .unwrap_or_default()
            .to_string();
        let account = connected_account(session)?;
        let headers = request_headers(session)?;
        let body = self.read_body(session).await?;
        let content_type = headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.as_str());
        let raw = RawRequest {
            method: &method,
            path: &path,
            query: &query,
            content_type,
            body: &body,
            account: &account,
        };
        let facts = self.classify(agent, &raw, &headers).await?;
        let req = DecisionRequest {
            org: agent.agent.org.clone(),
            agent: agent.agent.id.clone(),
            idempotency_key: key,
            method,
            path,
            query,
            headers,
            body,
            facts,
            hold_expiry_secs: self.settings.hold_expiry_secs,
            prepared: None,
        };
        let wait = prefer_wait(session).map(|w| w.min(self.settings.max_hold_wait_secs));
        let (query, headers, body) = (req.query.clone(), req.headers.clone(), req.body.clone());
        let decision = self.decide(&agent.agent, req).await?;
        match decision {
            Decision::Forward { intent, rail_key } => {
                let exact = ExactRequest {
                    query: &query,
                    headers: &headers,
                    body,
                };
                self.forward(session, *intent, &rail_key, exact).await
            }
            Decision::Respond(intent) => self.answer_intent(session, *intent, wait).await,
            Decision::InFlight(id) => Err(GuardError::InProgress(id.to_string())),
            Decision::KeyReused => Err(GuardError::IdempotencyKeyReused),
            Decision::Frozen => Err(GuardError::AgentFrozen),
            Decision::RailNotConfigured => Err(GuardError::RailNotConfigured),
        }
    }

    /// PROXY.md step 5, allow: send upstream with the rail key and the intent-derived key, settle
    /// durably, then answer the agent with exactly what was stored.
    async fn forward(
        &self,
        session: &mut Session,
        intent: Intent,
        rail_key: &str,
        exact: ExactRequest<'_>,
    ) -> Result<Step, GuardError> {
        let (outcome, settled) = send_and_settle(
            &self.forwarder,
            &self.committer,
            &self.events,
            &intent,
            rail_key,
            exact,
        )
        .await;
        if let Err(e) = &settled {
            // The rail may have acted: the intent stays `forwarding` until restart recovery marks
            // it `unknown`, and a retry with the same key forwards again with the same upstream key.
            tracing::error!(intent = %intent.id, error = %e, "settlement failed");
        }
        match outcome {
            // RELIABILITY.md 4: a 5xx from the rail is an unknown outcome; the agent gets 502
            // and retries with the same key (the stored intent is `unknown`).
            UpstreamOutcome::Response { response, .. } if response.status >= 500 => {
                tracing::warn!(intent = %intent.id, status = response.status, "rail answered 5xx; intent unknown");
                Err(GuardError::UpstreamUnavailable(Some(intent.id.to_string())))
            }
            UpstreamOutcome::Response { response, .. } => {
                write_stored(session, &response, &intent)
                    .await
                    .map_err(|_| GuardError::StoreUnavailable)?;
                Ok(Step::Answered)
            }
            UpstreamOutcome::Lost(why) => {
                tracing::warn!(intent = %intent.id, error = %why, "upstream unavailable; intent unknown");
                Err(GuardError::UpstreamUnavailable(Some(intent.id.to_string())))
            }
        }
    }

    /// PROXY.md step 2: classify, looking objects up at the rail where Stripe decides the
    /// amount. At most [`LOOKUP_ROUNDS`] rounds and [`policies::MAX_LOOKUPS`] objects; what is
    /// still missing after that counts as "not found" (the request is then not valued). A rail
    /// that cannot be reached decides nothing: `502`, no intent.
    async fn classify(
        &self,
        agent: &AuthedAgent,
        raw: &RawRequest<'_>,
        headers: &[(String, String)],
    ) -> Result<RequestFacts, GuardError> {
        let limits = FormLimits::default();
        let mut lookups = Lookups::online();
        let mut rail_key: Option<String> = None;
        for round in 0..=LOOKUP_ROUNDS {
            let paths = match policies::classify_request(raw, &limits, &lookups) {
                Err(FactsError::NeedsLookup(paths)) => paths,
                other => return other.map_err(facts_error),
            };
            let last =
                round == LOOKUP_ROUNDS || lookups.len() + paths.len() > policies::MAX_LOOKUPS;
            if last {
                for path in paths {
                    lookups.insert(path, None);
                }
                continue;
            }
            let key = match &rail_key {
                Some(key) => key.clone(),
                None => {
                    let org = agent.agent.org.clone();
                    let key = self
                        .blocking(move |s| s.rail_key(&org))
                        .await?
                        .ok_or(GuardError::RailNotConfigured)?;
                    rail_key = Some(key.clone());
                    key
                }
            };
            for path in paths {
                let object = self.forwarder.lookup(&path, &key, headers).await.map_err(|why| {
                    tracing::warn!(error = %why, "a lookup at the rail failed; nothing decided");
                    GuardError::UpstreamUnavailable(None)
                })?;
                lookups.insert(path, object);
            }
        }
        // Every round above either returned or filled the lookups; the final pass has them all.
        policies::classify_request(raw, &limits, &lookups).map_err(facts_error)
    }

    /// Decide; when the key is in flight, wait (bounded) for the first request to settle and
    /// decide again, so a quick retry gets the stored outcome rather than a 409.
    async fn decide(&self, agent: &Agent, req: DecisionRequest) -> Result<Decision, GuardError> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.settings.in_flight_wait_ms);
        loop {
            let mut sub = self.events.subscribe();
            let decision = self
                .committer
                .decide_for(agent, req.clone())
                .await
                .map_err(Self::store_failed)?;
            let Decision::InFlight(id) = &decision else {
                return Ok(decision);
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || !sub.changed(id, left).await {
                return Ok(decision);
            }
        }
    }

    /// Answer from a decided intent: deny, hold (optionally waiting), or a replay.
    async fn answer_intent(
        &self,
        session: &mut Session,
        intent: Intent,
        wait_secs: Option<u64>,
    ) -> Result<Step, GuardError> {
        let intent = match (intent.status, wait_secs) {
            (IntentStatus::PendingApproval | IntentStatus::Approved, Some(secs)) if secs > 0 => {
                self.wait_for_decision(intent, Duration::from_secs(secs))
                    .await?
            }
            _ => intent,
        };
        if let Some(err) = GuardError::for_intent(&intent) {
            return Err(err);
        }
        let Some(resp) = intent.response.as_ref() else {
            return Err(GuardError::StoreUnavailable);
        };
        write_stored(session, resp, &intent)
            .await
            .map_err(|_| GuardError::StoreUnavailable)?;
        Ok(Step::Answered)
    }

    /// `Prefer: wait=N`: keep the request open until a human decides and the executor settles.
    async fn wait_for_decision(
        &self,
        mut intent: Intent,
        max: Duration,
    ) -> Result<Intent, GuardError> {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let mut sub = self.events.subscribe();
            let (org, id) = (intent.org.clone(), intent.id.clone());
            intent = self
                .blocking(move |s| s.intent(&org, &id))
                .await?
                .ok_or(GuardError::StoreUnavailable)?;
            let moving = matches!(
                intent.status,
                IntentStatus::PendingApproval | IntentStatus::Approved | IntentStatus::Forwarding
            );
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !moving || left.is_zero() || !sub.changed(&intent.id, left).await {
                return Ok(intent);
            }
        }
    }

    /// Read the whole body, bounded in size and in time between pieces (PROXY.md step 2).
    async fn read_body(&self, session: &mut Session) -> Result<Vec<u8>, GuardError> {
        let max = self.settings.max_body_bytes;
        let h = session.req_header();
        let te = h.headers.get("transfer-encoding").is_some();
        let cl = h.headers.get_all("content-length").iter().count();
        // pingora drops Content-Length when Transfer-Encoding is present (RFC 9112 §6.3); the raw
        // header still shows it. Both at once is a smuggling attempt: refuse it (RELIABILITY.md 5).
        let smuggled = te && raw_has_content_length(&session.to_h1_raw());
        if cl > 1 || (cl == 1 && te) || smuggled {
            return Err(GuardError::Unparseable(
                "conflicting Content-Length / Transfer-Encoding".into(),
            ));
        }
        if let Some(v) = h.headers.get("content-length") {
            let n: usize = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| GuardError::Unparseable("invalid Content-Length".into()))?;
            if n > max {
                return Err(GuardError::BodyTooLarge(max));
            }
        }
        let expects_continue = h
            .headers
            .get("expect")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        session.set_read_timeout(Some(Duration::from_secs(
            self.settings.body_read_timeout_secs,
        )));
        if expects_continue {
            session
                .write_continue_response()
                .await
                .map_err(|_| GuardError::Unparseable("cannot answer Expect".into()))?;
        }
        let deadline = Duration::from_secs(self.settings.body_deadline_secs);
        let read_timeout = self.settings.body_read_timeout_secs;
        match tokio::time::timeout(deadline, read_all(session, max, read_timeout)).await {
            Ok(r) => r,
            Err(_) => Err(GuardError::RequestTimeout(self.settings.body_deadline_secs)),
        }
    }

    /// `GET /v1/guard/intents/{id}`: the agent's own intents only.
    async fn agent_view(
        &self,
        session: &mut Session,
        agent: &AuthedAgent,
        method: &str,
        path: &str,
    ) -> Result<Step, GuardError> {
        let id = path
            .strip_prefix("/v1/guard/intents/")
            .and_then(store::IntentId::parse);
        let (Some(id), "GET") = (id, method) else {
            return Err(GuardError::NotFound);
        };
        let org = agent.agent.org.clone();
        let intent = self.blocking(move |s| s.intent(&org, &id)).await?;
        let intent = intent
            .filter(|i| i.agent == agent.agent.id)
            .ok_or(GuardError::NotFound)?;
        let body = crate::view::intent_json(&intent);
        write_json(session, 200, &body, &[])
            .await
            .map_err(|_| GuardError::StoreUnavailable)?;
        Ok(Step::Answered)
    }
}

/// Read the body to its end, refusing more than `max` bytes. A body that stops arriving for
/// `read_timeout_secs` is a 408 `guard_request_timeout` (the client was too slow), not a 400.
async fn read_all(
    session: &mut Session,
    max: usize,
    read_timeout_secs: u64,
) -> Result<Vec<u8>, GuardError> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max {
                    return Err(GuardError::BodyTooLarge(max));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) if e.etype() == &ErrorType::ReadTimedout => {
                return Err(GuardError::RequestTimeout(read_timeout_secs));
            }
            Err(e) => {
                return Err(GuardError::Unparseable(format!(
                    "the body could not be read: {:?}",
                    e.etype()
                )));
            }
        }
    }
    Ok(body)
}

/// Whether raw request header bytes carry a `Content-Length` line.
fn raw_has_content_length(raw: &[u8]) -> bool {
    const NAME: &[u8] = b"content-length:";
    raw.split(|b| *b == b'\n')
        .skip(1)
        .any(|line| line.len() >= NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME))
}

/// Rounds of lookups one classification may take (a valuer that needs an object to know which
/// other object to read takes two).
const LOOKUP_ROUNDS: usize = 3;

/// Longest connected account id accepted in `Stripe-Account` / `Stripe-Context`.
const MAX_ACCOUNT_BYTES: usize = 255;

/// Where a classification error goes: its own status where the contract names one.
fn facts_error(e: FactsError) -> GuardError {
    match e {
        FactsError::QueryOnPost => GuardError::QueryNotAllowed,
        FactsError::UnsupportedContentType { .. } => {
            GuardError::UnsupportedContentType(e.to_string())
        }
        other => GuardError::Unparseable(other.to_string()),
    }
}

/// The allowlisted headers of the request; a duplicate of one of them is a 400.
fn request_headers(session: &Session) -> Result<Vec<(String, String)>, GuardError> {
    allowlisted(
        session
            .req_header()
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes())),
    )
    .map_err(|name| {
        GuardError::Unparseable(format!(
            "header {name} must be given once, as visible ASCII"
        ))
    })
}

/// PROXY.md step 2: the connected account acted on, from `Stripe-Account` or `Stripe-Context`
/// (`""` for the platform). Either must be one account id: a context path (`acct_1/acct_2`)
/// would not match a policy or cap naming the account it acts on, so it is refused (fail
/// closed). Both at once must agree; a repeated header is refused, since the rail might read
/// another copy than the guard.
fn connected_account(session: &Session) -> Result<String, GuardError> {
    let one = |name: &str| -> Result<Option<String>, GuardError> {
        let mut values = session.req_header().headers.get_all(name).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(GuardError::BadAccountHeader(format!(
                "{name} is given more than once"
            )));
        }
        let text = value
            .to_str()
            .ok()
            .filter(|t| {
                !t.is_empty()
                    && t.len() <= MAX_ACCOUNT_BYTES
                    && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            })
            .ok_or_else(|| GuardError::BadAccountHeader(format!("{name} is not an account id")))?;
        Ok(Some(text.to_string()))
    };
    match (one("stripe-account")?, one("stripe-context")?) {
        (Some(a), Some(c)) if a != c => Err(GuardError::BadAccountHeader(
            "stripe-account and stripe-context name different accounts".into(),
        )),
        (Some(a), _) => Ok(a),
        (None, Some(c)) => Ok(c),
        (None, None) => Ok(String::new()),
    }
}

fn idempotency_key(session: &Session) -> Result<String, GuardError> {
    let v = session
        .get_header("idempotency-key")
        .ok_or(GuardError::IdempotencyKeyRequired)?;
    let s = v
        .to_str()
        .map_err(|_| GuardError::Unparseable("Idempotency-Key must be visible ASCII".into()))?;
    if s.is_empty() {
        return Err(GuardError::IdempotencyKeyRequired);
    }
    if s.len() > MAX_IDEMPOTENCY_KEY_BYTES || !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(GuardError::Unparseable(format!(
            "Idempotency-Key must be 1..={MAX_IDEMPOTENCY_KEY_BYTES} visible ASCII characters"
        )));
    }
    Ok(s.to_string())
}

/// `Prefer: wait=N` (RFC 7240).
fn prefer_wait(session: &Session) -> Option<u64> {
    let v = session.get_header("prefer")?.to_str().ok()?;
    v.split([',', ';'])
        .find_map(|p| p.trim().strip_prefix("wait=")?.trim().parse().ok())
}

async fn write_json(
    session: &mut Session,
    status: u16,
    body: &[u8],
    extra: &[(&str, String)],
) -> pingora::Result<()> {
    let mut h = ResponseHeader::build(status, Some(extra.len() + 3))?;
    h.insert_header("content-type", "application/json")?;
    h.insert_header("content-length", body.len().to_string())?;
    for (k, v) in extra {
        h.insert_header(k.to_string(), v.as_str())?;
    }
    session.write_response_header(Box::new(h), false).await?;
    session
        .write_response_body(Some(Bytes::copy_from_slice(body)), true)
        .await
}

async fn write_error(session: &mut Session, err: &GuardError) -> pingora::Result<()> {
    let mut extra = Vec::new();
    let (intent, decision) = err.intent_headers();
    if let Some(i) = intent {
        extra.push(("guard-intent", i.to_string()));
    }
    if let Some(d) = decision {
        extra.push(("guard-decision", d.to_string()));
    }
    if let Some(retry) = err.should_retry() {
        extra.push(("stripe-should-retry", retry.to_string()));
    }
    if matches!(
        err,
        GuardError::BodyTooLarge(_)
            | GuardError::Unparseable(_)
            | GuardError::UnsupportedContentType(_)
            | GuardError::QueryNotAllowed
            | GuardError::BadAccountHeader(_)
    ) {
        // The rest of the body may still be on the wire: do not reuse the connection.
        session.set_keepalive(None);
    }
    write_json(session, err.status(), &err.body(), &extra).await
}

/// Replay a stored upstream response byte for byte, with the guard's headers.
async fn write_stored(
    session: &mut Session,
    resp: &StoredResponse,
    intent: &Intent,
) -> pingora::Result<()> {
    let mut h = ResponseHeader::build(resp.status, Some(resp.headers.len() + 3))?;
    for (k, v) in &resp.headers {
        h.append_header(k.clone(), v.as_str())?;
    }
    h.insert_header("content-length", resp.body.len().to_string())?;
    h.insert_header("guard-intent", intent.id.as_str())?;
    h.insert_header("guard-decision", intent.decision.as_str())?;
    session.write_response_header(Box::new(h), false).await?;
    session
        .write_response_body(Some(Bytes::copy_from_slice(&resp.body)), true)
        .await
}

#[async_trait]
impl ProxyHttp for Guard {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        ctx.in_flight = self.in_flight.enter();
        if ctx.in_flight.is_none() {
            session.set_keepalive(None);
            write_error(session, &GuardError::ShuttingDown).await?;
            return Ok(true);
        }
        match self.handle(session, ctx).await {
            Ok(Step::Forward) => Ok(false),
            Ok(Step::Answered) => Ok(true),
            Err(err) => {
                write_error(session, &err).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let addr = self.upstream.addr().await.ok_or_else(|| {
            Error::explain(ErrorType::ConnectError, "upstream host cannot be resolved")
        })?;
        let mut peer = HttpPeer::new(addr, self.upstream.tls, self.upstream.host.clone());
        let t = Duration::from_secs(self.settings.upstream_timeout_secs);
        peer.options.connection_timeout = Some(t.min(Duration::from_secs(10)));
        peer.options.total_connection_timeout = Some(t);
        peer.options.read_timeout = Some(t);
        peer.options.write_timeout = Some(t);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        let Some(fwd) = ctx.forward.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "forwarding without a decision");
        };
        // A read goes upstream with the same allowlisted headers as a mutation: nothing the
        // policies did not see (`X-HTTP-Method-Override`, `Stripe_Account` spelled for a
        // CGI-style server, hop-by-hop headers) reaches the rail.
        let names: Vec<String> = req
            .headers
            .keys()
            .map(|k| k.as_str().to_string())
            .filter(|k| !FORWARDED_REQUEST_HEADERS.contains(&k.as_str()))
            .collect();
        for name in names {
            req.remove_header(&name);
        }
        req.insert_header("authorization", format!("Bearer {}", fwd.rail_key))?;
        req.insert_header("host", self.upstream.host_header())?;
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        if ctx.forward.is_some() {
            resp.insert_header("guard-decision", "allow")?;
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        _ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Never retry a payment on our own: the agent retries with the same key.
        e.set_retry(false);
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        tracing::warn!(error = %e, org = ?ctx.org, "proxying a read failed");
        let err = GuardError::UpstreamUnavailable(None);
        let code = if session.response_written().is_none() {
            let _ = write_error(session, &err).await;
            502
        } else {
            0
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}
