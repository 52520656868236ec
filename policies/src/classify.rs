//! PROXY.md step 2, "Classify": which Stripe operation a request is, and what it is worth.
//!
//! The operation table ([`crate::operations`]) names every route of Stripe's pinned surface;
//! its valuers ([`crate::valuation`]) read the money from the parameters or from the object at
//! the rail. A POST or DELETE the table does not know is the action `unknown` (denied unless
//! a policy names it); a GET it does not know is `read.unlisted`. Extraction fails closed: an
//! amount the guard cannot value is an error or "not valued", never a zero.
//!
//! Where parameters come from, as Stripe reads them: `/v1` bodies are form-encoded, `/v2`
//! bodies JSON; a POST must not carry a query string (Stripe would merge it into the body,
//! unseen); a DELETE carries its parameters in the query string, as the official SDKs send them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::form::{FormError, FormLimits, FormValue, parse_form, parse_json};
use crate::money::Amount;
use crate::operations::{Valuation, operation_table};
use crate::valuation::{Cx, Lookups, Value};

/// Largest amount accepted in any amount field, in minor units. Stripe allows at most eight
/// digits (99,999,999.99 USD); three more leave room for zero-decimal currencies and future
/// limits while keeping sums of a few thousand line items far from `i64` overflow.
pub const MAX_AMOUNT_MINOR: i64 = 99_999_999_999;

/// Longest path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 2048;

/// Longest offending value quoted back in an error message, in characters.
const ERROR_VALUE_CHARS: usize = 32;

/// Cedar action of a POST or DELETE the operation table does not know.
pub const UNKNOWN_OPERATION: &str = "unknown";
/// Cedar action of a GET the operation table does not know (in the `read` group).
pub const UNLISTED_READ: &str = "read.unlisted";

/// The classes of PROXY.md step 2 (Cedar action groups of the same names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationClass {
    /// Money is collected or leaves now (`move_money`).
    MoveMoney,
    /// An obligation to pay later: subscriptions, invoices, quotes, payment links, card limits.
    CommitMoney,
    /// What the account is or who receives its data: webhook endpoints, accounts, keys.
    Admin,
    /// Any other mutation.
    Write,
    /// Any GET.
    Read,
    /// A POST or DELETE the operation table does not know.
    Unknown,
}

impl OperationClass {
    /// The snake_case name, as in the table and the Cedar groups.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationClass::MoveMoney => "move_money",
            OperationClass::CommitMoney => "commit_money",
            OperationClass::Admin => "admin",
            OperationClass::Write => "write",
            OperationClass::Read => "read",
            OperationClass::Unknown => "unknown",
        }
    }

    /// Whether an operation of this class moves or commits money (and so must be valued).
    pub fn is_money(self) -> bool {
        matches!(
            self,
            OperationClass::MoveMoney | OperationClass::CommitMoney
        )
    }
}

/// What the guard knows about a request once classified; the input to policies and caps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFacts {
    /// Operation name, also the Cedar action id: `"payment_intents.create"`, `"refunds.list"`,
    /// `"unknown"`.
    pub operation: String,
    /// The operation's class.
    pub class: OperationClass,
    /// HTTP method, upper case.
    pub method: String,
    /// Request path without the query string.
    pub path: String,
    /// What the request is worth, when the guard can tell (`resource.amount`/`currency`).
    pub amount: Option<Amount>,
    /// Minor units of `amount`'s currency that count toward spending caps; `None` when the
    /// request adds nothing to spend (a confirm of an amount counted at creation, a read).
    pub counted: Option<i64>,
    /// `false` when the guard cannot tell what a money operation is worth (held unless a policy
    /// names the action explicitly).
    pub valued: bool,
    /// Customer, destination or connected account id; `""` when none.
    pub counterparty: String,
    /// The object whose creation counted the money this request moves (the PaymentIntent a
    /// confirm or capture settles); `""` when none. When the guard never counted that creation
    /// (the object was made outside the guard), the store counts this request in full.
    #[serde(default)]
    pub settles: String,
    /// The connected account acted on (`Stripe-Account`, or `Stripe-Context`); `""` = platform.
    pub account: String,
    /// A subscription's billing interval (`month`, `year`, ...); `""` when none.
    pub interval: String,
    /// `expand[]` values, each also by its last field name (`card.number` gives `number`).
    pub expand: Vec<String>,
    /// Stripe `metadata[key]=value` pairs (Cedar tags of the request).
    pub metadata: BTreeMap<String, String>,
}

impl RequestFacts {
    /// Whether the request adds to spend.
    pub fn counts_toward_caps(&self) -> bool {
        self.counted.is_some() && self.amount.is_some()
    }
}

/// A request as it arrived, before classification.
#[derive(Clone, Copy, Debug)]
pub struct RawRequest<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    /// The raw query string without `?`; `""` when none.
    pub query: &'a str,
    /// The `Content-Type` header, when present.
    pub content_type: Option<&'a str>,
    /// Body bytes.
    pub body: &'a [u8],
    /// The connected account (`Stripe-Account` / `Stripe-Context`), `""` for the platform.
    pub account: &'a str,
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
    /// A query string on a POST: Stripe merges it into the body, where the guard would not see it.
    #[error("a POST must not carry a query string; send every parameter in the body")]
    QueryOnPost,
    /// A DELETE with parameters both in the query string and in the body.
    #[error("a DELETE carries its parameters in the query string or the body, not both")]
    QueryAndBody,
    /// A non-empty body that is not of the version's content type.
    #[error("content type `{got}` is not accepted here; send {expected}")]
    UnsupportedContentType {
        /// What the path's API version takes.
        expected: &'static str,
        /// What the request said, shortened.
        got: String,
    },
    /// The valuer needs these objects from the rail first (not an error the agent sees: the
    /// proxy fetches them and classifies again).
    #[error("the guard must look up {0:?} at the rail first")]
    NeedsLookup(Vec<String>),
    /// A currency that is not three ASCII letters.
    #[error("invalid currency `{0}`")]
    BadCurrency(String),
    /// A parameter that must be a single value was given as a map or list, or the reverse.
    #[error("parameter `{0}` has the wrong shape")]
    BadShape(String),
}

/// Classifies a form-encoded request on the platform account, with no rail to look objects
/// up at (an operation valued by lookup is then "not valued"). For simulation and tests.
pub fn classify(
    method: &str,
    path: &str,
    body: &[u8],
    limits: &FormLimits,
) -> Result<RequestFacts, FactsError> {
    let content_type = if path.starts_with("/v2/") {
        "application/json"
    } else {
        "application/x-www-form-urlencoded"
    };
    let raw = RawRequest {
        method,
        path,
        query: "",
        content_type: Some(content_type),
        body,
        account: "",
    };
    classify_request(&raw, limits, &Lookups::offline())
}

/// Classifies a request (PROXY.md step 2). `Err(FactsError::NeedsLookup(paths))` asks the
/// caller to GET those objects from the rail, add them to `lookups` and call again.
pub fn classify_request(
    req: &RawRequest<'_>,
    limits: &FormLimits,
    lookups: &Lookups,
) -> Result<RequestFacts, FactsError> {
    let method = match req.method {
        m @ ("GET" | "POST" | "DELETE") => m,
        other => return Err(FactsError::UnsupportedMethod(truncate(other))),
    };
    let segments = path_segments(req.path)?;
    let params = params(method, req, limits)?;
    let found = operation_table().find(method, &segments);
    let (operation, class, value) = match &found {
        Some((op, ids)) => {
            let cx = Cx {
                params: &params,
                ids,
                lookups,
            };
            let value = match op.valuation {
                Valuation::None => Value::none(),
                Valuation::Unvaluable => Value::default(),
                Valuation::Fields(valuer) | Valuation::Lookup(valuer) => valuer(&cx)?,
            };
            match value.reclassified {
                Some((action, class)) => (action, class, value),
                None => (op.action, op.class, value),
            }
        }
        None if method == "GET" => (UNLISTED_READ, OperationClass::Read, Value::none()),
        None => (UNKNOWN_OPERATION, OperationClass::Unknown, Value::default()),
    };
    Ok(RequestFacts {
        operation: operation.to_owned(),
        class,
        method: method.to_owned(),
        path: req.path.to_owned(),
        amount: value.amount,
        counted: value.counted,
        valued: value.valued,
        counterparty: value.counterparty,
        settles: value.settles,
        account: req.account.to_owned(),
        interval: value.interval,
        expand: expand(&params)?,
        metadata: if method == "GET" {
            BTreeMap::new()
        } else {
            metadata(&params)?
        },
    })
}

/// The request's parameters, from where Stripe reads them.
fn params(
    method: &str,
    req: &RawRequest<'_>,
    limits: &FormLimits,
) -> Result<FormValue, FactsError> {
    let has_body = !req.body.is_empty();
    match method {
        // Stripe ignores GET bodies, so the guard does too; `expand[]` is in the query.
        "GET" => Ok(parse_form(req.query.as_bytes(), limits)?),
        "POST" if !req.query.is_empty() => Err(FactsError::QueryOnPost),
        "DELETE" if !req.query.is_empty() && has_body => Err(FactsError::QueryAndBody),
        "DELETE" if !req.query.is_empty() => Ok(parse_form(req.query.as_bytes(), limits)?),
        _ if !has_body => Ok(FormValue::Map(BTreeMap::new())),
        _ => {
            let v2 = req.path.starts_with("/v2/");
            let media = req
                .content_type
                .and_then(|ct| ct.split(';').next())
                .map(|m| m.trim().to_ascii_lowercase())
                .unwrap_or_default();
            match (v2, media.as_str()) {
                (false, "application/x-www-form-urlencoded") => Ok(parse_form(req.body, limits)?),
                (true, "application/json") => Ok(parse_json(req.body, limits)?),
                _ => Err(FactsError::UnsupportedContentType {
                    expected: if v2 {
                        "application/json"
                    } else {
                        "application/x-www-form-urlencoded"
                    },
                    got: truncate(req.content_type.unwrap_or("none")),
                }),
            }
        }
    }
}

/// `expand[]` values, each also by its last field name, so a policy that forbids `number`
/// catches `card.number` and `data.number` alike.
fn expand(params: &FormValue) -> Result<Vec<String>, FactsError> {
    let values: Vec<&str> = match params.get("expand") {
        None => Vec::new(),
        Some(FormValue::Str(s)) if s.is_empty() => Vec::new(),
        Some(FormValue::Str(s)) => vec![s.as_str()],
        Some(FormValue::List(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| FactsError::BadShape("expand".into()))
            })
            .collect::<Result<_, _>>()?,
        Some(FormValue::Map(_)) => return Err(FactsError::BadShape("expand".into())),
    };
    let mut out: Vec<String> = Vec::with_capacity(values.len() * 2);
    for v in values {
        out.push(v.to_owned());
        if let Some((_, last)) = v.rsplit_once('.') {
            out.push(last.to_owned());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
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

/// Shortens an untrusted value for an error message, on a character boundary.
pub(crate) fn truncate(value: &str) -> String {
    match value.char_indices().nth(ERROR_VALUE_CHARS) {
        Some((at, _)) => format!("{}…", &value[..at]),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests;
