use super::*;

/// The example policy set of POLICIES.md, verbatim.
pub(crate) const SPEC_EXAMPLE: &str = r#"@id("agents-may-pay") permit (principal, action in Action::"move_money", resource);
@id("agents-may-read") permit (principal, action in Action::"read", resource);
@id("no-payouts") @reason("payouts are not allowed for agents")
forbid (principal, action == Action::"payouts.create", resource);
@id("big-needs-approval") @hold("payments over 500.00 need a human") @approvals("2")
forbid (principal, action in Action::"move_money", resource) when { resource.amount > 50000 };
@id("eur-only") forbid (principal, action in Action::"move_money", resource)
  unless { resource.currency == "eur" };
"#;

fn errors(text: &str) -> Vec<Diagnostic> {
    compile(text).expect_err("the text should be refused")
}

fn positions(diagnostics: &[Diagnostic]) -> Vec<(u32, u32)> {
    diagnostics.iter().map(|d| (d.line, d.column)).collect()
}

/// (id, effect, @hold, @reason, names_actions)
type MetaCase = (
    &'static str,
    PolicyEffect,
    Option<&'static str>,
    Option<&'static str>,
    &'static [&'static str],
);

#[test]
fn shipped_default_compiles() {
    let compiled = compile(DEFAULT_POLICY_TEXT).unwrap_or_else(|d| panic!("{d:?}"));
    assert_eq!(
        compiled.policy_ids(),
        [
            "agents-may-read",
            "no-card-numbers",
            "no-app-secrets",
            "agents-may-write",
            "agents-may-move-money",
            "large-amounts-need-approval",
            "commitments-need-a-human",
            "account-changes-need-a-human",
        ]
    );
    assert_eq!(compiled.text(), DEFAULT_POLICY_TEXT);
    let want: [MetaCase; 8] = [
        (
            "agents-may-read",
            PolicyEffect::Permit,
            None,
            None,
            &["read"],
        ),
        (
            "no-card-numbers",
            PolicyEffect::Forbid,
            None,
            Some("agents may not read card numbers or CVCs"),
            &[],
        ),
        (
            "no-app-secrets",
            PolicyEffect::Forbid,
            None,
            Some("agents may not read app secrets"),
            &[],
        ),
        (
            "agents-may-write",
            PolicyEffect::Permit,
            None,
            None,
            &["write"],
        ),
        (
            "agents-may-move-money",
            PolicyEffect::Permit,
            None,
            None,
            &["move_money"],
        ),
        (
            "large-amounts-need-approval",
            PolicyEffect::Forbid,
            Some("moving more than 1,000.00 needs a human approval"),
            None,
            &["move_money"],
        ),
        (
            "commitments-need-a-human",
            PolicyEffect::Forbid,
            Some("commitments to pay later need a human approval"),
            None,
            &["commit_money"],
        ),
        (
            "account-changes-need-a-human",
            PolicyEffect::Forbid,
            Some(
                "changes to the account, its payouts, keys or data recipients need a human approval",
            ),
            None,
            &["admin"],
        ),
    ];
    for (position, (id, effect, hold, reason, names)) in want.into_iter().enumerate() {
        let meta = compiled.meta(id).unwrap();
        assert_eq!(meta.effect, effect, "{id}");
        assert_eq!(meta.hold.as_deref(), hold, "{id}");
        assert_eq!(meta.reason.as_deref(), reason, "{id}");
        assert_eq!(meta.approvals, 1, "{id}");
        assert_eq!(meta.position, position, "{id}");
        assert_eq!(meta.names_actions, names, "{id}");
    }
    // Nothing in the default set reads `context`: all of it is decided before the transaction.
    assert_eq!(compiled.stateful_count(), 0);
}

#[test]
fn names_actions_lists_only_what_the_scope_names_itself() {
    let cases: [(&str, &[&str]); 6] = [
        ("permit (principal, action, resource);", &[]),
        (
            "permit (principal, action == Action::\"unknown\", resource);",
            &["unknown"],
        ),
        (
            "permit (principal, action == Action::\"refunds.create\", resource);",
            &["refunds.create"],
        ),
        // A group names the group, never its members.
        (
            "permit (principal, action in Action::\"move_money\", resource);",
            &["move_money"],
        ),
        (
            "permit (principal, action in [Action::\"refunds.create\", Action::\"unknown\"], resource);",
            &["refunds.create", "unknown"],
        ),
        (
            "forbid (principal, action in [Action::\"payouts.create\"], resource);",
            &["payouts.create"],
        ),
    ];
    for (text, want) in cases {
        let compiled = compile(text).unwrap_or_else(|d| panic!("{text}: {d:?}"));
        let mut names = compiled.meta("policy0").unwrap().names_actions.clone();
        names.sort();
        assert_eq!(names, want, "{text}");
    }
    // Metadata written before `names_actions` existed still reads.
    let old: PolicyMeta = serde_json::from_value(serde_json::json!({
        "effect": "permit", "hold": null, "reason": null, "approvals": 1, "position": 0
    }))
    .unwrap();
    assert!(old.names_actions.is_empty());
}

/// The schema's entity of an action and the groups it is in.
fn declared(compiled: &CompiledPolicies, action: &str) -> Option<Vec<String>> {
    let uid = EntityUid::from_str(&format!("Action::{action:?}")).unwrap();
    let entity = compiled.action_entity(&uid)?;
    let json = entity.to_json_value().unwrap();
    let mut parents: Vec<String> = json["parents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    parents.sort();
    Some(parents)
}

#[test]
fn every_action_of_the_table_is_declared_in_its_class() {
    let compiled = compile("").unwrap();
    for op in crate::operations::operation_table().operations() {
        assert_eq!(
            declared(&compiled, op.action),
            Some(vec![op.class.as_str().to_owned()]),
            "{} {} ({})",
            op.method,
            op.template,
            op.action
        );
    }
    // `unknown` is in no group: no group permit reaches it.
    assert_eq!(
        declared(&compiled, crate::classify::UNKNOWN_OPERATION),
        Some(vec![])
    );
    assert_eq!(declared(&compiled, "no.such.action"), None);
}

#[test]
fn unlisted_reads_are_declared_in_the_read_group() {
    let compiled = compile("").unwrap();
    assert_eq!(
        declared(&compiled, crate::classify::UNLISTED_READ),
        Some(vec!["read".to_owned()])
    );
}

#[test]
fn spec_example_compiles() {
    let compiled = compile(SPEC_EXAMPLE).unwrap_or_else(|d| panic!("{d:?}"));
    assert_eq!(compiled.policy_ids().len(), 5);
    let big = compiled.meta("big-needs-approval").unwrap();
    assert_eq!(
        (big.approvals, big.hold.as_deref()),
        (2, Some("payments over 500.00 need a human"))
    );
    let no_payouts = compiled.meta("no-payouts").unwrap();
    assert_eq!(
        no_payouts.reason.as_deref(),
        Some("payouts are not allowed for agents")
    );
    assert_eq!(no_payouts.position, 2);
}

#[test]
fn empty_text_is_a_valid_empty_set() {
    for text in ["", "  \n// nothing yet\n"] {
        assert!(compile(text).unwrap().policy_ids().is_empty());
    }
}

#[test]
fn policies_without_id_are_named_by_position() {
    let text = "permit (principal, action in Action::\"read\", resource);\n\
                @id(\"pay\") permit (principal, action in Action::\"move_money\", resource);\n\
                permit (principal, action in Action::\"write\", resource);";
    assert_eq!(
        compile(text).unwrap().policy_ids(),
        ["policy0", "pay", "policy2"]
    );
}

#[test]
fn a_group_named_with_equals_is_refused_with_the_fix() {
    // `action == Action::"read"` validates in Cedar but matches no request: every read has its
    // own name. Refused, located, with the `in` form in the message.
    let text = "@id(\"ok\") permit (principal, action in Action::\"read\", resource);\n\
                @id(\"dead\") permit (principal, action == Action::\"move_money\", resource);\n";
    let diagnostics = errors(text);
    assert_eq!(positions(&diagnostics), [(2, 1)], "{diagnostics:?}");
    assert!(
        diagnostics[0]
            .message
            .contains("write `action in Action::\"move_money\"`"),
        "{diagnostics:?}"
    );
    // A set stored before the check still loads (and fails closed where it never matches).
    assert!(compile_stored(text).is_ok());
    // A named operation with `==` is fine.
    assert!(compile("permit (principal, action == Action::\"refunds.create\", resource);").is_ok());
}

#[test]
fn parse_errors_are_located() {
    let text = "permit (principal, action, resource);\nforbid (principal action, resource);\n";
    let diagnostics = errors(text);
    assert_eq!(positions(&diagnostics)[0], (2, 19), "{diagnostics:?}");
    assert!(!diagnostics[0].message.is_empty());
}

#[test]
fn validation_errors_are_located() {
    let text = "@id(\"ok\") permit (principal, action in Action::\"read\", resource);\n\
                @id(\"typo\")\n\
                forbid (principal, action in Action::\"move_money\", resource)\n  when { resource.amout > 5 };\n";
    let diagnostics = errors(text);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(positions(&diagnostics), [(4, 10)], "{diagnostics:?}");
    assert!(
        diagnostics[0].message.contains("amout"),
        "{}",
        diagnostics[0].message
    );
}

#[test]
fn unknown_actions_and_types_are_refused() {
    let diagnostics = errors("permit (principal, action == Action::\"fly\", resource);");
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    let diagnostics = errors("permit (principal == User::\"x\", action, resource);");
    assert!(!diagnostics.is_empty());
}

#[test]
fn annotation_rules() {
    let forbid = "forbid (principal, action in Action::\"move_money\", resource)";
    let permit = "permit (principal, action in Action::\"move_money\", resource)";
    let cases = [
        format!("@id(\"a\") {permit};\n@id(\"a\") {forbid};"),
        format!("{permit};\n@id(\"policy0\") {forbid};"),
        format!("@id(\"\") {permit};"),
        format!("// note\n@id(\"p\") @hold(\"x\") {permit};"),
        format!("@id(\"f\") @approvals(\"2\") {forbid};"),
        format!("@id(\"f\") @hold(\"x\") @approvals(\"0\") {forbid};"),
        format!("@id(\"f\") @hold(\"x\") @approvals(\"11\") {forbid};"),
        format!("@id(\"f\") @hold(\"x\") @approvals(\"two\") {forbid};"),
    ];
    let want_line = [2, 2, 1, 2, 1, 1, 1, 1];
    for (text, line) in cases.iter().zip(want_line) {
        let diagnostics = errors(text);
        assert_eq!(
            positions(&diagnostics),
            [(line, 1)],
            "{text}: {diagnostics:?}"
        );
    }
    let ok = format!("@id(\"f\") @hold(\"x\") @approvals(\"10\") {forbid};");
    assert_eq!(compile(&ok).unwrap().meta("f").unwrap().approvals, 10);
}

#[test]
fn templates_are_refused() {
    let text = "permit (principal, action in Action::\"read\", resource);\n\
                permit (principal == ?principal, action in Action::\"read\", resource);";
    let diagnostics = errors(text);
    assert_eq!(positions(&diagnostics), [(2, 1)], "{diagnostics:?}");
    assert!(diagnostics[0].message.contains("template"));
}

#[test]
fn every_problem_is_reported_in_order() {
    let text = "@id(\"p\") @hold(\"x\") permit (principal, action in Action::\"read\", resource)\n\
                  when { resource.amout > 1 };\n\
                // permit (principal, action, resource);\n\
                permit (principal, action, resource);\n\
                @id(\"p\") forbid (principal, action, resource);";
    let diagnostics = errors(text);
    assert_eq!(
        positions(&diagnostics),
        [(1, 1), (2, 8), (5, 1)],
        "{diagnostics:?}"
    );
}

#[test]
fn columns_count_characters() {
    let text = "// héllo wörld\n@id(\"é\") permit (principal, action in Action::\"read\", resource) when { resource.amout == 1 };";
    let diagnostics = errors(text);
    // `resource.amout` starts at character 72 of line 2 (byte 73: `é` takes two bytes).
    assert_eq!(positions(&diagnostics), [(2, 72)], "{diagnostics:?}");
    assert_eq!(at("ab\ncd", 99, String::new()).column, 3);
    assert_eq!(at("é", 1, String::new()).column, 1);
}

#[test]
fn diagnostics_serialize() {
    let json = serde_json::to_value(Diagnostic {
        line: 2,
        column: 5,
        message: "m".into(),
    })
    .unwrap();
    assert_eq!(
        json,
        serde_json::json!({"line": 2, "column": 5, "message": "m"})
    );
}
