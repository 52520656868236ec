//! PROXY.md step 2: the operation table. Every route of Stripe's pinned API surface, and the
//! legacy aliases Stripe still serves, with its Cedar action, its class and how it is valued.
//!
//! The table is data (`policies/operations.tsv`), generated and reviewed by
//! `policies/tools/gen_operations.py`; here it is compiled once into a trie of path segments,
//! so finding a request's operation costs one hash lookup per segment, whatever the table's
//! size. Literal segments win over `{id}` parameters, as in Stripe's own router
//! (`/v1/customers/search` is not a customer id).

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::classify::OperationClass;
use crate::valuation::{VALUERS, Valuer};

/// The generated table, compiled into the binary.
pub(crate) const TABLE_TEXT: &str = include_str!("../operations.tsv");

/// How the guard learns what an operation is worth.
#[derive(Clone, Copy, Debug)]
pub enum Valuation {
    /// The operation moves or commits no money.
    None,
    /// From the request's own parameters.
    Fields(Valuer),
    /// From the object at the rail (GET with the organization's key) and the parameters.
    Lookup(Valuer),
    /// The guard cannot tell: held unless a policy names the action explicitly.
    Unvaluable,
}

impl Valuation {
    /// `none`, `fields`, `lookup` or `unvaluable`.
    pub fn kind(&self) -> &'static str {
        match self {
            Valuation::None => "none",
            Valuation::Fields(_) => "fields",
            Valuation::Lookup(_) => "lookup",
            Valuation::Unvaluable => "unvaluable",
        }
    }
}

/// One row of the table.
#[derive(Clone, Debug)]
pub struct Operation {
    /// `GET`, `POST` or `DELETE`.
    pub method: &'static str,
    /// Path template, e.g. `/v1/charges/{id}/refund`.
    pub template: &'static str,
    /// Cedar action id, e.g. `refunds.create`.
    pub action: &'static str,
    /// The operation's class.
    pub class: OperationClass,
    /// How it is valued.
    pub valuation: Valuation,
    /// A legacy route that maps to another route's action.
    pub alias: bool,
}

/// The compiled table.
pub struct OperationTable {
    operations: Vec<Operation>,
    root: Node,
}

#[derive(Default)]
struct Node {
    literals: HashMap<&'static str, Node>,
    param: Option<Box<Node>>,
    /// Row index per method: GET, POST, DELETE.
    ops: [Option<usize>; 3],
}

fn method_slot(method: &str) -> Option<usize> {
    match method {
        "GET" => Some(0),
        "POST" => Some(1),
        "DELETE" => Some(2),
        _ => None,
    }
}

/// Whether a path segment can be a Stripe id (`ch_3Nx…`, `acct_1…`): the only segments an
/// `{id}` parameter matches, so an encoded or dotted segment cannot reach an operation.
fn is_id(segment: &str) -> bool {
    !segment.is_empty()
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl OperationTable {
    /// Every row, in table order.
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// The operation of `method` on a path split into segments, with the values of its `{id}`
    /// parameters in path order.
    pub fn find<'p>(
        &self,
        method: &str,
        segments: &[&'p str],
    ) -> Option<(&Operation, Vec<&'p str>)> {
        let slot = method_slot(method)?;
        let mut ids = Vec::new();
        let index = walk(&self.root, segments, slot, &mut ids)?;
        Some((&self.operations[index], ids))
    }
}

/// Depth-first: a literal child first, then the parameter child (backtracking is bounded by
/// the path's length, at most 2 branches per segment).
fn walk<'p>(
    node: &Node,
    segments: &[&'p str],
    slot: usize,
    ids: &mut Vec<&'p str>,
) -> Option<usize> {
    let Some((first, rest)) = segments.split_first() else {
        return node.ops[slot];
    };
    if let Some(child) = node.literals.get(first)
        && let Some(found) = walk(child, rest, slot, ids)
    {
        return Some(found);
    }
    if let Some(child) = &node.param
        && is_id(first)
    {
        ids.push(first);
        if let Some(found) = walk(child, rest, slot, ids) {
            return Some(found);
        }
        ids.pop();
    }
    None
}

/// The table, compiled on first use. The shipped text is checked by the unit tests; a malformed
/// row is a build defect, not untrusted input.
pub fn operation_table() -> &'static OperationTable {
    static TABLE: OnceLock<OperationTable> = OnceLock::new();
    TABLE.get_or_init(|| compile(TABLE_TEXT).expect("the shipped operation table is valid"))
}

pub(crate) fn compile(text: &'static str) -> Result<OperationTable, String> {
    let mut table = OperationTable {
        operations: Vec::new(),
        root: Node::default(),
    };
    for (number, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let row = parse_row(line).map_err(|e| format!("line {}: {e}", number + 1))?;
        let slot = method_slot(row.method).ok_or("bad method")?;
        let mut node = &mut table.root;
        for segment in row.template.trim_start_matches('/').split('/') {
            node = if segment.starts_with('{') {
                node.param.get_or_insert_with(Box::default)
            } else {
                node.literals.entry(segment).or_default()
            };
        }
        if node.ops[slot].is_some() {
            return Err(format!(
                "line {}: duplicate route {}",
                number + 1,
                row.template
            ));
        }
        node.ops[slot] = Some(table.operations.len());
        table.operations.push(row);
    }
    Ok(table)
}

fn parse_row(line: &'static str) -> Result<Operation, String> {
    let cols: Vec<&'static str> = line.split('\t').collect();
    let [method, template, action, class, valuation, source] = cols[..] else {
        return Err(format!("expected 6 columns, got {}", cols.len()));
    };
    let class = match class {
        "move_money" => OperationClass::MoveMoney,
        "commit_money" => OperationClass::CommitMoney,
        "admin" => OperationClass::Admin,
        "write" => OperationClass::Write,
        "read" => OperationClass::Read,
        other => return Err(format!("unknown class {other}")),
    };
    let valuer = |name: &str| {
        VALUERS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
            .ok_or_else(|| format!("unknown valuer {name}"))
    };
    let valuation = match valuation.split_once(':') {
        None if valuation == "none" => Valuation::None,
        None if valuation == "unvaluable" => Valuation::Unvaluable,
        Some(("fields", name)) => Valuation::Fields(valuer(name)?),
        Some(("lookup", name)) => Valuation::Lookup(valuer(name)?),
        _ => return Err(format!("unknown valuation {valuation}")),
    };
    Ok(Operation {
        method,
        template,
        action,
        class,
        valuation,
        alias: source == "alias",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Stripe's pinned surface, copied from `../shared/stripe/` (see policies/stripe/).
    const PINNED: &str = include_str!("../stripe/operations-2026-10-28.tsv");

    fn shape(path: &str) -> String {
        path.split('/')
            .map(|s| if s.starts_with('{') { "{}" } else { s })
            .collect::<Vec<_>>()
            .join("/")
    }

    #[test]
    fn every_pinned_operation_is_in_the_table() {
        let table = operation_table();
        let rows: BTreeSet<(String, String)> = table
            .operations()
            .iter()
            .map(|o| (o.method.to_owned(), shape(o.template)))
            .collect();
        let mut missing = Vec::new();
        let mut count = 0;
        for line in PINNED.lines().filter(|l| !l.is_empty()) {
            let mut cols = line.split('\t');
            let (method, path) = (cols.next().unwrap(), cols.next().unwrap());
            count += 1;
            if !rows.contains(&(method.to_owned(), shape(path))) {
                missing.push(format!("{method} {path}"));
            }
        }
        assert_eq!(count, 648, "the pinned list has 648 operations");
        assert!(missing.is_empty(), "missing from the table: {missing:?}");
    }

    #[test]
    fn the_shared_copy_is_the_pinned_list() {
        // CI lays shared/ beside the checkout; the repo's copy must not drift from it.
        let shared = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/stripe/operations-2026-10-28.tsv"
        );
        if let Ok(text) = std::fs::read_to_string(shared) {
            assert_eq!(text, PINNED);
        }
    }

    #[test]
    fn finds_routes_with_ids_and_prefers_literals() {
        let t = operation_table();
        let seg = |p: &'static str| p.trim_start_matches('/').split('/').collect::<Vec<_>>();
        let (op, ids) = t.find("POST", &seg("/v1/charges/ch_1/refund")).unwrap();
        assert_eq!(
            (op.action, op.alias, ids),
            ("refunds.create", true, vec!["ch_1"])
        );
        let (op, _) = t.find("GET", &seg("/v1/customers/search")).unwrap();
        assert_eq!(op.action, "customers.search");
        let (op, ids) = t.find("GET", &seg("/v1/customers/cus_1")).unwrap();
        assert_eq!((op.action, ids), ("customers.retrieve", vec!["cus_1"]));
        let (op, ids) = t
            .find("POST", &seg("/v1/accounts/acct_1/external_accounts/ba_2"))
            .unwrap();
        assert_eq!(
            (op.action, op.class, ids),
            (
                "accounts.external_accounts.update",
                OperationClass::Admin,
                vec!["acct_1", "ba_2"]
            )
        );
        assert!(t.find("POST", &seg("/v1/no_such_thing")).is_none());
        assert!(
            t.find("POST", &seg("/v1/refunds/re-1")).is_none(),
            "ids are [A-Za-z0-9_]"
        );
        assert!(t.find("PUT", &seg("/v1/refunds")).is_none());
        assert!(
            t.find("POST", &seg("/V1/refunds")).is_none(),
            "literals are exact"
        );
    }

    #[test]
    fn one_class_per_action_and_every_valuer_resolves() {
        let mut classes = HashMap::new();
        for op in operation_table().operations() {
            let prev = classes.insert(op.action, op.class);
            assert!(
                prev.is_none_or(|c| c == op.class),
                "{} has two classes",
                op.action
            );
            if op.class == OperationClass::Read {
                assert!(matches!(op.valuation, Valuation::None), "{}", op.template);
            }
        }
    }

    #[test]
    fn malformed_tables_are_refused() {
        assert!(compile("POST\t/v1/x\tx.create\tmove_money\tfields:nope\tpinned").is_err());
        assert!(compile("POST\t/v1/x\tx.create\tsideways\tnone\tpinned").is_err());
        assert!(compile("POST\t/v1/x\tx.create\twrite\tnone").is_err());
        assert!(
            compile("POST\t/v1/x\tx.create\twrite\tnone\tpinned\nPOST\t/v1/x\tx.create\twrite\tnone\tpinned")
                .is_err()
        );
    }
}
