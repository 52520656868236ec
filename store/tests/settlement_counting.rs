//! Issue 11, "nothing moves money unseen": confirming or capturing a PaymentIntent moves the
//! money its creation counted. When the guard counted that creation, the confirm adds nothing;
//! when the PaymentIntent was made outside the guard (by the merchant's backend, the
//! dashboard), the confirm is the first time the guard sees that money move, and it counts.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use common::{ALLOW_MONEY, TestOrg};
use policies::{FactsError, FormLimits, Lookups, RawRequest, RequestFacts};
use serde_json::json;
use store::{Decision, StoredResponse, UpstreamOutcome};

/// An organization with a 10,000 usd deny cap on all money movements.
fn setup() -> TestOrg {
    let s = common::org("settle-org", ALLOW_MONEY, "sk_test_settle");
    s.add_cap(json!({"scope": "org", "currency": "usd", "interval": "all_time", "limit": 10_000, "on_exceed": "deny"}));
    s
}

/// Classify as the proxy does, answering lookups with `pi`.
fn facts(method: &str, path: &str, body: &str, pi: serde_json::Value) -> RequestFacts {
    let raw = RawRequest {
        method,
        path,
        query: "",
        content_type: Some("application/x-www-form-urlencoded"),
        body: body.as_bytes(),
        account: "",
    };
    let mut lookups = Lookups::online();
    loop {
        match policies::classify_request(&raw, &FormLimits::default(), &lookups) {
            Err(FactsError::NeedsLookup(paths)) => {
                for p in paths {
                    lookups.insert(p, Some(pi.clone()));
                }
            }
            other => return other.unwrap(),
        }
    }
}

/// Decide, and when allowed settle with a 200 naming `created` as the upstream object.
fn run(s: &TestOrg, key: &str, path: &str, body: &str, f: RequestFacts, created: &str) -> Decision {
    let decision = s.decide(s.request(key, path, body, f));
    if let Decision::Forward { intent, .. } = &decision {
        let outcome = UpstreamOutcome::Response {
            response: StoredResponse {
                status: 200,
                headers: Vec::new(),
                body: b"{}".to_vec(),
            },
            upstream_id: Some(created.into()),
        };
        s.committer
            .apply_blocking(store::Command::Settle {
                org: s.org.clone(),
                intent: intent.id.clone(),
                outcome,
            })
            .unwrap();
    }
    decision
}

fn denied(d: &Decision) -> bool {
    matches!(d, Decision::Respond(i) if i.decision == policies::Outcome::Deny)
}

#[test]
fn confirming_a_payment_intent_created_through_the_guard_is_not_counted_again() {
    let s = setup();
    let create = facts(
        "POST",
        "/v1/payment_intents",
        "amount=8000&currency=usd",
        json!({}),
    );
    assert!(!denied(&run(
        &s,
        "create",
        "/v1/payment_intents",
        "amount=8000&currency=usd",
        create,
        "pi_guarded"
    )));
    let pi = json!({"id": "pi_guarded", "amount": 8000, "currency": "usd"});
    let path = "/v1/payment_intents/pi_guarded/confirm";
    let confirm = facts("POST", path, "", pi);
    assert_eq!(
        (confirm.counted, confirm.settles.as_str()),
        (None, "pi_guarded")
    );
    // 8,000 counted at creation; counting the confirm again would pass the 10,000 cap.
    let d = run(&s, "confirm", path, "", confirm, "pi_guarded");
    assert!(matches!(d, Decision::Forward { .. }), "{d:?}");
}

#[test]
fn confirming_a_payment_intent_made_outside_the_guard_counts_it() {
    let s = setup();
    let outside = json!({"id": "pi_outside", "amount": 6000, "currency": "usd"});
    let path = "/v1/payment_intents/pi_outside/confirm";
    let first = facts("POST", path, "", outside.clone());
    assert!(matches!(
        run(&s, "c1", path, "", first, "pi_outside"),
        Decision::Forward { .. }
    ));
    // The first confirm counted 6,000 (the guard never saw this PaymentIntent created): another
    // made-outside PaymentIntent of 6,000 no longer fits under the 10,000 cap.
    let other = json!({"id": "pi_outside2", "amount": 6000, "currency": "usd"});
    let path2 = "/v1/payment_intents/pi_outside2/confirm";
    let second = facts("POST", path2, "", other);
    let d = run(&s, "c2", path2, "", second, "pi_outside2");
    assert!(denied(&d), "{d:?}");
    // A capture of the first one is now known (it succeeded through the guard): not counted.
    let capture_path = "/v1/payment_intents/pi_outside/capture";
    let capture = facts("POST", capture_path, "", outside);
    let d = run(&s, "cap", capture_path, "", capture, "pi_outside");
    assert!(matches!(d, Decision::Forward { .. }), "{d:?}");
}
