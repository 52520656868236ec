//! RFC 8785 (JCS) canonical JSON for appending audit events, with a fast path.
//!
//! `serde_json_canonicalizer` is the reference: it handles all of JSON (ECMAScript number
//! formatting, UTF-16 key order, every escape). Audit events are objects with ASCII keys,
//! integers and mostly printable-ASCII strings; on that subset JCS is simply "keys sorted, no
//! blanks, `"` and `\` escaped, integers as digits", which this module writes directly. Anything
//! outside the subset (a float, an integer beyond 2^53, a key that is not ASCII, a string with a
//! control or non-ASCII character) makes the whole value go through the reference instead, so
//! the output is always the reference's; `tests` compare the two on arbitrary values.
//!
//! Verification never uses this: the full check canonicalizes with the reference.

use serde_json::Value;

/// Largest magnitude ECMAScript prints as the integer's own digits (2^53).
const MAX_EXACT_INTEGER: u64 = 1 << 53;

/// The JCS canonical bytes of `value`.
pub(crate) fn to_vec(value: &Value) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(640);
    if write_fast(value, &mut out) {
        return Ok(out);
    }
    serde_json_canonicalizer::to_vec(value).map_err(|e| e.to_string())
}

/// Writes `value` when it is in the fast path's subset; `false` (output unusable) otherwise.
fn write_fast(value: &Value, out: &mut Vec<u8>) -> bool {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                if u > MAX_EXACT_INTEGER {
                    return false;
                }
                out.extend_from_slice(u.to_string().as_bytes());
            } else if let Some(i) = n.as_i64() {
                if i.unsigned_abs() > MAX_EXACT_INTEGER {
                    return false;
                }
                out.extend_from_slice(i.to_string().as_bytes());
            } else {
                return false; // a float: ECMAScript formatting is the reference's job
            }
        }
        Value::String(s) => return write_str(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if !write_fast(item, out) {
                    return false;
                }
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // For ASCII keys, byte order is UTF-16 code unit order (RFC 8785 §3.2.3).
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if !write_str(key, out) {
                    return false;
                }
                out.push(b':');
                if !write_fast(item, out) {
                    return false;
                }
            }
            out.push(b'}');
        }
    }
    true
}

/// A string of printable ASCII, with `"` and `\` escaped; `false` for any other character.
fn write_str(s: &str, out: &mut Vec<u8>) -> bool {
    if !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return false;
    }
    out.push(b'"');
    for b in s.bytes() {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn reference(v: &Value) -> Vec<u8> {
        serde_json_canonicalizer::to_vec(v).unwrap()
    }

    fn fast_only(v: &Value) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        write_fast(v, &mut out).then_some(out)
    }

    #[test]
    fn audit_events_take_the_fast_path_and_match_the_reference() {
        let ev = json!({"org": "org_a", "seq": 12, "at": "2026-12-02T06:00:00.000001Z",
            "actor": {"type": "agent", "id": "agt_1"}, "kind": "decision", "prev": "ab".repeat(32),
            "data": {"intent": "int_1", "amount": 1000, "reserved": null, "outcome": "allow",
                     "policies": ["agents-may-move-money"], "caps": [], "reason": "say \"no\" \\ ok",
                     "errors": [], "livemode": false, "negative": -5}});
        let fast = fast_only(&ev).expect("an ordinary event is in the fast subset");
        assert_eq!(fast, reference(&ev));
    }

    #[test]
    fn outside_the_subset_the_reference_decides() {
        for v in [
            json!({"reason": "caf\u{e9}"}),
            json!({"reason": "line\nbreak"}),
            json!({"\u{e9}": 1, "z": 2}),
            json!({"amount": 9_007_199_254_740_993u64}),
            json!({"amount": -9_007_199_254_740_993i64}),
            json!({"x": 1.5}),
            json!({"x": 1e21}),
        ] {
            assert!(fast_only(&v).is_none(), "{v}");
            assert_eq!(to_vec(&v).unwrap(), reference(&v), "{v}");
        }
        let edge = json!({"a": 9_007_199_254_740_992u64, "b": -9_007_199_254_740_992i64});
        assert_eq!(fast_only(&edge).unwrap(), reference(&edge));
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<u64>().prop_map(|u| json!(u)),
            (-1_000_000i64..1_000_000).prop_map(|i| json!(i)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            "[ -~]{0,12}".prop_map(Value::String),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((prop_oneof!["[ -~]{0,8}", any::<String>()], inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn always_the_reference_bytes(v in arb_value()) {
            prop_assert_eq!(to_vec(&v).unwrap(), reference(&v));
        }
    }
}
