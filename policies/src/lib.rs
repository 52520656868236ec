//! Pure policy logic of Payment Guard: what a Stripe request is and how much money it moves
//! ([`classify_request`], through the generated [`operation_table`], over form or JSON bodies), the organization's
//! Cedar policies ([`compile`]), its spending caps ([`Cap`]), and the verdict that combines
//! them ([`evaluate`]: allow, hold for human approval, or deny).
//!
//! No I/O and no clock: the store supplies spend totals and the time (unix seconds), and keeps
//! the compiled policies. Untrusted input never panics here; whatever cannot be valued or
//! evaluated is an error or a denial (fail closed). The contracts are `POLICIES.md` and the
//! "Classify" step of `PROXY.md`.

#![warn(missing_docs)]

mod caps;
mod classify;
mod form;
mod money;
mod operations;
mod policy_set;
mod valuation;
mod verdict;

pub use caps::{Cap, CapCheck, CapFieldError, CapInterval, CapScope, OnExceed, window_start};
pub use classify::{
    FactsError, MAX_AMOUNT_MINOR, MAX_PATH_BYTES, OperationClass, RawRequest, RequestFacts,
    UNKNOWN_OPERATION, UNLISTED_READ, classify, classify_request,
};
pub use form::{FormError, FormLimits, FormValue, parse_form, parse_json};
pub use money::{Amount, Currency};
pub use operations::{Operation, OperationTable, Valuation, operation_table};
pub use policy_set::{
    CompiledPolicies, DEFAULT_POLICY_TEXT, Diagnostic, MAX_APPROVALS,
    PREVIOUS_DEFAULT_POLICY_TEXTS, PolicyEffect, PolicyMeta, SCHEMA_TEXT, compile, compile_stored,
};
pub use valuation::{Lookups, MAX_LOOKUPS};
pub use verdict::{
    EvalInput, Outcome, Prepared, SpendContext, Verdict, evaluate, evaluate_prepared, prepare,
};
