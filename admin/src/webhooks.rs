//! Webhook endpoints through the admin API (WEBHOOKS.md, ADMIN_API.md "Resources").

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::dto::{
    Deleted, DeliveryList, DeliveryView, WebhookCreated, WebhookList, WebhookRotated, WebhookView,
};
use crate::extract::JsonBody;
use crate::rbac::{Member, Perm};
use crate::webhook_target::{self, TargetPolicy};
use crate::{ApiError, AppState};

/// Seconds both secrets sign after a rotation (WEBHOOKS.md: several signatures while it overlaps).
const ROTATION_OVERLAP_SECS: i64 = 24 * 3600;
/// Deliveries listed at most.
const DELIVERIES_MAX: usize = 500;

/// The webhook routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(update_webhook, delete_webhook))
        .routes(routes!(rotate_secret))
        .routes(routes!(list_deliveries))
        .routes(routes!(retry_delivery))
}

fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::Validation {
        message: m.into(),
        details: Value::Null,
    }
}

/// The target check shared with the delivery worker (`webhook_target`); returns the URL as
/// parsed, whose serialization is what is stored, so the worker later parses exactly what was
/// checked here.
async fn check(state: &AppState, url: &str) -> Result<String, ApiError> {
    let policy = TargetPolicy {
        allow_private: state.settings.allow_private_webhook_targets,
        test_hosts_file: state.settings.webhook_test_hosts_file.clone(),
    };
    match webhook_target::check(url, &policy).await {
        Ok(t) => Ok(t.url.as_str().to_string()),
        Err(r) => Err(ApiError::Validation {
            message: r.to_string(),
            details: r.details(),
        }),
    }
}

fn webhook_id(id: &str) -> Result<String, ApiError> {
    let ok = id.strip_prefix("wh_").is_some_and(|r| {
        !r.is_empty() && r.len() <= 64 && r.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if ok {
        Ok(id.to_string())
    } else {
        Err(ApiError::NotFound)
    }
}

#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks", responses((status = 200, body = WebhookList)))]
async fn list_webhooks(
    State(state): State<AppState>,
    m: Member,
) -> Result<Json<WebhookList>, ApiError> {
    m.require(Perm::Read)?;
    let org = m.org.clone();
    let list = state.blocking(move |s| s.list_webhooks(&org)).await?;
    Ok(Json(WebhookList::new(
        list.iter().map(WebhookView::from).collect(),
    )))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateWebhook {
    url: String,
    /// Event types; all when absent.
    events: Option<Vec<String>>,
}

#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", request_body = CreateWebhook, responses((status = 201, description = "The secret is shown once", body = WebhookCreated)))]
async fn create_webhook(
    State(state): State<AppState>,
    m: Member,
    JsonBody(b): JsonBody<CreateWebhook>,
) -> Result<Response, ApiError> {
    m.require(Perm::ManageConfig)?;
    let url = check(&state, &b.url).await?;
    let secret = payment_guard_sdk::Secret::generate().to_string();
    let (org, actor, s2) = (m.org.clone(), m.actor(), secret.clone());
    let ep = state
        .blocking(move |s| s.create_webhook(&org, &url, b.events, &s2, &actor))
        .await?;
    Ok((StatusCode::CREATED, Json(WebhookCreated::new(&ep, secret))).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateWebhook {
    url: Option<String>,
    events: Option<Vec<String>>,
    /// Subscribe to every type (clears `events`).
    #[serde(default)]
    all_events: bool,
    enabled: Option<bool>,
}

#[utoipa::path(patch, path = "/api/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)), request_body = UpdateWebhook, responses((status = 200, body = WebhookView)))]
async fn update_webhook(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<UpdateWebhook>,
) -> Result<Json<WebhookView>, ApiError> {
    m.require(Perm::ManageConfig)?;
    let id = webhook_id(&id)?;
    let url = match &b.url {
        Some(u) => Some(check(&state, u).await?),
        None => None,
    };
    let events = if b.all_events {
        Some(None)
    } else {
        b.events.map(Some)
    };
    let (org, actor) = (m.org.clone(), m.actor());
    let ep = state
        .blocking(move |s| s.update_webhook(&org, &id, url, events, b.enabled, &actor))
        .await?;
    Ok(Json(WebhookView::from(&ep)))
}

#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)), responses((status = 200, body = Deleted)))]
async fn delete_webhook(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    m.require(Perm::ManageConfig)?;
    let id = webhook_id(&id)?;
    let (org, actor, i2) = (m.org.clone(), m.actor(), id.clone());
    state
        .blocking(move |s| s.delete_webhook(&org, &i2, &actor))
        .await?;
    Ok(Json(Deleted::new(id)))
}

#[utoipa::path(post, path = "/api/v1/webhooks/{id}/rotate-secret", tag = "webhooks", params(("id" = String, Path)), responses((status = 200, description = "The new secret, shown once; the old one keeps signing for 24 h", body = WebhookRotated)))]
async fn rotate_secret(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
) -> Result<Json<WebhookRotated>, ApiError> {
    m.require(Perm::ManageConfig)?;
    let id = webhook_id(&id)?;
    let secret = payment_guard_sdk::Secret::generate().to_string();
    let (org, actor, s2) = (m.org.clone(), m.actor(), secret.clone());
    let ep = state
        .blocking(move |s| s.rotate_webhook_secret(&org, &id, &s2, ROTATION_OVERLAP_SECS, &actor))
        .await?;
    Ok(Json(WebhookRotated::new(
        &ep,
        secret,
        ROTATION_OVERLAP_SECS,
    )))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct DeliveryQuery {
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = String, Path), DeliveryQuery), responses((status = 200, body = DeliveryList)))]
async fn list_deliveries(
    State(state): State<AppState>,
    m: Member,
    Path(id): Path<String>,
    Query(q): Query<DeliveryQuery>,
) -> Result<Json<DeliveryList>, ApiError> {
    m.require(Perm::Read)?;
    let id = webhook_id(&id)?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > DELIVERIES_MAX {
        return Err(invalid(format!("limit: 1..={DELIVERIES_MAX}")));
    }
    let org = m.org.clone();
    let list = state
        .blocking(move |s| s.list_deliveries(&org, &id, limit))
        .await?;
    Ok(Json(DeliveryList::new(
        list.into_iter().map(DeliveryView::from).collect(),
    )))
}

#[utoipa::path(post, path = "/api/v1/webhooks/{id}/deliveries/{delivery}/retry", tag = "webhooks", params(("id" = String, Path), ("delivery" = String, Path)), responses((status = 200, body = DeliveryView)))]
async fn retry_delivery(
    State(state): State<AppState>,
    m: Member,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<Json<DeliveryView>, ApiError> {
    m.require(Perm::ManageConfig)?;
    let id = webhook_id(&id)?;
    let ok = delivery.strip_prefix("dlv_").is_some_and(|r| {
        !r.is_empty() && r.len() <= 64 && r.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if !ok {
        return Err(ApiError::NotFound);
    }
    let (org, actor) = (m.org.clone(), m.actor());
    let d = state
        .blocking(move |s| s.retry_delivery(&org, &id, &delivery, &actor))
        .await?;
    Ok(Json(d.into()))
}
