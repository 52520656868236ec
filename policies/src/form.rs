//! Stripe request bodies: `application/x-www-form-urlencoded` with bracket nesting
//! (`metadata[order]=42`, `payment_method_types[0]=card`, `expand[]=a`).
//!
//! The parser is strict on purpose: the guard decides on what it parsed, so anything Stripe
//! might read differently (duplicate keys, odd brackets, bad encodings) is refused rather than
//! guessed at.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use thiserror::Error;

/// Hard ceiling on nesting, whatever [`FormLimits::max_depth`] says: the tree is walked
/// recursively, so this bounds stack use.
const DEPTH_CEILING: usize = 32;

/// Longest parameter name quoted back in an error message, in characters.
const ERROR_NAME_CHARS: usize = 64;

/// Bounds on a form body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FormLimits {
    /// Most `key=value` pairs accepted (empty pairs between `&&` are not counted).
    pub max_params: usize,
    /// Most bracket segments in one key: `a[b][c]` has depth 2. Capped at 32.
    pub max_depth: usize,
}

impl Default for FormLimits {
    fn default() -> Self {
        FormLimits {
            max_params: 1000,
            max_depth: 8,
        }
    }
}

/// A parsed form value: a string, a map of named children, or a list of indexed children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormValue {
    /// A scalar parameter value, percent-decoded.
    Str(String),
    /// Named children: `a[b]=..`, and the root of every body.
    Map(BTreeMap<String, FormValue>),
    /// Indexed children: `a[0]=..` or appended `a[]=..`, dense from index 0.
    List(Vec<FormValue>),
}

impl FormValue {
    /// A child by name, or (for a list) by decimal index.
    pub fn get(&self, key: &str) -> Option<&FormValue> {
        match self {
            FormValue::Map(map) => map.get(key),
            FormValue::List(list) => list.get(canonical_index(key)?),
            FormValue::Str(_) => None,
        }
    }

    /// The string, if this is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FormValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The children, if this is a map.
    pub fn as_map(&self) -> Option<&BTreeMap<String, FormValue>> {
        match self {
            FormValue::Map(map) => Some(map),
            _ => None,
        }
    }

    /// The elements, if this is a list.
    pub fn as_list(&self) -> Option<&[FormValue]> {
        match self {
            FormValue::List(list) => Some(list),
            _ => None,
        }
    }

    /// A descendant: `path(&["line_items", "0", "quantity"])`.
    pub fn path(&self, path: &[&str]) -> Option<&FormValue> {
        path.iter().try_fold(self, |value, key| value.get(key))
    }
}

/// Only `0` or digits without a leading zero address a list element.
fn canonical_index(key: &str) -> Option<usize> {
    let canonical = key == "0" || (!key.starts_with('0') && !key.is_empty());
    if canonical && key.bytes().all(|b| b.is_ascii_digit()) {
        key.parse().ok()
    } else {
        None
    }
}

/// Why a body was refused. Messages name the parameter; they are shown to the agent.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum FormError {
    /// More pairs than [`FormLimits::max_params`].
    #[error("too many parameters (more than {max})")]
    TooManyParams {
        /// The limit.
        max: usize,
    },
    /// More bracket segments than [`FormLimits::max_depth`].
    #[error("parameter `{param}` is nested too deeply (more than {max} levels)")]
    TooDeep {
        /// The parameter name.
        param: String,
        /// The limit.
        max: usize,
    },
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding in parameter `{param}`")]
    BadPercentEncoding {
        /// The parameter name (raw, if the name itself was badly encoded).
        param: String,
    },
    /// Bytes that are not UTF-8 once decoded.
    #[error("parameter `{param}` is not valid UTF-8")]
    BadUtf8 {
        /// The parameter name (lossy, if the name itself was not UTF-8).
        param: String,
    },
    /// `a[b`, `a]`, `a[b]c`, `a[[b]]`, or an empty name such as `=1` or `[a]=1`.
    #[error("malformed parameter name `{param}`")]
    BadName {
        /// The parameter name.
        param: String,
    },
    /// The same scalar parameter given twice.
    #[error("parameter `{param}` is given more than once")]
    Duplicate {
        /// The parameter name.
        param: String,
    },
    /// A parameter used both as a value and as a container (`a=1&a[b]=2`), or both as a list
    /// and a map (`a[0]=1&a[b]=2`).
    #[error("parameter `{param}` is used with conflicting shapes")]
    Conflict {
        /// The parameter name.
        param: String,
    },
    /// A list index beyond the number of parameters a body may have.
    #[error("index in parameter `{param}` is too large")]
    IndexTooLarge {
        /// The parameter name.
        param: String,
    },
    /// A `;` outside percent-encoding, which some parsers read as a separator.
    #[error("`;` must be percent-encoded (%3B)")]
    RawSemicolon,
    /// A `/v2` body that is not a JSON object.
    #[error("invalid JSON body: {0}")]
    BadJson(String),
    /// A list with missing indices (`a[0]=x&a[2]=y`).
    #[error("list parameter `{param}` has missing indices")]
    SparseList {
        /// The list's name.
        param: String,
    },
}

/// One bracket segment of a key.
#[derive(Debug, PartialEq, Eq)]
enum Segment {
    /// `[]`: append a new element.
    Append,
    /// `[3]`
    Index(usize),
    /// `[name]`
    Name(String),
}

/// The tree while it is being built; lists are sparse until [`finish`] checks them.
#[derive(Debug)]
enum Node {
    /// Just created on the way down; replaced before `insert` returns Ok.
    Empty,
    Str(String),
    Map(BTreeMap<String, Node>),
    List(BTreeMap<usize, Node>),
}

/// Parses a form body into a [`FormValue::Map`] root. An empty body is an empty map.
pub fn parse_form(body: &[u8], limits: &FormLimits) -> Result<FormValue, FormError> {
    // Some form parsers also split on `;` (Rack 2, old CGI): the guard would read one
    // parameter where the rail reads two. SDKs always percent-encode it.
    if body.contains(&b';') {
        return Err(FormError::RawSemicolon);
    }
    let max_depth = limits.max_depth.min(DEPTH_CEILING);
    let mut root = BTreeMap::new();
    let mut count = 0usize;
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        count = count.saturating_add(1);
        if count > limits.max_params {
            return Err(FormError::TooManyParams {
                max: limits.max_params,
            });
        }
        let (key, value) = decode_pair(pair)?;
        let (name, segments) = parse_key(&key, max_depth, limits.max_params)?;
        insert(&mut root, &key, name, &segments, value)?;
    }
    finish_map(root, "")
}

/// Parses a `/v2` JSON body into the same tree as a form body, under the same bounds: at most
/// `max_params` values (scalars, objects and arrays together) and `max_depth` levels. Numbers
/// keep their JSON text (`1000`, `10.5`), booleans become `"true"`/`"false"`, `null` an empty
/// string. An empty body is an empty map; a body whose top level is not an object is refused.
pub fn parse_json(body: &[u8], limits: &FormLimits) -> Result<FormValue, FormError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(FormValue::Map(BTreeMap::new()));
    }
    // serde_json refuses nesting beyond 128 levels before building anything deeper.
    let StrictJson(value) =
        serde_json::from_slice(body).map_err(|e| FormError::BadJson(e.to_string()))?;
    if !value.is_object() {
        return Err(FormError::BadJson("the body must be a JSON object".into()));
    }
    let max_depth = limits.max_depth.min(DEPTH_CEILING);
    let mut count = 0usize;
    json_node(&value, "", 0, max_depth, limits.max_params, &mut count)
}

/// A JSON value whose objects never repeat a key. serde_json keeps the last of two equal keys
/// silently; Stripe might read the first, so a body with both is refused, as a form body with
/// a repeated parameter is.
struct StrictJson(serde_json::Value);

impl<'de> serde::Deserialize<'de> for StrictJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictJson)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictJson(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(serde_json::Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let StrictJson(value) = map.next_value()?;
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "key `{}` is given more than once",
                    truncate(&key)
                )));
            }
            out.insert(key, value);
        }
        Ok(serde_json::Value::Object(out))
    }
}

fn json_node(
    value: &serde_json::Value,
    param: &str,
    depth: usize,
    max_depth: usize,
    max_params: usize,
    count: &mut usize,
) -> Result<FormValue, FormError> {
    *count = count.saturating_add(1);
    if *count > max_params.saturating_add(1) {
        return Err(FormError::TooManyParams { max: max_params });
    }
    if depth > max_depth + 1 {
        return Err(FormError::TooDeep {
            param: truncate(param),
            max: max_depth,
        });
    }
    let child_name = |key: &str| {
        if param.is_empty() {
            key.to_owned()
        } else {
            format!("{param}[{key}]")
        }
    };
    Ok(match value {
        serde_json::Value::Null => FormValue::Str(String::new()),
        serde_json::Value::Bool(b) => FormValue::Str(b.to_string()),
        serde_json::Value::Number(n) => FormValue::Str(n.to_string()),
        serde_json::Value::String(s) => FormValue::Str(s.clone()),
        serde_json::Value::Array(items) => FormValue::List(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    json_node(
                        v,
                        &child_name(&i.to_string()),
                        depth + 1,
                        max_depth,
                        max_params,
                        count,
                    )
                })
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(map) => FormValue::Map(
            map.iter()
                .map(|(k, v)| {
                    Ok((
                        k.clone(),
                        json_node(v, &child_name(k), depth + 1, max_depth, max_params, count)?,
                    ))
                })
                .collect::<Result<_, FormError>>()?,
        ),
    })
}

/// Splits `key=value` at the first `=` and decodes both halves.
fn decode_pair(pair: &[u8]) -> Result<(String, String), FormError> {
    let (raw_key, raw_value) = match pair.iter().position(|&b| b == b'=') {
        Some(at) => (&pair[..at], &pair[at + 1..]),
        None => (pair, &[][..]),
    };
    let lossy = || truncate(&String::from_utf8_lossy(raw_key));
    let key = decode(raw_key)
        .ok_or_else(|| FormError::BadPercentEncoding { param: lossy() })
        .and_then(|bytes| {
            String::from_utf8(bytes).map_err(|_| FormError::BadUtf8 { param: lossy() })
        })?;
    let param = || truncate(&key);
    let value = decode(raw_value)
        .ok_or_else(|| FormError::BadPercentEncoding { param: param() })
        .and_then(|bytes| {
            String::from_utf8(bytes).map_err(|_| FormError::BadUtf8 { param: param() })
        })?;
    Ok((key, value))
}

/// `+` is a space; every `%` must start a two-hex-digit escape (percent-encoding's own decoder
/// passes malformed escapes through, which would let two readers disagree).
fn decode(raw: &[u8]) -> Option<Vec<u8>> {
    let escapes_ok = raw.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || matches!(raw.get(i + 1..i + 3), Some([h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit())
    });
    if !escapes_ok {
        return None;
    }
    let spaced: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    Some(percent_encoding::percent_decode(&spaced).collect())
}

/// Splits `name[a][0][]` into the name and its segments.
fn parse_key(
    key: &str,
    max_depth: usize,
    max_index: usize,
) -> Result<(&str, Vec<Segment>), FormError> {
    let bad = || FormError::BadName {
        param: truncate(key),
    };
    let name_end = key.find('[').unwrap_or(key.len());
    let (name, mut rest) = key.split_at(name_end);
    // Whitespace around a name (`& amount=`) is trimmed by some parsers and not by others.
    if name.is_empty() || name.contains(']') || name.trim() != name {
        return Err(bad());
    }
    let mut segments = Vec::new();
    while let Some(after_open) = rest.strip_prefix('[') {
        let close = after_open.find(']').ok_or_else(bad)?;
        let inner = &after_open[..close];
        if inner.contains('[') {
            return Err(bad());
        }
        if segments.len() == max_depth {
            return Err(FormError::TooDeep {
                param: truncate(key),
                max: max_depth,
            });
        }
        segments.push(segment(inner, key, max_index)?);
        rest = &after_open[close + 1..];
    }
    if rest.is_empty() {
        Ok((name, segments))
    } else {
        Err(bad())
    }
}

fn segment(inner: &str, key: &str, max_index: usize) -> Result<Segment, FormError> {
    if inner.is_empty() {
        return Ok(Segment::Append);
    }
    if !inner.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Segment::Name(inner.to_owned()));
    }
    // `[00]` and `[0]` would be one element here and may be two elsewhere.
    if inner.len() > 1 && inner.starts_with('0') {
        return Err(FormError::BadName {
            param: truncate(key),
        });
    }
    // A body of at most `max_index` pairs cannot fill a list longer than that.
    match inner.parse::<usize>() {
        Ok(index) if index < max_index => Ok(Segment::Index(index)),
        _ => Err(FormError::IndexTooLarge {
            param: truncate(key),
        }),
    }
}

/// Walks down from the root, creating containers, and stores the value at the leaf.
fn insert(
    root: &mut BTreeMap<String, Node>,
    key: &str,
    name: &str,
    segments: &[Segment],
    value: String,
) -> Result<(), FormError> {
    let mut slot = root.entry(name.to_owned()).or_insert(Node::Empty);
    for segment in segments {
        slot = child(slot, segment, key)?;
    }
    match slot {
        Node::Empty => {
            *slot = Node::Str(value);
            Ok(())
        }
        Node::Str(_) => Err(FormError::Duplicate {
            param: truncate(key),
        }),
        Node::Map(_) | Node::List(_) => Err(FormError::Conflict {
            param: truncate(key),
        }),
    }
}

/// The child slot `segment` names inside `slot`, turning a fresh slot into the right container.
fn child<'a>(slot: &'a mut Node, segment: &Segment, key: &str) -> Result<&'a mut Node, FormError> {
    if matches!(slot, Node::Empty) {
        *slot = match segment {
            Segment::Name(_) => Node::Map(BTreeMap::new()),
            Segment::Index(_) | Segment::Append => Node::List(BTreeMap::new()),
        };
    }
    let conflict = || FormError::Conflict {
        param: truncate(key),
    };
    match (slot, segment) {
        (Node::Map(map), Segment::Name(name)) => Ok(map.entry(name.clone()).or_insert(Node::Empty)),
        (Node::List(list), Segment::Index(index)) => Ok(list.entry(*index).or_insert(Node::Empty)),
        (Node::List(list), Segment::Append) => append(list, key),
        _ => Err(conflict()),
    }
}

/// `a[]=x`: a new element after the highest index so far.
fn append<'a>(list: &'a mut BTreeMap<usize, Node>, key: &str) -> Result<&'a mut Node, FormError> {
    let next = match list.last_key_value() {
        Some((last, _)) => last
            .checked_add(1)
            .ok_or_else(|| FormError::IndexTooLarge {
                param: truncate(key),
            })?,
        None => 0,
    };
    match list.entry(next) {
        Entry::Vacant(vacant) => Ok(vacant.insert(Node::Empty)),
        Entry::Occupied(_) => Err(FormError::Conflict {
            param: truncate(key),
        }),
    }
}

fn finish(node: Node, param: &str) -> Result<FormValue, FormError> {
    match node {
        // Unreachable after a successful insert; an empty string is the harmless reading.
        Node::Empty => Ok(FormValue::Str(String::new())),
        Node::Str(s) => Ok(FormValue::Str(s)),
        Node::Map(map) => finish_map(map, param),
        Node::List(list) => finish_list(list, param),
    }
}

fn finish_map(map: BTreeMap<String, Node>, param: &str) -> Result<FormValue, FormError> {
    let mut out = BTreeMap::new();
    for (name, node) in map {
        let path = if param.is_empty() {
            name.clone()
        } else {
            format!("{param}[{name}]")
        };
        out.insert(name, finish(node, &path)?);
    }
    Ok(FormValue::Map(out))
}

/// Indices may arrive in any order but must end up exactly `0..n`.
fn finish_list(list: BTreeMap<usize, Node>, param: &str) -> Result<FormValue, FormError> {
    let dense = list
        .keys()
        .enumerate()
        .all(|(position, &index)| position == index);
    if !dense {
        return Err(FormError::SparseList {
            param: truncate(param),
        });
    }
    let mut out = Vec::with_capacity(list.len());
    for (index, node) in list {
        out.push(finish(node, &format!("{param}[{index}]"))?);
    }
    Ok(FormValue::List(out))
}

/// Shortens a parameter name for an error message, on a character boundary.
fn truncate(name: &str) -> String {
    match name.char_indices().nth(ERROR_NAME_CHARS) {
        Some((at, _)) => format!("{}…", &name[..at]),
        None => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(body: &str) -> Result<FormValue, FormError> {
        parse_form(body.as_bytes(), &FormLimits::default())
    }

    fn s(v: &str) -> FormValue {
        FormValue::Str(v.to_owned())
    }

    #[test]
    fn accepted_bodies() {
        #[rustfmt::skip]
        let cases: &[(&str, &[&str], FormValue)] = &[
            ("a=1", &["a"], s("1")),
            ("metadata[order]=42", &["metadata", "order"], s("42")),
            ("metadata%5Border%5D=42", &["metadata", "order"], s("42")),
            ("payment_method_types[0]=card", &["payment_method_types", "0"], s("card")),
            ("expand[]=x&expand[]=y", &["expand", "1"], s("y")),
            ("line_items[0][price_data][unit_amount]=100", &["line_items", "0", "price_data", "unit_amount"], s("100")),
            ("line_items[1][quantity]=2&line_items[0][quantity]=1", &["line_items", "1", "quantity"], s("2")),
            ("a[1]=x&a[0]=y", &["a", "0"], s("y")),
            ("q=hello+world%21", &["q"], s("hello world!")),
            ("q=%E2%82%AC", &["q"], s("€")),
            ("flag", &["flag"], s("")),
            ("a=1&&b=2&", &["b"], s("2")),
            ("a=x=y", &["a"], s("x=y")),
            ("metadata[]=", &["metadata", "0"], s("")),
        ];
        for (body, path, want) in cases {
            let root = parse(body).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(root.path(path), Some(want), "{body}");
        }
    }

    #[test]
    fn shapes() {
        assert_eq!(parse("").unwrap(), FormValue::Map(BTreeMap::new()));
        let root = parse("expand[]=x&expand[]=y&a[b][c]=1").unwrap();
        assert_eq!(
            root.get("expand").unwrap().as_list().unwrap(),
            &[s("x"), s("y")]
        );
        assert!(root.get("a").unwrap().as_map().unwrap().contains_key("b"));
        assert_eq!(root.path(&["expand", "01"]), None);
        assert_eq!(root.path(&["expand", "2"]), None);
        assert_eq!(root.path(&["a", "b", "c", "d"]), None);
    }

    #[test]
    fn refused_bodies() {
        let bad_name = |p: &str| FormError::BadName {
            param: p.to_owned(),
        };
        #[rustfmt::skip]
        let cases: &[(&str, FormError)] = &[
            ("amount=1&amount=2", FormError::Duplicate { param: "amount".into() }),
            ("a[b]=1&a[b]=1", FormError::Duplicate { param: "a[b]".into() }),
            ("a=1&a[b]=2", FormError::Conflict { param: "a[b]".into() }),
            ("a[b]=2&a=1", FormError::Conflict { param: "a".into() }),
            ("a[0]=1&a[b]=2", FormError::Conflict { param: "a[b]".into() }),
            ("a[b]=1&a[]=2", FormError::Conflict { param: "a[]".into() }),
            ("a[b=1", bad_name("a[b")),
            ("a]=1", bad_name("a]")),
            ("a[b]c=1", bad_name("a[b]c")),
            ("a[[b]]=1", bad_name("a[[b]]")),
            ("=1", bad_name("")),
            ("[a]=1", bad_name("[a]")),
            ("a[99999999]=1", FormError::IndexTooLarge { param: "a[99999999]".into() }),
            ("a[99999999999999999999999]=1", FormError::IndexTooLarge { param: "a[99999999999999999999999]".into() }),
            ("a[0]=x&a[2]=y", FormError::SparseList { param: "a".into() }),
            ("a[1]=x", FormError::SparseList { param: "a".into() }),
            ("a=%zz", FormError::BadPercentEncoding { param: "a".into() }),
            ("a=%4", FormError::BadPercentEncoding { param: "a".into() }),
            ("a%=1", FormError::BadPercentEncoding { param: "a%".into() }),
            ("a=%FF", FormError::BadUtf8 { param: "a".into() }),
            ("a%C3=1", FormError::BadUtf8 { param: "a%C3".into() }),
        ];
        for (body, want) in cases {
            assert_eq!(parse(body).as_ref(), Err(want), "{body}");
        }
    }

    #[test]
    fn json_duplicate_keys_are_refused_at_any_depth() {
        let limits = FormLimits::default();
        for body in [
            r#"{"amount":1,"amount":2}"#,
            r#"{"amount":{"value":1,"currency":"usd","value":100000}}"#,
            r#"{"to":[{"a":1,"a":1}]}"#,
        ] {
            assert!(
                matches!(parse_json(body.as_bytes(), &limits), Err(FormError::BadJson(m)) if m.contains("more than once")),
                "{body}"
            );
        }
        let ok = parse_json(br#"{"amount":{"value":1},"value":2}"#, &limits).unwrap();
        assert_eq!(
            ok.path(&["amount", "value"]),
            Some(&FormValue::Str("1".into()))
        );
    }

    #[test]
    fn raw_invalid_utf8_is_refused() {
        let err = parse_form(b"a=\xff\xfe", &FormLimits::default()).unwrap_err();
        assert_eq!(err, FormError::BadUtf8 { param: "a".into() });
    }

    #[test]
    fn too_many_params() {
        let body: Vec<String> = (0..10_000).map(|i| format!("p{i}=1")).collect();
        let err = parse(&body.join("&")).unwrap_err();
        assert_eq!(err, FormError::TooManyParams { max: 1000 });
        let body: Vec<String> = (0..1000).map(|i| format!("p{i}=1")).collect();
        assert!(parse(&body.join("&")).is_ok());
    }

    #[test]
    fn depth_limit() {
        let ok = format!("a{}=1", "[x]".repeat(8));
        assert!(parse(&ok).is_ok());
        let deep = format!("a{}=1", "[x]".repeat(9));
        assert!(matches!(
            parse(&deep),
            Err(FormError::TooDeep { max: 8, .. })
        ));
        let limits = FormLimits {
            max_params: 10,
            max_depth: usize::MAX,
        };
        let very_deep = format!("a{}=1", "[x]".repeat(10_000));
        assert!(matches!(
            parse_form(very_deep.as_bytes(), &limits),
            Err(FormError::TooDeep {
                max: DEPTH_CEILING,
                ..
            })
        ));
    }

    #[test]
    fn error_messages_name_the_parameter() {
        let err = parse("amount=1&amount=2").unwrap_err();
        assert_eq!(
            err.to_string(),
            "parameter `amount` is given more than once"
        );
        let long = format!("{}=%zz", "k".repeat(200));
        let message = parse(&long).unwrap_err().to_string();
        assert!(message.len() < 120, "{message}");
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_form(&body, &FormLimits::default());
        }

        #[test]
        fn never_panics_on_bracket_soup(body in "[a-c0-2\\[\\]=&%+]{0,64}") {
            let _ = parse_form(body.as_bytes(), &FormLimits { max_params: 16, max_depth: 4 });
        }

        #[test]
        fn flat_maps_round_trip(map in proptest::collection::btree_map("[a-z]{1,8}", "[ -~]{0,16}", 0..16)) {
            let body: Vec<String> = map.iter().map(|(k, v)| {
                let v: String = percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).collect();
                format!("{k}={v}")
            }).collect();
            let parsed = parse_form(body.join("&").as_bytes(), &FormLimits::default()).unwrap();
            let want = FormValue::Map(map.into_iter().map(|(k, v)| (k, FormValue::Str(v))).collect());
            prop_assert_eq!(parsed, want);
        }
    }
}
