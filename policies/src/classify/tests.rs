use super::*;

fn run(method: &str, path: &str, body: &str) -> Result<RequestFacts, FactsError> {
    classify(method, path, body.as_bytes(), &FormLimits::default())
}

fn amount(minor: i64, currency: &str) -> Option<Amount> {
    Some(Amount {
        minor,
        currency: Currency::parse(currency).unwrap(),
    })
}

/// (method, path, body, operation, class, amount, counts, counterparty)
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    OperationClass,
    Option<Amount>,
    bool,
    &'static str,
);

#[test]
fn classifies_every_listed_operation() {
    use OperationClass::{MoveMoney, Read, Write};
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("GET", "/v1/payment_intents", "", "read", Read, None, false, ""),
        ("GET", "/v1/customers/cus_1", "ignored=%zz", "read", Read, None, false, ""),
        ("POST", "/v1/payment_intents", "amount=500&currency=usd", "payment_intents.create", MoveMoney, amount(500, "usd"), true, ""),
        ("POST", "/v1/payment_intents", "amount=500&currency=USD&customer=cus_1&transfer_data[destination]=acct_1", "payment_intents.create", MoveMoney, amount(500, "usd"), true, "cus_1"),
        ("POST", "/v1/payment_intents", "amount=500&currency=usd&transfer_data[destination]=acct_1&on_behalf_of=acct_2", "payment_intents.create", MoveMoney, amount(500, "usd"), true, "acct_1"),
        ("POST", "/v1/payment_intents", "amount=500&currency=usd&on_behalf_of=acct_2", "payment_intents.create", MoveMoney, amount(500, "usd"), true, "acct_2"),
        ("POST", "/v1/payment_intents", "amount=100&currency=jpy&payment_method_types[0]=card", "payment_intents.create", MoveMoney, amount(100, "jpy"), true, ""),
        ("POST", "/v1/payment_intents/pi_123", "amount=700&currency=eur", "payment_intents.update", MoveMoney, amount(700, "eur"), true, ""),
        ("POST", "/v1/payment_intents/pi_123", "description=x", "payment_intents.update", MoveMoney, None, false, ""),
        ("POST", "/v1/payment_intents/pi_123/confirm", "payment_method=pm_card_visa", "payment_intents.confirm", MoveMoney, None, false, ""),
        ("POST", "/v1/payment_intents/pi_123/capture", "amount_to_capture=300", "payment_intents.capture", MoveMoney, None, false, ""),
        ("POST", "/v1/payment_intents/pi_123/capture", "", "payment_intents.capture", MoveMoney, None, false, ""),
        ("POST", "/v1/charges", "amount=2000&currency=usd&customer=cus_9", "charges.create", MoveMoney, amount(2000, "usd"), true, "cus_9"),
        ("POST", "/v1/charges", "amount=2000&currency=usd&destination=acct_9", "charges.create", MoveMoney, amount(2000, "usd"), true, "acct_9"),
        ("POST", "/v1/charges", "amount=2000&currency=usd&destination[account]=acct_8", "charges.create", MoveMoney, amount(2000, "usd"), true, "acct_8"),
        ("POST", "/v1/charges", "amount=2000&currency=usd&transfer_data[destination]=acct_7", "charges.create", MoveMoney, amount(2000, "usd"), true, "acct_7"),
        ("POST", "/v1/refunds", "amount=150&currency=usd&payment_intent=pi_1&charge=ch_1", "refunds.create", MoveMoney, amount(150, "usd"), true, "pi_1"),
        ("POST", "/v1/refunds", "amount=150&currency=usd&charge=ch_1", "refunds.create", MoveMoney, amount(150, "usd"), true, "ch_1"),
        ("POST", "/v1/transfers", "amount=1000&currency=usd&destination=acct_1", "transfers.create", MoveMoney, amount(1000, "usd"), true, "acct_1"),
        ("POST", "/v1/payouts", "amount=1000&currency=usd", "payouts.create", MoveMoney, amount(1000, "usd"), true, ""),
        ("POST", "/v1/payouts", "amount=1000&currency=usd&destination=ba_1", "payouts.create", MoveMoney, amount(1000, "usd"), true, "ba_1"),
        ("POST", "/v1/checkout/sessions", "line_items[0][price_data][unit_amount]=1500&line_items[0][price_data][currency]=usd&line_items[0][quantity]=2&line_items[1][price_data][unit_amount]=100&line_items[1][price_data][currency]=usd&customer=cus_3", "checkout.sessions.create", MoveMoney, amount(3100, "usd"), true, "cus_3"),
        ("POST", "/v1/checkout/sessions", "line_items[0][price_data][unit_amount]=500&line_items[0][price_data][currency]=jpy&line_items[0][quantity]=3", "checkout.sessions.create", MoveMoney, amount(1500, "jpy"), true, ""),
        ("POST", "/v1/checkout/sessions", "line_items[0][price_data][unit_amount]=10&line_items[0][price_data][currency]=usd&line_items[0][adjustable_quantity][enabled]=true", "checkout.sessions.create", MoveMoney, amount(990, "usd"), true, ""),
        ("POST", "/v1/checkout/sessions", "line_items[0][price_data][unit_amount]=10&line_items[0][price_data][currency]=usd&line_items[0][adjustable_quantity][enabled]=true&line_items[0][adjustable_quantity][maximum]=5", "checkout.sessions.create", MoveMoney, amount(50, "usd"), true, ""),
        ("POST", "/v1/customers", "email=a%40b.c", "write", Write, None, false, ""),
        ("POST", "/v1/payment_intents/pi_1/cancel", "", "write", Write, None, false, ""),
        ("DELETE", "/v1/customers/cus_1", "", "write", Write, None, false, ""),
        ("POST", "/V1/PAYOUTS", "amount=1&currency=usd", "payouts.create", MoveMoney, amount(1, "usd"), true, ""),
    ];
    for (method, path, body, operation, class, want_amount, counts, counterparty) in cases {
        let facts =
            run(method, path, body).unwrap_or_else(|e| panic!("{method} {path} {body}: {e}"));
        let label = format!("{method} {path} {body}");
        assert_eq!(facts.operation, operation, "{label}");
        assert_eq!(facts.class, class, "{label}");
        assert_eq!(facts.amount, want_amount, "{label}");
        assert_eq!(facts.counts_toward_caps, counts, "{label}");
        assert_eq!(facts.counterparty, counterparty, "{label}");
        assert_eq!(facts.method, method);
        assert_eq!(facts.path, path);
    }
}

#[test]
fn every_money_operation_is_in_the_table() {
    let table: Vec<&str> = ROUTES.iter().map(|r| r.operation).collect();
    assert_eq!(table, MONEY_OPERATIONS);
}

#[test]
fn refuses_what_it_cannot_value() {
    let bad_amount = |field: &str, value: &str| FactsError::BadAmount {
        field: field.into(),
        value: value.into(),
    };
    let missing = |field: &str| FactsError::MissingField(field.into());
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, FactsError)> = vec![
        ("/v1/payment_intents", "currency=usd", missing("amount")),
        ("/v1/payment_intents", "amount=100", missing("currency")),
        ("/v1/payment_intents", "amount=-100&currency=usd", bad_amount("amount", "-100")),
        ("/v1/payment_intents", "amount=%2B100&currency=usd", bad_amount("amount", "+100")),
        ("/v1/payment_intents", "amount=10.50&currency=usd", bad_amount("amount", "10.50")),
        ("/v1/payment_intents", "amount=&currency=usd", bad_amount("amount", "")),
        ("/v1/payment_intents", "amount=1e3&currency=usd", bad_amount("amount", "1e3")),
        ("/v1/payment_intents", "amount=+100&currency=usd", bad_amount("amount", " 100")),
        ("/v1/payment_intents", "amount=99999999999999999999&currency=usd", bad_amount("amount", "99999999999999999999")),
        ("/v1/payment_intents", "amount=100000000000&currency=usd", bad_amount("amount", "100000000000")),
        ("/v1/payment_intents", "amount[x]=1&currency=usd", FactsError::BadShape("amount".into())),
        ("/v1/payment_intents", "amount=1&currency=dollars", FactsError::BadCurrency("dollars".into())),
        ("/v1/payment_intents/pi_1", "amount=100", missing("currency")),
        ("/v1/payment_intents/pi_1/capture", "amount_to_capture=-5", bad_amount("amount_to_capture", "-5")),
        ("/v1/charges", "amount=100", missing("currency")),
        ("/v1/refunds", "payment_intent=pi_1", missing("amount")),
        ("/v1/refunds", "payment_intent=pi_1&amount=100", missing("currency")),
        ("/v1/transfers", "amount=1.5&currency=usd&destination=acct_1", bad_amount("amount", "1.5")),
        ("/v1/payouts", "currency=usd", missing("amount")),
        ("/v1/checkout/sessions", "mode=payment", missing("line_items")),
        ("/v1/checkout/sessions", "line_items[0][price]=price_1&line_items[0][quantity]=1", FactsError::UnvaluedLineItem { index: 0 }),
        ("/v1/checkout/sessions", "line_items[0][price_data][unit_amount]=1&line_items[0][price_data][currency]=usd&line_items[1][price_data][unit_amount]=1&line_items[1][price_data][currency]=eur", FactsError::MixedCurrencies),
        ("/v1/checkout/sessions", "currency=eur&line_items[0][price_data][unit_amount]=1&line_items[0][price_data][currency]=usd", FactsError::MixedCurrencies),
        ("/v1/checkout/sessions", "line_items[0][price_data][currency]=usd", missing("line_items[0][price_data][unit_amount]")),
        ("/v1/checkout/sessions", "line_items[0][price_data][unit_amount]=5", missing("line_items[0][price_data][currency]")),
        ("/v1/checkout/sessions", "line_items[0][quantity]=5", missing("line_items[0][price_data][unit_amount]")),
        ("/v1/checkout/sessions", "line_items[0][price_data][unit_amount]=5&line_items[0][price_data][currency]=usd&line_items[0][quantity]=-1", bad_amount("line_items[0][quantity]", "-1")),
        ("/v1/checkout/sessions", "line_items[0][price_data][unit_amount]=99999999999&line_items[0][price_data][currency]=usd&line_items[0][quantity]=99999999999", bad_amount("line_items[0][quantity]", "unit_amount × quantity overflows")),
        ("/v1/checkout/sessions", "line_items[a][price_data][unit_amount]=5", FactsError::BadShape("line_items".into())),
        ("/v1/customers", "metadata[a][b]=1", FactsError::BadShape("metadata[a]".into())),
        ("/v1/customers", "metadata=x", FactsError::BadShape("metadata".into())),
        ("/v1/customers", "amount=1&amount=2", FactsError::Form(FormError::Duplicate { param: "amount".into() })),
    ];
    for (path, body, want) in cases {
        assert_eq!(
            run("POST", path, body).as_ref(),
            Err(&want),
            "{path} {body}"
        );
    }
}

#[test]
fn checkout_sum_overflow_is_refused() {
    // 93 items of the maximum amount sum past i64::MAX; the per-item cap keeps each product in range.
    let items: Vec<String> = (0..93)
        .map(|i| format!("line_items[{i}][price_data][unit_amount]=99999999999&line_items[{i}][price_data][currency]=usd&line_items[{i}][quantity]=1000000"))
        .collect();
    let err = run("POST", "/v1/checkout/sessions", &items.join("&")).unwrap_err();
    assert_eq!(
        err,
        FactsError::BadAmount {
            field: "line_items".into(),
            value: "sum of line items overflows".into()
        }
    );
}

#[test]
fn refuses_odd_methods_and_paths() {
    assert_eq!(
        run("PUT", "/v1/charges", ""),
        Err(FactsError::UnsupportedMethod("PUT".into()))
    );
    assert_eq!(
        run("PATCH", "/v1/charges", ""),
        Err(FactsError::UnsupportedMethod("PATCH".into()))
    );
    let bad_paths = [
        "",
        "v1/charges",
        "/v1/payouts/",
        "/v1//payouts",
        "/v1/../v1/payouts",
        "/v1/./payouts",
        "/v1/customers/cus%5F1",
        "/v1/customers/cus 1",
        "/v1/customers/cus_1?x=1",
        "/v1/payment_intents/pi-1/confirm",
        "/v1/payment_intents/pi.1",
    ];
    for path in bad_paths {
        assert!(
            matches!(run("POST", path, ""), Err(FactsError::BadPath(_))),
            "{path:?}"
        );
    }
    let long = format!("/v1/{}", "a".repeat(MAX_PATH_BYTES));
    assert!(matches!(run("GET", &long, ""), Err(FactsError::BadPath(_))));
    // A hyphen is fine outside the money table (custom coupon ids, for instance).
    assert_eq!(
        run("GET", "/v1/coupons/SUMMER-25", "").unwrap().operation,
        "read"
    );
}

#[test]
fn metadata_becomes_flat_pairs() {
    let facts = run(
        "POST",
        "/v1/payment_intents",
        "amount=1&currency=usd&metadata[order]=42&metadata[team]=growth+ops",
    )
    .unwrap();
    let want: BTreeMap<String, String> = [("order", "42"), ("team", "growth ops")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(facts.metadata, want);
    assert!(
        run("POST", "/v1/customers", "metadata=")
            .unwrap()
            .metadata
            .is_empty()
    );
    let listed = run("POST", "/v1/customers", "metadata[0]=a")
        .unwrap()
        .metadata;
    assert_eq!(listed.get("0").map(String::as_str), Some("a"));
}

#[test]
fn errors_read_well() {
    let cases = [
        (
            FactsError::MissingField("amount".into()),
            "missing required parameter `amount`",
        ),
        (
            FactsError::BadAmount {
                field: "amount".into(),
                value: "-1".into(),
            },
            "parameter `amount` must be a non-negative integer amount in minor units, at most 99999999999; got `-1`",
        ),
        (
            FactsError::MixedCurrencies,
            "line items must all use the same currency",
        ),
    ];
    for (err, want) in cases {
        assert_eq!(err.to_string(), want);
    }
    let long = "9".repeat(100);
    let err = parse_minor("amount", &long).unwrap_err().to_string();
    assert!(err.len() < 150, "{err}");
}

#[test]
fn facts_serialize_snake_case() {
    let facts = run("GET", "/v1/balance", "").unwrap();
    let json = serde_json::to_value(&facts).unwrap();
    assert_eq!(json["class"], "read");
    let back: RequestFacts = serde_json::from_value(json).unwrap();
    assert_eq!(back, facts);
}

proptest::proptest! {
    #[test]
    fn never_panics(
        method in "(GET|POST|DELETE|PUT)",
        path in "/v1(/[a-z_{}.%-]{0,12}){0,4}",
        body in "[a-z_\\[\\]0-9=&%.+-]{0,96}",
    ) {
        let _ = classify(&method, &path, body.as_bytes(), &FormLimits::default());
    }

    #[test]
    fn checkout_amount_is_the_exact_sum(items in proptest::collection::vec((0..=1_000_000i64, 1..=100i64), 1..20)) {
        let body: Vec<String> = items.iter().enumerate().map(|(i, (unit, quantity))| format!(
            "line_items[{i}][price_data][unit_amount]={unit}&line_items[{i}][price_data][currency]=eur&line_items[{i}][quantity]={quantity}"
        )).collect();
        let facts = run("POST", "/v1/checkout/sessions", &body.join("&")).unwrap();
        let want: i64 = items.iter().map(|(unit, quantity)| unit * quantity).sum();
        proptest::prop_assert_eq!(facts.amount, amount(want, "eur"));
    }
}
