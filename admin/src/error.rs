//! The admin API's one error type and its mapping to HTTP (ADMIN_API.md "Errors"), in one place.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use store::StoreError;

/// An error answer: `{"error": {"code", "message", "details"?}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// 401 not signed in.
    #[error("sign in first")]
    Unauthenticated,
    /// 401 the session's active organization is gone; the session ended.
    #[error("the active organization no longer exists; sign in again")]
    ReauthenticationRequired,
    /// 401 wrong credentials (same answer for unknown email and wrong password).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// 401 a second factor is needed or was wrong.
    #[error("{0}")]
    SecondFactor(&'static str),
    /// 403 signed in, but the role may not.
    #[error("{0}")]
    Forbidden(String),
    /// 404 not found, or in another organization.
    #[error("not found")]
    NotFound,
    /// 409 conflict with current state.
    #[error("{0}")]
    Conflict(String),
    /// 415 state-changing requests must be JSON.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// 413 the declared body is larger than the limit (refused before reading it).
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 422 validation, with details.
    #[error("{message}")]
    Validation {
        /// Summary.
        message: String,
        /// Structured details (e.g. Cedar diagnostics).
        details: serde_json::Value,
    },
    /// 429 throttled.
    #[error("too many attempts; try again later")]
    Throttled,
    /// A refusal with its own status and stable code (e.g. 403 `step_up_required`).
    #[error("{message}")]
    Coded {
        /// HTTP status.
        status: StatusCode,
        /// Stable machine-readable code.
        code: &'static str,
        /// Human-readable message.
        message: String,
    },
    /// 400 approve and deny need an `Idempotency-Key` (idempotency.rs).
    #[error(
        "this request needs an Idempotency-Key header, so a retried or double-clicked request never acts twice"
    )]
    IdempotencyKeyRequired,
    /// 400 an `Idempotency-Key` that is not 1..=255 visible ASCII characters, or sent twice.
    #[error("{0}")]
    IdempotencyKeyInvalid(String),
    /// 400 the key was used before for a different request (PROXY.md `guard_idempotency_key_reused`).
    #[error("this Idempotency-Key was already used for a different request (method, path or body)")]
    IdempotencyKeyReused,
    /// 409 the first request with this key is still running (PROXY.md `guard_request_in_progress`).
    #[error(
        "a request with this Idempotency-Key is still in progress; retry shortly with the same key"
    )]
    RequestInProgress,
    /// 409 the first request with this key was interrupted (the guard stopped); whether it acted
    /// is unknown, so it is not run again.
    #[error(
        "the first request with this Idempotency-Key was interrupted and its outcome is unknown; check the resource, then use a new key"
    )]
    IdempotencyOutcomeUnknown,
    /// 500 the store failed.
    #[error("internal error")]
    Internal,
}

#[derive(Serialize, utoipa::ToSchema)]
/// Error body.
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
/// Error detail.
pub struct ErrorDetail {
    /// Stable machine-readable code.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Extra structured information.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    /// Status and code.
    pub fn status_code(&self) -> (StatusCode, &'static str) {
        use ApiError::*;
        match self {
            BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Unauthenticated => (StatusCode::UNAUTHORIZED, "authentication_required"),
            ReauthenticationRequired => (StatusCode::UNAUTHORIZED, "reauthentication_required"),
            InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
            SecondFactor(_) => (StatusCode::UNAUTHORIZED, "second_factor_required"),
            Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Validation { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            Throttled => (StatusCode::TOO_MANY_REQUESTS, "throttled"),
            Coded { status, code, .. } => (*status, code),
            IdempotencyKeyRequired => (StatusCode::BAD_REQUEST, "idempotency_key_required"),
            IdempotencyKeyInvalid(_) => (StatusCode::BAD_REQUEST, "idempotency_key_invalid"),
            IdempotencyKeyReused => (StatusCode::BAD_REQUEST, "idempotency_key_reused"),
            RequestInProgress => (StatusCode::CONFLICT, "request_in_progress"),
            IdempotencyOutcomeUnknown => (StatusCode::CONFLICT, "idempotency_outcome_unknown"),
            Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => ApiError::NotFound,
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::Forbidden(m) => ApiError::Forbidden(m),
            StoreError::Invalid(m) => ApiError::Validation {
                message: m,
                details: serde_json::Value::Null,
            },
            StoreError::Refused {
                status,
                code,
                message,
            } => ApiError::Coded {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::CONFLICT),
                code,
                message,
            },
            StoreError::PolicyRejected(diags) => ApiError::Validation {
                message: format!(
                    "the policy set has {} problem(s); nothing was changed",
                    diags.len()
                ),
                details: serde_json::json!({ "diagnostics": diags }),
            },
            other => {
                tracing::error!(error = %other, "store failure in the admin API");
                ApiError::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_code();
        let details = match &self {
            ApiError::Validation { details, .. } if !details.is_null() => Some(details.clone()),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message: self.to_string(),
                details,
            },
        };
        (status, Json(body)).into_response()
    }
}
