use super::*;
use crate::money::Currency;
use crate::valuation::parse_minor;

const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";

/// The convenience entry point: form body for `/v1`, JSON for `/v2`, platform, offline.
fn run(method: &str, path: &str, body: &str) -> Result<RequestFacts, FactsError> {
    classify(method, path, body.as_bytes(), &FormLimits::default())
}

/// A request with its own query string and content type, offline.
fn request(
    method: &str,
    path: &str,
    query: &str,
    content_type: Option<&str>,
    body: &str,
) -> Result<RequestFacts, FactsError> {
    request_with(
        method,
        path,
        query,
        content_type,
        body,
        &FormLimits::default(),
    )
}

fn request_with(
    method: &str,
    path: &str,
    query: &str,
    content_type: Option<&str>,
    body: &str,
    limits: &FormLimits,
) -> Result<RequestFacts, FactsError> {
    let raw = RawRequest {
        method,
        path,
        query,
        content_type,
        body: body.as_bytes(),
        account: "",
    };
    classify_request(&raw, limits, &Lookups::offline())
}

fn amount(minor: i64, currency: &str) -> Option<Amount> {
    Some(Amount {
        minor,
        currency: Currency::parse(currency).unwrap(),
    })
}

/// (method, path, body, operation, class, amount, counted, valued, counterparty)
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    OperationClass,
    Option<Amount>,
    Option<i64>,
    bool,
    &'static str,
);

#[test]
fn classifies_operations_offline() {
    use OperationClass::{Admin, CommitMoney, MoveMoney, Read, Unknown, Write};
    let checkout_two = "line_items[0][price_data][unit_amount]=1500&line_items[0][price_data][currency]=usd&line_items[0][quantity]=2&line_items[1][price_data][unit_amount]=100&line_items[1][price_data][currency]=usd&customer=cus_3";
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        // Reads: named by the table, or `read.unlisted`; a GET body is ignored.
        ("GET", "/v1/payment_intents", "", "payment_intents.list", Read, None, None, true, ""),
        ("GET", "/v1/customers/cus_1", "ignored=%zz", "customers.retrieve", Read, None, None, true, ""),
        ("GET", "/v1/customers/search", "", "customers.search", Read, None, None, true, ""),
        ("GET", "/v1/no_such_thing", "", UNLISTED_READ, Read, None, None, true, ""),
        // An id that is not [A-Za-z0-9_]+ matches no route.
        ("GET", "/v1/coupons/SUMMER-25", "", UNLISTED_READ, Read, None, None, true, ""),
        // Money from the request's own fields.
        ("POST", "/v1/payment_intents", "amount=500&currency=usd", "payment_intents.create", MoveMoney, amount(500, "usd"), Some(500), true, ""),
        ("POST", "/v1/payment_intents", "amount=500&currency=USD&customer=cus_1&transfer_data[destination]=acct_1", "payment_intents.create", MoveMoney, amount(500, "usd"), Some(500), true, "cus_1"),
        ("POST", "/v1/payment_intents", "amount=500&currency=usd&transfer_data[destination]=acct_1&on_behalf_of=acct_2", "payment_intents.create", MoveMoney, amount(500, "usd"), Some(500), true, "acct_1"),
        ("POST", "/v1/payment_intents", "amount=500&currency=usd&on_behalf_of=acct_2", "payment_intents.create", MoveMoney, amount(500, "usd"), Some(500), true, "acct_2"),
        ("POST", "/v1/payment_intents", "amount=100&currency=jpy&payment_method_types[0]=card", "payment_intents.create", MoveMoney, amount(100, "jpy"), Some(100), true, ""),
        ("POST", "/v1/payment_intents", "amount=0&currency=usd", "payment_intents.create", MoveMoney, amount(0, "usd"), Some(0), true, ""),
        // An update stating both amount and currency needs no lookup; one stating neither moves nothing.
        ("POST", "/v1/payment_intents/pi_123", "amount=700&currency=eur", "payment_intents.update", MoveMoney, amount(700, "eur"), Some(700), true, ""),
        ("POST", "/v1/payment_intents/pi_123", "description=x", "payment_intents.update", MoveMoney, None, None, true, ""),
        // Offline, what needs the object at the rail is not valued (never a zero).
        ("POST", "/v1/payment_intents/pi_123", "amount=100", "payment_intents.update", MoveMoney, None, None, false, ""),
        ("POST", "/v1/payment_intents/pi_123/confirm", "payment_method=pm_card_visa", "payment_intents.confirm", MoveMoney, None, None, false, ""),
        ("POST", "/v1/payment_intents/pi_123/capture", "amount_to_capture=300", "payment_intents.capture", MoveMoney, None, None, false, ""),
        ("POST", "/v1/payment_intents/pi_123/capture", "", "payment_intents.capture", MoveMoney, None, None, false, ""),
        ("POST", "/v1/refunds", "payment_intent=pi_1", "refunds.create", MoveMoney, None, None, false, ""),
        ("POST", "/v1/refunds", "payment_intent=pi_1&amount=100", "refunds.create", MoveMoney, None, None, false, ""),
        ("POST", "/v1/charges/ch_1/refund", "", "refunds.create", MoveMoney, None, None, false, ""),
        ("POST", "/v1/invoices/in_1/pay", "", "invoices.pay", MoveMoney, None, None, false, ""),
        ("POST", "/v1/checkout/sessions", "line_items[0][price]=price_1&line_items[0][quantity]=1", "checkout.sessions.create", MoveMoney, None, None, false, ""),
        // Checkout items the guard cannot price: not valued, not an error.
        ("POST", "/v1/checkout/sessions", "line_items[0][price_data][currency]=usd", "checkout.sessions.create", MoveMoney, None, None, false, ""),
        ("POST", "/v1/checkout/sessions", "line_items[0][price_data][unit_amount]=5", "checkout.sessions.create", MoveMoney, None, None, false, ""),
        ("POST", "/v1/checkout/sessions", "line_items[0][quantity]=5", "checkout.sessions.create", MoveMoney, None, None, false, ""),
        ("POST", "/v1/checkout/sessions", "mode=setup", "checkout.sessions.create", MoveMoney, None, None, true, ""),
        ("POST", "/v1/charges", "amount=2000&currency=usd&customer=cus_9", "charges.create", MoveMoney, amount(2000, "usd"), Some(2000), true, "cus_9"),
        ("POST", "/v1/charges", "amount=2000&currency=usd&destination=acct_9", "charges.create", MoveMoney, amount(2000, "usd"), Some(2000), true, "acct_9"),
        ("POST", "/v1/charges", "amount=2000&currency=usd&destination[account]=acct_8", "charges.create", MoveMoney, amount(2000, "usd"), Some(2000), true, "acct_8"),
        ("POST", "/v1/charges", "amount=2000&currency=usd&transfer_data[destination]=acct_7", "charges.create", MoveMoney, amount(2000, "usd"), Some(2000), true, "acct_7"),
        ("POST", "/v1/refunds", "amount=150&currency=usd&customer=cus_1", "refunds.create", MoveMoney, amount(150, "usd"), Some(150), true, ""),
        // A refund of a charge is in the charge's currency: read from the rail even when the
        // request states one, so offline it is not valued.
        ("POST", "/v1/refunds", "amount=150&currency=usd&payment_intent=pi_1&charge=ch_1", "refunds.create", MoveMoney, None, None, false, ""),
        ("POST", "/v1/refunds", "amount=150&currency=usd&charge=ch_1", "refunds.create", MoveMoney, None, None, false, ""),
        ("POST", "/v1/transfers", "amount=1000&currency=usd&destination=acct_1", "transfers.create", MoveMoney, amount(1000, "usd"), Some(1000), true, "acct_1"),
        ("POST", "/v1/payouts", "amount=1000&currency=usd", "payouts.create", MoveMoney, amount(1000, "usd"), Some(1000), true, ""),
        ("POST", "/v1/payouts", "amount=1000&currency=usd&destination=ba_1", "payouts.create", MoveMoney, amount(1000, "usd"), Some(1000), true, "ba_1"),
        ("POST", "/v1/checkout/sessions", checkout_two, "checkout.sessions.create", MoveMoney, amount(3100, "usd"), Some(3100), true, "cus_3"),
        ("POST", "/v1/checkout/sessions", "line_items[0][price_data][unit_amount]=500&line_items[0][price_data][currency]=jpy&line_items[0][quantity]=3", "checkout.sessions.create", MoveMoney, amount(1500, "jpy"), Some(1500), true, ""),
        ("POST", "/v1/checkout/sessions", "line_items[0][price_data][unit_amount]=10&line_items[0][price_data][currency]=usd&line_items[0][adjustable_quantity][enabled]=true", "checkout.sessions.create", MoveMoney, amount(990, "usd"), Some(990), true, ""),
        ("POST", "/v1/checkout/sessions", "line_items[0][price_data][unit_amount]=10&line_items[0][price_data][currency]=usd&line_items[0][adjustable_quantity][enabled]=true&line_items[0][adjustable_quantity][maximum]=5", "checkout.sessions.create", MoveMoney, amount(50, "usd"), Some(50), true, ""),
        // Commitments, account changes, other writes.
        ("POST", "/v1/subscriptions", "customer=cus_1&items[0][price_data][unit_amount]=900&items[0][price_data][currency]=usd&items[0][price_data][product]=prod_1&items[0][price_data][recurring][interval]=month", "subscriptions.create", CommitMoney, amount(900, "usd"), Some(900), true, "cus_1"),
        ("POST", "/v1/subscriptions/sub_1/resume", "", "subscriptions.resume", CommitMoney, None, None, false, ""),
        ("POST", "/v1/invoices", "customer=cus_1", "invoices.create", CommitMoney, None, None, true, ""),
        ("POST", "/v1/webhook_endpoints", "url=https%3A%2F%2Fexample.com&enabled_events[]=*", "webhook_endpoints.create", Admin, None, None, true, ""),
        ("DELETE", "/v1/webhook_endpoints/we_1", "", "webhook_endpoints.delete", Admin, None, None, true, ""),
        ("POST", "/v1/customers", "email=a%40b.c", "customers.create", Write, None, None, true, ""),
        ("POST", "/v1/payment_intents/pi_1/cancel", "", "payment_intents.cancel", Write, None, None, true, ""),
        ("DELETE", "/v1/customers/cus_1", "", "customers.delete", Write, None, None, true, ""),
        // What the table does not know: literals are exact, ids are [A-Za-z0-9_]+.
        ("POST", "/V1/PAYOUTS", "amount=1&currency=usd", UNKNOWN_OPERATION, Unknown, None, None, false, ""),
        ("POST", "/v1/Payouts", "amount=1&currency=usd", UNKNOWN_OPERATION, Unknown, None, None, false, ""),
        ("POST", "/v1/no_such_thing", "amount=1&currency=usd", UNKNOWN_OPERATION, Unknown, None, None, false, ""),
        ("DELETE", "/v1/no_such_thing/x_1", "", UNKNOWN_OPERATION, Unknown, None, None, false, ""),
        ("POST", "/v1/payment_intents/pi-1/confirm", "", UNKNOWN_OPERATION, Unknown, None, None, false, ""),
        ("POST", "/v1/payment_intents/pi.1", "amount=1&currency=usd", UNKNOWN_OPERATION, Unknown, None, None, false, ""),
        ("POST", "/v1/payment_intents/pi_1/extra", "", UNKNOWN_OPERATION, Unknown, None, None, false, ""),
    ];
    for (method, path, body, operation, class, want_amount, counted, valued, counterparty) in cases
    {
        let label = format!("{method} {path} {body}");
        let facts = run(method, path, body).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(facts.operation, operation, "{label}");
        assert_eq!(facts.class, class, "{label}");
        assert_eq!(facts.amount, want_amount, "{label}");
        assert_eq!(facts.counted, counted, "{label}");
        assert_eq!(facts.valued, valued, "{label}");
        assert_eq!(
            facts.counts_toward_caps(),
            counted.is_some() && want_amount.is_some(),
            "{label}"
        );
        assert_eq!(facts.counterparty, counterparty, "{label}");
        assert_eq!(facts.method, method, "{label}");
        assert_eq!(facts.path, path, "{label}");
        assert_eq!(facts.account, "", "{label}");
        // A request the guard values is never valued at "nothing" by accident: an unvalued
        // request carries no amount.
        if !facts.valued {
            assert_eq!(
                (facts.amount.as_ref(), facts.counted),
                (None, None),
                "{label}"
            );
        }
    }
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
        ("/v1/payment_intents", "amount=0x10&currency=usd", bad_amount("amount", "0x10")),
        ("/v1/payment_intents", "amount=%EF%BC%91&currency=usd", bad_amount("amount", "１")),
        ("/v1/payment_intents", "amount=99999999999999999999&currency=usd", bad_amount("amount", "99999999999999999999")),
        ("/v1/payment_intents", "amount=100000000000&currency=usd", bad_amount("amount", "100000000000")),
        ("/v1/payment_intents", "amount[x]=1&currency=usd", FactsError::BadShape("amount".into())),
        ("/v1/payment_intents", "amount=1&currency=dollars", FactsError::BadCurrency("dollars".into())),
        ("/v1/payment_intents", "amount=1&currency=usd&customer[x]=1", FactsError::BadShape("customer".into())),
        ("/v1/payment_intents/pi_1", "amount=1.5", bad_amount("amount", "1.5")),
        ("/v1/payment_intents/pi_1", "currency=us", FactsError::BadCurrency("us".into())),
        ("/v1/payment_intents/pi_1/capture", "amount_to_capture=-5", bad_amount("amount_to_capture", "-5")),
        ("/v1/payment_intents/pi_1/increment_authorization", "", missing("amount")),
        ("/v1/charges", "amount=100", missing("currency")),
        ("/v1/refunds", "charge=ch_1&amount=ten", bad_amount("amount", "ten")),
        ("/v1/transfers", "amount=1.5&currency=usd&destination=acct_1", bad_amount("amount", "1.5")),
        ("/v1/payouts", "currency=usd", missing("amount")),
        ("/v1/topups", "amount=100", missing("currency")),
        ("/v1/customers/cus_1/balance_transactions", "amount=1.5&currency=usd", bad_amount("amount", "1.5")),
        ("/v1/customers/cus_1/balance_transactions", "currency=usd", missing("amount")),
        ("/v1/checkout/sessions", "mode=payment", missing("line_items")),
        ("/v1/checkout/sessions", "line_items[0][price_data][unit_amount]=1&line_items[0][price_data][currency]=usd&line_items[1][price_data][unit_amount]=1&line_items[1][price_data][currency]=eur", FactsError::MixedCurrencies),
        ("/v1/checkout/sessions", "currency=eur&line_items[0][price_data][unit_amount]=1&line_items[0][price_data][currency]=usd", FactsError::MixedCurrencies),
        ("/v1/checkout/sessions", "line_items[0][price_data][unit_amount]=1&line_items[0][price_data][currency]=usd&shipping_options[0][shipping_rate_data][fixed_amount][amount]=5&shipping_options[0][shipping_rate_data][fixed_amount][currency]=eur", FactsError::MixedCurrencies),
        ("/v1/checkout/sessions", "line_items[0][price_data][unit_amount]=5&line_items[0][price_data][currency]=usd&line_items[0][quantity]=-1", bad_amount("line_items[0][quantity]", "-1")),
        ("/v1/checkout/sessions", "line_items[0][price_data][unit_amount]=5.5&line_items[0][price_data][currency]=usd", bad_amount("line_items[0][price_data][unit_amount]", "5.5")),
        ("/v1/checkout/sessions", "line_items[0][price_data][unit_amount]=99999999999&line_items[0][price_data][currency]=usd&line_items[0][quantity]=99999999999", bad_amount("line_items[0][quantity]", "unit_amount × quantity overflows")),
        ("/v1/checkout/sessions", "line_items[a][price_data][unit_amount]=5", FactsError::BadShape("line_items".into())),
        ("/v1/checkout/sessions", "line_items=x", FactsError::BadShape("line_items".into())),
        ("/v1/customers", "metadata[a][b]=1", FactsError::BadShape("metadata[a]".into())),
        ("/v1/customers", "metadata=x", FactsError::BadShape("metadata".into())),
        ("/v1/customers", "expand[a]=x", FactsError::BadShape("expand".into())),
        ("/v1/customers", "amount=1&amount=2", FactsError::Form(FormError::Duplicate { param: "amount".into() })),
        ("/v1/customers", "a=%zz", FactsError::Form(FormError::BadPercentEncoding { param: "a".into() })),
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
fn line_item_sums_are_bounded() {
    let item = |i: usize| {
        format!(
            "line_items[{i}][price_data][unit_amount]=99999999999&line_items[{i}][price_data][currency]=usd&line_items[{i}][quantity]=1000"
        )
    };
    // One item of the largest amount × 1000 is exactly the largest sum accepted.
    let one = run("POST", "/v1/checkout/sessions", &item(0)).unwrap();
    assert_eq!(one.amount, amount(MAX_AMOUNT_MINOR * 1000, "usd"));
    // A second one passes it: refused, naming the item that did.
    let two = format!("{}&{}", item(0), item(1));
    assert_eq!(
        run("POST", "/v1/checkout/sessions", &two),
        Err(FactsError::BadAmount {
            field: "line_items[1]".into(),
            value: "sum overflows".into()
        })
    );
    // 93 such items would overflow an i64 sum; still a clean refusal.
    let many: Vec<String> = (0..93).map(item).collect();
    assert!(matches!(
        run("POST", "/v1/checkout/sessions", &many.join("&")),
        Err(FactsError::BadAmount { .. })
    ));
}

#[test]
fn refuses_odd_methods_and_paths() {
    for method in ["PUT", "PATCH", "get", "HEAD", ""] {
        assert_eq!(
            run(method, "/v1/charges", ""),
            Err(FactsError::UnsupportedMethod(method.into())),
            "{method:?}"
        );
    }
    let bad_paths = [
        "",
        "/",
        "v1/charges",
        "/v1/payouts/",
        "/v1//payouts",
        "/v1/../v1/payouts",
        "/v1/./payouts",
        "/v1/customers/cus%5F1",
        "/v1/customers/cus 1",
        "/v1/customers/cus_1?x=1",
        "/v1/customers/cus_1#x",
        "/v1/customers/cüs_1",
        "/v1/payouts/...",
    ];
    for path in bad_paths {
        for method in ["GET", "POST", "DELETE"] {
            assert!(
                matches!(run(method, path, ""), Err(FactsError::BadPath(_))),
                "{method} {path:?}"
            );
        }
    }
    let long = format!("/v1/{}", "a".repeat(MAX_PATH_BYTES));
    assert!(matches!(run("GET", &long, ""), Err(FactsError::BadPath(_))));
    // The message quotes a shortened path.
    let message = run("GET", &long, "").unwrap_err().to_string();
    assert!(message.len() < 100, "{message}");
}

#[test]
fn query_strings_on_post_and_delete() {
    // A POST must carry every parameter in its body.
    assert_eq!(
        request(
            "POST",
            "/v1/payment_intents",
            "amount=100000",
            Some(FORM),
            "amount=1&currency=usd"
        ),
        Err(FactsError::QueryOnPost)
    );
    assert_eq!(
        request("POST", "/v1/customers", "expand[]=x", None, ""),
        Err(FactsError::QueryOnPost)
    );
    // A DELETE carries them in the query string (as the SDKs send them) or the body, not both.
    assert_eq!(
        request(
            "DELETE",
            "/v1/subscriptions/sub_1",
            "invoice_now=true",
            Some(FORM),
            "prorate=false"
        ),
        Err(FactsError::QueryAndBody)
    );
    let cancel = |query: &str, body: &str| {
        request("DELETE", "/v1/subscriptions/sub_1", query, Some(FORM), body).unwrap()
    };
    let billed = cancel("invoice_now=true", "");
    assert_eq!(billed.operation, "subscriptions.delete");
    assert_eq!(billed.class, OperationClass::CommitMoney);
    assert!(!billed.valued);
    assert_eq!((billed.amount, billed.counted), (None, None));
    assert!(!cancel("prorate=true", "").valued);
    assert!(!cancel("", "invoice_now=true").valued, "from the body");
    for (query, body) in [("", ""), ("invoice_now=false", ""), ("prorate=false", "")] {
        let plain = cancel(query, body);
        assert_eq!(plain.operation, "subscriptions.delete");
        assert!(plain.valued, "{query:?}");
        assert_eq!((plain.amount, plain.counted), (None, None), "{query:?}");
    }
    // The legacy route through the customer is the same action.
    let legacy = request(
        "DELETE",
        "/v1/customers/cus_1/subscriptions/sub_1",
        "invoice_now=true",
        None,
        "",
    )
    .unwrap();
    assert_eq!(
        (legacy.operation.as_str(), legacy.valued),
        ("subscriptions.delete", false)
    );
    // A malformed DELETE query is refused like a malformed body.
    assert!(matches!(
        request("DELETE", "/v1/subscriptions/sub_1", "a=%zz", None, ""),
        Err(FactsError::Form(FormError::BadPercentEncoding { .. }))
    ));
    assert_eq!(
        request(
            "DELETE",
            "/v1/subscriptions/sub_1",
            "invoice_now[x]=true",
            None,
            ""
        ),
        Err(FactsError::BadShape("invoice_now".into()))
    );
}

/// (method, path, content type, body, result)
type ContentTypeCase<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    &'a str,
    Result<(), FactsError>,
);

#[test]
fn bodies_must_have_the_versions_content_type() {
    let refused = |expected: &'static str, got: &str| FactsError::UnsupportedContentType {
        expected,
        got: got.into(),
    };
    let form_body = "amount=1&currency=usd";
    let json_body = r#"{"amount":{"value":1,"currency":"usd"}}"#;
    let v1 = "/v1/payment_intents";
    let v2 = "/v2/money_management/outbound_payments";
    #[rustfmt::skip]
    let cases: Vec<ContentTypeCase> = vec![
        ("POST", v1, Some(FORM), form_body, Ok(())),
        ("POST", v1, Some("application/x-www-form-urlencoded; charset=utf-8"), form_body, Ok(())),
        ("POST", v1, Some("Application/X-WWW-Form-Urlencoded"), form_body, Ok(())),
        ("POST", v1, Some(JSON), r#"{"amount":1,"currency":"usd"}"#, Err(refused(FORM, JSON))),
        ("POST", v1, Some("text/plain"), form_body, Err(refused(FORM, "text/plain"))),
        ("POST", v1, Some("multipart/form-data; boundary=x"), form_body, Err(refused(FORM, "multipart/form-data; boundary=x"))),
        ("POST", v1, None, form_body, Err(refused(FORM, "none"))),
        ("POST", v1, Some(""), form_body, Err(refused(FORM, ""))),
        ("DELETE", "/v1/customers/cus_1", Some(JSON), "{}", Err(refused(FORM, JSON))),
        ("POST", v2, Some(JSON), json_body, Ok(())),
        ("POST", v2, Some("application/json; charset=utf-8"), json_body, Ok(())),
        ("POST", v2, Some(FORM), form_body, Err(refused(JSON, "application/x-www-form-urlencode…"))),
        ("POST", v2, None, json_body, Err(refused(JSON, "none"))),
        // No body, nothing to misread: any content type (or none) will do.
        ("POST", "/v1/customers", Some("text/plain"), "", Ok(())),
        ("POST", "/v1/customers", None, "", Ok(())),
        // GET bodies are ignored, whatever they are.
        ("GET", "/v1/customers", Some("text/plain"), "\u{0}\u{ff}", Ok(())),
    ];
    for (method, path, content_type, body, want) in cases {
        let got = request(method, path, "", content_type, body).map(|_| ());
        assert_eq!(got, want, "{method} {path} {content_type:?}");
    }
    // The quoted content type is shortened.
    let long = format!("text/{}", "x".repeat(200));
    match request("POST", v1, "", Some(&long), form_body) {
        Err(FactsError::UnsupportedContentType { got, .. }) => {
            assert!(got.chars().count() <= 33, "{got}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        refused(FORM, JSON).to_string(),
        "content type `application/json` is not accepted here; send application/x-www-form-urlencoded"
    );
}

#[test]
fn v2_json_bodies() {
    let body = r#"{"amount":{"value":1000,"currency":"usd"},"to":{"recipient":"acct_1"},"metadata":{"order":"42"}}"#;
    let facts = run("POST", "/v2/money_management/outbound_payments", body).unwrap();
    assert_eq!(
        facts.operation,
        "v2.money_management.outbound_payments.create"
    );
    assert_eq!(facts.class, OperationClass::MoveMoney);
    assert_eq!(facts.amount, amount(1000, "usd"));
    assert_eq!(facts.counted, Some(1000));
    assert!(facts.valued && facts.counts_toward_caps());
    assert_eq!(facts.counterparty, "acct_1");
    assert_eq!(facts.metadata.get("order").map(String::as_str), Some("42"));
    // Numbers keep their JSON text: a fraction or a sign is not an amount.
    let v2 = |body: &str| run("POST", "/v2/money_management/outbound_payments", body);
    let bad = |value: &str| FactsError::BadAmount {
        field: "amount[value]".into(),
        value: value.into(),
    };
    assert_eq!(
        v2(r#"{"amount":{"value":10.5,"currency":"usd"}}"#),
        Err(bad("10.5"))
    );
    assert_eq!(
        v2(r#"{"amount":{"value":-1,"currency":"usd"}}"#),
        Err(bad("-1"))
    );
    assert_eq!(
        v2(r#"{"amount":{"value":true,"currency":"usd"}}"#),
        Err(bad("true"))
    );
    assert_eq!(
        v2(r#"{"amount":{"value":null,"currency":"usd"}}"#),
        Err(bad(""))
    );
    assert_eq!(
        v2(r#"{"amount":{"value":1e3,"currency":"usd"}}"#),
        Err(bad("1000.0"))
    );
    assert_eq!(
        v2(r#"{"amount":{"value":[1],"currency":"usd"}}"#),
        Err(FactsError::BadShape("amount[value]".into()))
    );
    assert_eq!(
        v2(r#"{"amount":{"currency":"usd"}}"#),
        Err(FactsError::MissingField("amount[value]".into()))
    );
    assert_eq!(
        v2("{}"),
        Err(FactsError::MissingField("amount[value]".into()))
    );
    assert_eq!(
        v2(""),
        Err(FactsError::MissingField("amount[value]".into()))
    );
    for body in ["[1]", "1", "\"x\"", "{", "{\"a\":1}x"] {
        assert!(
            matches!(v2(body), Err(FactsError::Form(FormError::BadJson(_)))),
            "{body}"
        );
    }
    // A payout intent update that states no amount moves nothing new.
    let update = run(
        "POST",
        "/v2/money_management/payout_intents/poi_1",
        r#"{"description":"x"}"#,
    )
    .unwrap();
    assert_eq!(
        (update.operation.as_str(), update.valued, update.amount),
        ("v2.money_management.payout_intents.update", true, None)
    );
}

#[test]
fn json_bodies_are_bounded_like_forms() {
    let post = |limits: &FormLimits, path: &str, ct: &str, body: &str| {
        request_with("POST", path, "", Some(ct), body, limits).map(|_| ())
    };
    let v2 = "/v2/core/vault/gb_bank_accounts";
    // Depth: `a[b][c]` is two levels below the name, in a form and in JSON alike.
    let shallow = FormLimits {
        max_params: 1000,
        max_depth: 2,
    };
    assert_eq!(post(&shallow, "/v1/customers", FORM, "a[b][c]=1"), Ok(()));
    assert_eq!(post(&shallow, v2, JSON, r#"{"a":{"b":{"c":1}}}"#), Ok(()));
    let too_deep = |param: &str| {
        Err(FactsError::Form(FormError::TooDeep {
            param: param.into(),
            max: 2,
        }))
    };
    assert_eq!(
        post(&shallow, "/v1/customers", FORM, "a[b][c][d]=1"),
        too_deep("a[b][c][d]")
    );
    assert_eq!(
        post(&shallow, v2, JSON, r#"{"a":{"b":{"c":{"d":1}}}}"#),
        too_deep("a[b][c][d]")
    );
    assert_eq!(
        post(&shallow, v2, JSON, r#"{"a":[[[1]]]}"#),
        too_deep("a[0][0][0]")
    );
    // Count: every value counts, containers included.
    let few = FormLimits {
        max_params: 3,
        max_depth: 8,
    };
    assert_eq!(post(&few, v2, JSON, r#"{"a":1,"b":2,"c":3}"#), Ok(()));
    assert_eq!(post(&few, v2, JSON, r#"{"a":{"b":{}}}"#), Ok(()));
    let too_many = Err(FactsError::Form(FormError::TooManyParams { max: 3 }));
    assert_eq!(
        post(&few, v2, JSON, r#"{"a":1,"b":2,"c":3,"d":4}"#),
        too_many
    );
    assert_eq!(post(&few, v2, JSON, r#"{"a":[1,2,3]}"#), too_many);
    assert_eq!(
        post(&few, v2, JSON, r#"{"a":{"b":{}},"c":{},"d":1}"#),
        too_many
    );
    assert_eq!(
        post(&few, "/v1/customers", FORM, "a=1&b=2&c=3&d=4"),
        too_many
    );
    // Far beyond the ceiling: refused, not a stack overflow.
    let deep = format!("{}1{}", "{\"a\":".repeat(100), "}".repeat(100));
    assert!(matches!(
        request("POST", v2, "", Some(JSON), &deep),
        Err(FactsError::Form(FormError::TooDeep { .. }))
    ));
    let deeper = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(matches!(
        request("POST", v2, "", Some(JSON), &format!("{{\"a\":{deeper}}}")),
        Err(FactsError::Form(_))
    ));
}

#[test]
fn reads_carry_their_expansions() {
    let get = |path: &str, query: &str| request("GET", path, query, None, "").unwrap();
    let card = get("/v1/issuing/cards/ic_1", "expand[]=number");
    assert_eq!(card.operation, "issuing.cards.retrieve");
    assert_eq!(card.class, OperationClass::Read);
    assert_eq!(card.expand, ["number"]);
    let list = get("/v1/issuing/cards", "expand[]=data.cvc");
    assert_eq!(list.operation, "issuing.cards.list");
    assert_eq!(list.expand, ["cvc", "data.cvc"]);
    // Sorted, deduplicated, every spelling of a list.
    let many = get(
        "/v1/issuing/cards",
        "expand[0]=data.number&expand[1]=number&expand[2]=data.cardholder",
    );
    assert_eq!(
        many.expand,
        ["cardholder", "data.cardholder", "data.number", "number"]
    );
    assert_eq!(
        get("/v1/issuing/cards", "expand%5B%5D=data.number").expand,
        ["data.number", "number"]
    );
    assert_eq!(get("/v1/issuing/cards/ic_1", "expand=cvc").expand, ["cvc"]);
    assert!(get("/v1/issuing/cards/ic_1", "expand=").expand.is_empty());
    assert!(get("/v1/issuing/cards/ic_1", "").expand.is_empty());
    // A read has no metadata tags, whatever its query says.
    assert!(get("/v1/customers", "metadata[a]=b").metadata.is_empty());
    // A query the guard cannot read is refused (it would not know what is expanded).
    assert!(matches!(
        request("GET", "/v1/issuing/cards/ic_1", "expand[]=%zz", None, ""),
        Err(FactsError::Form(FormError::BadPercentEncoding { .. }))
    ));
    assert_eq!(
        request(
            "GET",
            "/v1/issuing/cards/ic_1",
            "expand[0][a]=number",
            None,
            ""
        ),
        Err(FactsError::BadShape("expand".into()))
    );
    assert_eq!(
        request(
            "GET",
            "/v1/issuing/cards/ic_1",
            "expand[a]=number",
            None,
            ""
        ),
        Err(FactsError::BadShape("expand".into()))
    );
    // Writes carry theirs too.
    let pay = run(
        "POST",
        "/v1/payment_intents",
        "amount=1&currency=usd&expand[]=latest_charge.balance_transaction",
    )
    .unwrap();
    assert_eq!(
        pay.expand,
        ["balance_transaction", "latest_charge.balance_transaction"]
    );
    let payout = run(
        "POST",
        "/v2/money_management/outbound_payments",
        r#"{"amount":{"value":1,"currency":"usd"},"expand":["x.y"]}"#,
    )
    .unwrap();
    assert_eq!(payout.expand, ["x.y", "y"]);
}

#[test]
fn the_connected_account_is_carried_through() {
    for account in ["acct_1", ""] {
        let raw = RawRequest {
            method: "POST",
            path: "/v1/payment_intents",
            query: "",
            content_type: Some(FORM),
            body: b"amount=100&currency=usd",
            account,
        };
        let facts = classify_request(&raw, &FormLimits::default(), &Lookups::offline()).unwrap();
        assert_eq!(facts.account, account);
        assert_eq!(facts.amount, amount(100, "usd"));
    }
    let read = RawRequest {
        method: "GET",
        path: "/v1/balance",
        query: "",
        content_type: None,
        body: b"",
        account: "acct_2",
    };
    assert_eq!(
        classify_request(&read, &FormLimits::default(), &Lookups::offline())
            .unwrap()
            .account,
        "acct_2"
    );
    assert_eq!(
        run("POST", "/v1/payment_intents", "amount=1&currency=usd")
            .unwrap()
            .account,
        ""
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
    // From a DELETE's query string too.
    let deleted = request(
        "DELETE",
        "/v1/customers/cus_1",
        "metadata[reason]=dup",
        None,
        "",
    )
    .unwrap();
    assert_eq!(
        deleted.metadata.get("reason").map(String::as_str),
        Some("dup")
    );
    // Unknown operations keep their metadata: a policy naming `unknown` may read it.
    let unknown = run("POST", "/v1/no_such_thing", "metadata[k]=v").unwrap();
    assert_eq!(unknown.metadata.get("k").map(String::as_str), Some("v"));
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
        (
            FactsError::QueryOnPost,
            "a POST must not carry a query string; send every parameter in the body",
        ),
        (
            FactsError::QueryAndBody,
            "a DELETE carries its parameters in the query string or the body, not both",
        ),
    ];
    for (err, want) in cases {
        assert_eq!(err.to_string(), want);
    }
    let long = "9".repeat(100);
    let err = parse_minor("amount", &long).unwrap_err().to_string();
    assert!(err.len() < 150, "{err}");
    let err = run("PUT", &"x".repeat(1000), "").unwrap_err().to_string();
    assert!(err.len() < 150, "{err}");
    let err = run("GURGLE".repeat(100).as_str(), "/v1/x", "")
        .unwrap_err()
        .to_string();
    assert!(err.len() < 150, "{err}");
}

#[test]
fn facts_serialize_snake_case() {
    let raw = RawRequest {
        method: "POST",
        path: "/v1/subscriptions",
        query: "",
        content_type: Some(FORM),
        body: b"customer=cus_1&items[0][price_data][unit_amount]=900&items[0][price_data][currency]=usd&items[0][price_data][product]=prod_1&items[0][price_data][recurring][interval]=year&expand[]=latest_invoice.payment_intent&metadata[a]=b",
        account: "acct_1",
    };
    let facts = classify_request(&raw, &FormLimits::default(), &Lookups::offline()).unwrap();
    assert_eq!(facts.interval, "year");
    let json = serde_json::to_value(&facts).unwrap();
    assert_eq!(json["class"], "commit_money");
    assert_eq!(json["account"], "acct_1");
    assert_eq!(json["valued"], true);
    assert_eq!(json["counted"], 900);
    assert_eq!(json["interval"], "year");
    assert_eq!(
        json["expand"],
        serde_json::json!(["latest_invoice.payment_intent", "payment_intent"])
    );
    let back: RequestFacts = serde_json::from_value(json).unwrap();
    assert_eq!(back, facts);
    for class in [
        OperationClass::MoveMoney,
        OperationClass::CommitMoney,
        OperationClass::Admin,
        OperationClass::Write,
        OperationClass::Read,
        OperationClass::Unknown,
    ] {
        assert_eq!(serde_json::to_value(class).unwrap(), class.as_str());
        assert_eq!(
            class.is_money(),
            matches!(
                class,
                OperationClass::MoveMoney | OperationClass::CommitMoney
            )
        );
    }
}

fn content_type() -> impl proptest::strategy::Strategy<Value = Option<String>> {
    use proptest::prelude::*;
    prop_oneof![
        Just(None),
        Just(Some(FORM.to_owned())),
        Just(Some(JSON.to_owned())),
        Just(Some("application/json; charset=utf-8".to_owned())),
        "[ -~]{0,40}".prop_map(Some),
    ]
}

fn path() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        // Shapes of real routes, with ids that may or may not be ids.
        (
            "(/v1|/v2|/V1)",
            proptest::collection::vec(
                prop_oneof![
                    Just("payment_intents".to_owned()),
                    Just("charges".to_owned()),
                    Just("refund".to_owned()),
                    Just("refunds".to_owned()),
                    Just("capture".to_owned()),
                    Just("checkout".to_owned()),
                    Just("sessions".to_owned()),
                    Just("subscriptions".to_owned()),
                    Just("invoices".to_owned()),
                    Just("pay".to_owned()),
                    Just("money_management".to_owned()),
                    Just("outbound_payments".to_owned()),
                    Just("customers".to_owned()),
                    Just("balance_transactions".to_owned()),
                    "[a-zA-Z0-9_.%{}-]{1,12}",
                ],
                0..5,
            )
        )
            .prop_map(|(version, rest)| format!("{version}/{}", rest.join("/"))),
        // Anything at all.
        "[ -~]{0,64}",
    ]
}

fn body() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    prop_oneof![
        "[a-z_\\[\\]0-9=&%.+-]{0,96}".prop_map(String::into_bytes),
        "(amount|currency|line_items\\[0\\]\\[price\\]|line_items\\[0\\]\\[price_data\\]\\[unit_amount\\]|line_items\\[0\\]\\[price_data\\]\\[currency\\]|items\\[0\\]\\[quantity\\]|invoice_now|expand\\[\\]|metadata\\[k\\])=[a-z0-9._-]{0,12}(&(amount|currency|customer|charge|payment_intent|quantity|expand\\[\\])=[a-z0-9_-]{0,12}){0,4}"
            .prop_map(String::into_bytes),
        "[{}\\[\\]\":,a-z0-9. -]{0,96}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..128),
    ]
}

proptest::proptest! {
    #[test]
    fn never_panics(
        method in "(GET|POST|DELETE|PUT|get)",
        path in path(),
        query in "[a-z_\\[\\]0-9=&%.+-]{0,48}",
        content_type in content_type(),
        body in body(),
        account in "(|acct_1|[ -~]{0,8})",
        max_params in 0usize..8,
        max_depth in 0usize..40,
    ) {
        let raw = RawRequest {
            method: &method,
            path: &path,
            query: &query,
            content_type: content_type.as_deref(),
            body: &body,
            account: &account,
        };
        for limits in [FormLimits::default(), FormLimits { max_params, max_depth }] {
            if let Ok(facts) = classify_request(&raw, &limits, &Lookups::offline()) {
                // Offline, nothing is asked for; what is valued has a consistent shape.
                proptest::prop_assert_eq!(&facts.account, &account);
                proptest::prop_assert_eq!(&facts.path, &path);
                if !facts.valued {
                    proptest::prop_assert!(facts.amount.is_none() && facts.counted.is_none());
                }
                if facts.counted.is_some() {
                    proptest::prop_assert!(facts.amount.is_some());
                }
                if let Some(a) = &facts.amount {
                    proptest::prop_assert!(a.minor >= 0);
                }
                let mut sorted = facts.expand.clone();
                sorted.sort();
                sorted.dedup();
                proptest::prop_assert_eq!(&sorted, &facts.expand);
            }
            let _ = classify_request(&raw, &limits, &Lookups::online());
        }
    }

    #[test]
    fn checkout_amount_is_the_exact_sum(items in proptest::collection::vec((0..=1_000_000i64, 1..=100i64), 1..20)) {
        let body: Vec<String> = items.iter().enumerate().map(|(i, (unit, quantity))| format!(
            "line_items[{i}][price_data][unit_amount]={unit}&line_items[{i}][price_data][currency]=eur&line_items[{i}][quantity]={quantity}"
        )).collect();
        let facts = run("POST", "/v1/checkout/sessions", &body.join("&")).unwrap();
        let want: i64 = items.iter().map(|(unit, quantity)| unit * quantity).sum();
        proptest::prop_assert_eq!(facts.amount, amount(want, "eur"));
        proptest::prop_assert_eq!(facts.counted, Some(want));
    }
}
