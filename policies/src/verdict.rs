//! POLICIES.md "Three outcomes from two effects": evaluates the Cedar policies for one request,
//! reads `@hold` to get the third outcome, and combines the result with the spending caps
//! (deny > hold > allow). Fails closed: any evaluation error is a denial.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::OnceLock;

use cedar_policy::{
    AuthorizationError, Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicySet, Request, RestrictedExpression,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::caps::{CapCheck, OnExceed};
use crate::classify::{OperationClass, RequestFacts, UNKNOWN_OPERATION};
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
    evaluate_prepared(policies, None, input, caps)
}

/// The part of a decision that can be done before its transaction: the Cedar entities of the
/// request, and the verdict of the policies that do not read `context` (which depend only on
/// the request, the agent, the organization and the rail mode, not on spend, time or rate).
/// [`evaluate_prepared`] then evaluates only the policies that read `context` and combines the
/// two; it uses the preparation only when it was made from the same compiled set and the same
/// inputs, and otherwise evaluates everything itself. Both ways give the same verdict
/// (`verdict::tests` checks this).
#[derive(Clone, Debug)]
pub struct Prepared {
    generation: u64,
    key: PreparedKey,
    built: Result<Built, String>,
}

/// The inputs a preparation depends on.
#[derive(Clone, Debug, PartialEq)]
struct PreparedKey {
    org_id: String,
    agent_id: String,
    agent_name: String,
    agent_tags: Vec<String>,
    facts: RequestFacts,
    livemode: bool,
}

#[derive(Clone, Debug)]
struct Built {
    entities: Entities,
    principal: EntityUid,
    action: EntityUid,
    resource: EntityUid,
    stateless: CedarPart,
}

impl PreparedKey {
    fn of(input: &EvalInput<'_>) -> Self {
        Self {
            org_id: input.org_id.to_owned(),
            agent_id: input.agent_id.to_owned(),
            agent_name: input.agent_name.to_owned(),
            agent_tags: input.agent_tags.to_vec(),
            facts: input.facts.clone(),
            livemode: input.livemode,
        }
    }

    fn matches(&self, input: &EvalInput<'_>) -> bool {
        self.org_id == input.org_id
            && self.agent_id == input.agent_id
            && self.agent_name == input.agent_name
            && self.agent_tags == input.agent_tags
            && self.livemode == input.livemode
            && self.facts == *input.facts
    }
}

/// Prepare a decision outside its transaction (see [`Prepared`]). The spend, time and rate
/// fields of `input` are not read.
pub fn prepare(policies: &CompiledPolicies, input: &EvalInput<'_>) -> Prepared {
    let built = entities(policies, input).map(|(entities, principal, action, resource)| {
        let stateless = Request::new(
            principal.clone(),
            action.clone(),
            resource.clone(),
            Context::empty(),
            None,
        )
        .map(|request| run_part(policies.stateless(), &request, &entities))
        .unwrap_or_else(|e| CedarPart::failed(e.to_string()));
        Built {
            entities,
            principal,
            action,
            resource,
            stateless,
        }
    });
    Prepared {
        generation: policies.generation(),
        key: PreparedKey::of(input),
        built,
    }
}

/// [`evaluate`], reusing `prepared` when it was made for this compiled set and these inputs.
pub fn evaluate_prepared(
    policies: &CompiledPolicies,
    prepared: Option<&Prepared>,
    input: &EvalInput<'_>,
    caps: &[CapCheck],
) -> Verdict {
    let usable = prepared.filter(|p| p.generation == policies.generation() && p.key.matches(input));
    let part = match usable {
        Some(p) => match &p.built {
            Ok(b) => context(input)
                .and_then(|ctx| {
                    Request::new(
                        b.principal.clone(),
                        b.action.clone(),
                        b.resource.clone(),
                        ctx,
                        None,
                    )
                    .map_err(|e| e.to_string())
                })
                .map(|request| {
                    run_part(policies.stateful(), &request, &b.entities).merge(b.stateless.clone())
                }),
            Err(e) => Err(e.clone()),
        },
        None => cedar_request(policies, input)
            .map(|(request, entities)| run_part(policies.set(), &request, &entities)),
    };
    let verdict = match part {
        Ok(part) => cedar_verdict(policies, input, part),
        Err(error) => unevaluable(error),
    };
    apply_caps(require_explicit(policies, input, verdict), input, caps)
}

/// What Cedar said about some of the policies. Cedar's determining policies are the satisfied
/// forbids on a denial and the satisfied permits on an allow, and each policy is evaluated on
/// its own, so the answers for two disjoint halves of a set combine into the answer for the
/// whole set: the forbids of either deny, else the permits of either allow.
#[derive(Clone, Debug, Default)]
struct CedarPart {
    /// Satisfied forbids (all of them, when any).
    forbids: Vec<String>,
    /// Satisfied permits (known only when no forbid of this part is satisfied).
    permits: Vec<String>,
    /// (failing policy id, error message) for each evaluation error.
    errors: Vec<(String, String)>,
    /// The request itself could not be built.
    failed: Option<String>,
}

impl CedarPart {
    fn failed(error: String) -> Self {
        Self {
            failed: Some(error),
            ..Self::default()
        }
    }

    fn merge(mut self, other: CedarPart) -> Self {
        self.forbids.extend(other.forbids);
        self.permits.extend(other.permits);
        self.errors.extend(other.errors);
        self.failed = self.failed.or(other.failed);
        self
    }
}

fn run_part(set: &PolicySet, request: &Request, entities: &Entities) -> CedarPart {
    let response = Authorizer::new().is_authorized(request, set, entities);
    let diagnostics = response.diagnostics();
    let determining: Vec<String> = diagnostics.reason().map(ToString::to_string).collect();
    let errors = diagnostics
        .errors()
        .map(|e| (failing_policy(e), e.to_string()))
        .collect();
    let (forbids, permits) = match response.decision() {
        Decision::Deny => (determining, Vec::new()),
        Decision::Allow => (Vec::new(), determining),
    };
    CedarPart {
        forbids,
        permits,
        errors,
        failed: None,
    }
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
    let (entities, agent, action, resource) = entities(policies, input)?;
    let request =
        Request::new(agent, action, resource, context(input)?, None).map_err(|e| e.to_string())?;
    Ok((request, entities))
}

/// The entities of a request and the principal, action and resource uids.
fn entities(
    policies: &CompiledPolicies,
    input: &EvalInput<'_>,
) -> Result<(Entities, EntityUid, EntityUid, EntityUid), String> {
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
    Ok((entities, agent, action, resource))
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
        ("class", string(facts.class.as_str())),
        ("method", string(&facts.method)),
        ("path", string(&facts.path)),
        ("amount", RestrictedExpression::new_long(amount)),
        ("currency", string(currency)),
        ("valued", RestrictedExpression::new_bool(facts.valued)),
        ("counterparty", string(&facts.counterparty)),
        ("account", string(&facts.account)),
        ("interval", string(&facts.interval)),
        (
            "expand",
            RestrictedExpression::new_set(facts.expand.iter().map(|e| string(e))),
        ),
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

/// Fail closed: a request Cedar cannot be asked about is denied.
fn unevaluable(error: String) -> Verdict {
    Verdict {
        outcome: Outcome::Deny,
        policies: Vec::new(),
        caps: Vec::new(),
        reason: format!("the request could not be evaluated: {error}"),
        approvals_required: 0,
        errors: vec![error],
    }
}

/// Reads the three outcomes from Cedar's two effects.
fn cedar_verdict(policies: &CompiledPolicies, input: &EvalInput<'_>, part: CedarPart) -> Verdict {
    if let Some(error) = part.failed {
        return unevaluable(error);
    }
    let position = |id: &String| policies.meta(id).map_or(usize::MAX, |m| m.position);
    let denied = !part.forbids.is_empty();
    let mut determining = if denied { part.forbids } else { part.permits };
    determining.sort_by_key(position);
    if !part.errors.is_empty() {
        // PROXY.md: a Cedar evaluation error is a denial, never an allow. Errors in policy
        // order, so the reason does not depend on how the set was evaluated.
        let mut errors = part.errors;
        errors.sort_by(|a, b| {
            position(&a.0)
                .cmp(&position(&b.0))
                .then_with(|| a.1.cmp(&b.1))
        });
        let mut failing: Vec<String> = errors.iter().map(|(id, _)| id.clone()).collect();
        failing.dedup();
        failing.retain(|id| !determining.contains(id));
        determining.extend(failing);
        let errors: Vec<String> = errors.into_iter().map(|(_, message)| message).collect();
        let reason = format!("policy evaluation failed: {}", errors.join("; "));
        return verdict(Outcome::Deny, determining, reason, 0, errors);
    }
    if !denied && !determining.is_empty() {
        verdict(Outcome::Allow, determining, String::new(), 0, Vec::new())
    } else {
        denial(policies, input, determining)
    }
}

/// PROXY.md step 2: an unknown operation, or a money operation the guard cannot value, is
/// allowed only by a permit that names its action itself; a broad permit (`action in
/// Action::"move_money"`, or no action constraint) does not reach it. Otherwise an unknown
/// operation is denied and an unvalued one held for a human.
fn require_explicit(
    policies: &CompiledPolicies,
    input: &EvalInput<'_>,
    decided: Verdict,
) -> Verdict {
    let facts = input.facts;
    let unknown = facts.class == OperationClass::Unknown;
    let unvalued = facts.class.is_money() && !facts.valued;
    if decided.outcome != Outcome::Allow || !(unknown || unvalued) {
        return decided;
    }
    let explicit = decided.policies.iter().any(|id| {
        policies.meta(id).is_some_and(|m| {
            m.effect == PolicyEffect::Permit && m.names_actions.contains(&facts.operation)
        })
    });
    if explicit {
        return decided;
    }
    if unknown {
        let reason = format!(
            "the guard does not know {} {}; only a policy naming Action::\"{UNKNOWN_OPERATION}\" can allow it",
            facts.method, facts.path
        );
        verdict(Outcome::Deny, Vec::new(), reason, 0, Vec::new())
    } else {
        let reason = format!(
            "the guard cannot tell what {} is worth; a human must approve it (or a policy naming Action::\"{}\" allow it)",
            facts.operation, facts.operation
        );
        verdict(Outcome::Hold, Vec::new(), reason, 1, Vec::new())
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
