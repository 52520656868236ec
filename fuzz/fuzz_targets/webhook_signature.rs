//! Arbitrary bytes as a `webhook-signature` value, a `webhook-timestamp` and a body: the SDK
//! must refuse or accept, never panic (RELIABILITY.md 5).

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use payment_guard_sdk::{
    DEFAULT_TOLERANCE_SECS, Headers, Secret, parse_signature_header, sign, verify,
};

const ID: &str = "evt_fuzz";
const NOW: i64 = 1_764_000_000;
const TIMESTAMP: &str = "1764000000";

static SECRET: LazyLock<Option<Secret>> =
    LazyLock::new(|| Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").ok());

fuzz_target!(|data: &[u8]| {
    let Some(secret) = SECRET.as_ref() else {
        return;
    };
    let text = String::from_utf8_lossy(data);

    // The bytes as the signature header, over a fixed id, timestamp and body.
    let _ = parse_signature_header(&text);
    let headers = Headers {
        id: ID,
        timestamp: TIMESTAMP,
        signature: &text,
    };
    let _ = verify(secret, &headers, b"{}", NOW, DEFAULT_TOLERANCE_SECS);

    // The bytes as the timestamp, with a signature that is valid for the fixed one.
    let valid = sign(secret, ID, NOW, b"{}");
    let headers = Headers {
        id: ID,
        timestamp: &text,
        signature: &valid,
    };
    let _ = verify(secret, &headers, b"{}", NOW, DEFAULT_TOLERANCE_SECS);

    // The bytes as a correctly signed body, so the event parser sees them too.
    let signed = sign(secret, ID, NOW, data);
    let headers = Headers {
        id: ID,
        timestamp: TIMESTAMP,
        signature: &signed,
    };
    let verified = verify(secret, &headers, data, NOW, DEFAULT_TOLERANCE_SECS);
    // Signed by the same key: only the body parse may refuse it.
    assert!(!matches!(
        verified,
        Err(payment_guard_sdk::Error::NoMatchingSignature
            | payment_guard_sdk::Error::BadSignatureHeader(_))
    ));
});
