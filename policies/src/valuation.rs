//! PROXY.md step 2, "how an operation is valued": one function per way Stripe carries money
//! in a request, named in the operation table (`fields:<name>` or `lookup:<name>`).
//!
//! A valuer reads the request's parameters and, where Stripe decides the amount (an invoice's
//! balance, a refund of "the rest", a stored Price), the object at the rail: it asks for it
//! with [`Cx::lookup`], and the first pass fails with [`FactsError::NeedsLookup`] naming what
//! to GET; the proxy fetches it with the organization's key and classifies again. Offline
//! (simulation) or when the rail has no such object, the lookup answers `None` and the valuer
//! says the request cannot be valued: it is then held unless a policy names it explicitly.
//!
//! What a valuer reports:
//! - `amount`: what policies see as `resource.amount` / `resource.currency`;
//! - `counted`: what counts toward spending caps (the increase of an authorization, the excess
//!   of a capture over what was authorized), in the same currency;
//! - `valued: false` when the guard cannot tell (fail closed: never a zero).

use std::collections::HashMap;

use serde_json::Value as Json;

use crate::classify::{FactsError, MAX_AMOUNT_MINOR, OperationClass, truncate};
use crate::form::FormValue;
use crate::money::{Amount, Currency};

/// Most objects one request may make the guard look up at the rail.
pub const MAX_LOOKUPS: usize = 16;

/// Checkout's default `adjustable_quantity[maximum]` when the customer may change quantities.
const CHECKOUT_DEFAULT_MAX_QUANTITY: i64 = 99;

/// A valuer of the operation table.
pub type Valuer = fn(&Cx<'_>) -> Result<Value, FactsError>;

/// Objects read from the rail for one request, by path.
#[derive(Clone, Debug, Default)]
pub struct Lookups {
    objects: HashMap<String, Option<Json>>,
    offline: bool,
}

impl Lookups {
    /// Nothing fetched yet; a valuer that needs an object asks for it.
    pub fn online() -> Self {
        Self::default()
    }

    /// No rail to ask (simulation, tests): every lookup answers "not found".
    pub fn offline() -> Self {
        Self {
            objects: HashMap::new(),
            offline: true,
        }
    }

    /// Record what the rail answered for `path`: the object, or `None` when it has none.
    pub fn insert(&mut self, path: String, object: Option<Json>) {
        self.objects.insert(path, object);
    }

    /// How many objects were fetched.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether nothing was fetched.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// What a valuer sees: the parameters, the `{id}`s of the path, and the looked-up objects.
pub struct Cx<'a> {
    pub(crate) params: &'a FormValue,
    pub(crate) ids: &'a [&'a str],
    pub(crate) lookups: &'a Lookups,
}

impl Cx<'_> {
    /// The path's `{id}` number `i` (0-based).
    fn id(&self, i: usize) -> &str {
        self.ids.get(i).copied().unwrap_or_default()
    }

    /// The object at `path` on the rail: `Err(NeedsLookup)` until it was fetched, then the
    /// object or `None`.
    fn lookup(&self, path: String) -> Result<Option<&Json>, FactsError> {
        Ok(self.lookup_all(vec![path])?.pop().flatten())
    }

    /// Several objects at once (one round trip of lookups). More than [`MAX_LOOKUPS`]: all
    /// `None`, so the request is not valued. Objects beyond [`MAX_LOOKUPS`] for the whole
    /// request (over all rounds) are not asked for either: they answer `None`.
    fn lookup_all(&self, paths: Vec<String>) -> Result<Vec<Option<&Json>>, FactsError> {
        if paths.len() > MAX_LOOKUPS {
            return Ok(vec![None; paths.len()]);
        }
        if !self.lookups.offline {
            let missing: Vec<String> = paths
                .iter()
                .filter(|p| !self.lookups.objects.contains_key(*p))
                .cloned()
                .collect();
            if !missing.is_empty() && self.lookups.objects.len() + missing.len() <= MAX_LOOKUPS {
                return Err(FactsError::NeedsLookup(missing));
            }
        }
        Ok(paths
            .iter()
            .map(|p| self.lookups.objects.get(p).and_then(Option::as_ref))
            .collect())
    }
}

/// What a valuer found.
#[derive(Clone, Debug, Default)]
pub struct Value {
    pub(crate) amount: Option<Amount>,
    pub(crate) counted: Option<i64>,
    pub(crate) valued: bool,
    pub(crate) counterparty: String,
    pub(crate) interval: String,
    /// See `RequestFacts::settles`.
    pub(crate) settles: String,
    /// What the request really is when a parameter makes it another operation (a customer
    /// update that sets `balance` is a balance credit): the action and class to use instead.
    pub(crate) reclassified: Option<(&'static str, OperationClass)>,
}

impl Value {
    /// Moves or commits no money.
    pub(crate) fn none() -> Value {
        Value {
            valued: true,
            ..Value::default()
        }
    }

    /// Cannot be valued.
    fn unvaluable() -> Value {
        Value::default()
    }

    /// New money: seen by policies and counted toward caps.
    fn counted(amount: Amount) -> Value {
        Value {
            counted: Some(amount.minor),
            amount: Some(amount),
            valued: true,
            ..Value::default()
        }
    }

    /// Money already counted elsewhere (confirming a PaymentIntent created through the guard):
    /// seen by policies, not counted again.
    fn seen(amount: Amount) -> Value {
        Value {
            amount: Some(amount),
            valued: true,
            ..Value::default()
        }
    }

    /// Money whose counting belongs to `object`'s creation (see `RequestFacts::settles`).
    fn settling(mut self, object: &str) -> Value {
        self.settles = object.to_owned();
        self
    }

    fn with_counterparty(mut self, counterparty: impl Into<String>) -> Value {
        self.counterparty = counterparty.into();
        self
    }
}

/// Every valuer, by the name the table uses.
pub(crate) static VALUERS: &[(&str, Valuer)] = &[
    ("amount_currency", amount_currency),
    ("payment_intent_create", payment_intent_create),
    ("payment_intent_update", payment_intent_update),
    ("payment_intent_settle", payment_intent_settle),
    ("payment_intent_param", payment_intent_param),
    ("payment_intent_capture", payment_intent_capture),
    ("increment_authorization", increment_authorization),
    ("charge_create", charge_create),
    ("charge_capture", charge_capture),
    ("refund_create", refund_create),
    ("charge_refund", charge_refund),
    ("application_fee_refund", application_fee_refund),
    ("transfer_reversal", transfer_reversal),
    ("payout_reverse", payout_reverse),
    ("credit_note", credit_note),
    ("dispute_close", dispute_close),
    ("charge_dispute_close", charge_dispute_close),
    ("climate_order", climate_order),
    ("treasury_credit_reversal", treasury_credit_reversal),
    ("treasury_debit_reversal", treasury_debit_reversal),
    ("v2_amount", v2_amount),
    ("v2_payout_intent_update", v2_payout_intent_update),
    ("v2_payout_intent_confirm", v2_payout_intent_confirm),
    ("invoice_pay", invoice_pay),
    ("invoice_due", invoice_due),
    ("invoice_lines", invoice_lines),
    ("invoice_line", invoice_line),
    ("invoice_item", invoice_item),
    (
        "issuing_authorization_approve",
        issuing_authorization_approve,
    ),
    ("checkout_session", checkout_session),
    ("checkout_session_update", checkout_session_update),
    ("subscription", subscription),
    ("subscription_item", subscription_item),
    ("subscription_cancel", subscription_cancel),
    ("line_items", line_items),
    ("quote_total", quote_total),
    ("issuing_card_create", issuing_card_create),
    ("issuing_card_update", issuing_card_update),
    ("issuing_cardholder", issuing_cardholder),
    ("customer_balance", customer_balance),
    ("credit_grant", credit_grant),
    ("customer_write", customer_write),
    ("invoice_update", invoice_update),
];

// ---------------------------------------------------------------------------------------------
// Amounts in the parameters

/// Who a payment intent pays or charges, in order of preference.
const PAYMENT_INTENT_COUNTERPARTY: &[&[&str]] = &[
    &["customer"],
    &["transfer_data", "destination"],
    &["on_behalf_of"],
];

/// `amount` and `currency`, both required (transfers, payouts, top-ups, treasury).
fn amount_currency(cx: &Cx<'_>) -> Result<Value, FactsError> {
    let counterparty = counterparty(
        cx.params,
        &[
            &["destination"],
            &["customer"],
            &["financial_account"],
            &["source"],
        ],
    )?;
    Ok(Value::counted(required_amount(cx.params, "amount")?).with_counterparty(counterparty))
}

fn payment_intent_create(cx: &Cx<'_>) -> Result<Value, FactsError> {
    let counterparty = counterparty(cx.params, PAYMENT_INTENT_COUNTERPARTY)?;
    Ok(Value::counted(required_amount(cx.params, "amount")?).with_counterparty(counterparty))
}

fn charge_create(cx: &Cx<'_>) -> Result<Value, FactsError> {
    // Legacy Connect charges give `destination` as an id or as `destination[account]`.
    let destination: &[&str] = match cx.params.get("destination") {
        Some(FormValue::Map(_)) => &["destination", "account"],
        _ => &["destination"],
    };
    let counterparty = counterparty(
        cx.params,
        &[
            &["customer"],
            destination,
            &["transfer_data", "destination"],
        ],
    )?;
    Ok(Value::counted(required_amount(cx.params, "amount")?).with_counterparty(counterparty))
}

/// `/v2` money: `{"amount": {"value": 1000, "currency": "usd"}}`.
fn v2_amount(cx: &Cx<'_>) -> Result<Value, FactsError> {
    let counterparty = counterparty(
        cx.params,
        &[
            &["to", "recipient"],
            &["to", "payout_method"],
            &["from", "financial_account"],
        ],
    )?;
    let amount = Amount {
        minor: required_minor(cx.params, &["amount", "value"])?,
        currency: required_currency(cx.params, &["amount", "currency"])?,
    };
    Ok(Value::counted(amount).with_counterparty(counterparty))
}

/// An update that states a new amount is valued in full; one that only changes other fields
/// moves nothing new.
fn v2_payout_intent_update(cx: &Cx<'_>) -> Result<Value, FactsError> {
    if cx.params.get("amount").is_some() {
        v2_amount(cx)
    } else {
        Ok(Value::none())
    }
}

fn climate_order(cx: &Cx<'_>) -> Result<Value, FactsError> {
    if cx.params.get("amount").is_some() {
        Ok(Value::counted(required_amount(cx.params, "amount")?))
    } else {
        // Ordered by `metric_tons`: Stripe prices it.
        Ok(Value::unvaluable())
    }
}

/// A customer balance transaction: a negative amount credits the customer (the account owes
/// them), a positive one debits. Either way its size is what policies see.
fn customer_balance(cx: &Cx<'_>) -> Result<Value, FactsError> {
    let raw = required_str(cx.params, &["amount"])?;
    let minor = parse_signed_minor("amount", raw)?.unsigned_abs();
    let minor = i64::try_from(minor).map_err(|_| bad_amount("amount", raw))?;
    let currency = required_currency(cx.params, &["currency"])?;
    Ok(Value::counted(Amount { minor, currency }).with_counterparty(cx.id(0)))
}

/// Creating or updating a customer is a plain write, unless it sets `balance`: that credits
/// (or debits) the customer as `customers.balance_transactions.create` does, so it is that
/// operation, valued in the customer's currency (read from the rail on an update; a new
/// customer has none yet, so it is not valued).
fn customer_write(cx: &Cx<'_>) -> Result<Value, FactsError> {
    let Some(raw) = str_at(cx.params, &["balance"])? else {
        return Ok(Value::none());
    };
    let minor = parse_signed_minor("balance", raw)?.unsigned_abs();
    let minor = i64::try_from(minor).map_err(|_| bad_amount("balance", raw))?;
    let currency = match cx.ids.first() {
        Some(id) => cx
            .lookup(format!("/v1/customers/{id}"))?
            .and_then(|c| json_currency(c, "currency")),
        None => None,
    };
    let value = match currency {
        Some(currency) => Value::counted(Amount { minor, currency }),
        None => Value::unvaluable(),
    };
    Ok(Value {
        reclassified: Some((
            "customers.balance_transactions.create",
            OperationClass::CommitMoney,
        )),
        ..value.with_counterparty(cx.id(0))
    })
}

/// Updating a draft invoice is a commitment; a new shipping cost raises what the customer pays
/// by an amount the guard does not see here.
fn invoice_update(cx: &Cx<'_>) -> Result<Value, FactsError> {
    if cx.params.get("shipping_cost").is_some() {
        Ok(Value::unvaluable())
    } else {
        Ok(Value::none())
    }
}

fn credit_grant(cx: &Cx<'_>) -> Result<Value, FactsError> {
    if str_at(cx.params, &["amount", "type"])? != Some("monetary") {
        return Ok(Value::unvaluable());
    }
    let amount = Amount {
        minor: required_minor(cx.params, &["amount", "monetary", "value"])?,
        currency: required_currency(cx.params, &["amount", "monetary", "currency"])?,
    };
    let counterparty = counterparty(cx.params, &[&["customer"]])?;
    Ok(Value::counted(amount).with_counterparty(counterparty))
}

/// Cancelling a subscription moves nothing, unless it bills now (`invoice_now`, `prorate`):
/// then Stripe computes a final invoice the guard cannot see in advance.
fn subscription_cancel(cx: &Cx<'_>) -> Result<Value, FactsError> {
    let bills = |name| Ok::<_, FactsError>(str_at(cx.params, &[name])? == Some("true"));
    if bills("invoice_now")? || bills("prorate")? {
        Ok(Value::unvaluable())
    } else {
        Ok(Value::none())
    }
}

/// The largest spending limit of an Issuing card or cardholder: the most it can spend in one
/// of its windows. No limit at all is an unlimited card: not valuable.
fn spending_limit(params: &FormValue, currency: Option<Currency>) -> Result<Value, FactsError> {
    let Some(limits) = params.path(&["spending_controls", "spending_limits"]) else {
        return Ok(Value::unvaluable());
    };
    let count = list_len(limits, "spending_controls[spending_limits]")?;
    let mut most = 0i64;
    for i in 0..count {
        let index = i.to_string();
        let minor = required_minor(
            params,
            &["spending_controls", "spending_limits", &index, "amount"],
        )?;
        most = most.max(minor);
    }
    match (count, currency) {
        (1.., Some(currency)) => Ok(Value::counted(Amount {
            minor: most,
            currency,
        })),
        _ => Ok(Value::unvaluable()),
    }
}

fn issuing_card_create(cx: &Cx<'_>) -> Result<Value, FactsError> {
    let currency = optional_currency(cx.params, &["currency"])?;
    let counterparty = counterparty(cx.params, &[&["cardholder"]])?;
    Ok(spending_limit(cx.params, currency)?.with_counterparty(counterparty))
}

fn issuing_card_update(cx: &Cx<'_>) -> Result<Value, FactsError> {
    if cx.params.get("spending_controls").is_none() {
        return Ok(Value::none());
    }
    let card = cx.lookup(format!("/v1/issuing/cards/{}", cx.id(0)))?;
    spending_limit(cx.params, card.and_then(|c| json_currency(c, "currency")))
}

fn issuing_cardholder(cx: &Cx<'_>) -> Result<Value, FactsError> {
    if cx.params.get("spending_controls").is_none() {
        return Ok(Value::none());
    }
    let currency = optional_currency(
        cx.params,
        &["spending_controls", "spending_limits_currency"],
    )?;
    spending_limit(cx.params, currency)
}

// ---------------------------------------------------------------------------------------------
// Amounts Stripe decides: the object at the rail

fn payment_intent_path(id: &str) -> String {
    format!("/v1/payment_intents/{id}")
}

/// An update valued in full, in its new currency, when it changes the amount or the currency;
/// the part it does not state comes from the PaymentIntent.
fn payment_intent_update(cx: &Cx<'_>) -> Result<Value, FactsError> {
    let counterparty = counterparty(cx.params, PAYMENT_INTENT_COUNTERPARTY)?;
    let minor = optional_minor(cx.params, &["amount"])?;
    let currency = optional_currency(cx.params, &["currency"])?;
    let value = match (minor, currency) {
        (None, None) => Value::none(),
        (Some(minor), Some(currency)) => Value::counted(Amount { minor, currency }),
        (minor, currency) => match cx.lookup(payment_intent_path(cx.id(0)))? {
            Some(pi) => match (
                minor.or_else(|| json_minor(pi, "amount")),
                currency.or_else(|| json_currency(pi, "currency")),
            ) {
                (Some(minor), Some(currency)) => Value::counted(Amount { minor, currency }),
                _ => Value::unvaluable(),
            },
            None => Value::unvaluable(),
        },
    };
    Ok(value.with_counterparty(counterparty))
}

/// Confirming or paying an existing PaymentIntent moves the amount it was created with,
/// counted when it was created: policies see it, caps do not count it twice.
fn payment_intent_settle(cx: &Cx<'_>) -> Result<Value, FactsError> {
    settle_intent(cx, cx.id(0))
}

/// A Terminal reader processing the PaymentIntent named in `payment_intent`.
fn payment_intent_param(cx: &Cx<'_>) -> Result<Value, FactsError> {
    let id = required_str(cx.params, &["payment_intent"])?.to_owned();
    settle_intent(cx, &id)
}

fn settle_intent(cx: &Cx<'_>, id: &str) -> Result<Value, FactsError> {
    if !is_object_id(id) {
        return Ok(Value::unvaluable());
    }
    Ok(match cx.lookup(payment_intent_path(id))? {
        Some(pi) => match object_amount(pi, "amount") {
            Some(amount) => Value::seen(amount)
                .settling(id)
                .with_counterparty(json_str(pi, "customer")),
            None => Value::unvaluable(),
        },
        None => Value::unvaluable(),
    })
}

/// A capture takes at most what was authorized (counted at creation); an over-capture counts
/// its excess.
fn payment_intent_capture(cx: &Cx<'_>) -> Result<Value, FactsError> {
    let asked = optional_minor(cx.params, &["amount_to_capture"])?;
    let Some(pi) = cx.lookup(payment_intent_path(cx.id(0)))? else {
        return Ok(Value::unvaluable());
    };
    capture_value(pi, asked, "amount_capturable", cx.id(0))
}

fn charge_capture(cx: &Cx<'_>) -> Result<Value, FactsError> {
    let asked = optional_minor(cx.params, &["amount"])?;
    let Some(charge) = cx.lookup(format!("/v1/charges/{}", cx.id(0)))? else {
        return Ok(Value::unvaluable());
    };
    capture_value(charge, asked, "amount", cx.id(0))
}

fn capture_value(
    object: &Json,
    asked: Option<i64>,
    default_field: &str,
    id: &str,
) -> Result<Value, FactsError> {
    let (Some(authorized), Some(currency)) = (
        json_minor(object, "amount"),
        json_currency(object, "currency"),
    ) else {
        return Ok(Value::unvaluable());
    };
    let minor = asked
        .or_else(|| json_minor(object, default_field))
        .unwrap_or(authorized);
    let excess = minor.saturating_sub(authorized);
    Ok(Value {
        amount: Some(Amount { minor, currency }),
        counted: (excess > 0).then_some(excess),
        valued: true,
        counterparty: json_str(object, "customer"),
        interval: String::new(),
        settles: id.to_owned(),
        reclassified: None,
    })
}

/// `amount` is the new total authorized: the increase is new money.
fn increment_authorization(cx: &Cx<'_>) -> Result<Value, FactsError> {
    let total = required_minor(cx.params, &["amount"])?;
    let Some(pi) = cx.lookup(payment_intent_path(cx.id(0)))? else {
        return Ok(Value::unvaluable());
    };
    let (Some(before), Some(currency)) = (json_minor(pi, "amount"), json_currency(pi, "currency"))
    else {
        return Ok(Value::unvaluable());
    };
    let increase = total.saturating_sub(before).max(0);
    Ok(Value::counted(Amount {
        minor: increase,
        currency,
    })
    .with_counterparty(json_str(pi, "customer")))
}

/// A refund of a charge or a PaymentIntent. Without `amount` Stripe refunds what is left:
/// valued from the object (what was received less what was refunded).
fn refund_create(cx: &Cx<'_>) -> Result<Value, FactsError> {
    let pi = str_at(cx.params, &["payment_intent"])?;
    let charge = str_at(cx.params, &["charge"])?;
    let object = match (charge, pi) {
        (Some(ch), _) if is_object_id(ch) => format!("/v1/charges/{ch}"),
        (None, Some(pi)) if is_object_id(pi) => payment_intent_path(pi),
        // Named, but not as a plain id (`charge=`): Stripe may still refund the other one, in
        // its currency. Never the stated-currency reading below.
        (Some(_), _) | (_, Some(_)) => return Ok(Value::unvaluable()),
        (None, None) => {
            // A refund to a customer balance or an unlinked refund states both itself.
            return match (cx.params.get("amount"), cx.params.get("currency")) {
                (Some(_), Some(_)) => Ok(Value::counted(required_amount(cx.params, "amount")?)),
                _ => Ok(Value::unvaluable()),
            };
        }
    };
    refund_of(cx, object, pi.or(charge).unwrap_or_default().to_owned())
}

/// `POST /v1/charges/{id}/refund` and `/refunds`: the legacy routes of `refunds.create`.
fn charge_refund(cx: &Cx<'_>) -> Result<Value, FactsError> {
    refund_of(cx, format!("/v1/charges/{}", cx.id(0)), cx.id(0).to_owned())
}

fn refund_of(cx: &Cx<'_>, object: String, counterparty: String) -> Result<Value, FactsError> {
    let asked = optional_minor(cx.params, &["amount"])?;
    // The charge's currency, always read from the rail: a refund of a charge is in its
    // currency whatever `currency` the request states, so a stated `jpy` on a `usd` charge
    // cannot slip the amount past the `usd` caps.
    let Some(obj) = cx.lookup(object)? else {
        return Ok(Value::unvaluable());
    };
    let received = json_minor(obj, "amount_received").or_else(|| json_minor(obj, "amount"));
    // More refunded than received: the object is inconsistent, not "nothing left" (never a
    // negative amount, which would lower the spend counted toward caps).
    let left = received
        .map(|r| r.saturating_sub(json_minor(obj, "amount_refunded").unwrap_or(0)))
        .filter(|left| *left >= 0);
    match (asked.or(left), json_currency(obj, "currency")) {
        (Some(minor), Some(currency)) => {
            Ok(Value::counted(Amount { minor, currency }).with_counterparty(counterparty))
        }
        _ => Ok(Value::unvaluable()),
    }
}

/// What is left of an object (`amount` less `<reduced_by>`), or the request's `amount`.
fn remainder(
    cx: &Cx<'_>,
    object: String,
    reduced_by: &str,
    counterparty_field: &str,
) -> Result<Value, FactsError> {
    let asked = optional_minor(cx.params, &["amount"])?;
    let Some(obj) = cx.lookup(object)? else {
        return Ok(Value::unvaluable());
    };
    let left = json_minor(obj, "amount")
        .map(|a| a.saturating_sub(json_minor(obj, reduced_by).unwrap_or(0)))
        .filter(|left| *left >= 0);
    match (asked.or(left), json_currency(obj, "currency")) {
        (Some(minor), Some(currency)) => Ok(Value::counted(Amount { minor, currency })
            .with_counterparty(json_str(obj, counterparty_field))),
        _ => Ok(Value::unvaluable()),
    }
}

fn application_fee_refund(cx: &Cx<'_>) -> Result<Value, FactsError> {
    remainder(
        cx,
        format!("/v1/application_fees/{}", cx.id(0)),
        "amount_refunded",
        "account",
    )
}

fn transfer_reversal(cx: &Cx<'_>) -> Result<Value, FactsError> {
    remainder(
        cx,
        format!("/v1/transfers/{}", cx.id(0)),
        "amount_reversed",
        "destination",
    )
}

fn payout_reverse(cx: &Cx<'_>) -> Result<Value, FactsError> {
    whole_object(
        cx,
        format!("/v1/payouts/{}", cx.id(0)),
        "amount",
        "destination",
    )
}

fn dispute_close(cx: &Cx<'_>) -> Result<Value, FactsError> {
    whole_object(cx, format!("/v1/disputes/{}", cx.id(0)), "amount", "charge")
}

/// Closing a dispute through its charge's legacy route: at most the charge's amount.
fn charge_dispute_close(cx: &Cx<'_>) -> Result<Value, FactsError> {
    whole_object(
        cx,
        format!("/v1/charges/{}", cx.id(0)),
        "amount",
        "customer",
    )
}

fn treasury_credit_reversal(cx: &Cx<'_>) -> Result<Value, FactsError> {
    received_reversal(cx, "received_credit", "received_credits")
}

fn treasury_debit_reversal(cx: &Cx<'_>) -> Result<Value, FactsError> {
    received_reversal(cx, "received_debit", "received_debits")
}

/// Reversing a Treasury received credit or debit moves its whole amount back.
fn received_reversal(cx: &Cx<'_>, param: &str, collection: &str) -> Result<Value, FactsError> {
    let id = required_str(cx.params, &[param])?;
    if !is_object_id(id) {
        return Ok(Value::unvaluable());
    }
    whole_object(
        cx,
        format!("/v1/treasury/{collection}/{id}"),
        "amount",
        "financial_account",
    )
}

fn v2_payout_intent_confirm(cx: &Cx<'_>) -> Result<Value, FactsError> {
    let path = format!("/v2/money_management/payout_intents/{}", cx.id(0));
    let Some(obj) = cx.lookup(path)? else {
        return Ok(Value::unvaluable());
    };
    let amount = obj.get("amount");
    match (
        amount.and_then(|a| json_minor(a, "value")),
        amount.and_then(|a| json_currency(a, "currency")),
    ) {
        // Counted when the payout intent was created.
        (Some(minor), Some(currency)) => {
            Ok(Value::seen(Amount { minor, currency }).settling(cx.id(0)))
        }
        _ => Ok(Value::unvaluable()),
    }
}

fn invoice_path(id: &str) -> String {
    format!("/v1/invoices/{id}")
}

/// Paying an invoice collects what remains due on it.
fn invoice_pay(cx: &Cx<'_>) -> Result<Value, FactsError> {
    whole_object(cx, invoice_path(cx.id(0)), "amount_remaining", "customer")
}

/// Finalizing commits the customer to the amount due.
fn invoice_due(cx: &Cx<'_>) -> Result<Value, FactsError> {
    whole_object(cx, invoice_path(cx.id(0)), "amount_due", "customer")
}

fn quote_total(cx: &Cx<'_>) -> Result<Value, FactsError> {
    whole_object(
        cx,
        format!("/v1/quotes/{}", cx.id(0)),
        "amount_total",
        "customer",
    )
}

fn issuing_authorization_approve(cx: &Cx<'_>) -> Result<Value, FactsError> {
    let asked = optional_minor(cx.params, &["amount"])?;
    let Some(auth) = cx.lookup(format!("/v1/issuing/authorizations/{}", cx.id(0)))? else {
        return Ok(Value::unvaluable());
    };
    let pending = auth
        .get("pending_request")
        .and_then(|p| json_minor(p, "amount"));
    let minor = asked.or(pending).or_else(|| json_minor(auth, "amount"));
    match (minor, json_currency(auth, "currency")) {
        (Some(minor), Some(currency)) => Ok(Value::counted(Amount { minor, currency })
            .with_counterparty(json_str(auth, "cardholder"))),
        _ => Ok(Value::unvaluable()),
    }
}

/// The object's `field` in its `currency`.
fn whole_object(
    cx: &Cx<'_>,
    path: String,
    field: &str,
    counterparty_field: &str,
) -> Result<Value, FactsError> {
    let Some(obj) = cx.lookup(path)? else {
        return Ok(Value::unvaluable());
    };
    Ok(match object_amount(obj, field) {
        Some(amount) => Value::counted(amount),
        None => Value::unvaluable(),
    }
    .with_counterparty(json_str(obj, counterparty_field)))
}

/// A credit note refunds or credits part of an invoice: its stated total, or else what its
/// lines add up to, or else (upper bound) the invoice's total. Its currency is the invoice's.
fn credit_note(cx: &Cx<'_>) -> Result<Value, FactsError> {
    let invoice_id = required_str(cx.params, &["invoice"])?;
    if !is_object_id(invoice_id) {
        return Ok(Value::unvaluable());
    }
    let Some(invoice) = cx.lookup(invoice_path(invoice_id))? else {
        return Ok(Value::unvaluable());
    };
    let Some(currency) = json_currency(invoice, "currency") else {
        return Ok(Value::unvaluable());
    };
    let parts = ["refund_amount", "credit_amount", "out_of_band_amount"];
    let mut stated = None;
    for part in parts {
        if let Some(minor) = optional_minor(cx.params, &[part])? {
            stated = Some(checked_sum(stated.unwrap_or(0), minor, part)?);
        }
    }
    let minor = match (optional_minor(cx.params, &["amount"])?, stated) {
        (Some(amount), _) => Some(amount),
        (None, Some(sum)) => Some(sum),
        (None, None) => json_minor(invoice, "total"),
    };
    Ok(match minor {
        Some(minor) => Value::counted(Amount { minor, currency }),
        None => Value::unvaluable(),
    }
    .with_counterparty(json_str(invoice, "customer")))
}

// ---------------------------------------------------------------------------------------------
// Line items: checkout sessions, payment links, quotes, subscriptions, invoices

/// A sum of priced items in one currency, with the billing interval of recurring ones.
#[derive(Default)]
struct Basket {
    minor: i64,
    currency: Option<Currency>,
    interval: String,
    /// An item the guard could not price (a stored price without a unit amount, a tier...).
    unpriced: bool,
}

impl Basket {
    fn add(&mut self, minor: i64, currency: Currency, field: &str) -> Result<(), FactsError> {
        if *self.currency.get_or_insert_with(|| currency.clone()) != currency {
            return Err(FactsError::MixedCurrencies);
        }
        self.minor = checked_sum(self.minor, minor, field)?;
        Ok(())
    }

    fn value(self, counterparty: String) -> Value {
        match (self.unpriced, self.currency) {
            (false, Some(currency)) => Value {
                interval: self.interval.clone(),
                ..Value::counted(Amount {
                    minor: self.minor,
                    currency,
                })
            },
            (false, None) => Value::none(),
            (true, _) => Value::unvaluable(),
        }
        .with_counterparty(counterparty)
    }
}

/// One item's unit price: `price_data[unit_amount]` (+ `[currency]`, `[recurring][interval]`),
/// or a stored Price looked up at the rail (`price`, or `pricing[price]` on invoice lines).
struct Priced {
    unit: Option<i64>,
    currency: Option<Currency>,
    interval: String,
}

/// The Price ids of a list of items, to look up in one round.
fn price_ids(params: &FormValue, list: &str, count: usize) -> Result<Vec<String>, FactsError> {
    let mut ids = Vec::new();
    for i in 0..count {
        let index = i.to_string();
        for path in [
            vec![list, &index, "price"],
            vec![list, &index, "pricing", "price"],
        ] {
            // Only Stripe ids: `item_price` never looks up another, so neither may this.
            if let Some(id) = str_at(params, &path)?.filter(|id| is_object_id(id)) {
                ids.push(price_path(id));
            }
        }
    }
    Ok(ids)
}

/// Where a stored Price is read: with its other currencies, which Stripe bills in when the
/// request (or the customer) is in one of them.
fn price_path(id: &str) -> String {
    format!("/v1/prices/{id}?expand[]=currency_options")
}

/// One item's unit price in the currency `want` (the request's, or the invoice's), or in the
/// price's own when the request names none and the price has no other currency. A price
/// given both ways (`price` and `price_data`), a metered price, a price without a unit amount
/// (tiers, decimals) or in a currency it has no option for: not priced (not valued).
fn item_price(cx: &Cx<'_>, item: &[&str], want: Option<&Currency>) -> Result<Priced, FactsError> {
    let unpriced = Priced {
        unit: None,
        currency: None,
        interval: String::new(),
    };
    let stored = match str_at(cx.params, &join(item, &["price"]))? {
        Some(id) => Some(id),
        None => str_at(cx.params, &join(item, &["pricing", "price"]))?,
    };
    if cx.params.path(&join(item, &["price_data"])).is_some() {
        if stored.is_some() {
            return Ok(unpriced);
        }
        let unit = match str_at(cx.params, &join(item, &["price_data", "unit_amount"]))? {
            Some(raw) => Some(parse_minor(
                &field_name(&join(item, &["price_data", "unit_amount"])),
                raw,
            )?),
            // `unit_amount_decimal` (fractions of a minor unit) and tiers: not valued here.
            None => None,
        };
        return Ok(Priced {
            unit,
            currency: optional_currency(cx.params, &join(item, &["price_data", "currency"]))?,
            interval: str_at(
                cx.params,
                &join(item, &["price_data", "recurring", "interval"]),
            )?
            .unwrap_or_default()
            .to_owned(),
        });
    }
    let Some(id) = stored.filter(|id| is_object_id(id)) else {
        return Ok(unpriced);
    };
    let Some(price) = cx.lookup(price_path(id))? else {
        return Ok(unpriced);
    };
    let recurring = price.get("recurring").filter(|r| !r.is_null());
    if recurring.is_some_and(|r| json_str(r, "usage_type") == "metered") {
        return Ok(unpriced);
    }
    let own = json_currency(price, "currency");
    let options = price
        .get("currency_options")
        .and_then(Json::as_object)
        .map(|o| {
            o.keys()
                .filter(|k| Some(k.as_str()) != own.as_ref().map(Currency::as_str))
                .count()
        })
        .unwrap_or(0);
    let (unit, currency) = match (want, own) {
        (Some(want), Some(own)) if *want == own => (json_minor(price, "unit_amount"), Some(own)),
        (Some(want), _) => (
            price
                .get("currency_options")
                .and_then(|o| o.get(want.as_str()))
                .and_then(|o| json_minor(o, "unit_amount")),
            Some(want.clone()),
        ),
        // No currency named: Stripe may bill in the customer's currency, which one of the
        // price's other currencies could be.
        (None, own) if options == 0 => (json_minor(price, "unit_amount"), own),
        (None, _) => (None, None),
    };
    Ok(Priced {
        unit,
        currency,
        interval: recurring
            .map(|r| json_str(r, "interval"))
            .unwrap_or_default(),
    })
}

/// `item` followed by `rest`: the path of a field of one item.
fn join<'a>(item: &[&'a str], rest: &[&'a str]) -> Vec<&'a str> {
    item.iter().chain(rest).copied().collect()
}

/// The most of one item the customer can end up with: `quantity` (default 1), or
/// `adjustable_quantity[maximum]` when they may raise it.
fn item_quantity(params: &FormValue, item: &[&str]) -> Result<i64, FactsError> {
    let mut quantity = optional_minor(params, &join(item, &["quantity"]))?.unwrap_or(1);
    if str_at(params, &join(item, &["adjustable_quantity", "enabled"]))? == Some("true") {
        let maximum = optional_minor(params, &join(item, &["adjustable_quantity", "maximum"]))?;
        quantity = quantity.max(maximum.unwrap_or(CHECKOUT_DEFAULT_MAX_QUANTITY));
    }
    Ok(quantity)
}

/// Adds every item of `params[list]` to the basket: unit price × quantity, or the item's own
/// `amount` (invoice lines). Stored prices are looked up in one round first.
fn add_items(
    cx: &Cx<'_>,
    basket: &mut Basket,
    list: &str,
    fallback_currency: Option<&Currency>,
) -> Result<(), FactsError> {
    let Some(items) = cx.params.get(list) else {
        return Ok(());
    };
    let count = list_len(items, list)?;
    let ids = price_ids(cx.params, list, count)?;
    if ids.len() > MAX_LOOKUPS {
        // More stored prices than the guard looks up for one request: not valued (rather
        // than one round trip per price).
        basket.unpriced = true;
        return Ok(());
    }
    cx.lookup_all(ids)?;
    for i in 0..count {
        let index = i.to_string();
        let item = [list, index.as_str()];
        let field = format!("{list}[{i}]");
        if let Some(minor) = optional_minor(cx.params, &[list, &index, "amount"])? {
            match fallback_currency {
                Some(c) => basket.add(minor, c.clone(), &field)?,
                None => basket.unpriced = true,
            }
            continue;
        }
        // An existing item referred to by id keeps its own quantity unless one is given.
        if cx.params.path(&[list, &index, "id"]).is_some()
            && cx.params.path(&[list, &index, "quantity"]).is_none()
        {
            basket.unpriced = true;
            continue;
        }
        let priced = item_price(cx, &item, fallback_currency)?;
        let quantity = item_quantity(cx.params, &item)?;
        match (
            priced.unit,
            priced.currency.or_else(|| fallback_currency.cloned()),
        ) {
            (Some(unit), Some(currency)) => {
                let minor = unit
                    .checked_mul(quantity)
                    .ok_or_else(|| FactsError::BadAmount {
                        field: format!("{field}[quantity]"),
                        value: "unit_amount × quantity overflows".into(),
                    })?;
                basket.add(minor, currency, &field)?;
            }
            _ => basket.unpriced = true,
        }
        if basket.interval.is_empty() {
            basket.interval = priced.interval;
        }
    }
    Ok(())
}

/// The most expensive shipping option the customer may pick.
fn add_shipping(cx: &Cx<'_>, basket: &mut Basket) -> Result<(), FactsError> {
    let Some(options) = cx.params.get("shipping_options") else {
        return Ok(());
    };
    let count = list_len(options, "shipping_options")?;
    let mut most: Option<(i64, Currency)> = None;
    for i in 0..count {
        let index = i.to_string();
        let (minor, currency) = if let Some(id) =
            str_at(cx.params, &["shipping_options", &index, "shipping_rate"])?
        {
            let rate = if is_object_id(id) {
                cx.lookup(format!("/v1/shipping_rates/{id}"))?
            } else {
                None
            };
            let fixed = rate.and_then(|r| r.get("fixed_amount"));
            (
                fixed.and_then(|f| json_minor(f, "amount")),
                fixed.and_then(|f| json_currency(f, "currency")),
            )
        } else {
            let base = [
                "shipping_options",
                index.as_str(),
                "shipping_rate_data",
                "fixed_amount",
            ];
            let at = |leaf: &'static str| base.iter().copied().chain([leaf]).collect::<Vec<_>>();
            (
                optional_minor(cx.params, &at("amount"))?,
                optional_currency(cx.params, &at("currency"))?,
            )
        };
        match (minor, currency) {
            (Some(minor), Some(currency)) if most.as_ref().is_none_or(|(m, _)| minor > *m) => {
                most = Some((minor, currency));
            }
            (Some(_), Some(_)) => {}
            _ => basket.unpriced = true,
        }
    }
    if let Some((minor, currency)) = most {
        basket.add(minor, currency, "shipping_options")?;
    }
    Ok(())
}

/// Everything the customer will pay through a checkout session: every line item at its most
/// quantity, the optional items, and the dearest shipping option. A subscription-mode session
/// counts its first period. Setup mode collects nothing.
fn checkout_session(cx: &Cx<'_>) -> Result<Value, FactsError> {
    if str_at(cx.params, &["mode"])? == Some("setup") {
        return Ok(Value::none());
    }
    if cx.params.get("line_items").is_none() {
        return Err(FactsError::MissingField("line_items".into()));
    }
    checkout_basket(cx)
}

fn checkout_basket(cx: &Cx<'_>) -> Result<Value, FactsError> {
    let currency = optional_currency(cx.params, &["currency"])?;
    let mut basket = Basket {
        currency: currency.clone(),
        ..Basket::default()
    };
    add_items(cx, &mut basket, "line_items", currency.as_ref())?;
    add_items(cx, &mut basket, "optional_items", currency.as_ref())?;
    add_shipping(cx, &mut basket)?;
    Ok(basket.value(counterparty(cx.params, &[&["customer"]])?))
}

/// Updating a session's line items or shipping options is valued like a new session from
/// the items it states; one that refers to existing items by id cannot be valued.
fn checkout_session_update(cx: &Cx<'_>) -> Result<Value, FactsError> {
    if cx.params.get("line_items").is_none() && cx.params.get("shipping_options").is_none() {
        return Ok(Value::none());
    }
    checkout_basket(cx)
}

/// A payment link or a quote commits what its line items add up to (valued like a checkout
/// session); one that changes no line item commits nothing new.
fn line_items(cx: &Cx<'_>) -> Result<Value, FactsError> {
    if cx.params.get("line_items").is_none() {
        return Ok(Value::none());
    }
    checkout_basket(cx)
}

/// A subscription counts its first period: every item's price × quantity, plus one-time
/// `add_invoice_items`. Policies see the interval.
fn subscription(cx: &Cx<'_>) -> Result<Value, FactsError> {
    if cx.params.get("items").is_none() && cx.params.get("add_invoice_items").is_none() {
        return Ok(Value::none());
    }
    if cx.params.get("backdate_start_date").is_some() {
        // The first invoice prorates the whole backdated span: Stripe's figure, not ours.
        return Ok(Value::unvaluable());
    }
    let currency = optional_currency(cx.params, &["currency"])?;
    let mut basket = Basket {
        currency: currency.clone(),
        ..Basket::default()
    };
    add_items(cx, &mut basket, "items", currency.as_ref())?;
    add_items(cx, &mut basket, "add_invoice_items", currency.as_ref())?;
    Ok(basket.value(counterparty(cx.params, &[&["customer"]])?))
}

fn subscription_item(cx: &Cx<'_>) -> Result<Value, FactsError> {
    let has_price = cx.params.get("price").is_some() || cx.params.get("price_data").is_some();
    if !has_price && cx.params.get("quantity").is_none() {
        return Ok(Value::none());
    }
    if !has_price {
        // A new quantity of the item's current price. A new item without a price has none
        // to look up (`/v1/subscription_items/` would be the list).
        if cx.ids.is_empty() {
            return Ok(Value::unvaluable());
        }
        let Some(item) = cx.lookup(format!("/v1/subscription_items/{}", cx.id(0)))? else {
            return Ok(Value::unvaluable());
        };
        let price = item.get("price");
        let quantity = required_minor(cx.params, &["quantity"])?;
        return Ok(
            match (
                price.and_then(|p| json_minor(p, "unit_amount")),
                price.and_then(|p| json_currency(p, "currency")),
            ) {
                (Some(unit), Some(currency)) => match unit.checked_mul(quantity) {
                    Some(minor) => Value::counted(Amount { minor, currency }),
                    None => Value::unvaluable(),
                },
                _ => Value::unvaluable(),
            },
        );
    }
    if !cx.ids.is_empty() && cx.params.get("quantity").is_none() {
        // A new price for an existing item: Stripe keeps the item's quantity.
        return Ok(Value::unvaluable());
    }
    let priced = item_price(cx, &[], None)?;
    let quantity = item_quantity(cx.params, &[])?;
    match (priced.unit, priced.currency) {
        (Some(unit), Some(currency)) => {
            let minor = unit
                .checked_mul(quantity)
                .ok_or_else(|| bad_amount("quantity", "overflow"))?;
            Ok(Value {
                interval: priced.interval,
                ..Value::counted(Amount { minor, currency })
            })
        }
        _ => Ok(Value::unvaluable()),
    }
}

/// Lines added to or changed on an invoice, in the invoice's currency.
fn invoice_lines(cx: &Cx<'_>) -> Result<Value, FactsError> {
    let Some(invoice) = cx.lookup(invoice_path(cx.id(0)))? else {
        return Ok(Value::unvaluable());
    };
    let currency = json_currency(invoice, "currency");
    let mut basket = Basket::default();
    add_items(cx, &mut basket, "lines", currency.as_ref())?;
    Ok(basket.value(json_str(invoice, "customer")))
}

fn invoice_line(cx: &Cx<'_>) -> Result<Value, FactsError> {
    let priced_fields = ["amount", "price_data", "pricing", "price", "quantity"];
    if priced_fields.iter().all(|f| cx.params.get(f).is_none()) {
        return Ok(Value::none());
    }
    let Some(invoice) = cx.lookup(invoice_path(cx.id(0)))? else {
        return Ok(Value::unvaluable());
    };
    single_item(
        cx,
        json_currency(invoice, "currency"),
        json_str(invoice, "customer"),
    )
}

/// An invoice item: its `amount`, or a price × quantity; the currency stated, the price's, or
/// the customer's (or, on an update, the item's own).
fn invoice_item(cx: &Cx<'_>) -> Result<Value, FactsError> {
    let priced_fields = [
        "amount",
        "price_data",
        "pricing",
        "price",
        "quantity",
        "unit_amount",
        "unit_amount_decimal",
    ];
    if priced_fields.iter().all(|f| cx.params.get(f).is_none()) {
        return Ok(Value::none());
    }
    let mut currency = optional_currency(cx.params, &["currency"])?;
    let mut customer = str_at(cx.params, &["customer"])?
        .unwrap_or_default()
        .to_owned();
    if currency.is_none() {
        let object = if cx.ids.is_empty() {
            is_object_id(&customer).then(|| format!("/v1/customers/{customer}"))
        } else {
            Some(format!("/v1/invoiceitems/{}", cx.id(0)))
        };
        if let Some(obj) = object.map(|p| cx.lookup(p)).transpose()?.flatten() {
            currency = json_currency(obj, "currency");
            if customer.is_empty() {
                customer = json_str(obj, "customer");
            }
        }
    }
    single_item(cx, currency, customer)
}

fn single_item(
    cx: &Cx<'_>,
    currency: Option<Currency>,
    counterparty: String,
) -> Result<Value, FactsError> {
    if let Some(minor) = optional_minor(cx.params, &["amount"])? {
        return Ok(match currency {
            Some(currency) => Value::counted(Amount { minor, currency }),
            None => Value::unvaluable(),
        }
        .with_counterparty(counterparty));
    }
    let quantity = item_quantity(cx.params, &[])?;
    if let Some(unit) = optional_minor(cx.params, &["unit_amount"])? {
        return Ok(match (unit.checked_mul(quantity), currency) {
            (Some(minor), Some(currency)) => Value::counted(Amount { minor, currency }),
            (None, _) => return Err(bad_amount("quantity", "unit_amount × quantity overflows")),
            _ => Value::unvaluable(),
        }
        .with_counterparty(counterparty));
    }
    let priced = item_price(cx, &[], currency.as_ref())?;
    Ok(match (priced.unit, priced.currency.or(currency)) {
        (Some(unit), Some(currency)) => match unit.checked_mul(quantity) {
            Some(minor) => Value::counted(Amount { minor, currency }),
            None => return Err(bad_amount("quantity", "unit_amount × quantity overflows")),
        },
        _ => Value::unvaluable(),
    }
    .with_counterparty(counterparty))
}

// ---------------------------------------------------------------------------------------------
// Reading parameters and objects

/// Stripe ids in lookups: `[A-Za-z0-9_]+`, so a parameter cannot steer the lookup elsewhere.
fn is_object_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 255 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A non-negative integer amount field of a rail object.
fn json_minor(obj: &Json, field: &str) -> Option<i64> {
    obj.get(field)?
        .as_i64()
        .filter(|m| (0..=MAX_AMOUNT_MINOR).contains(m))
}

fn json_currency(obj: &Json, field: &str) -> Option<Currency> {
    Currency::parse(obj.get(field)?.as_str()?).ok()
}

fn json_str(obj: &Json, field: &str) -> String {
    obj.get(field)
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn object_amount(obj: &Json, field: &str) -> Option<Amount> {
    Some(Amount {
        minor: json_minor(obj, field)?,
        currency: json_currency(obj, "currency")?,
    })
}

fn list_len(value: &FormValue, name: &str) -> Result<usize, FactsError> {
    match value {
        FormValue::List(items) => Ok(items.len()),
        // `a=` clears a list in Stripe's form encoding.
        FormValue::Str(s) if s.is_empty() => Ok(0),
        _ => Err(FactsError::BadShape(name.to_owned())),
    }
}

fn checked_sum(a: i64, b: i64, field: &str) -> Result<i64, FactsError> {
    a.checked_add(b)
        .filter(|s| *s <= MAX_AMOUNT_MINOR.saturating_mul(1000))
        .ok_or_else(|| bad_amount(field, "sum overflows"))
}

fn bad_amount(field: &str, value: &str) -> FactsError {
    FactsError::BadAmount {
        field: field.to_owned(),
        value: truncate(value),
    }
}

/// `amount` and `currency`, both required.
pub(crate) fn required_amount(form: &FormValue, field: &'static str) -> Result<Amount, FactsError> {
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
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_amount(field, raw));
    }
    match raw.parse::<i64>() {
        Ok(minor) if minor <= MAX_AMOUNT_MINOR => Ok(minor),
        _ => Err(bad_amount(field, raw)),
    }
}

/// Like [`parse_minor`], with an optional leading `-`.
fn parse_signed_minor(field: &str, raw: &str) -> Result<i64, FactsError> {
    match raw.strip_prefix('-') {
        Some(rest) => Ok(-parse_minor(field, rest)?),
        None => parse_minor(field, raw),
    }
}

/// The first candidate parameter present, or `""`.
pub(crate) fn counterparty(form: &FormValue, candidates: &[&[&str]]) -> Result<String, FactsError> {
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
pub(crate) fn str_at<'a>(
    form: &'a FormValue,
    path: &[&str],
) -> Result<Option<&'a str>, FactsError> {
    match form.path(path) {
        None => Ok(None),
        Some(FormValue::Str(s)) => Ok(Some(s)),
        Some(_) => Err(FactsError::BadShape(field_name(path))),
    }
}

/// `["a", "b", "c"]` → `a[b][c]`.
pub(crate) fn field_name(path: &[&str]) -> String {
    match path.split_first() {
        Some((first, rest)) => rest
            .iter()
            .fold((*first).to_owned(), |acc, p| format!("{acc}[{p}]")),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests;
