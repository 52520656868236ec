//! The admin router: `/api/v1/*` (OpenAPI-described), `/api/v1/openapi.json`, `/metrics`,
//! `/healthz`, `/readyz`, and the console page.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Payment Guard admin API", description = "ADMIN_API.md: humans run the guard through this API."),
    tags(
        (name = "auth"), (name = "organizations"), (name = "members"), (name = "agents"),
        (name = "policies"), (name = "caps"), (name = "rail"), (name = "intents"), (name = "audit"), (name = "webhooks")
    )
)]
struct ApiDoc;

fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(crate::auth::routes())
        .merge(crate::resources::routes())
        .merge(crate::webhooks::routes())
}

/// The OpenAPI document, generated from the handlers' annotations.
pub fn openapi_json() -> String {
    let (_, mut doc) = api().split_for_parts();
    crate::idempotency::describe_in(&mut doc);
    doc.to_pretty_json().unwrap_or_default()
}

/// The whole admin application.
pub fn build_router(state: AppState) -> Router {
    let (router, mut doc) = api().split_for_parts();
    crate::idempotency::describe_in(&mut doc);
    let doc_json = doc.to_pretty_json().unwrap_or_default();
    router
        // Every API route above, none below (idempotency.rs).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::idempotency::layer,
        ))
        .route(
            "/api/v1/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], doc_json) }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::render))
        .route("/", get(console))
        .route("/console.js", get(console_js))
        .route("/console.css", get(console_css))
        .layer(axum::middleware::from_fn(
            crate::connection::close_if_body_unread,
        ))
        .layer(axum::middleware::map_response_with_state(
            state.settings.production,
            security_headers,
        ))
        .with_state(state)
}

/// Every admin response (console, its assets, API, errors): no inline script or style, no
/// framing, no MIME sniffing, no referrer (DECISIONS.md, "Console security headers").
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; \
     object-src 'none'; frame-ancestors 'none'";

/// Production only (`admin.production`, which refuses plain HTTP): two years, subdomains too.
pub const STRICT_TRANSPORT_SECURITY: &str = "max-age=63072000; includeSubDomains";

async fn security_headers(State(production): State<bool>, mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if production {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(STRICT_TRANSPORT_SECURITY),
        );
    }
    response
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.blocking(|s| s.is_empty()).await {
        Ok(_) => (axum::http::StatusCode::OK, "ready\n"),
        Err(_) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "store unavailable\n",
        ),
    }
}

async fn console() -> Html<&'static str> {
    Html(include_str!("console.html"))
}

async fn console_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("console.js"),
    )
}

async fn console_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("console.css"),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// The schema `s` points at, following `$ref`s into `components.schemas`.
    fn resolve<'a>(doc: &'a Value, s: &'a Value) -> &'a Value {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.trim_start_matches("#/components/schemas/");
                let target = &doc["components"]["schemas"][name];
                assert!(!target.is_null(), "dangling reference {r}");
                resolve(doc, target)
            }
            None => s,
        }
    }

    /// Whether `s` describes its content: an object with named properties (directly or through
    /// `allOf`/`oneOf`/`anyOf`), or a scalar such as a text body. An object schema with no
    /// properties (`serde_json::Value`, `{}`) is untyped.
    fn typed(doc: &Value, s: &Value) -> bool {
        let s = resolve(doc, s);
        let props = s
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|p| !p.is_empty());
        let parts = ["allOf", "oneOf", "anyOf"].iter().any(|k| {
            s.get(*k)
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty() && a.iter().all(|p| typed(doc, p)))
        });
        let scalar = matches!(
            s.get("type").and_then(Value::as_str),
            Some("string" | "integer" | "number" | "boolean")
        );
        props || parts || scalar
    }

    /// Every schema of a body's content types, with where it is.
    fn bodies<'a>(what: String, body: &'a Value, out: &mut Vec<(String, &'a Value)>) {
        let content = body["content"].as_object();
        assert!(
            content.is_some_and(|c| !c.is_empty()),
            "{what}: a body with no content type"
        );
        for (ct, media) in content.into_iter().flatten() {
            out.push((format!("{what} ({ct})"), &media["schema"]));
        }
    }

    #[test]
    fn every_request_and_success_body_is_typed() {
        let doc: Value = serde_json::from_str(&super::openapi_json()).unwrap();
        let mut found = Vec::new();
        let mut operations = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                    continue;
                }
                operations += 1;
                if let Some(rb) = op.get("requestBody") {
                    bodies(format!("{method} {path} request"), rb, &mut found);
                }
                let responses = op["responses"].as_object().unwrap();
                let ok: Vec<_> = responses
                    .iter()
                    .filter(|(status, _)| status.starts_with('2'))
                    .collect();
                assert!(!ok.is_empty(), "{method} {path}: no 2xx response");
                for (status, r) in ok {
                    bodies(format!("{method} {path} {status}"), r, &mut found);
                }
            }
        }
        // What `serde_json::Value` and an empty struct give: no properties.
        assert!(!typed(&doc, &serde_json::json!({})));
        assert!(!typed(&doc, &serde_json::json!({"type": "object"})));
        assert!(!typed(
            &doc,
            &serde_json::json!({"type": "object", "additionalProperties": {}})
        ));
        let untyped: Vec<_> = found
            .iter()
            .filter(|(_, s)| !typed(&doc, s))
            .map(|(w, _)| w.as_str())
            .collect();
        assert_eq!(untyped, Vec::<&str>::new(), "untyped bodies");
        assert_eq!(operations, 60);
        // A field answered as null is described as required and nullable, not as optional.
        let intent = &doc["components"]["schemas"]["IntentView"];
        for field in ["amount", "reservation", "request", "upstream_status"] {
            assert!(
                intent["required"]
                    .as_array()
                    .unwrap()
                    .contains(&Value::from(field)),
                "{field}"
            );
        }
        assert_eq!(found.len(), 83);
    }
}
