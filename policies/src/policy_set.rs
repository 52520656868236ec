//! POLICIES.md: an organization's Cedar policy text, checked against the shipped schema and
//! compiled once into something cheap to evaluate on every request.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::OnceLock;

use cedar_policy::{
    ActionConstraint, Effect, Entity, EntityUid, Policy, PolicyId, PolicySet, Schema,
    ValidationMode, Validator,
};
use serde::{Deserialize, Serialize};

/// The Cedar schema policies are validated against (`policies/schema.cedarschema`).
pub const SCHEMA_TEXT: &str = include_str!("../schema.cedarschema");

/// The policy set a new organization starts with (`policies/default.cedar`).
pub const DEFAULT_POLICY_TEXT: &str = include_str!("../default.cedar");

/// Default sets earlier versions shipped, byte for byte: an organization still running one is
/// moved to [`DEFAULT_POLICY_TEXT`] at startup (see `Store::upgrade_default_policies`).
pub const PREVIOUS_DEFAULT_POLICY_TEXTS: &[&str] =
    &[include_str!("../previous/default-2026-12-02.cedar")];

/// Most distinct human approvals a `@approvals("N")` may ask for.
pub const MAX_APPROVALS: u32 = 10;

/// Names a policy in reasons, audit events and errors.
const ANNOTATION_ID: &str = "id";
/// On a `forbid`: deciding it turns a denial into a hold; the value is the reason shown.
const ANNOTATION_HOLD: &str = "hold";
/// The text an agent sees when this policy denies.
const ANNOTATION_REASON: &str = "reason";
/// How many distinct approvals a hold needs (four-eyes).
const ANNOTATION_APPROVALS: &str = "approvals";

/// One problem with a policy text, located for the editor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// 1-based line; 0 when the problem has no location.
    pub line: u32,
    /// 1-based column in characters; 0 when the problem has no location.
    pub column: u32,
    /// What is wrong, for people.
    pub message: String,
}

/// A policy's effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyEffect {
    /// `permit (...)`
    Permit,
    /// `forbid (...)`
    Forbid,
}

/// What the guard reads from one policy's annotations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyMeta {
    /// Permit or forbid.
    pub effect: PolicyEffect,
    /// `@hold("...")`: the hold reason (only on forbid).
    pub hold: Option<String>,
    /// `@reason("...")`: the denial text.
    pub reason: Option<String>,
    /// `@approvals("N")`, 1 when absent.
    pub approvals: u32,
    /// Position of the policy in the text, from 0; orders determining policies in verdicts.
    pub position: usize,
    /// The action ids the policy's scope names itself (`action == Action::"x"` or
    /// `action in [Action::"x", ...]`), not through a group. Only such a permit can allow an
    /// unknown operation or one the guard cannot value.
    #[serde(default)]
    pub names_actions: Vec<String>,
}

/// A validated policy set, ready to evaluate. Build it once per stored version.
///
/// Besides the whole set it keeps two disjoint halves: the policies that never read `context`
/// (decided by the request, the agent and the organization alone, so they can be evaluated
/// before the serialized part of a decision) and those that do (spend, time, request rate:
/// evaluated inside the decision transaction). See [`crate::verdict::prepare`].
#[derive(Clone, Debug)]
pub struct CompiledPolicies {
    text: String,
    set: PolicySet,
    stateless: PolicySet,
    stateful: PolicySet,
    /// Distinguishes this compilation from every other one in the process.
    generation: u64,
    actions: HashMap<EntityUid, Entity>,
    /// Policy ids in text order.
    ids: Vec<String>,
    meta: HashMap<String, PolicyMeta>,
}

impl CompiledPolicies {
    /// The policy text this was compiled from.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Policy ids (`@id`, or `policy<N>` by position), in text order.
    pub fn policy_ids(&self) -> &[String] {
        &self.ids
    }

    /// Annotations of one policy.
    pub fn meta(&self, id: &str) -> Option<&PolicyMeta> {
        self.meta.get(id)
    }

    pub(crate) fn set(&self) -> &PolicySet {
        &self.set
    }

    /// The policies that do not read `context`.
    pub(crate) fn stateless(&self) -> &PolicySet {
        &self.stateless
    }

    /// The policies that read `context`.
    pub(crate) fn stateful(&self) -> &PolicySet {
        &self.stateful
    }

    /// How many policies read `context` (evaluated inside the decision transaction).
    pub fn stateful_count(&self) -> usize {
        self.stateful.policies().count()
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The schema's entity for an action (its groups are its parents), or `None` when the
    /// schema does not declare it.
    pub(crate) fn action_entity(&self, action: &EntityUid) -> Option<&Entity> {
        self.actions.get(action)
    }
}

/// The shipped schema and its validator, parsed once per process.
struct Shipped {
    validator: Validator,
    /// The schema's action entities (with their groups as parents), built once.
    actions: HashMap<EntityUid, Entity>,
}

fn shipped() -> Result<&'static Shipped, Diagnostic> {
    static SHIPPED: OnceLock<Result<Shipped, String>> = OnceLock::new();
    let shipped = SHIPPED.get_or_init(|| {
        let (schema, _warnings) =
            Schema::from_cedarschema_str(SCHEMA_TEXT).map_err(|e| e.to_string())?;
        let validator = Validator::new(schema.clone());
        let actions = schema
            .action_entities()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|e| (e.uid(), e))
            .collect();
        Ok(Shipped { validator, actions })
    });
    shipped
        .as_ref()
        .map_err(|e| unlocated(format!("the shipped schema is invalid: {e}")))
}

/// The policies that never mention the `context` variable, and the others. A policy whose JSON
/// form cannot be produced counts as reading `context` (the safe side: it is evaluated inside
/// the decision transaction).
fn split_by_context(set: &PolicySet) -> (PolicySet, PolicySet) {
    let mut stateless = PolicySet::new();
    let mut stateful = PolicySet::new();
    for policy in set.policies() {
        let reads_context = policy.to_json().map_or(true, |est| mentions_context(&est));
        let half = if reads_context {
            &mut stateful
        } else {
            &mut stateless
        };
        if half.add(policy.clone()).is_err() {
            // Ids are unique within `set`, so this does not happen; if it did, no policy may
            // be lost: everything is then evaluated inside the transaction.
            return (PolicySet::new(), set.clone());
        }
    }
    (stateless, stateful)
}

/// Whether a policy's JSON (EST) form refers to the variable `context` anywhere
/// (`{"Var": "context"}`); a string literal "context" is `{"Value": "context"}` and does not count.
fn mentions_context(est: &serde_json::Value) -> bool {
    match est {
        serde_json::Value::Object(map) => map
            .iter()
            .any(|(k, v)| (k == "Var" && v.as_str() == Some("context")) || mentions_context(v)),
        serde_json::Value::Array(items) => items.iter().any(mentions_context),
        _ => false,
    }
}

/// One parsed statement before checks: its generated id, text offset and policy.
struct Statement {
    position: usize,
    offset: usize,
    policy: Policy,
}

/// Parses, checks annotations, and validates `text` against the schema (strict mode). Every
/// problem found is returned; an empty text is a valid set that denies everything.
pub fn compile(text: &str) -> Result<CompiledPolicies, Vec<Diagnostic>> {
    compile_checked(text, true)
}

/// [`compile`] for a set stored by an earlier version: it skips the checks added since (a
/// group named with `==`, which never matches), so such a set keeps loading and fails closed
/// where it never matches, rather than stopping every decision of its organization.
pub fn compile_stored(text: &str) -> Result<CompiledPolicies, Vec<Diagnostic>> {
    compile_checked(text, false)
}

fn compile_checked(text: &str, strict: bool) -> Result<CompiledPolicies, Vec<Diagnostic>> {
    let shipped = shipped().map_err(|d| vec![d])?;
    let parsed = PolicySet::from_str(text)
        .map_err(|errors| errors.iter().map(|e| located(text, e)).collect::<Vec<_>>())?;
    let (statements, mut diagnostics) = statements(text, &parsed);
    if strict {
        diagnostics.extend(statements.iter().filter_map(|s| group_equality(text, s)));
    }
    let (set, ids, meta) = rename(text, statements, &mut diagnostics);
    let result = shipped.validator.validate(&set, ValidationMode::Strict);
    diagnostics.extend(result.validation_errors().map(|e| located(text, e)));
    if !diagnostics.is_empty() {
        diagnostics.sort_by_key(|d| (d.line, d.column));
        return Err(diagnostics);
    }
    let (stateless, stateful) = split_by_context(&set);
    static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    Ok(CompiledPolicies {
        text: text.to_owned(),
        set,
        stateless,
        stateful,
        generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        actions: shipped.actions.clone(),
        ids,
        meta,
    })
}

/// The action groups of the schema: every request's action is a member, never a group itself.
const ACTION_GROUPS: [&str; 5] = ["move_money", "commit_money", "admin", "write", "read"];

/// `action == Action::"read"` validates but matches no request (every read has its own name):
/// a policy that silently never applies is refused, with the fix in the message.
fn group_equality(text: &str, statement: &Statement) -> Option<Diagnostic> {
    let ActionConstraint::Eq(uid) = statement.policy.action_constraint() else {
        return None;
    };
    let group = uid.id().unescaped();
    ACTION_GROUPS.contains(&group).then(|| {
        at(
            text,
            statement.offset,
            format!(
                "`action == Action::\"{group}\"` matches no request: `{group}` is a group of operations; write `action in Action::\"{group}\"`"
            ),
        )
    })
}

/// The static policies in text order with their offsets; templates become diagnostics.
fn statements(text: &str, parsed: &PolicySet) -> (Vec<Statement>, Vec<Diagnostic>) {
    // The parser names statements policy0, policy1, ... in text order, templates included.
    let mut all: Vec<(usize, String, Option<Policy>)> = parsed
        .policies()
        .map(|p| (generated_position(p.id()), p.to_string(), Some(p.clone())))
        .chain(
            parsed
                .templates()
                .map(|t| (generated_position(t.id()), t.to_string(), None)),
        )
        .collect();
    all.sort_by_key(|(position, _, _)| *position);
    let mut cursor = 0;
    let mut statements = Vec::new();
    let mut diagnostics = Vec::new();
    for (position, source, policy) in all {
        let offset = locate(text, &source, &mut cursor);
        match policy {
            Some(policy) => statements.push(Statement {
                position,
                offset,
                policy,
            }),
            None => diagnostics.push(at(
                text,
                offset,
                "templates (policies with ?principal or ?resource) are not supported".into(),
            )),
        }
    }
    (statements, diagnostics)
}

fn generated_position(id: &PolicyId) -> usize {
    let id: &str = id.as_ref();
    id.strip_prefix("policy")
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

/// Byte offset of a statement's text, searching from `cursor`: only blanks and `//` comments
/// separate statements, so skipping those lands on it (a plain search could match a comment).
fn locate(text: &str, source: &str, cursor: &mut usize) -> usize {
    let rest = text.get(*cursor..).unwrap_or("");
    let skipped = skip_blanks_and_comments(rest);
    let found = if rest[skipped..].starts_with(source) {
        Some(skipped)
    } else {
        rest.find(source)
    };
    match found {
        Some(at) => {
            *cursor += at + source.len();
            *cursor - source.len()
        }
        None => *cursor,
    }
}

fn skip_blanks_and_comments(text: &str) -> usize {
    let mut at = 0;
    loop {
        let rest = &text[at..];
        let trimmed = rest.trim_start();
        at += rest.len() - trimmed.len();
        if !trimmed.starts_with("//") {
            return at;
        }
        at += trimmed.find('\n').unwrap_or(trimmed.len());
    }
}

/// Gives each policy its `@id` (or keeps `policy<N>`), checks annotations, and builds the set.
fn rename(
    text: &str,
    statements: Vec<Statement>,
    diagnostics: &mut Vec<Diagnostic>,
) -> (PolicySet, Vec<String>, HashMap<String, PolicyMeta>) {
    let mut set = PolicySet::new();
    let mut ids = Vec::new();
    let mut meta = HashMap::new();
    let mut seen = BTreeSet::new();
    for statement in statements {
        let policy = &statement.policy;
        let id = policy
            .annotation(ANNOTATION_ID)
            .map_or_else(|| policy.id().to_string(), str::to_owned);
        if let Some(problem) = id_problem(&id, &seen) {
            diagnostics.push(at(text, statement.offset, problem));
            continue;
        }
        let problems = annotation_problems(policy, &id);
        diagnostics.extend(problems.into_iter().map(|m| at(text, statement.offset, m)));
        seen.insert(id.clone());
        // Added even with annotation problems, so validation reports its own findings too.
        if let Err(e) = set.add(policy.new_id(PolicyId::new(&id))) {
            diagnostics.push(at(text, statement.offset, e.to_string()));
            continue;
        }
        meta.insert(id.clone(), policy_meta(policy, statement.position));
        ids.push(id);
    }
    (set, ids, meta)
}

/// `@id` must be non-empty and unique (positional ids count too).
fn id_problem(id: &str, seen: &BTreeSet<String>) -> Option<String> {
    if id.is_empty() {
        Some("@id must not be empty".to_owned())
    } else if seen.contains(id) {
        Some(format!("duplicate policy id `{id}`"))
    } else {
        None
    }
}

/// POLICIES.md: `@hold` only on forbid; `@approvals("N")` with N in 1..=10 and only next to
/// `@hold`.
fn annotation_problems(policy: &Policy, id: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let hold = policy.annotation(ANNOTATION_HOLD);
    if hold.is_some() && policy.effect() != Effect::Forbid {
        problems.push(format!(
            "policy `{id}`: @hold is only allowed on forbid policies"
        ));
    }
    if let Some(approvals) = policy.annotation(ANNOTATION_APPROVALS) {
        if hold.is_none() {
            problems.push(format!(
                "policy `{id}`: @approvals is only allowed together with @hold"
            ));
        }
        if parse_approvals(approvals).is_none() {
            problems.push(format!(
                "policy `{id}`: @approvals must be a whole number from 1 to {MAX_APPROVALS}, got \"{}\"",
                crate::classify::truncate(approvals)
            ));
        }
    }
    problems
}

fn parse_approvals(text: &str) -> Option<u32> {
    text.parse()
        .ok()
        .filter(|n| (1..=MAX_APPROVALS).contains(n))
}

fn policy_meta(policy: &Policy, position: usize) -> PolicyMeta {
    PolicyMeta {
        effect: match policy.effect() {
            Effect::Permit => PolicyEffect::Permit,
            Effect::Forbid => PolicyEffect::Forbid,
        },
        hold: policy.annotation(ANNOTATION_HOLD).map(str::to_owned),
        reason: policy.annotation(ANNOTATION_REASON).map(str::to_owned),
        approvals: policy
            .annotation(ANNOTATION_APPROVALS)
            .and_then(parse_approvals)
            .unwrap_or(1),
        position,
        names_actions: named_actions(policy),
    }
}

/// The action ids a policy's scope names (see [`PolicyMeta::names_actions`]). A group named
/// with `in` (`Action::"move_money"`) names only the group, never its members.
fn named_actions(policy: &Policy) -> Vec<String> {
    let id = |uid: &EntityUid| uid.id().unescaped().to_owned();
    match policy.action_constraint() {
        ActionConstraint::Any => Vec::new(),
        ActionConstraint::Eq(uid) => vec![id(&uid)],
        ActionConstraint::In(uids) => uids.iter().map(id).collect(),
    }
}

/// A diagnostic at the first labelled span of a Cedar error, with its help text if any.
fn located(text: &str, error: &dyn miette::Diagnostic) -> Diagnostic {
    let offset = error
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|l| l.offset());
    let mut message = error.to_string();
    if let Some(help) = error.help() {
        message = format!("{message} (help: {help})");
    }
    match offset {
        Some(offset) => at(text, offset, message),
        None => unlocated(message),
    }
}

fn unlocated(message: String) -> Diagnostic {
    Diagnostic {
        line: 0,
        column: 0,
        message,
    }
}

/// A diagnostic at a byte offset: 1-based line, 1-based column counted in characters.
fn at(text: &str, offset: usize, message: String) -> Diagnostic {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    Diagnostic {
        line: u32::try_from(line).unwrap_or(u32::MAX),
        column: u32::try_from(column).unwrap_or(u32::MAX),
        message,
    }
}

#[cfg(test)]
pub(crate) mod tests;
