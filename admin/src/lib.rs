//! The control plane of Payment Guard: the admin API humans use (ADMIN_API.md), on its own
//! listener. Authentication (bcrypt, TOTP, sessions, API tokens), role-based access per
//! organization, every managed resource, approvals of held requests, audit endpoints, the
//! OpenAPI document, `/metrics`, `/healthz`, `/readyz` and the approval console.
//!
//! Depends on `store` and `policies`, never on `proxy`. Every store call takes the organization
//! id of the caller's active organization; a resource of another organization answers 404.

pub mod auth;
mod connection;
mod dto;
mod error;
mod extract;
mod idempotency;
mod metrics;
mod rbac;
mod resources;
mod router;
mod state;
pub mod webhook_target;
mod webhooks;

pub use error::ApiError;
pub use idempotency::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, MAX_IDEMPOTENCY_KEY_BYTES};
pub use router::{build_router, openapi_json};
pub use state::{AdminSettings, AppState};
