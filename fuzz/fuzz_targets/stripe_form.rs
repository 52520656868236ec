//! Arbitrary bytes as a Stripe form body on every money path: the parser and classifier must
//! answer facts or a clear error, never panic (RELIABILITY.md 5).

#![no_main]

use libfuzzer_sys::fuzz_target;
use policies::{FormLimits, classify, parse_form};

const PATHS: [&str; 10] = [
    "/v1/payment_intents",
    "/v1/payment_intents/pi_1",
    "/v1/payment_intents/pi_1/confirm",
    "/v1/payment_intents/pi_1/capture",
    "/v1/charges",
    "/v1/refunds",
    "/v1/transfers",
    "/v1/payouts",
    "/v1/checkout/sessions",
    "/v1/customers",
];

fuzz_target!(|data: &[u8]| {
    let limits = FormLimits::default();
    let _ = parse_form(data, &limits);
    let path = PATHS[data.first().map_or(0, |b| *b as usize % PATHS.len())];
    if let Ok(facts) = classify("POST", path, data, &limits) {
        if let Some(a) = facts.amount {
            assert!(a.minor >= 0, "amounts are never negative");
        }
    }
    // The path itself is untrusted too.
    let _ = classify("POST", &String::from_utf8_lossy(data), b"", &limits);
});
