//! `Idempotency-Key` on admin mutations (ADMIN_API.md "Mutations and step-up"), one layer in
//! front of every handler, with the proxy's semantics (PROXY.md step 3):
//!
//! 1. **Which requests**: `POST`, `PUT`, `PATCH`, `DELETE` under `/api/v1/`, except sign-in and
//!    sign-out (`/api/v1/auth/…`), where a key is ignored: there is no principal to scope it to
//!    before sign-in, and a sign-in answer carries a session cookie that must never be kept.
//!    A request without a principal (no or a bad credential) is not covered either; its handler
//!    answers 401.
//! 2. **Required** on approve and deny (`POST /api/v1/intents/{id}/approve|deny`): a double
//!    click or a retried request never acts twice. Elsewhere optional.
//! 3. **Claim** the key for (active organization, user) with the request's digest (method,
//!    path, query, body) in one store transaction: a new key runs the request; the same key and
//!    request finished: the kept answer, marked `Idempotent-Replayed: true`; a different
//!    request: `400 idempotency_key_reused`; still running: `409 request_in_progress`.
//! 4. **Run** the handler in its own task, so a client that hangs up cannot leave the claim
//!    behind half-done, then **keep** a 2xx answer (sealed under the master key: it may show a
//!    secret once) or **release** the key for any other answer (a refused request changed
//!    nothing, so the client may fix it and retry with the same key).

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use store::{AdminAnswer, AdminClaim, AdminKeyScope};

use crate::auth::Principal;
use crate::{ApiError, AppState};

/// The request header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Marks an answer replayed from the store rather than produced by running the request again.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// Largest key accepted (Stripe's limit, as the proxy's `MAX_IDEMPOTENCY_KEY_BYTES`).
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;
/// The headers of an answer that are kept and replayed with its body.
const KEPT_HEADERS: [HeaderName; 2] = [header::CONTENT_TYPE, header::LOCATION];

/// The layer (`axum::middleware::from_fn_with_state`).
pub(crate) async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match run(state, req, next).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run(state: AppState, req: Request, next: Next) -> Result<Response, ApiError> {
    if !is_covered(req.method(), req.uri().path()) {
        return Ok(next.run(req).await);
    }
    let Some(key) = key_of(req.headers())? else {
        if requires_key(req.method(), req.uri().path()) {
            return Err(ApiError::IdempotencyKeyRequired);
        }
        return Ok(next.run(req).await);
    };
    let (mut parts, body) = req.into_parts();
    // Resolved here once; the handler's own `Principal` extractor reuses it.
    let Ok(principal) = Principal::from_request_parts(&mut parts, &state).await else {
        return Ok(next.run(Request::from_parts(parts, body)).await);
    };
    let limit = state.settings.max_body_bytes;
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::BadRequest(format!("body larger than {limit} bytes")))?;
    // The credential is part of the scope: a session's stored answer (which may show a secret
    // once, e.g. a new API token) never replays to one of the user's API tokens, whose
    // session-only checks it would skip, nor from one token to another.
    let credential = match &principal.via {
        crate::auth::AuthVia::Session(_) => "session".to_string(),
        crate::auth::AuthVia::ApiToken(id) => format!("token:{id}"),
    };
    let scope = AdminKeyScope {
        org: principal.active_org.clone(),
        user: principal.user.clone(),
        key: format!("{credential}\n{key}"),
    };
    let digest = digest_of(&parts, &body);
    let claim = {
        let scope = scope.clone();
        state
            .blocking(move |s| s.claim_admin_key(&scope, &digest))
            .await?
    };
    match claim {
        AdminClaim::Claimed => {}
        AdminClaim::Replay(answer) => return Ok(replayed(answer)),
        AdminClaim::Reused => return Err(ApiError::IdempotencyKeyReused),
        AdminClaim::InProgress => return Err(ApiError::RequestInProgress),
        AdminClaim::OutcomeUnknown => return Err(ApiError::IdempotencyOutcomeUnknown),
    }
    let req = Request::from_parts(parts, Body::from(body));
    let task = tokio::spawn(execute_and_keep(state, scope, req, next));
    task.await.map_err(|_| ApiError::Internal)
}

/// Run the claimed request and record its end. Never cancelled by the client going away.
async fn execute_and_keep(
    state: AppState,
    scope: AdminKeyScope,
    req: Request,
    next: Next,
) -> Response {
    let response = next.run(req).await;
    if !response.status().is_success() {
        let release = state.blocking(move |s| s.release_admin_key(&scope)).await;
        if release.is_err() {
            // The claim stays: retries get 409, never a second run.
            tracing::error!("could not release an admin Idempotency-Key after a refusal");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, store::ADMIN_IDEMPOTENCY_ANSWER_MAX_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            // The request acted but its answer cannot be kept or shown: the claim stays, and
            // a retry learns the outcome is unknown rather than acting again.
            tracing::error!("an admin answer over the kept-answer limit; its key stays claimed");
            return ApiError::Internal.into_response();
        }
    };
    let answer = AdminAnswer {
        status: parts.status.as_u16(),
        headers: kept_headers(&parts.headers),
        body: body.to_vec(),
    };
    if state
        .blocking(move |s| s.complete_admin_key(&scope, &answer))
        .await
        .is_err()
    {
        tracing::error!("could not keep an admin answer for its Idempotency-Key");
    }
    Response::from_parts(parts, Body::from(body))
}

/// Mutations of the API, except sign-in and sign-out.
fn is_covered(method: &Method, path: &str) -> bool {
    let mutation = matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    mutation && path.starts_with("/api/v1/") && !path.starts_with("/api/v1/auth/")
}

/// `POST /api/v1/intents/{id}/approve` and `/deny`.
fn requires_key(method: &Method, path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/api/v1/intents/") else {
        return false;
    };
    let mut segments = rest.split('/');
    let (Some(id), Some(verb), None) = (segments.next(), segments.next(), segments.next()) else {
        return false;
    };
    *method == Method::POST && !id.is_empty() && matches!(verb, "approve" | "deny")
}

/// The key, if one was sent: 1..=255 visible ASCII characters, once. An empty value counts as
/// none, as in the proxy.
fn key_of(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::IdempotencyKeyInvalid(format!(
            "Idempotency-Key must be one header of 1..={MAX_IDEMPOTENCY_KEY_BYTES} visible ASCII characters"
        ))
    };
    if values.next().is_some() {
        return Err(invalid());
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        return Ok(None);
    }
    if bytes.len() > MAX_IDEMPOTENCY_KEY_BYTES || !bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(invalid());
    }
    value
        .to_str()
        .map(|s| Some(s.to_string()))
        .map_err(|_| invalid())
}

fn digest_of(parts: &Parts, body: &Bytes) -> String {
    store::admin_request_digest(
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        body,
    )
}

fn kept_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    KEPT_HEADERS
        .iter()
        .filter_map(|name| {
            let v = headers.get(name)?.to_str().ok()?;
            Some((name.as_str().to_string(), v.to_string()))
        })
        .collect()
}

/// The kept answer, byte for byte, marked as a replay.
fn replayed(answer: AdminAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in &answer.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
    headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

/// Describe the header on every covered operation of the OpenAPI document (required on
/// approve and deny), in one place rather than on each handler.
pub(crate) fn describe_in(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::{ObjectBuilder, Required, Type};
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            (Method::POST, item.post.as_mut()),
            (Method::PUT, item.put.as_mut()),
            (Method::PATCH, item.patch.as_mut()),
            (Method::DELETE, item.delete.as_mut()),
        ];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            if !is_covered(&method, path) {
                continue;
            }
            let required = requires_key(&method, &path.replace("{id}", "id"));
            let param = ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .required(if required {
                    Required::True
                } else {
                    Required::False
                })
                .description(Some(if required {
                    "Required: a retry or a double click with the same key and body gets the \
                     first answer (`Idempotent-Replayed: true`) and never acts twice. 1..=255 \
                     visible ASCII characters, kept 24 h per user and organization."
                } else {
                    "Optional: a retry with the same key and body gets the first answer \
                     (`Idempotent-Replayed: true`) and never acts twice; the same key with \
                     another request is refused (400 `idempotency_key_reused`). 1..=255 \
                     visible ASCII characters, kept 24 h per user and organization."
                }))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(MAX_IDEMPOTENCY_KEY_BYTES)),
                ))
                .build();
            op.parameters.get_or_insert_with(Vec::new).push(param);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covered_requests() {
        let cases = [
            (Method::POST, "/api/v1/agents", true),
            (Method::DELETE, "/api/v1/caps/cap_1", true),
            (Method::PUT, "/api/v1/policies", true),
            (Method::PATCH, "/api/v1/members/usr_1", true),
            (Method::GET, "/api/v1/agents", false),
            (Method::POST, "/api/v1/auth/login", false),
            (Method::POST, "/api/v1/auth/logout", false),
            (Method::POST, "/healthz", false),
        ];
        for (m, p, want) in cases {
            assert_eq!(is_covered(&m, p), want, "{m} {p}");
        }
    }

    #[test]
    fn approve_and_deny_require_a_key() {
        let cases = [
            (Method::POST, "/api/v1/intents/int_1/approve", true),
            (Method::POST, "/api/v1/intents/int_1/deny", true),
            (Method::POST, "/api/v1/intents//approve", false),
            (Method::POST, "/api/v1/intents/int_1/approve/x", false),
            (Method::GET, "/api/v1/intents/int_1/approve", false),
            (Method::POST, "/api/v1/agents/agt_1/freeze", false),
        ];
        for (m, p, want) in cases {
            assert_eq!(requires_key(&m, p), want, "{m} {p}");
        }
    }

    #[test]
    fn key_bounds() {
        let mut h = HeaderMap::new();
        assert!(matches!(key_of(&h), Ok(None)));
        h.insert(IDEMPOTENCY_KEY, HeaderValue::from_static(""));
        assert!(matches!(key_of(&h), Ok(None)));
        h.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("k-1"));
        assert_eq!(key_of(&h).ok().flatten().as_deref(), Some("k-1"));
        let long = "k".repeat(MAX_IDEMPOTENCY_KEY_BYTES + 1);
        h.insert(IDEMPOTENCY_KEY, HeaderValue::from_str(&long).unwrap());
        assert!(matches!(
            key_of(&h),
            Err(ApiError::IdempotencyKeyInvalid(_))
        ));
        h.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("a b"));
        assert!(matches!(
            key_of(&h),
            Err(ApiError::IdempotencyKeyInvalid(_))
        ));
        h.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("k-1"));
        h.append(IDEMPOTENCY_KEY, HeaderValue::from_static("k-2"));
        assert!(matches!(
            key_of(&h),
            Err(ApiError::IdempotencyKeyInvalid(_))
        ));
    }
}
