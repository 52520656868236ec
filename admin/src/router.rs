//! The admin router: `/api/v1/*` (OpenAPI-described), `/api/v1/openapi.json`, `/metrics`,
//! `/healthz`, `/readyz`, and the console page.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
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
    let (_, doc) = api().split_for_parts();
    doc.to_pretty_json().unwrap_or_default()
}

/// The whole admin application.
pub fn build_router(state: AppState) -> Router {
    let (router, doc) = api().split_for_parts();
    let doc_json = doc.to_pretty_json().unwrap_or_default();
    router
        .route(
            "/api/v1/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], doc_json) }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::render))
        .route("/", get(console))
        .layer(axum::middleware::from_fn(
            crate::connection::close_if_body_unread,
        ))
        .with_state(state)
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
