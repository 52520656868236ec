//! POLICIES.md "Spending caps", the property the whole guard exists for: whatever sequence of
//! money operations agents send — payments, charges, top-ups, transfers, `/v2` outbound
//! payments, refunds of "the rest" through a charge's own route, authorization increments,
//! over-captures, invoice payments — the money the rail actually moves never exceeds a cap
//! whose `on_exceed` is `deny`.
//!
//! The rail is modelled by the test: it knows each object's real amounts (the charge's
//! refundable rest, the PaymentIntent's authorized amount, the invoice's balance), hands them
//! to the guard only through lookups, and counts what it moved on its own terms (the rest of
//! the charge, the increase, the excess), not from what the guard reported.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use policies::{FactsError, FormLimits, Lookups, RawRequest};
use proptest::prelude::*;
use serde_json::json;
use store::{Decision, StoredResponse, UpstreamOutcome};

const POLICY: &str =
    r#"@id("agents-may-move-money") permit (principal, action in Action::"move_money", resource);"#;

/// One money operation and what the rail knows about the objects it touches.
#[derive(Clone, Debug)]
enum Op {
    PaymentIntent(i64),
    Charge(i64),
    TopUp(i64),
    Transfer(i64),
    V2OutboundPayment(i64),
    /// A refund of what is left of a charge: (charge amount, already refunded).
    ChargeRefundRest(i64, i64),
    /// (authorized amount, new total asked).
    IncrementAuthorization(i64, i64),
    /// (authorized amount, amount_to_capture).
    Capture(i64, i64),
    /// The invoice's amount remaining.
    InvoicePay(i64),
}

impl Op {
    /// (method, path, content type, body) as an SDK sends it.
    fn request(&self, n: usize) -> (&'static str, String, &'static str, Vec<u8>) {
        let form = "application/x-www-form-urlencoded";
        let id = format!("obj_{n}");
        match self {
            Op::PaymentIntent(a) => (
                "POST",
                "/v1/payment_intents".into(),
                form,
                format!("amount={a}&currency=usd").into_bytes(),
            ),
            Op::Charge(a) => (
                "POST",
                "/v1/charges".into(),
                form,
                format!("amount={a}&currency=usd&source=tok_visa").into_bytes(),
            ),
            Op::TopUp(a) => (
                "POST",
                "/v1/topups".into(),
                form,
                format!("amount={a}&currency=usd").into_bytes(),
            ),
            Op::Transfer(a) => (
                "POST",
                "/v1/transfers".into(),
                form,
                format!("amount={a}&currency=usd&destination=acct_1").into_bytes(),
            ),
            Op::V2OutboundPayment(a) => (
                "POST",
                "/v2/money_management/outbound_payments".into(),
                "application/json",
                json!({"amount": {"value": a, "currency": "usd"}, "to": {"recipient": "acct_1"}})
                    .to_string()
                    .into_bytes(),
            ),
            Op::ChargeRefundRest(..) => (
                "POST",
                format!("/v1/charges/ch_{id}/refunds"),
                form,
                Vec::new(),
            ),
            Op::IncrementAuthorization(_, total) => (
                "POST",
                format!("/v1/payment_intents/pi_{id}/increment_authorization"),
                form,
                format!("amount={total}").into_bytes(),
            ),
            Op::Capture(_, x) => (
                "POST",
                format!("/v1/payment_intents/pi_{id}/capture"),
                form,
                format!("amount_to_capture={x}").into_bytes(),
            ),
            Op::InvoicePay(_) => (
                "POST",
                format!("/v1/invoices/in_{id}/pay"),
                form,
                Vec::new(),
            ),
        }
    }

    /// What the rail has at a looked-up path.
    fn object(&self) -> serde_json::Value {
        match self {
            Op::ChargeRefundRest(amount, refunded) => {
                json!({"object": "charge", "amount": amount, "amount_refunded": refunded, "currency": "usd"})
            }
            Op::IncrementAuthorization(authorized, _) | Op::Capture(authorized, _) => {
                json!({"object": "payment_intent", "amount": authorized, "amount_capturable": authorized, "currency": "usd"})
            }
            Op::InvoicePay(remaining) => {
                json!({"object": "invoice", "amount_remaining": remaining, "currency": "usd"})
            }
            _ => json!({}),
        }
    }

    /// New money the rail moves when it carries the operation out.
    fn moves(&self) -> i64 {
        match self {
            Op::PaymentIntent(a)
            | Op::Charge(a)
            | Op::TopUp(a)
            | Op::Transfer(a)
            | Op::V2OutboundPayment(a)
            | Op::InvoicePay(a) => *a,
            Op::ChargeRefundRest(amount, refunded) => amount - refunded,
            Op::IncrementAuthorization(authorized, total) => (total - authorized).max(0),
            Op::Capture(authorized, x) => (x - authorized).max(0),
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    let a = 1i64..6_000;
    prop_oneof![
        a.clone().prop_map(Op::PaymentIntent),
        a.clone().prop_map(Op::Charge),
        a.clone().prop_map(Op::TopUp),
        a.clone().prop_map(Op::Transfer),
        a.clone().prop_map(Op::V2OutboundPayment),
        (a.clone(), 0i64..100).prop_map(|(c, r)| Op::ChargeRefundRest(c + r, r)),
        (a.clone(), a.clone()).prop_map(|(x, y)| Op::IncrementAuthorization(x, y)),
        (a.clone(), a.clone()).prop_map(|(x, y)| Op::Capture(x, y)),
        a.prop_map(Op::InvoicePay),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_rail_never_moves_more_than_a_deny_cap(
        limit in 1_000i64..20_000,
        ops in proptest::collection::vec((op(), any::<bool>()), 1..24),
    ) {
        let s = common::org("prop-org", POLICY, "sk_test_prop");
        s.add_cap(json!({"scope": "org", "currency": "usd", "interval": "all_time", "limit": limit, "on_exceed": "deny"}));

        let mut moved = 0i64;
        for (n, (op, rail_accepts)) in ops.iter().enumerate() {
            let (method, path, content_type, body) = op.request(n);
            let raw = RawRequest { method, path: &path, query: "", content_type: Some(content_type), body: &body, account: "" };
            let mut lookups = Lookups::online();
            let facts = loop {
                match policies::classify_request(&raw, &FormLimits::default(), &lookups) {
                    Err(FactsError::NeedsLookup(paths)) => {
                        for p in paths {
                            lookups.insert(p, Some(op.object()));
                        }
                    }
                    other => break other.unwrap(),
                }
            };
            prop_assert!(facts.valued, "{op:?} must be valued");
            let mut req = s.request(&format!("k{n}"), &path, "", facts);
            req.method = method.into();
            req.body = body.clone();
            if let Decision::Forward { intent, .. } = s.decide(req) {
                let status = if *rail_accepts { 200 } else { 402 };
                let outcome = UpstreamOutcome::Response {
                    response: StoredResponse { status, headers: Vec::new(), body: b"{}".to_vec() },
                    upstream_id: None,
                };
                s.committer.apply_blocking(store::Command::Settle { org: s.org.clone(), intent: intent.id.clone(), outcome }).unwrap();
                if *rail_accepts {
                    moved += op.moves();
                }
            }
            prop_assert!(moved <= limit, "the rail moved {moved} past the cap {limit} after {op:?}");
        }
    }
}
