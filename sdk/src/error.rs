//! Why a delivery was refused.

/// Why a secret could not be parsed or a delivery did not verify.
///
/// The messages never contain the secret, and never echo header values or body bytes, so they
/// are safe to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `webhook-id`, `webhook-timestamp` or `webhook-signature` is absent or empty.
    #[error("missing webhook-id, webhook-timestamp or webhook-signature header")]
    MissingHeader,
    /// The secret is not `whsec_` followed by the base64 of 24 to 64 bytes.
    #[error("webhook secret is not whsec_ followed by the base64 of 24 to 64 bytes")]
    BadSecret,
    /// `webhook-timestamp` is not a non-negative integer number of seconds.
    #[error("webhook-timestamp is not an integer number of Unix seconds")]
    BadTimestamp,
    /// `webhook-timestamp` is further from now than the tolerance, in either direction.
    #[error("webhook-timestamp is outside the tolerance")]
    TimestampOutOfTolerance,
    /// `webhook-signature` is malformed (the reason says how).
    #[error("malformed webhook-signature header: {0}")]
    BadSignatureHeader(String),
    /// No presented `v1` signature matches the body, id and timestamp under this secret.
    #[error("no webhook signature matches")]
    NoMatchingSignature,
    /// The signature verified but the body is not a Payment Guard event.
    #[error("webhook body is not an event: {0}")]
    BadBody(String),
}
