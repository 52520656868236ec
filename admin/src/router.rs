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
