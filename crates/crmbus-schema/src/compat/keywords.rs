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
    value: f64,
    exclusive: bool,
}

/// Which end of the number line a bound limits.
#[derive(Debug, Clone, Copy)]
pub(super) enum Side {
    /// `minimum`/`exclusiveMinimum`.
    Lower,
    /// `maximum`/`exclusiveMaximum`.
    Upper,
}

impl Side {
    /// This side's inclusive and exclusive keyword.
    fn keys(self) -> (&'static str, &'static str) {
        match self {
            Side::Lower => ("minimum", "exclusiveMinimum"),
            Side::Upper => ("maximum", "exclusiveMaximum"),
        }
    }

    /// The keyword that sets bound `b` on this side.
    pub(super) fn key(self, b: Bound) -> &'static str {
        let (inclusive, exclusive) = self.keys();
        if b.exclusive {
            exclusive
        } else {
            inclusive
        }
    }

    /// True when `a` lies strictly inside `b` on this side (greater for a lower bound,
    /// smaller for an upper one).
    fn inside(self, a: f64, b: f64) -> bool {
        match self {
            Side::Lower => a > b,
            Side::Upper => a < b,
        }
    }

    /// A schema's bound on this side: the tighter of its inclusive and exclusive keyword.
    pub(super) fn bound(self, s: &Map<String, Value>) -> Option<Bound> {
        let (inclusive, exclusive) = self.keys();
        let get = |key: &str, exclusive: bool| {
            s.get(key)
                .and_then(Value::as_f64)
                .map(|value| Bound { value, exclusive })
        };
        match (get(inclusive, false), get(exclusive, true)) {
            (Some(i), Some(e)) => Some(if self.inside(i.value, e.value) { i } else { e }),
            (a, b) => a.or(b),
        }
    }

    /// True when every number within `writer` is within `reader` on this side.
    pub(super) fn within(self, writer: Bound, reader: Bound) -> bool {
        self.inside(writer.value, reader.value)
            || (writer.value == reader.value && (writer.exclusive || !reader.exclusive))
    }

    /// The bound for people: `≥ 3`, `< 10`.
    pub(super) fn show(self, b: Bound) -> String {
        match (self, b.exclusive) {
            (Side::Lower, false) => format!("≥ {}", b.value),
            (Side::Lower, true) => format!("> {}", b.value),
            (Side::Upper, false) => format!("≤ {}", b.value),
            (Side::Upper, true) => format!("< {}", b.value),
        }
    }

    /// The numbers beyond this side: `smaller` or `larger`.
    pub(super) fn beyond(self) -> &'static str {
        match self {
            Side::Lower => "smaller",
            Side::Upper => "larger",
        }
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
