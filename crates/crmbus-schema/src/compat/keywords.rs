//! What the checker knows about keywords and values: types as bit sets, the classes of
//! keywords (set aside when identical, not understood, annotations only), numeric bounds,
//! and how a writer's union branch merges with its siblings.

use serde_json::{Map, Value};

// ---------------------------------------------------------------------------------------
// Types as bit sets
// ---------------------------------------------------------------------------------------

const NULL: u8 = 1;
const BOOLEAN: u8 = 2;
pub(super) const OBJECT: u8 = 4;
pub(super) const ARRAY: u8 = 8;
pub(super) const STRING: u8 = 16;
const INTEGER: u8 = 32;
/// Numbers with a fractional part; `number` = `INTEGER | FRACTION`.
const FRACTION: u8 = 64;
pub(super) const NUMBER: u8 = INTEGER | FRACTION;
const ALL: u8 = NULL | BOOLEAN | OBJECT | ARRAY | STRING | NUMBER;

fn type_bits(name: &str) -> u8 {
    match name {
        "null" => NULL,
        "boolean" => BOOLEAN,
        "object" => OBJECT,
        "array" => ARRAY,
        "string" => STRING,
        "integer" => INTEGER,
        "number" => NUMBER,
        _ => 0,
    }
}

fn value_bits(v: &Value) -> u8 {
    match v {
        Value::Null => NULL,
        Value::Bool(_) => BOOLEAN,
        Value::Object(_) => OBJECT,
        Value::Array(_) => ARRAY,
        Value::String(_) => STRING,
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0) {
                INTEGER
            } else {
                FRACTION
            }
        }
    }
}

pub(super) fn type_names(bits: u8) -> String {
    let mut names = Vec::new();
    for (bit, name) in [
        (NULL, "null"),
        (BOOLEAN, "boolean"),
        (OBJECT, "object"),
        (ARRAY, "array"),
        (STRING, "string"),
    ] {
        if bits & bit != 0 {
            names.push(name);
        }
    }
    match bits & NUMBER {
        NUMBER => names.push("number"),
        INTEGER => names.push("integer"),
        FRACTION => names.push("non-integer number"),
        _ => {}
    }
    names.join(", ")
}

/// The types the `type` keyword allows (all when absent).
pub(super) fn declared_types(s: &Map<String, Value>) -> u8 {
    match s.get("type") {
        Some(Value::String(t)) => type_bits(t),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .fold(0, |acc, t| acc | type_bits(t)),
        _ => ALL,
    }
}

/// The values `enum` or `const` allow, if either is present.
pub(super) fn finite_values(s: &Map<String, Value>) -> Option<Vec<Value>> {
    if let Some(c) = s.get("const") {
        return Some(vec![c.clone()]);
    }
    match s.get("enum") {
        Some(Value::Array(vs)) => Some(vs.clone()),
        _ => None,
    }
}

/// The types a schema's values can have: `type`, narrowed by `enum`/`const`.
pub(super) fn effective_types(s: &Map<String, Value>) -> u8 {
    let declared = declared_types(s);
    match finite_values(s) {
        Some(vs) => declared & vs.iter().fold(0, |acc, v| acc | value_bits(v)),
        None => declared,
    }
}

// ---------------------------------------------------------------------------------------
// Keyword classes
// ---------------------------------------------------------------------------------------

/// Keywords that restrict the value on their own (a conjunct): when identical in both
/// schemas they can be set aside.
pub(super) const INDEPENDENT: [&[&str]; 12] = [
    &["anyOf"],
    &["oneOf"],
    &["allOf"],
    &["not"],
    &["$ref"],
    &["$dynamicRef"],
    &["propertyNames"],
    &["dependentRequired"],
    &["dependentSchemas"],
    &["if", "then", "else"],
    &["contains", "minContains", "maxContains"],
    &["contentEncoding", "contentMediaType", "contentSchema"],
];

/// Reader keywords that interact with their siblings in ways the checker does not model.
pub(super) const WHOLE_NODE: [&str; 4] = [
    "patternProperties",
    "prefixItems",
    "unevaluatedProperties",
    "unevaluatedItems",
];

/// Keywords the checker compares natively (the rest of `INDEPENDENT` it does not).
pub(super) const NATIVE_INDEPENDENT: [&str; 3] = ["anyOf", "oneOf", "allOf"];

/// Keywords that only annotate or identify; two schemas differing in these alone are
/// equivalent.
pub(super) const ANNOTATIONS: [&str; 15] = [
    "$schema",
    "$id",
    "$anchor",
    "$dynamicAnchor",
    "$vocabulary",
    "$comment",
    "$defs",
    "definitions",
    "title",
    "description",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
];

pub(super) fn is_trivially_true(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Object(m) => m.keys().all(|k| ANNOTATIONS.contains(&k.as_str())),
        _ => true,
    }
}

/// A schema as an object (`true` → `{}`); `None` for `false`.
pub(super) fn as_object(v: &Value) -> Option<Map<String, Value>> {
    match v {
        Value::Bool(false) => None,
        Value::Object(m) => Some(m.clone()),
        _ => Some(Map::new()),
    }
}

pub(super) fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

pub(super) fn uses_ref(v: &Value) -> bool {
    match v {
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| k == "$ref" || k == "$dynamicRef" || uses_ref(v)),
        Value::Array(vs) => vs.iter().any(uses_ref),
        _ => false,
    }
}

pub(super) fn compile(schema: &Value) -> Option<jsonschema::Validator> {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .ok()
}

/// A numeric bound: the value and whether it is exclusive.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bound {
    pub(super) value: f64,
    pub(super) exclusive: bool,
}

pub(super) fn lower_bound(s: &Map<String, Value>) -> Option<Bound> {
    let inclusive = s.get("minimum").and_then(Value::as_f64).map(|value| Bound {
        value,
        exclusive: false,
    });
    let exclusive = s
        .get("exclusiveMinimum")
        .and_then(Value::as_f64)
        .map(|value| Bound {
            value,
            exclusive: true,
        });
    match (inclusive, exclusive) {
        (Some(i), Some(e)) => Some(if e.value >= i.value { e } else { i }),
        (a, b) => a.or(b),
    }
}

pub(super) fn upper_bound(s: &Map<String, Value>) -> Option<Bound> {
    let inclusive = s.get("maximum").and_then(Value::as_f64).map(|value| Bound {
        value,
        exclusive: false,
    });
    let exclusive = s
        .get("exclusiveMaximum")
        .and_then(Value::as_f64)
        .map(|value| Bound {
            value,
            exclusive: true,
        });
    match (inclusive, exclusive) {
        (Some(i), Some(e)) => Some(if e.value <= i.value { e } else { i }),
        (a, b) => a.or(b),
    }
}

pub(super) fn show_bound(b: Bound, lower: bool) -> String {
    match (lower, b.exclusive) {
        (true, false) => format!("≥ {}", b.value),
        (true, true) => format!("> {}", b.value),
        (false, false) => format!("≤ {}", b.value),
        (false, true) => format!("< {}", b.value),
    }
}

/// A writer's union branch together with the keywords beside the union: merged when no
/// keyword collides (a merge may only accept more than the real conjunction, which keeps
/// the check sound), else the branch alone. `None` for a `false` branch.
pub(super) fn merge_branch(rest: &Map<String, Value>, branch: &Value) -> Option<Value> {
    let b = as_object(branch)?;
    let collides = b
        .keys()
        .any(|k| rest.contains_key(k) && !ANNOTATIONS.contains(&k.as_str()));
    if collides {
        return Some(Value::Object(b));
    }
    let mut merged = rest.clone();
    merged.extend(b);
    Some(Value::Object(merged))
}
