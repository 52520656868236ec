use super::*;
use crate::caps::{Cap, CapInterval, CapScope};
use crate::classify::{RawRequest, classify, classify_request};
use crate::form::FormLimits;
use crate::money::Currency;
use crate::policy_set::{DEFAULT_POLICY_TEXT, compile};
use crate::valuation::Lookups;

const SPEC_EXAMPLE: &str = crate::policy_set::tests::SPEC_EXAMPLE;

/// Wednesday 2024-03-13 14:30:00 UTC.
const WEDNESDAY_AFTERNOON: i64 = 1_710_340_200;

fn facts(method: &str, path: &str, body: &str) -> RequestFacts {
    classify(method, path, body.as_bytes(), &FormLimits::default()).unwrap()
}

/// A GET with a query string (where `expand[]` is).
fn get(path: &str, query: &str) -> RequestFacts {
    let raw = RawRequest {
        method: "GET",
        path,
        query,
        content_type: None,
        body: b"",
        account: "",
    };
    classify_request(&raw, &FormLimits::default(), &Lookups::offline()).unwrap()
}

/// A form POST on a connected account.
fn on_account(account: &str, path: &str, body: &str) -> RequestFacts {
    let raw = RawRequest {
        method: "POST",
        path,
        query: "",
        content_type: Some("application/x-www-form-urlencoded"),
        body: body.as_bytes(),
        account,
    };
    classify_request(&raw, &FormLimits::default(), &Lookups::offline()).unwrap()
}

/// A subscription valued from its inline price (no lookup needed).
const SUBSCRIPTION: &str = "customer=cus_1&items[0][price_data][unit_amount]=900&items[0][price_data][currency]=usd&items[0][price_data][product]=prod_1&items[0][price_data][recurring][interval]=month";

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
            name: "default allows a card read without its number",
            text: DEFAULT_POLICY_TEXT,
            facts: get("/v1/issuing/cards/ic_1", "expand[]=cardholder"),
            outcome: Outcome::Allow,
            policies: &["agents-may-read"],
            reason: "",
            approvals: 0,
        },
        Case {
            name: "default denies a card number",
            text: DEFAULT_POLICY_TEXT,
            facts: get("/v1/issuing/cards/ic_1", "expand[]=number"),
            outcome: Outcome::Deny,
            policies: &["no-card-numbers"],
            reason: "agents may not read card numbers or CVCs",
            approvals: 0,
        },
        Case {
            name: "default denies CVCs expanded in a list",
            text: DEFAULT_POLICY_TEXT,
            facts: get("/v1/issuing/cards", "expand[]=data.cvc"),
            outcome: Outcome::Deny,
            policies: &["no-card-numbers"],
            reason: "agents may not read card numbers or CVCs",
            approvals: 0,
        },
        Case {
            name: "default denies app secrets",
            text: DEFAULT_POLICY_TEXT,
            facts: get("/v1/apps/secrets/find", "name=k&scope[type]=account"),
            outcome: Outcome::Deny,
            policies: &["no-app-secrets"],
            reason: "agents may not read app secrets",
            approvals: 0,
        },
        Case {
            name: "default allows other writes",
            text: DEFAULT_POLICY_TEXT,
            facts: facts("POST", "/v1/customers", "email=x"),
            outcome: Outcome::Allow,
            policies: &["agents-may-write"],
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
            name: "default holds a webhook endpoint",
            text: DEFAULT_POLICY_TEXT,
            facts: facts(
                "POST",
                "/v1/webhook_endpoints",
                "url=https%3A%2F%2Fx.example&enabled_events[]=*",
            ),
            outcome: Outcome::Hold,
            policies: &["account-changes-need-a-human"],
            reason: "changes to the account, its payouts, keys or data recipients need a human approval",
            approvals: 1,
        },
        Case {
            name: "default holds a subscription",
            text: DEFAULT_POLICY_TEXT,
            facts: facts("POST", "/v1/subscriptions", SUBSCRIPTION),
            outcome: Outcome::Hold,
            policies: &["commitments-need-a-human"],
            reason: "commitments to pay later need a human approval",
            approvals: 1,
        },
        Case {
            name: "default holds a payment it cannot value",
            text: DEFAULT_POLICY_TEXT,
            facts: facts("POST", "/v1/payment_intents/pi_1/confirm", ""),
            outcome: Outcome::Hold,
            policies: &[],
            reason: "the guard cannot tell what payment_intents.confirm is worth; a human must approve it (or a policy naming Action::\"payment_intents.confirm\" allow it)",
            approvals: 1,
        },
        Case {
            name: "default denies an unknown operation",
            text: DEFAULT_POLICY_TEXT,
            facts: facts("POST", "/v1/x", "amount=1"),
            outcome: Outcome::Deny,
            policies: &[],
            reason: "no policy permits unknown",
            approvals: 0,
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
            reason: "no policy permits customers.create",
            approvals: 0,
        },
        Case {
            name: "empty set denies",
            text: "",
            facts: facts("GET", "/v1/balance", ""),
            outcome: Outcome::Deny,
            policies: &[],
            reason: "no policy permits balance.retrieve",
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
    let paid = on_account(
        "acct_1",
        "/v1/payment_intents",
        "amount=100&currency=usd&customer=cus_1&metadata[order]=42&expand[]=latest_charge.balance_transaction",
    );
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
        r#"resource.class == "move_money" && resource.valued"#,
        r#"resource.account == "acct_1" && resource.interval == """#,
        r#"resource.expand == ["balance_transaction", "latest_charge.balance_transaction"]"#,
    ];
    for check in checks {
        let text = format!(
            r#"@id("p") permit (principal, action in Action::"move_money", resource) when {{ {check} }};"#
        );
        let policies = compile(&text).unwrap_or_else(|d| panic!("{check}: {d:?}"));
        let verdict = evaluate(&policies, &input(&paid, &tags), &[]);
        assert_eq!(verdict.outcome, Outcome::Allow, "{check}: {verdict:?}");
        // And the negation denies: the check reads the attribute, it is not vacuous.
        let negated = format!(
            r#"@id("p") permit (principal, action in Action::"move_money", resource) when {{ !({check}) }};"#
        );
        let policies = compile(&negated).unwrap_or_else(|d| panic!("{check}: {d:?}"));
        let verdict = evaluate(&policies, &input(&paid, &tags), &[]);
        assert_eq!(verdict.outcome, Outcome::Deny, "!{check}: {verdict:?}");
    }
    // The interval of a commitment; what an unknown or unvalued request looks like.
    let subscription = facts("POST", "/v1/subscriptions", SUBSCRIPTION);
    let text = r#"@id("p") permit (principal, action in Action::"commit_money", resource)
        when { resource.interval == "month" && resource.class == "commit_money" && resource.amount == 900 };"#;
    assert_eq!(decide(text, &subscription, &[]).outcome, Outcome::Allow);
    let unknown = facts("POST", "/v1/x", "");
    let text = r#"@id("p") permit (principal, action == Action::"unknown", resource)
        when { resource.class == "unknown" && !resource.valued && resource.operation == "unknown" };"#;
    assert_eq!(decide(text, &unknown, &[]).outcome, Outcome::Allow);
}

#[test]
fn requests_without_money_have_zero_amount_and_empty_currency() {
    let text = r#"@id("p") permit (principal, action in Action::"read", resource)
        when { resource.amount == 0 && resource.currency == "" && resource.counterparty == ""
            && resource.valued && resource.class == "read" && resource.expand.isEmpty()
            && resource.account == "" && resource.interval == "" };"#;
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

/// Broad permits, and permits naming the unknown and an unvalued action, one of them reading
/// `context`.
const EXPLICIT: &str = r#"
@id("all") permit (principal, action, resource);
@id("unknown-x") permit (principal, action == Action::"unknown", resource)
when { resource.path == "/v1/x" && context.spend.day < 100000 };
@id("confirm") permit (principal, action in [Action::"payment_intents.confirm"], resource);
"#;

#[test]
fn prepared_evaluation_gives_the_same_verdict_as_the_whole_set() {
    let texts = [
        DEFAULT_POLICY_TEXT,
        SPEC_EXAMPLE,
        include_str!("../../../bench/policies.cedar"),
        OVERFLOWING,
        EXPLICIT,
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
        get("/v1/issuing/cards/ic_1", "expand[]=number"),
        facts("POST", "/v1/x", ""),
        facts("POST", "/v1/payment_intents/pi_1/confirm", ""),
        facts(
            "POST",
            "/v1/webhook_endpoints",
            "url=https%3A%2F%2Fx.example",
        ),
        facts("POST", "/v1/subscriptions", SUBSCRIPTION),
        on_account("acct_1", "/v1/payment_intents", "amount=100&currency=usd"),
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
    assert_eq!(compared, 5 * 19 * 3 * 2 * 3 * 3);
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

#[test]
fn unknown_operations_need_a_permit_naming_them() {
    let x = facts("POST", "/v1/x", "a=1");
    let y = facts("POST", "/v1/y", "");
    let denied = |path: &str| Verdict {
        outcome: Outcome::Deny,
        policies: vec![],
        caps: vec![],
        reason: format!(
            "the guard does not know POST {path}; only a policy naming Action::\"unknown\" can allow it"
        ),
        approvals_required: 0,
        errors: vec![],
    };
    let broad = r#"@id("all") permit (principal, action, resource);"#;
    // A permit that reaches every action does not reach the unknown one.
    assert_eq!(decide(broad, &x, &[]), denied("/v1/x"));
    assert_eq!(
        decide(broad, &facts("POST", "/v1/customers", ""), &[]).outcome,
        Outcome::Allow
    );
    let named = r#"@id("x") permit (principal, action == Action::"unknown", resource)
        when { resource.path == "/v1/x" };"#;
    let allowed = decide(named, &x, &[]);
    assert_eq!(
        (allowed.outcome, allowed.policies.as_slice()),
        (Outcome::Allow, &["x".to_owned()][..])
    );
    // Only the path it names.
    let other = decide(named, &y, &[]);
    assert_eq!(
        (other.outcome, other.reason.as_str()),
        (Outcome::Deny, "no policy permits unknown")
    );
    // Next to a broad permit, the named one is what allows it; elsewhere the broad one is not
    // enough.
    let both = format!("{broad}\n{named}");
    assert_eq!(
        decide(&both, &x, &[]).policies,
        ["all".to_owned(), "x".to_owned()]
    );
    assert_eq!(decide(&both, &y, &[]), denied("/v1/y"));
    // In a list of actions.
    let listed = r#"@id("l") permit (principal, action in [Action::"unknown", Action::"customers.create"], resource);"#;
    assert_eq!(decide(listed, &y, &[]).outcome, Outcome::Allow);
    // A forbid naming it is no permit; a hold still holds.
    let forbid_named = format!(
        "{broad}\n@id(\"f\") forbid (principal, action == Action::\"unknown\", resource) when {{ resource.path == \"/nowhere\" }};"
    );
    assert_eq!(decide(&forbid_named, &x, &[]), denied("/v1/x"));
    let held = format!(
        "{named}\n@id(\"h\") @hold(\"look\") forbid (principal, action == Action::\"unknown\", resource);"
    );
    let verdict = decide(&held, &x, &[]);
    assert_eq!(
        (verdict.outcome, verdict.reason.as_str()),
        (Outcome::Hold, "look")
    );
}

#[test]
fn unvalued_money_is_held_unless_a_permit_names_it() {
    let confirm = facts("POST", "/v1/payment_intents/pi_1/confirm", "");
    assert!(!confirm.valued);
    let group = r#"@id("pay") permit (principal, action in Action::"move_money", resource);"#;
    let held = Verdict {
        outcome: Outcome::Hold,
        policies: vec![],
        caps: vec![],
        reason: "the guard cannot tell what payment_intents.confirm is worth; a human must approve it (or a policy naming Action::\"payment_intents.confirm\" allow it)".into(),
        approvals_required: 1,
        errors: vec![],
    };
    assert_eq!(decide(group, &confirm, &[]), held);
    assert_eq!(
        decide(
            r#"@id("all") permit (principal, action, resource);"#,
            &confirm,
            &[]
        ),
        held
    );
    for named in [
        r#"@id("c") permit (principal, action == Action::"payment_intents.confirm", resource);"#,
        r#"@id("c") permit (principal, action in [Action::"payment_intents.confirm", Action::"refunds.create"], resource);"#,
    ] {
        let verdict = decide(&format!("{group}\n{named}"), &confirm, &[]);
        assert_eq!(verdict.outcome, Outcome::Allow, "{named}");
        assert_eq!(verdict.policies, ["pay", "c"], "{named}");
        // Naming another action does not do.
        let other = named.replace("payment_intents.confirm", "payment_intents.capture");
        assert_eq!(decide(&format!("{group}\n{other}"), &confirm, &[]), held);
    }
    // The same request valued (its PaymentIntent looked up) is allowed by the group.
    let raw = RawRequest {
        method: "POST",
        path: "/v1/payment_intents/pi_1/confirm",
        query: "",
        content_type: Some("application/x-www-form-urlencoded"),
        body: b"",
        account: "",
    };
    let mut lookups = Lookups::online();
    lookups.insert(
        "/v1/payment_intents/pi_1".into(),
        Some(serde_json::json!({"amount": 500, "currency": "usd"})),
    );
    let valued = classify_request(&raw, &FormLimits::default(), &lookups).unwrap();
    assert!(valued.valued);
    assert_eq!(decide(group, &valued, &[]).outcome, Outcome::Allow);
    // Commitments too.
    let resume = facts("POST", "/v1/subscriptions/sub_1/resume", "");
    let commit = r#"@id("c") permit (principal, action in Action::"commit_money", resource);"#;
    assert_eq!(decide(commit, &resume, &[]).outcome, Outcome::Hold);
    let named =
        r#"@id("r") permit (principal, action == Action::"subscriptions.resume", resource);"#;
    assert_eq!(decide(named, &resume, &[]).outcome, Outcome::Allow);
    // An unvalued request counts toward no cap, and a cap does not turn the hold into an allow.
    let cap = Cap {
        id: "c1".into(),
        scope: CapScope::Org,
        currency: Currency::parse("usd").unwrap(),
        interval: CapInterval::Daily,
        limit: 1,
        on_exceed: OnExceed::Deny,
        operations: None,
    };
    assert!(!cap.applies_to(&confirm, "agt_1"));
}

#[test]
fn a_group_named_with_equals_is_refused_and_in_matches_its_members() {
    // `action == Action::"read"` is the group entity itself, never a read: Cedar validates it
    // but it would permit nothing, so `compile` refuses it. `in` is the way to name a class.
    let read = facts("GET", "/v1/balance", "");
    let eq = r#"@id("p") permit (principal, action == Action::"read", resource);"#;
    assert!(compile(eq).is_err());
    let within = r#"@id("p") permit (principal, action in Action::"read", resource);"#;
    assert_eq!(decide(within, &read, &[]).outcome, Outcome::Allow);
}

#[test]
fn account_caps_count_requests_on_that_account() {
    let cap = Cap {
        id: "acct-daily".into(),
        scope: "account:acct_1".parse().unwrap(),
        currency: Currency::parse("usd").unwrap(),
        interval: CapInterval::Daily,
        limit: 10_000,
        on_exceed: OnExceed::Hold,
        operations: None,
    };
    let there = on_account("acct_1", "/v1/payment_intents", "amount=3000&currency=usd");
    let elsewhere = on_account("acct_2", "/v1/payment_intents", "amount=3000&currency=usd");
    let platform = pay(3_000, "usd");
    assert!(cap.applies_to(&there, "agt_1"));
    assert!(!cap.applies_to(&elsewhere, "agt_1"));
    assert!(!cap.applies_to(&platform, "agt_1"));
    let decide_with = |facts: &RequestFacts, spent: i64| {
        let checks: Vec<CapCheck> = [&cap]
            .into_iter()
            .filter(|c| c.applies_to(facts, "agt_1"))
            .map(|c| c.check(facts.counted.unwrap_or(0), spent))
            .collect();
        decide(DEFAULT_POLICY_TEXT, facts, &checks)
    };
    let verdict = decide_with(&there, 8_000);
    assert_eq!(verdict.outcome, Outcome::Hold);
    assert_eq!(verdict.caps, ["acct-daily"]);
    assert_eq!(
        verdict.reason,
        "cap acct-daily: limit 100.00 usd would be exceeded (already spent 80.00 usd)"
    );
    assert_eq!(decide_with(&there, 7_000).outcome, Outcome::Allow);
    assert_eq!(decide_with(&elsewhere, 8_000).outcome, Outcome::Allow);
    // Policies can scope by account too.
    let text = r#"@id("p") permit (principal, action in Action::"move_money", resource);
        @id("only-acct-1") forbid (principal, action in Action::"move_money", resource)
        unless { resource.account == "acct_1" };"#;
    assert_eq!(decide(text, &there, &[]).outcome, Outcome::Allow);
    assert_eq!(decide(text, &elsewhere, &[]).outcome, Outcome::Deny);
}

#[test]
fn default_allows_unlisted_reads() {
    let verdict = decide(
        DEFAULT_POLICY_TEXT,
        &facts("GET", "/v1/no_such_thing", ""),
        &[],
    );
    assert_eq!(verdict.outcome, Outcome::Allow, "{verdict:?}");
    assert_eq!(verdict.policies, ["agents-may-read"]);
}
