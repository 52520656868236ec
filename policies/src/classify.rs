//! PROXY.md "Classify": which Stripe operation a request is, and the money it moves.
//!
//! One table ([`ROUTES`]) maps method and path pattern to an operation and the function that
//! reads its amount, currency and counterparty from the form body. Anything the table does not
//! list is a generic `read` (GET) or `write` (POST, DELETE). Extraction fails closed: an amount
//! the guard cannot value is an error, never a zero.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::form::{FormError, FormLimits, FormValue, parse_form};
use crate::money::{Amount, Currency};

/// Largest amount accepted in any amount field, in minor units. Stripe allows at most eight
/// digits (99,999,999.99 USD); three more leave room for zero-decimal currencies and future
/// limits while keeping sums of a few thousand line items far from `i64` overflow.
pub const MAX_AMOUNT_MINOR: i64 = 99_999_999_999;

/// Longest path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 2048;

/// Longest offending value quoted back in an error message, in characters.
const ERROR_VALUE_CHARS: usize = 32;

/// Checkout's default `adjustable_quantity[maximum]` when the customer may change quantities.
const CHECKOUT_DEFAULT_MAX_QUANTITY: i64 = 99;

/// Cedar action id of every GET.
pub const READ_OPERATION: &str = "read";
/// Cedar action id of every POST or DELETE that is not a listed money operation.
pub const WRITE_OPERATION: &str = "write";

/// The operations that move money: the members of Cedar's `Action::"move_money"` group.
pub const MONEY_OPERATIONS: [&str; 9] = [
    "payment_intents.create",
    "payment_intents.update",
    "payment_intents.confirm",
    "payment_intents.capture",
    "charges.create",
    "refunds.create",
    "transfers.create",
    "payouts.create",
    "checkout.sessions.create",
];

/// The three kinds of request POLICIES.md distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationClass {
    /// A listed money operation (Cedar group `move_money`).
    MoveMoney,
    /// Any other POST or DELETE (Cedar action `write`).
    Write,
    /// Any GET (Cedar action `read`).
    Read,
}

/// What the guard knows about a request once classified; the input to policies and caps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFacts {
    /// Operation name, also the Cedar action id: `"payment_intents.create"`, `"read"`, `"write"`.
    pub operation: String,
    /// The operation's class.
    pub class: OperationClass,
    /// HTTP method, upper case.
    pub method: String,
    /// Request path without the query string.
    pub path: String,
    /// The money the request moves, when the guard can tell.
    pub amount: Option<Amount>,
    /// Whether `amount` is new spend that counts toward spending caps.
    pub counts_toward_caps: bool,
    /// Customer, destination or connected account id; `""` when none.
    pub counterparty: String,
    /// Stripe `metadata[key]=value` pairs (Cedar tags of the request).
    pub metadata: BTreeMap<String, String>,
}

/// Why a request cannot be classified. Shown to the agent in `400 guard_unparseable_request`.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum FactsError {
    /// The form body cannot be parsed.
    #[error("invalid form body: {0}")]
    Form(#[from] FormError),
    /// A method other than GET, POST or DELETE.
    #[error("unsupported method `{0}` (the guard accepts GET, POST and DELETE)")]
    UnsupportedMethod(String),
    /// A path with empty or dot segments, odd characters, or an id that is not a Stripe id.
    #[error("invalid path `{0}`")]
    BadPath(String),
    /// A parameter the guard needs to value the request is absent.
    #[error("missing required parameter `{0}`")]
    MissingField(String),
    /// An amount that is not a plain non-negative integer of minor units within limits.
    #[error("parameter `{field}` must be a non-negative integer amount in minor units, at most {max}; got `{value}`", max = MAX_AMOUNT_MINOR)]
    BadAmount {
        /// The parameter name.
        field: String,
        /// The offending value, shortened.
        value: String,
    },
    /// Checkout line items (or the session's `currency`) in more than one currency.
    #[error("line items must all use the same currency")]
    MixedCurrencies,
    /// A checkout line item priced by a stored Price id, whose amount the guard cannot see.
    #[error(
        "line_items[{index}] uses a stored `price`; give `price_data[unit_amount]` and `price_data[currency]` so the guard can value it"
    )]
    UnvaluedLineItem {
        /// Index of the line item.
        index: usize,
    },
    /// A currency that is not three ASCII letters.
    #[error("invalid currency `{0}`")]
    BadCurrency(String),
    /// A parameter that must be a single value was given as a map or list, or the reverse.
    #[error("parameter `{0}` has the wrong shape")]
    BadShape(String),
}

/// What an extractor reads from the body.
struct Money {
    amount: Option<Amount>,
    counts_toward_caps: bool,
    counterparty: String,
}

impl Money {
    /// A request that moves no new money.
    fn none() -> Money {
        Money {
            amount: None,
            counts_toward_caps: false,
            counterparty: String::new(),
        }
    }
}

type Extractor = fn(&FormValue) -> Result<Money, FactsError>;

/// One row of the classification table.
struct Route {
    method: &'static str,
    /// `/`-separated; `{id}` matches one Stripe id segment (`[A-Za-z0-9_]+`).
    pattern: &'static str,
    operation: &'static str,
    extract: Extractor,
}

/// PROXY.md "Classify": the money operations. Everything else is a generic read or write.
#[rustfmt::skip]
const ROUTES: &[Route] = &[
    route("/v1/payment_intents", "payment_intents.create", payment_intent_create),
    route("/v1/payment_intents/{id}", "payment_intents.update", payment_intent_update),
    route("/v1/payment_intents/{id}/confirm", "payment_intents.confirm", no_new_amount),
    route("/v1/payment_intents/{id}/capture", "payment_intents.capture", capture),
    route("/v1/charges", "charges.create", charge_create),
    route("/v1/refunds", "refunds.create", refund_create),
    route("/v1/transfers", "transfers.create", transfer_create),
    route("/v1/payouts", "payouts.create", payout_create),
    route("/v1/checkout/sessions", "checkout.sessions.create", checkout_create),
];

/// Who a payment intent pays or charges, in order of preference.
const PAYMENT_INTENT_COUNTERPARTY: &[&[&str]] = &[
    &["customer"],
    &["transfer_data", "destination"],
    &["on_behalf_of"],
];

const fn route(pattern: &'static str, operation: &'static str, extract: Extractor) -> Route {
    Route {
        method: "POST",
        pattern,
        operation,
        extract,
    }
}

/// Classifies a request from its method, its path (query string already stripped) and its body.
pub fn classify(
    method: &str,
    path: &str,
    body: &[u8],
    limits: &FormLimits,
) -> Result<RequestFacts, FactsError> {
    let segments = path_segments(path)?;
    let facts = |class, operation: &str, money: Money, metadata| RequestFacts {
        operation: operation.to_owned(),
        class,
        method: method.to_owned(),
        path: path.to_owned(),
        amount: money.amount,
        counts_toward_caps: money.counts_toward_caps,
        counterparty: money.counterparty,
        metadata,
    };
    match method {
        // Stripe ignores GET bodies, so the guard does too.
        "GET" => Ok(facts(
            OperationClass::Read,
            READ_OPERATION,
            Money::none(),
            BTreeMap::new(),
        )),
        "POST" | "DELETE" => {
            let form = parse_form(body, limits)?;
            let metadata = metadata(&form)?;
            match find_route(method, &segments)? {
                Some(route) => {
                    let money = (route.extract)(&form)?;
                    Ok(facts(
                        OperationClass::MoveMoney,
                        route.operation,
                        money,
                        metadata,
                    ))
                }
                None => Ok(facts(
                    OperationClass::Write,
                    WRITE_OPERATION,
                    Money::none(),
                    metadata,
                )),
            }
        }
        other => Err(FactsError::UnsupportedMethod(truncate(other))),
    }
}

/// Splits `/v1/a/b` into segments, refusing anything Stripe might route differently from how
/// the table reads it: empty segments (`//`, a trailing `/`), `.`/`..`, and characters outside
/// `[A-Za-z0-9_.-]` (including `%`, so an encoded id cannot dodge the table).
fn path_segments(path: &str) -> Result<Vec<&str>, FactsError> {
    let bad = || FactsError::BadPath(truncate(path));
    if path.len() > MAX_PATH_BYTES {
        return Err(bad());
    }
    let rest = path.strip_prefix('/').ok_or_else(bad)?;
    let segments: Vec<&str> = rest.split('/').collect();
    let valid = |s: &&str| {
        !s.is_empty()
            && !s.bytes().all(|b| b == b'.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    };
    if segments.iter().all(valid) {
        Ok(segments)
    } else {
        Err(bad())
    }
}

/// The money route for this request, if any. Literal segments compare case-insensitively and
/// an `{id}` that is not a plain Stripe id is refused rather than treated as a generic write:
/// either way a money operation cannot slip past the table by spelling.
fn find_route(method: &str, segments: &[&str]) -> Result<Option<&'static Route>, FactsError> {
    for route in ROUTES.iter().filter(|r| r.method == method) {
        let pattern: Vec<&str> = route.pattern.trim_start_matches('/').split('/').collect();
        if pattern.len() != segments.len() {
            continue;
        }
        let literals_match = pattern
            .iter()
            .zip(segments)
            .all(|(p, s)| *p == "{id}" || p.eq_ignore_ascii_case(s));
        if !literals_match {
            continue;
        }
        let ids_ok = pattern
            .iter()
            .zip(segments)
            .filter(|(p, _)| **p == "{id}")
            .all(|(_, s)| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        if !ids_ok {
            return Err(FactsError::BadPath(truncate(&format!(
                "/{}",
                segments.join("/")
            ))));
        }
        return Ok(Some(route));
    }
    Ok(None)
}

fn payment_intent_create(form: &FormValue) -> Result<Money, FactsError> {
    Ok(Money {
        amount: Some(required_amount(form, "amount")?),
        counts_toward_caps: true,
        counterparty: counterparty(form, PAYMENT_INTENT_COUNTERPARTY)?,
    })
}

/// An update only moves money when it changes the amount; then the currency must be stated.
fn payment_intent_update(form: &FormValue) -> Result<Money, FactsError> {
    let amount = match optional_minor(form, &["amount"])? {
        Some(minor) => Some(Amount {
            minor,
            currency: required_currency(form, &["currency"])?,
        }),
        None => None,
    };
    Ok(Money {
        counts_toward_caps: amount.is_some(),
        amount,
        counterparty: counterparty(form, PAYMENT_INTENT_COUNTERPARTY)?,
    })
}

/// Confirming moves the amount already decided (and counted) at creation.
fn no_new_amount(_form: &FormValue) -> Result<Money, FactsError> {
    Ok(Money::none())
}

/// Capture takes at most the authorized amount, counted at creation; Stripe's capture has no
/// currency parameter, so the amount is only checked, not reported.
fn capture(form: &FormValue) -> Result<Money, FactsError> {
    optional_minor(form, &["amount_to_capture"])?;
    no_new_amount(form)
}

fn charge_create(form: &FormValue) -> Result<Money, FactsError> {
    // Legacy Connect charges give `destination` as an id or as `destination[account]`.
    let destination: &[&str] = match form.get("destination") {
        Some(FormValue::Map(_)) => &["destination", "account"],
        _ => &["destination"],
    };
    Ok(Money {
        amount: Some(required_amount(form, "amount")?),
        counts_toward_caps: true,
        counterparty: counterparty(
            form,
            &[
                &["customer"],
                destination,
                &["transfer_data", "destination"],
            ],
        )?,
    })
}

/// A refund without an amount refunds "the rest", which the guard cannot value: agents must
/// state both amount and currency (fail closed).
fn refund_create(form: &FormValue) -> Result<Money, FactsError> {
    Ok(Money {
        amount: Some(required_amount(form, "amount")?),
        counts_toward_caps: true,
        counterparty: counterparty(form, &[&["payment_intent"], &["charge"]])?,
    })
}

fn transfer_create(form: &FormValue) -> Result<Money, FactsError> {
    Ok(Money {
        amount: Some(required_amount(form, "amount")?),
        counts_toward_caps: true,
        counterparty: counterparty(form, &[&["destination"]])?,
    })
}

fn payout_create(form: &FormValue) -> Result<Money, FactsError> {
    transfer_create(form)
}

fn checkout_create(form: &FormValue) -> Result<Money, FactsError> {
    let count = match form.get("line_items") {
        None => return Err(FactsError::MissingField("line_items".into())),
        Some(FormValue::List(items)) if !items.is_empty() => items.len(),
        Some(_) => return Err(FactsError::BadShape("line_items".into())),
    };
    let mut currency = optional_currency(form, &["currency"])?;
    let mut total: i64 = 0;
    for index in 0..count {
        let (minor, item_currency) = line_item_value(form, index)?;
        if *currency.get_or_insert_with(|| item_currency.clone()) != item_currency {
            return Err(FactsError::MixedCurrencies);
        }
        total = total
            .checked_add(minor)
            .ok_or_else(|| FactsError::BadAmount {
                field: "line_items".into(),
                value: "sum of line items overflows".into(),
            })?;
    }
    Ok(Money {
        // `count` is at least 1, so the loop set `currency`.
        amount: currency.map(|currency| Amount {
            minor: total,
            currency,
        }),
        counts_toward_caps: true,
        counterparty: counterparty(form, &[&["customer"]])?,
    })
}

/// `unit_amount` × the most the customer can buy: `quantity` (default 1), or
/// `adjustable_quantity[maximum]` when the customer may raise it.
fn line_item_value(form: &FormValue, index: usize) -> Result<(i64, Currency), FactsError> {
    let index_text = index.to_string();
    let item = |rest: &[&'static str]| item_path(&index_text, rest);
    if form.path(&item(&["price"])).is_some() {
        return Err(FactsError::UnvaluedLineItem { index });
    }
    let unit = required_minor(form, &item(&["price_data", "unit_amount"]))?;
    let currency = Currency::parse(required_str(form, &item(&["price_data", "currency"]))?)?;
    let mut quantity = optional_minor(form, &item(&["quantity"]))?.unwrap_or(1);
    if str_at(form, &item(&["adjustable_quantity", "enabled"]))? == Some("true") {
        let maximum = optional_minor(form, &item(&["adjustable_quantity", "maximum"]))?;
        quantity = quantity.max(maximum.unwrap_or(CHECKOUT_DEFAULT_MAX_QUANTITY));
    }
    let minor = unit
        .checked_mul(quantity)
        .ok_or_else(|| FactsError::BadAmount {
            field: field_name(&item(&["quantity"])),
            value: "unit_amount × quantity overflows".into(),
        })?;
    Ok((minor, currency))
}

/// `["line_items", index, rest...]`
fn item_path<'a>(index: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    ["line_items", index]
        .into_iter()
        .chain(rest.iter().copied())
        .collect()
}

/// `amount` and `currency`, both required.
fn required_amount(form: &FormValue, field: &'static str) -> Result<Amount, FactsError> {
    Ok(Amount {
        minor: required_minor(form, &[field])?,
        currency: required_currency(form, &["currency"])?,
    })
}

fn required_currency(form: &FormValue, path: &[&str]) -> Result<Currency, FactsError> {
    Currency::parse(required_str(form, path)?)
}

fn optional_currency(form: &FormValue, path: &[&str]) -> Result<Option<Currency>, FactsError> {
    str_at(form, path)?.map(Currency::parse).transpose()
}

fn required_minor(form: &FormValue, path: &[&str]) -> Result<i64, FactsError> {
    parse_minor(&field_name(path), required_str(form, path)?)
}

fn optional_minor(form: &FormValue, path: &[&str]) -> Result<Option<i64>, FactsError> {
    str_at(form, path)?
        .map(|raw| parse_minor(&field_name(path), raw))
        .transpose()
}

/// Minor units: ASCII digits only (no sign, no decimal point), at most [`MAX_AMOUNT_MINOR`].
pub(crate) fn parse_minor(field: &str, raw: &str) -> Result<i64, FactsError> {
    let bad = || FactsError::BadAmount {
        field: field.to_owned(),
        value: truncate(raw),
    };
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match raw.parse::<i64>() {
        Ok(minor) if minor <= MAX_AMOUNT_MINOR => Ok(minor),
        _ => Err(bad()),
    }
}

/// The first candidate parameter present, or `""`.
fn counterparty(form: &FormValue, candidates: &[&[&str]]) -> Result<String, FactsError> {
    for path in candidates {
        if let Some(value) = str_at(form, path)? {
            return Ok(value.to_owned());
        }
    }
    Ok(String::new())
}

fn required_str<'a>(form: &'a FormValue, path: &[&str]) -> Result<&'a str, FactsError> {
    str_at(form, path)?.ok_or_else(|| FactsError::MissingField(field_name(path)))
}

/// A scalar parameter; present with another shape is an error, not "absent".
fn str_at<'a>(form: &'a FormValue, path: &[&str]) -> Result<Option<&'a str>, FactsError> {
    match form.path(path) {
        None => Ok(None),
        Some(FormValue::Str(s)) => Ok(Some(s)),
        Some(_) => Err(FactsError::BadShape(field_name(path))),
    }
}

/// `metadata[key]=value` pairs. `metadata=` (empty) is Stripe's way to clear them: no pairs.
fn metadata(form: &FormValue) -> Result<BTreeMap<String, String>, FactsError> {
    let scalar = |key: String, value: &FormValue| match value {
        FormValue::Str(s) => Ok((key, s.clone())),
        _ => Err(FactsError::BadShape(format!("metadata[{key}]"))),
    };
    match form.get("metadata") {
        None => Ok(BTreeMap::new()),
        Some(FormValue::Str(s)) if s.is_empty() => Ok(BTreeMap::new()),
        Some(FormValue::Map(map)) => map.iter().map(|(k, v)| scalar(k.clone(), v)).collect(),
        Some(FormValue::List(list)) => list
            .iter()
            .enumerate()
            .map(|(i, v)| scalar(i.to_string(), v))
            .collect(),
        Some(FormValue::Str(_)) => Err(FactsError::BadShape("metadata".into())),
    }
}

/// `["a", "b", "c"]` → `a[b][c]`.
fn field_name(path: &[&str]) -> String {
    match path.split_first() {
        Some((first, rest)) => rest
            .iter()
            .fold((*first).to_owned(), |acc, p| format!("{acc}[{p}]")),
        None => String::new(),
    }
}

/// Shortens an untrusted value for an error message, on a character boundary.
pub(crate) fn truncate(value: &str) -> String {
    match value.char_indices().nth(ERROR_VALUE_CHARS) {
        Some((at, _)) => format!("{}…", &value[..at]),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests;
