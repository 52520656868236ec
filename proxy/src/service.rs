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
use policies::{FormLimits, Outcome};
use store::{
    AuthedAgent, Committer, Decision, DecisionRequest, Intent, IntentStatus, OrgId, Store,
    StoredResponse, UpstreamOutcome,
};

use crate::auth::token_from_header;
use crate::errors::GuardError;
use crate::upstream::Upstream;
use crate::waiters::IntentEvents;

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
        }
    }
}

/// Largest `Idempotency-Key` accepted (Stripe's limit).
const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// The guard's `ProxyHttp` implementation.
pub struct Guard {
    store: Arc<Store>,
    committer: Committer,
    upstream: Arc<Upstream>,
    settings: ProxySettings,
    events: IntentEvents,
}

/// What a forwarded request needs in later phases.
#[derive(Debug)]
struct Forward {
    /// The decided intent (mutations); `None` for reads.
    intent: Option<Box<Intent>>,
    rail_key: String,
    body_len: usize,
}

/// The upstream response as it passes through, kept for settlement and replay.
#[derive(Debug, Default)]
struct Captured {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    complete: bool,
    overflow: bool,
}

/// Per-request state.
#[derive(Debug, Default)]
pub struct Ctx {
    org: Option<OrgId>,
    forward: Option<Forward>,
    captured: Option<Captured>,
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
        upstream: Arc<Upstream>,
        settings: ProxySettings,
        events: IntentEvents,
    ) -> Self {
        Self {
            store,
            committer,
            upstream,
            settings,
            events,
        }
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
        let agent = self.authenticate(session).await?;
        ctx.org = Some(agent.agent.org.clone());
        let method = session.req_header().method.as_str().to_string();
        let path = session.req_header().uri.path().to_string();
        if path.starts_with("/v1/guard/") {
            return self.agent_view(session, &agent, &method, &path).await;
        }
        match method.as_str() {
            "GET" => self.read(session, ctx, &agent, &path).await,
            "POST" | "DELETE" => self.mutation(session, ctx, &agent, method, path).await,
            other => Err(GuardError::MethodNotAllowed(other.to_string())),
        }
    }

    /// PROXY.md step 1.
    async fn authenticate(&self, session: &Session) -> Result<AuthedAgent, GuardError> {
        let token = session
            .get_header("authorization")
            .and_then(|v| token_from_header(v.as_bytes()))
            .ok_or(GuardError::AuthenticationRequired)?;
        let agent = self
            .blocking(move |s| s.authenticate_agent(&token))
            .await?
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
        let facts = policies::classify("GET", path, b"", &FormLimits::default())
            .map_err(|e| GuardError::Unparseable(e.to_string()))?;
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
        ctx.forward = Some(Forward {
            intent: None,
            rail_key,
            body_len: 0,
        });
        Ok(Step::Forward)
    }

    /// PROXY.md steps 2–5 for POST and DELETE.
    async fn mutation(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        agent: &AuthedAgent,
        method: String,
        path: String,
    ) -> Result<Step, GuardError> {
        let key = idempotency_key(session)?;
        let body = self.read_body(session).await?;
        let facts = policies::classify(&method, &path, &body, &FormLimits::default())
            .map_err(|e| GuardError::Unparseable(e.to_string()))?;
        let req = DecisionRequest {
            org: agent.agent.org.clone(),
            agent: agent.agent.id.clone(),
            idempotency_key: key,
            method,
            path,
            body,
            facts,
            hold_expiry_secs: self.settings.hold_expiry_secs,
        };
        let wait = prefer_wait(session).map(|w| w.min(self.settings.max_hold_wait_secs));
        let decision = self.decide(req).await?;
        match decision {
            Decision::Forward { intent, rail_key } => {
                ctx.forward = Some(Forward {
                    body_len: session.get_retry_buffer().map_or(0, |b| b.len()),
                    intent: Some(intent),
                    rail_key,
                });
                Ok(Step::Forward)
            }
            Decision::Respond(intent) => self.answer_intent(session, *intent, wait).await,
            Decision::InFlight(id) => Err(GuardError::InProgress(id.to_string())),
            Decision::KeyReused => Err(GuardError::IdempotencyKeyReused),
            Decision::Frozen => Err(GuardError::AgentFrozen),
            Decision::RailNotConfigured => Err(GuardError::RailNotConfigured),
        }
    }

    /// Decide; when the key is in flight, wait (bounded) for the first request to settle and
    /// decide again, so a quick retry gets the stored outcome rather than a 409.
    async fn decide(&self, req: DecisionRequest) -> Result<Decision, GuardError> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.settings.in_flight_wait_ms);
        loop {
            let mut sub = self.events.subscribe();
            let decision = self
                .committer
                .decide(req.clone())
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

    /// Read the whole body into pingora's retry buffer, bounded (PROXY.md step 2).
    async fn read_body(&self, session: &mut Session) -> Result<Vec<u8>, GuardError> {
        let max = self.settings.max_body_bytes;
        let h = session.req_header();
        let te = h.headers.get("transfer-encoding").is_some();
        let cl = h.headers.get_all("content-length").iter().count();
        if cl > 1 || (cl == 1 && te) {
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
        if expects_continue {
            session
                .write_continue_response()
                .await
                .map_err(|_| GuardError::Unparseable("cannot answer Expect".into()))?;
        }
        session.enable_retry_buffering();
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
                Err(e) => {
                    return Err(GuardError::Unparseable(format!(
                        "the body could not be read: {:?}",
                        e.etype()
                    )));
                }
            }
        }
        if session.retry_buffer_truncated() {
            return Err(GuardError::BodyTooLarge(max));
        }
        Ok(body)
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
        GuardError::BodyTooLarge(_) | GuardError::Unparseable(_)
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

/// Headers that describe one connection, not the response (never stored or replayed).
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "content-length"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "upgrade"
            | "guard-intent"
            | "guard-decision"
    )
}

/// The Stripe object id in a JSON response body (gzip-decoded when needed).
fn upstream_object_id(headers: &[(String, String)], body: &[u8]) -> Option<String> {
    let gz = headers
        .iter()
        .any(|(k, v)| k == "content-encoding" && v.contains("gzip"));
    let plain;
    let json_bytes = if gz {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .take(8 * 1024 * 1024)
            .read_to_end(&mut out)
            .ok()?;
        plain = out;
        plain.as_slice()
    } else {
        body
    };
    let v: serde_json::Value = serde_json::from_slice(json_bytes).ok()?;
    v.get("id")?.as_str().map(str::to_string)
}

#[async_trait]
impl ProxyHttp for Guard {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
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
        for name in [
            "authorization",
            "idempotency-key",
            "prefer",
            "transfer-encoding",
            "expect",
            "content-length",
            "host",
        ] {
            req.remove_header(name);
        }
        req.insert_header("authorization", format!("Bearer {}", fwd.rail_key))?;
        req.insert_header("host", self.upstream.host_header())?;
        if let Some(intent) = &fwd.intent {
            // PROXY.md: the upstream key derives from the intent, so a retry never pays twice.
            req.insert_header("idempotency-key", intent.upstream_idempotency_key.as_str())?;
            req.insert_header("content-length", fwd.body_len.to_string())?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        let Some(fwd) = ctx.forward.as_ref() else {
            return Ok(());
        };
        let headers = resp
            .headers
            .iter()
            .filter(|(k, _)| !hop_by_hop(k.as_str()))
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        ctx.captured = Some(Captured {
            status: resp.status.as_u16(),
            headers,
            ..Default::default()
        });
        match &fwd.intent {
            Some(intent) => {
                resp.insert_header("guard-intent", intent.id.as_str())?;
                resp.insert_header("guard-decision", intent.decision.as_str())?;
            }
            None => resp.insert_header("guard-decision", "allow")?,
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<Option<Duration>> {
        let intent_forwarded = ctx.forward.as_ref().is_some_and(|f| f.intent.is_some());
        if let (true, Some(c)) = (intent_forwarded, ctx.captured.as_mut()) {
            if let Some(b) = body.as_ref() {
                if c.body.len() + b.len() > self.settings.max_stored_response_bytes {
                    c.overflow = true;
                } else if !c.overflow {
                    c.body.extend_from_slice(b);
                }
            }
            if end {
                c.complete = true;
            }
        }
        Ok(None)
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
        let intent = ctx
            .forward
            .as_ref()
            .and_then(|f| f.intent.as_ref())
            .map(|i| i.id.to_string());
        tracing::warn!(error = %e, intent = intent.as_deref().unwrap_or("-"), "proxying failed");
        let err = GuardError::UpstreamUnavailable(intent);
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

    async fn logging(&self, _session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let Some(intent) = ctx.forward.as_ref().and_then(|f| f.intent.as_ref()) else {
            return;
        };
        let outcome = match ctx.captured.take() {
            Some(c) if c.complete && !c.overflow => {
                let upstream_id = upstream_object_id(&c.headers, &c.body);
                UpstreamOutcome::Response {
                    response: StoredResponse {
                        status: c.status,
                        headers: c.headers,
                        body: c.body,
                    },
                    upstream_id,
                }
            }
            Some(c) if c.complete => UpstreamOutcome::Response {
                response: StoredResponse {
                    status: c.status,
                    headers: c.headers,
                    body: Vec::new(),
                },
                upstream_id: None,
            },
            _ => UpstreamOutcome::Lost(
                e.map_or_else(|| "response incomplete".to_string(), |e| e.to_string()),
            ),
        };
        let (org, id) = (intent.org.clone(), intent.id.clone());
        match self.committer.settle(org, id.clone(), outcome).await {
            Ok(settled) => {
                tracing::info!(intent = %id, status = settled.status.as_str(), "settled")
            }
            Err(_) => {
                tracing::error!(intent = %id, "settlement failed; the intent stays forwarding until restart recovery")
            }
        }
        self.events.publish(&id);
    }
}
