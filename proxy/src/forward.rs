//! Sending a decided mutation to the rail and reading the whole answer, so the store can settle
//! the intent *before* the agent hears anything (PROXY.md step 5: durable before the answer).
//! Used by the data path for allowed requests and by the executor for approved holds.
//!
//! Why not pingora's own forwarding for mutations: its body phases after the upstream answers are
//! synchronous, so the settlement commit could only happen after the response was already
//! written to the agent; a crash in between would leave an answered request `forwarding`.
//! Reads (GET) still go through pingora's proxy path.

use std::time::Duration;

use store::{Committer, Intent, IntentEvents, StoredResponse, UpstreamOutcome};

/// Request headers an agent's SDK sends that Stripe needs to see; everything else is dropped.
/// They are stored with a held intent, so the executor sends exactly these (PROXY.md step 6).
pub(crate) const FORWARDED_REQUEST_HEADERS: [&str; 9] = [
    "content-type",
    "accept",
    "accept-encoding",
    "accept-language",
    "user-agent",
    "stripe-version",
    "stripe-account",
    "stripe-context",
    "x-stripe-client-user-agent",
];

/// The allowlisted request headers of `headers`, names lower-cased, in arrival order. One of
/// them given twice is refused (`Err(name)`): the guard would read one copy and the rail
/// might read the other (two `Content-Type`s, two `Stripe-Version`s).
pub(crate) fn allowlisted<'a>(
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in headers {
        let name = k.to_ascii_lowercase();
        if !FORWARDED_REQUEST_HEADERS.contains(&name.as_str()) {
            continue;
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(name);
        }
        let Ok(value) = std::str::from_utf8(v) else {
            return Err(name);
        };
        out.push((name, value.to_string()));
    }
    Ok(out)
}

/// The one way a decided mutation reaches the rail (PROXY.md steps 5 and 6): the data path for
/// an allowed request and the executor for an approved hold both send the exact request —
/// method, path, query, allowlisted headers, body — with the intent's upstream key, then
/// settle it durably and wake whoever waits on the intent.
pub async fn send_and_settle(
    forwarder: &Forwarder,
    committer: &Committer,
    events: &IntentEvents,
    intent: &Intent,
    rail_key: &str,
    request: ExactRequest<'_>,
) -> (UpstreamOutcome, store::Result<Intent>) {
    let path_and_query = if request.query.is_empty() {
        intent.path.clone()
    } else {
        format!("{}?{}", intent.path, request.query)
    };
    let outcome = forwarder
        .send(Outbound {
            method: &intent.method,
            path_and_query: &path_and_query,
            headers: request.headers,
            rail_key,
            idempotency_key: &intent.upstream_idempotency_key,
            body: request.body,
        })
        .await;
    let settled = committer
        .settle(intent.org.clone(), intent.id.clone(), outcome.clone())
        .await;
    events.publish(&intent.id);
    (outcome, settled)
}

/// What is sent besides the intent's method and path.
#[derive(Debug)]
pub struct ExactRequest<'a> {
    /// Query string without `?` (`""` when none).
    pub query: &'a str,
    /// Allowlisted headers.
    pub headers: &'a [(String, String)],
    /// Body bytes.
    pub body: Vec<u8>,
}

/// Response headers that describe one connection, never stored or replayed.
pub(crate) fn hop_by_hop(name: &str) -> bool {
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

/// An HTTP client bound to the rail.
#[derive(Debug, Clone)]
pub struct Forwarder {
    client: reqwest::Client,
    base_url: String,
    max_response_bytes: usize,
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Outbound<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path and query.
    pub path_and_query: &'a str,
    /// The agent's request headers (filtered here).
    pub headers: &'a [(String, String)],
    /// The organization's Stripe key.
    pub rail_key: &'a str,
    /// Intent-derived upstream Idempotency-Key.
    pub idempotency_key: &'a str,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Forwarder {
    /// A client for `base_url` (`http(s)://host[:port]`) with the given timeout.
    pub fn new(
        base_url: &str,
        timeout: Duration,
        max_response_bytes: usize,
    ) -> Result<Forwarder, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot build the upstream client: {e}"))?;
        Ok(Forwarder {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
            max_response_bytes,
        })
    }

    /// Send and read the complete response; anything short of that is `Lost`.
    pub async fn send(&self, req: Outbound<'_>) -> UpstreamOutcome {
        let method = match reqwest::Method::from_bytes(req.method.as_bytes()) {
            Ok(m) => m,
            Err(_) => return UpstreamOutcome::Lost(format!("bad method {}", req.method)),
        };
        let mut builder = self
            .client
            .request(method, format!("{}{}", self.base_url, req.path_and_query));
        for (k, v) in req.headers {
            if FORWARDED_REQUEST_HEADERS.contains(&k.as_str()) {
                builder = builder.header(k.as_str(), v.as_str());
            }
        }
        builder = builder
            .bearer_auth(req.rail_key)
            .header("idempotency-key", req.idempotency_key)
            .body(req.body);
        match builder.send().await {
            Ok(resp) => self.read(resp).await,
            Err(e) => UpstreamOutcome::Lost(describe(&e)),
        }
    }

    /// GET an object at the rail to value a request (PROXY.md step 2, valued by lookup), with
    /// the organization's key, on the request's connected account and API version. `Ok(None)`
    /// when the rail has no such object (a 4xx) or answers something that is not a JSON object;
    /// `Err` when the rail cannot be reached or fails (5xx): nothing is decided then.
    pub async fn lookup(
        &self,
        path: &str,
        rail_key: &str,
        headers: &[(String, String)],
    ) -> Result<Option<serde_json::Value>, String> {
        let mut builder = self
            .client
            .get(format!("{}{}", self.base_url, path))
            .bearer_auth(rail_key);
        for (k, v) in headers {
            if matches!(
                k.as_str(),
                "stripe-account" | "stripe-context" | "stripe-version"
            ) {
                builder = builder.header(k.as_str(), v.as_str());
            }
        }
        let resp = builder.send().await.map_err(|e| describe(&e))?;
        let status = resp.status().as_u16();
        let body = match self.read(resp).await {
            UpstreamOutcome::Response { response, .. } => response.body,
            UpstreamOutcome::Lost(why) => return Err(why),
        };
        match status {
            200..=299 => Ok(serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .filter(serde_json::Value::is_object)),
            400..=499 if status != 429 => Ok(None),
            _ => Err(format!("the rail answered {status} to a lookup")),
        }
    }

    async fn read(&self, mut resp: reqwest::Response) -> UpstreamOutcome {
        let status = resp.status().as_u16();
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .filter(|(k, _)| !hop_by_hop(k.as_str()))
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > self.max_response_bytes {
                        return UpstreamOutcome::Lost(format!(
                            "response larger than {} bytes",
                            self.max_response_bytes
                        ));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return UpstreamOutcome::Lost(format!(
                        "response body interrupted: {}",
                        describe(&e)
                    ));
                }
            }
        }
        let upstream_id = upstream_object_id(&headers, &body);
        UpstreamOutcome::Response {
            response: StoredResponse {
                status,
                headers,
                body,
            },
            upstream_id,
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    };
    let mut msg = format!("{kind}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_id_is_read_from_plain_and_gzip_bodies() {
        use std::io::Write;
        let body = br#"{"id":"pi_123","object":"payment_intent"}"#;
        assert_eq!(upstream_object_id(&[], body).as_deref(), Some("pi_123"));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(body).unwrap();
        let zipped = gz.finish().unwrap();
        let h = vec![("content-encoding".to_string(), "gzip".to_string())];
        assert_eq!(upstream_object_id(&h, &zipped).as_deref(), Some("pi_123"));
        assert_eq!(upstream_object_id(&[], b"not json"), None);
    }
}
