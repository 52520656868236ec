//! POLICIES.md "Three outcomes from two effects": evaluates the Cedar policies for one request,
//! reads `@hold` to get the third outcome, and combines the result with the spending caps
//! (deny > hold > allow). Fails closed: any evaluation error is a denial.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::OnceLock;

use cedar_policy::{
    AuthorizationError, Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, Request, RestrictedExpression,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::caps::{CapCheck, OnExceed};
use crate::classify::RequestFacts;
use crate::policy_set::{CompiledPolicies, PolicyEffect, PolicyMeta};

/// Spend in minor units of the request's currency, before this request, per calendar window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendContext {
    /// Since 00:00 UTC today.
    pub day: i64,
    /// Since Monday 00:00 UTC.
    pub week: i64,
    /// Since the 1st, 00:00 UTC.
    pub month: i64,
}

/// Everything a decision depends on besides the policies and caps.
#[derive(Clone, Copy, Debug)]
pub struct EvalInput<'a> {
    /// The organization (Cedar `Organization::"<org_id>"`).
    pub org_id: &'a str,
    /// The agent (Cedar principal `Agent::"<agent_id>"`).
    pub agent_id: &'a str,
    /// The agent's display name (`principal.name`).
    pub agent_name: &'a str,
    /// The agent's tags (`principal.tags`).
    pub agent_tags: &'a [String],
    /// The classified request (the resource and the action).
    pub facts: &'a RequestFacts,
    /// Whether the organization's rail key is a live-mode key.
    pub livemode: bool,
    /// This agent's spend (`context.spend`).
    pub spend: SpendContext,
    /// The organization's spend (`context.org_spend`).
    pub org_spend: SpendContext,
    /// Decision time, unix seconds (`context.now`, UTC).
    pub now_unix: i64,
    /// This agent's decided requests in the last minute (`context.requests_last_minute`).
    pub requests_last_minute: i64,
}

/// The guard's decision. Ordered by severity: `Allow < Hold < Deny`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Forward the request.
    Allow,
    /// Wait for human approval.
    Hold,
    /// Refuse.
    Deny,
}

impl Outcome {
    /// `"allow"`, `"hold"` or `"deny"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Hold => "hold",
            Outcome::Deny => "deny",
        }
    }
}

/// The decision with everything that explains it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The outcome.
    pub outcome: Outcome,
    /// Determining policy ids in text order (plus, on an evaluation error, the failing ones).
    pub policies: Vec<String>,
    /// Ids of the caps this request would exceed.
    pub caps: Vec<String>,
    /// Why, for the agent and the approver.
    pub reason: String,
    /// Distinct human approvals needed; 0 unless the outcome is `Hold`.
    pub approvals_required: u32,
    /// Cedar evaluation errors (each one is a reason to deny).
    pub errors: Vec<String>,
}

/// Decides one request: Cedar first, then the caps; the most severe outcome wins.
pub fn evaluate(policies: &CompiledPolicies, input: &EvalInput<'_>, caps: &[CapCheck]) -> Verdict {
    let verdict = match cedar_request(policies, input) {
        Ok((request, entities)) => cedar_verdict(policies, input, &request, &entities),
        Err(error) => Verdict {
            outcome: Outcome::Deny,
            policies: Vec::new(),
            caps: Vec::new(),
            reason: format!("the request could not be evaluated: {error}"),
            approvals_required: 0,
            errors: vec![error],
        },
    };
    apply_caps(verdict, input, caps)
}

/// Cedar entity type names, parsed once.
struct Types {
    organization: EntityTypeName,
    agent: EntityTypeName,
    request: EntityTypeName,
    action: EntityTypeName,
}

fn types() -> &'static Types {
    static TYPES: OnceLock<Types> = OnceLock::new();
    TYPES.get_or_init(|| {
        let name =
            |n: &str| EntityTypeName::from_str(n).expect("entity type names are valid identifiers");
        Types {
            organization: name("Organization"),
            agent: name("Agent"),
            request: name("Request"),
            action: name("Action"),
        }
    })
}

fn uid(type_name: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name.clone(), EntityId::new(id))
}

/// The Cedar request and entities for this input (in the schema's shape; see below).
fn cedar_request(
    policies: &CompiledPolicies,
    input: &EvalInput<'_>,
) -> Result<(Request, Entities), String> {
    let types = types();
    let org = uid(&types.organization, input.org_id);
    let agent = uid(&types.agent, input.agent_id);
    let resource = uid(&types.request, "req");
    let action = uid(&types.action, &input.facts.operation);
    let entities = [
        Entity::new_no_attrs(org.clone(), HashSet::new()),
        agent_entity(agent.clone(), org, input)?,
        request_entity(resource.clone(), input)?,
    ];
    // The policies were validated against the schema when compiled, and every entity and the
    // context are built here in the schema's shape; a per-request schema pass cost more than
    // the authorization itself. The action's own entity (precomputed from the schema, with its
    // groups as parents) is enough for `action in Action::"move_money"`. An action the schema
    // does not declare is an error (deny); classification only produces declared ones.
    let action_entity = policies
        .action_entity(&action)
        .ok_or_else(|| format!("unknown action {}", input.facts.operation))?
        .clone();
    let all = entities.into_iter().chain(std::iter::once(action_entity));
    let entities = Entities::from_entities(all, None).map_err(|e| e.to_string())?;
    let request =
        Request::new(agent, action, resource, context(input)?, None).map_err(|e| e.to_string())?;
    Ok((request, entities))
}

fn agent_entity(agent: EntityUid, org: EntityUid, input: &EvalInput<'_>) -> Result<Entity, String> {
    let tags = input
        .agent_tags
        .iter()
        .map(|t| RestrictedExpression::new_string(t.clone()));
    let attrs = HashMap::from([
        (
            "name".to_owned(),
            RestrictedExpression::new_string(input.agent_name.to_owned()),
        ),
        ("tags".to_owned(), RestrictedExpression::new_set(tags)),
    ]);
    Entity::new(agent, attrs, HashSet::from([org])).map_err(|e| e.to_string())
}

fn request_entity(resource: EntityUid, input: &EvalInput<'_>) -> Result<Entity, String> {
    let facts = input.facts;
    let string = |s: &str| RestrictedExpression::new_string(s.to_owned());
    let (amount, currency) = match &facts.amount {
        Some(amount) => (amount.minor, amount.currency.as_str()),
        None => (0, ""),
    };
    let attrs = [
        ("operation", string(&facts.operation)),
        ("method", string(&facts.method)),
        ("path", string(&facts.path)),
        ("amount", RestrictedExpression::new_long(amount)),
        ("currency", string(currency)),
        ("counterparty", string(&facts.counterparty)),
        ("livemode", RestrictedExpression::new_bool(input.livemode)),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    // POLICIES.md: Stripe metadata becomes the request's tags.
    let tags = facts.metadata.iter().map(|(k, v)| (k.clone(), string(v)));
    Entity::new_with_tags(resource, attrs, [], tags).map_err(|e| e.to_string())
}

/// The `Ctx` record of the schema.
fn context(input: &EvalInput<'_>) -> Result<Context, String> {
    let now = OffsetDateTime::from_unix_timestamp(input.now_unix)
        .map_err(|_| format!("decision time {} is out of range", input.now_unix))?;
    let record = |fields: Vec<(&str, i64)>| {
        let fields = fields
            .into_iter()
            .map(|(k, v)| (k.to_owned(), RestrictedExpression::new_long(v)));
        RestrictedExpression::new_record(fields).map_err(|e| e.to_string())
    };
    let spend =
        |s: SpendContext| record(vec![("day", s.day), ("week", s.week), ("month", s.month)]);
    let now = record(vec![
        ("hour", i64::from(now.hour())),
        ("weekday", i64::from(now.weekday().number_from_monday())),
    ])?;
    let pairs = [
        ("spend", spend(input.spend)?),
        ("org_spend", spend(input.org_spend)?),
        ("now", now),
        (
            "requests_last_minute",
            RestrictedExpression::new_long(input.requests_last_minute),
        ),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    Context::from_pairs(pairs).map_err(|e| e.to_string())
}

/// Runs Cedar and reads the three outcomes from its two effects.
fn cedar_verdict(
    policies: &CompiledPolicies,
    input: &EvalInput<'_>,
    request: &Request,
    entities: &Entities,
) -> Verdict {
    let response = Authorizer::new().is_authorized(request, policies.set(), entities);
    let diagnostics = response.diagnostics();
    let mut determining: Vec<String> = diagnostics.reason().map(ToString::to_string).collect();
    let position = |id: &String| policies.meta(id).map_or(usize::MAX, |m| m.position);
    determining.sort_by_key(position);
    let errors: Vec<String> = diagnostics.errors().map(ToString::to_string).collect();
    if !errors.is_empty() {
        // PROXY.md: a Cedar evaluation error is a denial, never an allow.
        let mut failing: Vec<String> = diagnostics.errors().map(failing_policy).collect();
        failing.sort_by_key(position);
        failing.retain(|id| !determining.contains(id));
        determining.extend(failing);
        let reason = format!("policy evaluation failed: {}", errors.join("; "));
        return verdict(Outcome::Deny, determining, reason, 0, errors);
    }
    match response.decision() {
        Decision::Allow => verdict(Outcome::Allow, determining, String::new(), 0, errors),
        Decision::Deny => denial(policies, input, determining),
    }
}

fn failing_policy(error: &AuthorizationError) -> String {
    match error {
        AuthorizationError::PolicyEvaluationError(e) => e.policy_id().to_string(),
    }
}

/// A Cedar denial is a hold when every determining policy is a forbid carrying `@hold`.
fn denial(policies: &CompiledPolicies, input: &EvalInput<'_>, determining: Vec<String>) -> Verdict {
    if determining.is_empty() {
        let reason = format!("no policy permits {}", input.facts.operation);
        return verdict(Outcome::Deny, determining, reason, 0, Vec::new());
    }
    let holds: Option<Vec<&PolicyMeta>> = determining
        .iter()
        .map(|id| {
            policies
                .meta(id)
                .filter(|m| m.effect == PolicyEffect::Forbid && m.hold.is_some())
        })
        .collect();
    match holds {
        Some(holds) => hold(determining, &holds),
        None => {
            let reason = deny_reason(policies, &determining);
            verdict(Outcome::Deny, determining, reason, 0, Vec::new())
        }
    }
}

/// The `@hold` texts joined, and the most `@approvals` any of them asks for.
fn hold(determining: Vec<String>, holds: &[&PolicyMeta]) -> Verdict {
    let reasons: Vec<String> = determining
        .iter()
        .zip(holds)
        .map(|(id, meta)| match meta.hold.as_deref() {
            Some(text) if !text.is_empty() => text.to_owned(),
            _ => format!("held by policy '{id}'"),
        })
        .collect();
    let approvals = holds.iter().map(|m| m.approvals).max().unwrap_or(1).max(1);
    verdict(
        Outcome::Hold,
        determining,
        reasons.join("; "),
        approvals,
        Vec::new(),
    )
}

/// The agent reads the `@reason` of the policy that denies: the first determining forbid
/// without `@hold`.
fn deny_reason(policies: &CompiledPolicies, determining: &[String]) -> String {
    determining
        .iter()
        .map(|id| (id, policies.meta(id)))
        .find(|(_, meta)| !meta.is_some_and(|m| m.hold.is_some()))
        .map(|(id, meta)| match meta.and_then(|m| m.reason.as_deref()) {
            Some(text) if !text.is_empty() => text.to_owned(),
            _ => format!("denied by policy '{id}'"),
        })
        .unwrap_or_default()
}

fn verdict(
    outcome: Outcome,
    policies: Vec<String>,
    reason: String,
    approvals: u32,
    errors: Vec<String>,
) -> Verdict {
    Verdict {
        outcome,
        policies,
        caps: Vec::new(),
        reason,
        approvals_required: approvals,
        errors,
    }
}

/// POLICIES.md: outcomes combine as deny > hold > allow.
fn apply_caps(mut verdict: Verdict, input: &EvalInput<'_>, caps: &[CapCheck]) -> Verdict {
    let exceeded: Vec<(&CapCheck, Outcome)> = caps
        .iter()
        .filter_map(|c| c.exceeded.map(|e| (c, cap_outcome(e))))
        .collect();
    let Some(caps_outcome) = exceeded.iter().map(|(_, o)| *o).max() else {
        return verdict;
    };
    verdict.caps = exceeded.iter().map(|(c, _)| c.cap_id.clone()).collect();
    let outcome = verdict.outcome.max(caps_outcome);
    let mut reasons = Vec::new();
    if verdict.outcome == outcome && !verdict.reason.is_empty() {
        reasons.push(verdict.reason.clone());
    }
    if caps_outcome == outcome {
        let cap_reasons = exceeded
            .iter()
            .filter(|(_, o)| *o == outcome)
            .map(|(c, _)| cap_reason(c, input));
        reasons.extend(cap_reasons);
    }
    verdict.approvals_required = match (outcome, verdict.outcome) {
        (Outcome::Hold, Outcome::Hold) => verdict.approvals_required.max(1),
        (Outcome::Hold, _) => 1,
        _ => 0,
    };
    verdict.outcome = outcome;
    verdict.reason = reasons.join("; ");
    verdict
}

fn cap_outcome(on_exceed: OnExceed) -> Outcome {
    match on_exceed {
        OnExceed::Hold => Outcome::Hold,
        OnExceed::Deny => Outcome::Deny,
    }
}

/// `cap cap_x: limit 100.00 usd would be exceeded (already spent 90.00 usd)`. A cap only
/// applies to requests in its own currency, so the request's currency is the cap's.
fn cap_reason(check: &CapCheck, input: &EvalInput<'_>) -> String {
    let money = |minor: i64| match &input.facts.amount {
        Some(amount) => amount.currency.format_minor(minor),
        None => format!("{minor} minor units"),
    };
    let mut reason = format!(
        "cap {}: limit {} would be exceeded",
        check.cap_id,
        money(check.limit)
    );
    if check.spent_before > 0 {
        reason.push_str(&format!(" (already spent {})", money(check.spent_before)));
    }
    reason
}

#[cfg(test)]
mod tests;
