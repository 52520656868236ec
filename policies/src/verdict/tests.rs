use super::*;
use crate::caps::{Cap, CapInterval, CapScope};
use crate::classify::classify;
use crate::form::FormLimits;
use crate::money::Currency;
use crate::policy_set::{DEFAULT_POLICY_TEXT, compile};

const SPEC_EXAMPLE: &str = crate::policy_set::tests::SPEC_EXAMPLE;

/// Wednesday 2024-03-13 14:30:00 UTC.
const WEDNESDAY_AFTERNOON: i64 = 1_710_340_200;

fn facts(method: &str, path: &str, body: &str) -> RequestFacts {
    classify(method, path, body.as_bytes(), &FormLimits::default()).unwrap()
}

fn pay(minor: i64, currency: &str) -> RequestFacts {
    facts(
        "POST",
        "/v1/payment_intents",
        &format!("amount={minor}&currency={currency}&customer=cus_1&metadata[order]=42"),
    )
}

fn input<'a>(facts: &'a RequestFacts, tags: &'a [String]) -> EvalInput<'a> {
    EvalInput {
        org_id: "org_1",
        agent_id: "agt_1",
        agent_name: "billing bot",
        agent_tags: tags,
        facts,
        livemode: false,
        spend: SpendContext {
            day: 1000,
            week: 5000,
            month: 20000,
        },
        org_spend: SpendContext::default(),
        now_unix: WEDNESDAY_AFTERNOON,
        requests_last_minute: 3,
    }
}

fn decide(text: &str, facts: &RequestFacts, caps: &[CapCheck]) -> Verdict {
    let policies = compile(text).unwrap_or_else(|d| panic!("{d:?}"));
    evaluate(&policies, &input(facts, &[]), caps)
}

struct Case {
    name: &'static str,
    text: &'static str,
    facts: RequestFacts,
    outcome: Outcome,
    policies: &'static [&'static str],
    reason: &'static str,
    approvals: u32,
}

#[test]
fn cedar_outcomes() {
    let cases = [
        Case {
            name: "default allows a small payment",
            text: DEFAULT_POLICY_TEXT,
            facts: pay(5000, "usd"),
            outcome: Outcome::Allow,
            policies: &["agents-may-move-money"],
            reason: "",
            approvals: 0,
        },
        Case {
            name: "default allows reads",
            text: DEFAULT_POLICY_TEXT,
            facts: facts("GET", "/v1/balance", ""),
            outcome: Outcome::Allow,
            policies: &["agents-may-read"],
            reason: "",
            approvals: 0,
        },
        Case {
            name: "default holds a large payment",
            text: DEFAULT_POLICY_TEXT,
            facts: pay(100_001, "usd"),
            outcome: Outcome::Hold,
            policies: &["large-amounts-need-approval"],
            reason: "moving more than 1,000.00 needs a human approval",
            approvals: 1,
        },
        Case {
            name: "forbid with @reason denies",
            text: SPEC_EXAMPLE,
            facts: facts("POST", "/v1/payouts", "amount=100&currency=eur"),
            outcome: Outcome::Deny,
            policies: &["no-payouts"],
            reason: "payouts are not allowed for agents",
            approvals: 0,
        },
        Case {
            name: "@hold with @approvals holds",
            text: SPEC_EXAMPLE,
            facts: pay(60_000, "eur"),
            outcome: Outcome::Hold,
            policies: &["big-needs-approval"],
            reason: "payments over 500.00 need a human",
            approvals: 2,
        },
        Case {
            name: "hold and deny forbids together deny",
            text: SPEC_EXAMPLE,
            facts: pay(60_000, "usd"),
            outcome: Outcome::Deny,
            policies: &["big-needs-approval", "eur-only"],
            reason: "denied by policy 'eur-only'",
            approvals: 0,
        },
        Case {
            name: "no permit denies",
            text: SPEC_EXAMPLE,
            facts: facts("POST", "/v1/customers", "email=x"),
            outcome: Outcome::Deny,
            policies: &[],
            reason: "no policy permits write",
            approvals: 0,
        },
        Case {
            name: "empty set denies",
            text: "",
            facts: facts("GET", "/v1/balance", ""),
            outcome: Outcome::Deny,
            policies: &[],
            reason: "no policy permits read",
            approvals: 0,
        },
        Case {
            name: "holds combine",
            text: TWO_HOLDS,
            facts: pay(500, "usd"),
            outcome: Outcome::Hold,
            policies: &["h2", "h1"],
            reason: "held by policy 'h2'; first",
            approvals: 3,
        },
    ];
    for case in cases {
        let verdict = decide(case.text, &case.facts, &[]);
        let want = Verdict {
            outcome: case.outcome,
            policies: case.policies.iter().map(|p| p.to_string()).collect(),
            caps: vec![],
            reason: case.reason.to_owned(),
            approvals_required: case.approvals,
            errors: vec![],
        };
        assert_eq!(verdict, want, "{}", case.name);
    }
}

const TWO_HOLDS: &str = r#"
@id("pay") permit (principal, action in Action::"move_money", resource);
@id("h2") @hold forbid (principal, action in Action::"move_money", resource);
@id("h1") @hold("first") @approvals("3") forbid (principal, action in Action::"move_money", resource);
"#;

#[test]
fn evaluation_error_denies() {
    // Validates (Long + Long), overflows at run time for any positive amount.
    let text = r#"
        @id("pay") permit (principal, action in Action::"move_money", resource);
        @id("overflow") forbid (principal, action in Action::"move_money", resource)
          when { resource.amount + 9223372036854775807 < 0 };
    "#;
    let verdict = decide(text, &pay(100, "usd"), &[]);
    assert_eq!(verdict.outcome, Outcome::Deny);
    assert_eq!(verdict.policies, ["pay", "overflow"]);
    assert_eq!(verdict.errors.len(), 1, "{verdict:?}");
    assert!(verdict.errors[0].contains("overflow"), "{verdict:?}");
    assert!(
        verdict.reason.starts_with("policy evaluation failed: "),
        "{}",
        verdict.reason
    );
}

#[test]
fn bad_decision_time_denies() {
    let policies = compile(DEFAULT_POLICY_TEXT).unwrap();
    let facts = pay(100, "usd");
    let verdict = evaluate(
        &policies,
        &EvalInput {
            now_unix: i64::MAX,
            ..input(&facts, &[])
        },
        &[],
    );
    assert_eq!(verdict.outcome, Outcome::Deny);
    assert_eq!(verdict.errors.len(), 1);
}

#[test]
fn every_attribute_reaches_cedar() {
    let tags = vec!["trusted".to_owned()];
    let facts = pay(100, "usd");
    let checks = [
        r#"principal.name == "billing bot""#,
        r#"principal.tags.contains("trusted")"#,
        r#"principal in Organization::"org_1""#,
        r#"resource.operation == "payment_intents.create" && resource.method == "POST""#,
        r#"resource.path == "/v1/payment_intents""#,
        r#"resource.amount == 100 && resource.currency == "usd""#,
        r#"resource.counterparty == "cus_1" && !resource.livemode"#,
        r#"resource.hasTag("order") && resource.getTag("order") == "42""#,
        r#"context.spend.day == 1000 && context.spend.week == 5000 && context.spend.month == 20000"#,
        r#"context.org_spend.day == 0"#,
        r#"context.now.hour == 14 && context.now.weekday == 3"#,
        r#"context.requests_last_minute == 3"#,
    ];
    for check in checks {
        let text = format!(
            r#"@id("p") permit (principal, action in Action::"move_money", resource) when {{ {check} }};"#
        );
        let policies = compile(&text).unwrap_or_else(|d| panic!("{check}: {d:?}"));
        let verdict = evaluate(&policies, &input(&facts, &tags), &[]);
        assert_eq!(verdict.outcome, Outcome::Allow, "{check}: {verdict:?}");
    }
}

#[test]
fn requests_without_money_have_zero_amount_and_empty_currency() {
    let text = r#"@id("p") permit (principal, action == Action::"read", resource)
        when { resource.amount == 0 && resource.currency == "" && resource.counterparty == "" };"#;
    assert_eq!(
        decide(text, &facts("GET", "/v1/balance", ""), &[]).outcome,
        Outcome::Allow
    );
}

fn check(id: &str, on_exceed: Option<OnExceed>, spent_before: i64) -> CapCheck {
    CapCheck {
        cap_id: id.into(),
        exceeded: on_exceed,
        spent_before,
        limit: 10_000,
    }
}

/// (name, policy text, amount, currency, cap checks, outcome, caps listed, reason, approvals)
type CapCase = (
    &'static str,
    &'static str,
    i64,
    &'static str,
    Vec<CapCheck>,
    Outcome,
    Vec<&'static str>,
    &'static str,
    u32,
);

#[test]
fn caps_combine_with_cedar() {
    let hold = Some(OnExceed::Hold);
    let deny = Some(OnExceed::Deny);
    #[rustfmt::skip]
    let cases: Vec<CapCase> = vec![
        ("allow, cap fine", DEFAULT_POLICY_TEXT, 100, "usd", vec![check("c1", None, 0)],
            Outcome::Allow, vec![], "", 0),
        ("allow + cap hold", DEFAULT_POLICY_TEXT, 100, "usd", vec![check("c1", hold, 9_950)],
            Outcome::Hold, vec!["c1"], "cap c1: limit 100.00 usd would be exceeded (already spent 99.50 usd)", 1),
        ("allow + cap hold + cap deny", DEFAULT_POLICY_TEXT, 100, "usd", vec![check("c1", hold, 0), check("c2", deny, 0)],
            Outcome::Deny, vec!["c1", "c2"], "cap c2: limit 100.00 usd would be exceeded", 0),
        ("cedar hold + cap deny", SPEC_EXAMPLE, 60_000, "eur", vec![check("c2", deny, 0)],
            Outcome::Deny, vec!["c2"], "cap c2: limit 100.00 eur would be exceeded", 0),
        ("cedar hold + cap hold", SPEC_EXAMPLE, 60_000, "eur", vec![check("c1", hold, 0)],
            Outcome::Hold, vec!["c1"], "payments over 500.00 need a human; cap c1: limit 100.00 eur would be exceeded", 2),
        ("cedar deny + cap hold", SPEC_EXAMPLE, 100, "usd", vec![check("c1", hold, 0)],
            Outcome::Deny, vec!["c1"], "denied by policy 'eur-only'", 0),
    ];
    for (name, text, minor, currency, caps, outcome, listed, reason, approvals) in cases {
        let verdict = decide(text, &pay(minor, currency), &caps);
        assert_eq!(verdict.outcome, outcome, "{name}: {verdict:?}");
        assert_eq!(verdict.caps, listed, "{name}");
        assert_eq!(verdict.reason, reason, "{name}");
        assert_eq!(verdict.approvals_required, approvals, "{name}");
    }
}

#[test]
fn caps_from_cap_definitions() {
    let cap = Cap {
        id: "daily".into(),
        scope: CapScope::Agent("agt_1".into()),
        currency: Currency::parse("jpy").unwrap(),
        interval: CapInterval::Daily,
        limit: 10_000,
        on_exceed: OnExceed::Deny,
        operations: None,
    };
    let facts = pay(3_000, "jpy");
    assert!(cap.applies_to(&facts, "agt_1"));
    let verdict = decide(DEFAULT_POLICY_TEXT, &facts, &[cap.check(3_000, 8_000)]);
    assert_eq!(verdict.outcome, Outcome::Deny);
    assert_eq!(
        verdict.reason,
        "cap daily: limit 10000 jpy would be exceeded (already spent 8000 jpy)"
    );
}

#[test]
fn verdict_serializes_snake_case() {
    let verdict = decide(DEFAULT_POLICY_TEXT, &pay(100, "usd"), &[]);
    let json = serde_json::to_value(&verdict).unwrap();
    assert_eq!(json["outcome"], "allow");
    assert_eq!(Outcome::Hold.as_str(), "hold");
    assert!(Outcome::Allow < Outcome::Hold && Outcome::Hold < Outcome::Deny);
    let back: Verdict = serde_json::from_value(json).unwrap();
    assert_eq!(back, verdict);
}

/// `cargo test --release -p policies -- --ignored --nocapture throughput`
#[test]
#[ignore = "timing, not a check"]
fn throughput() {
    let policies = compile(SPEC_EXAMPLE).unwrap();
    let facts = pay(60_000, "eur");
    let input = input(&facts, &[]);
    let rounds = 20_000;
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(evaluate(&policies, &input, &[]));
    }
    let per = started.elapsed() / rounds;
    println!("evaluate: {per:?} per request");
}

/// A set with policies that fail at evaluation time (integer overflow), with and without
/// `context`, next to ordinary ones.
const OVERFLOWING: &str = r#"
@id("permit-all")
permit (principal, action, resource);

@id("overflow-on-amount")
forbid (principal, action in Action::"move_money", resource)
when { resource.amount * 4611686018427387904 > 0 };

@id("overflow-on-spend")
forbid (principal, action in Action::"move_money", resource)
when { context.spend.day * 4611686018427387904 > 0 };

@id("night-hold")
@hold("night")
forbid (principal, action in Action::"move_money", resource)
when { context.now.hour >= 22 };
"#;

#[test]
fn prepared_evaluation_gives_the_same_verdict_as_the_whole_set() {
    let texts = [
        DEFAULT_POLICY_TEXT,
        SPEC_EXAMPLE,
        include_str!("../../../bench/policies.cedar"),
        OVERFLOWING,
    ];
    let requests = [
        pay(5000, "usd"),
        pay(0, "usd"),
        pay(1, "eur"),
        pay(90_000, "eur"),
        pay(2_000_000, "gbp"),
        pay(700, "jpy"),
        facts("POST", "/v1/payouts", "amount=500&currency=usd"),
        facts(
            "POST",
            "/v1/refunds",
            "amount=30000&currency=usd&payment_intent=pi_1",
        ),
        facts("POST", "/v1/transfers", "amount=100&currency=usd"),
        facts("POST", "/v1/checkout/sessions", CHECKOUT),
        facts("GET", "/v1/balance", ""),
        facts("DELETE", "/v1/customers/cus_1", ""),
        facts(
            "POST",
            "/v1/payment_intents",
            "amount=100&currency=usd&metadata[category]=gambling&metadata[env]=prod",
        ),
    ];
    let tag_sets: [Vec<String>; 3] = [vec![], vec!["shop".into()], vec!["read-only".into()]];
    // Wednesday afternoon, Wednesday 23:00, Sunday noon (UTC).
    let times = [WEDNESDAY_AFTERNOON, 1_710_370_800, 1_710_590_400];
    let spends = [0, 150_000, 1_000_000_000_000];
    let mut compared = 0;
    let mut seen = std::collections::BTreeSet::new();
    for text in texts {
        let policies = compile(text).unwrap_or_else(|d| panic!("{d:?}"));
        for facts in &requests {
            for tags in &tag_sets {
                for livemode in [false, true] {
                    let mut base = input(facts, tags);
                    base.livemode = livemode;
                    let prepared = prepare(&policies, &base);
                    for now_unix in times {
                        for spend in spends {
                            let mut i = base;
                            i.now_unix = now_unix;
                            i.spend.day = spend;
                            i.spend.month = spend;
                            i.org_spend.week = spend;
                            i.requests_last_minute = spend / 1000;
                            let whole = evaluate(&policies, &i, &[]);
                            let split = evaluate_prepared(&policies, Some(&prepared), &i, &[]);
                            assert_eq!(whole, split, "{text:.40} {facts:?} {tags:?} {i:?}");
                            compared += 1;
                            seen.insert((whole.outcome, !whole.errors.is_empty()));
                        }
                    }
                }
            }
        }
    }
    assert_eq!(compared, 4 * 13 * 3 * 2 * 3 * 3);
    // Every outcome came up, and evaluation errors too.
    for expected in [
        (Outcome::Allow, false),
        (Outcome::Hold, false),
        (Outcome::Deny, false),
        (Outcome::Deny, true),
    ] {
        assert!(
            seen.contains(&expected),
            "{expected:?} never came up: {seen:?}"
        );
    }
}

#[test]
fn a_preparation_for_other_inputs_or_another_set_is_not_used() {
    let bench = compile(include_str!("../../../bench/policies.cedar")).unwrap();
    assert_eq!(
        bench.stateful_count(),
        4,
        "spend, rate and the two time-of-day policies"
    );
    let shop = vec!["shop".to_string()];
    let checkout = facts("POST", "/v1/checkout/sessions", CHECKOUT);
    // Prepared for an agent tagged "shop"; the agent's tags changed before the transaction.
    let prepared = prepare(&bench, &input(&checkout, &shop));
    let now = input(&checkout, &[]);
    let v = evaluate_prepared(&bench, Some(&prepared), &now, &[]);
    assert_eq!(v, evaluate(&bench, &now, &[]));
    assert_eq!(v.outcome, Outcome::Deny);
    assert_eq!(v.policies, vec!["checkout-only-for-shop-agents"]);
    // Other request facts.
    let small = pay(100, "usd");
    let prepared = prepare(&bench, &input(&pay(100, "xxx"), &[]));
    let v = evaluate_prepared(&bench, Some(&prepared), &input(&small, &[]), &[]);
    assert_eq!(v.outcome, Outcome::Allow);
    // Another compilation of the same text is another set: not used either.
    let again = compile(include_str!("../../../bench/policies.cedar")).unwrap();
    let prepared = prepare(&again, &input(&checkout, &shop));
    let v = evaluate_prepared(&bench, Some(&prepared), &now, &[]);
    assert_eq!(v.policies, vec!["checkout-only-for-shop-agents"]);
}

const CHECKOUT: &str = "line_items[0][price_data][unit_amount]=1500&line_items[0][price_data][currency]=usd&line_items[0][quantity]=2";
