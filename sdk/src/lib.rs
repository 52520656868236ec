//! Verify the webhooks Payment Guard sends, and parse their events (spec `WEBHOOKS.md`).
//!
//! Deliveries are signed per the [Standard Webhooks] specification: three headers,
//! `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`
//! (`v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, several space-separated while a
//! secret rotation overlaps), keyed by the endpoint's `whsec_…` [`Secret`]. [`verify`] checks the
//! timestamp against a tolerance in both directions, recomputes the HMAC over the raw body bytes,
//! compares it in constant time with every presented `v1` signature, and returns the parsed
//! [`Event`]. Anything malformed is an [`Error`]; no input makes this crate panic.
//!
//! The signer side ([`sign`], [`signature_header`]) is here too, so that the guard and tests sign
//! exactly as receivers verify. This crate depends on no server crate.
//!
//! ```
//! use payment_guard_sdk::{DEFAULT_TOLERANCE_SECS, Error, Headers, Secret, event_types, verify};
//!
//! # fn main() -> Result<(), Error> {
//! // The secret shown when the endpoint was created (here: a fresh one).
//! let secret = Secret::generate();
//! let secret = Secret::parse(&secret.to_string())?;
//!
//! // What the guard sends (here signed locally, at a fixed time).
//! let now = 1_764_000_000;
//! let body = br#"{"id":"evt_1","type":"intent.held","created":1764000000,"org":"org_1",
//!     "data":{"intent":"int_1"},"audit_head":{"seq":42,"hash":"ab12"}}"#;
//! let signature = payment_guard_sdk::sign(&secret, "evt_1", now, body);
//! let timestamp = now.to_string();
//! let request_headers = [
//!     ("Webhook-Id", "evt_1"),
//!     ("Webhook-Timestamp", timestamp.as_str()),
//!     ("Webhook-Signature", signature.as_str()),
//!     ("Content-Type", "application/json"),
//! ];
//!
//! // The receiver: pick the three headers out (names are case-insensitive), then verify the
//! // raw body bytes as received, before any JSON parsing of your own.
//! let headers = Headers::from_pairs(request_headers)?;
//! // In a real receiver `now` is the current Unix time in seconds:
//! // std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64
//! let event = verify(&secret, &headers, body, now + 10, DEFAULT_TOLERANCE_SECS)?;
//! assert_eq!(event.kind, event_types::INTENT_HELD);
//! assert_eq!(event.audit_head.seq, 42);
//!
//! // A body changed in transit is refused.
//! let forged = br#"{"id":"evt_1","type":"intent.approved"}"#;
//! assert_eq!(
//!     verify(&secret, &headers, forged, now, DEFAULT_TOLERANCE_SECS).unwrap_err(),
//!     Error::NoMatchingSignature,
//! );
//! # Ok(())
//! # }
//! ```
//!
//! [Standard Webhooks]: https://www.standardwebhooks.com/

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod event;
mod headers;
mod secret;
mod signature;
mod verify;

pub use error::Error;
pub use event::{AuditHead, Event, event_types};
pub use headers::{Headers, ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
pub use secret::{SECRET_MAX_BYTES, SECRET_MIN_BYTES, SECRET_PREFIX, Secret};
pub use signature::{
    SIGNATURE_HEADER_MAX_BYTES, SIGNATURES_MAX, parse_signature_header, sign, signature_header,
};
pub use verify::{DEFAULT_TOLERANCE_SECS, verify, verify_raw};
