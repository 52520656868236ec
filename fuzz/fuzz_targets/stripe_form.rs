//! Arbitrary bytes as a Stripe request body on every route of the operation table, as a form
//! body and as JSON, as a query string, and as a path: the parsers and the classifier must
//! answer facts or a clear error, never panic (RELIABILITY.md 5).

#![no_main]

use libfuzzer_sys::fuzz_target;
use policies::{
    FormLimits, Lookups, RawRequest, classify_request, operation_table, parse_form, parse_json,
};

fuzz_target!(|data: &[u8]| {
    let limits = FormLimits::default();
    let _ = parse_form(data, &limits);
    let _ = parse_json(data, &limits);
    let ops = operation_table().operations();
    let pick = data.first().map_or(0, |b| *b as usize) | (data.get(1).map_or(0, |b| *b as usize) << 8);
    let op = &ops[pick % ops.len()];
    // Every `{id}` of the template becomes a plausible id.
    let path: String = op
        .template
        .split('/')
        .map(|s| if s.starts_with('{') { "x_1" } else { s })
        .collect::<Vec<_>>()
        .join("/");
    for content_type in ["application/x-www-form-urlencoded", "application/json"] {
        let raw = RawRequest {
            method: op.method,
            path: &path,
            query: "",
            content_type: Some(content_type),
            body: data,
            account: "",
        };
        if let Ok(facts) = classify_request(&raw, &limits, &Lookups::offline()) {
            if let Some(a) = facts.amount {
                assert!(a.minor >= 0, "amounts are never negative");
            }
        }
    }
    // The query string and the path are untrusted too.
    let text = String::from_utf8_lossy(data);
    let raw = RawRequest {
        method: "DELETE",
        path: &path,
        query: &text,
        content_type: None,
        body: b"",
        account: "",
    };
    let _ = classify_request(&raw, &limits, &Lookups::offline());
    let _ = policies::classify("POST", &text, b"", &limits);
});
