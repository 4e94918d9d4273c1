//! The compatibility checker: a structural comparison of two JSON Schemas (draft 2020-12)
//! that says whether one accepts every value the other accepts, and if not, lists every
//! breaking change with its JSON path in the schema.
//!
//! # Modes
//!
//! - `backward` (the default): the new schema accepts all data valid under the previous
//!   version — consumers can move to the new schema first, and old events still validate.
//! - `forward`: the previous version accepts all data valid under the new one — old
//!   consumers can read what new producers write.
//! - `full`: both.
//! - `none`: anything goes.
//!
//! A new version is compared with the latest version only (not transitively with every
//! older one).
//!
//! # How the check works
//!
//! "`reader` accepts everything `writer` accepts" is proved keyword by keyword: backward
//! checks reader = new, writer = previous; forward the other way round. The checker is
//! *sound but conservative*: when it reports no breaking change the reader really accepts
//! all the writer's data (within what it understands, see below); when it cannot prove
//! that, it reports a breaking change rather than a warning. Keywords it understands:
//!
//! - `type` (with `integer` ⊂ `number`), `enum`, `const` — a finite writer (`enum`/`const`)
//!   is checked exactly, value by value, against the reader;
//! - objects: `properties`, `required`, `additionalProperties` (absent = open),
//!   `minProperties`/`maxProperties`, nested objects recursively;
//! - arrays: `items`, `minItems`/`maxItems`, `uniqueItems`;
//! - strings: `minLength`/`maxLength`, `pattern` and `format` (compared as text: a reader
//!   pattern or format must be the writer's own);
//! - numbers: `minimum`/`maximum`, `exclusiveMinimum`/`exclusiveMaximum`, `multipleOf`;
//! - `anyOf`/`oneOf` (type unions; a `oneOf` in the reader only when its branches cannot
//!   match the same type), `allOf` in the reader, boolean schemas.
//!
//! Consequences worth knowing, all deliberate because they are what the JSON Schema
//! semantics imply:
//!
//! - Removing (or renaming) a property is breaking under `backward` only when the new
//!   schema's content model is closed (`additionalProperties: false`): with an open model,
//!   old data carrying the property still validates. Under `forward` removing a property
//!   from an open model is breaking, because new data may then carry it with any value.
//! - Adding an optional property is backward compatible for a closed previous version,
//!   but *not* for an open one (old data may already carry that name with any value); it
//!   is forward compatible only when the previous version is open.
//!
//! What it does not understand: `not`, `$ref`/`$dynamicRef`, `if`/`then`/`else`,
//! `dependentRequired`, `dependentSchemas`, `propertyNames`, `contains`, the `content*`
//! keywords (compared for equality: unchanged in the reader is accepted and listed as a
//! warning, changed is reported as breaking), and `patternProperties`, `prefixItems`,
//! `unevaluatedProperties`, `unevaluatedItems` in the reader (reported as breaking unless
//! the whole subschema is unchanged). When `$defs` differ between the two documents and
//! either uses `$ref`, that is reported as breaking too. Such keywords in the *writer*
//! only restrict the writer's data and are ignored, which can only cause a false
//! rejection, never a false acceptance.

use std::collections::BTreeSet;
use std::str::FromStr;

use serde::Serialize;
use serde_json::{Map, Value};

pub use crate::error::BreakingChange;
use crate::error::SchemaError;
pub use crate::mode::CompatibilityMode;

/// Parses a mode's name (`backward`, `forward`, `full`, `none`; case and surrounding
/// white space are ignored); anything else is [`SchemaError::InvalidArgument`].
impl FromStr for CompatibilityMode {
    type Err = SchemaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "backward" => Ok(CompatibilityMode::Backward),
            "forward" => Ok(CompatibilityMode::Forward),
            "full" => Ok(CompatibilityMode::Full),
            "none" => Ok(CompatibilityMode::None),
            other => Err(SchemaError::InvalidArgument(format!(
                "unknown compatibility mode '{other}' (expected backward, forward, full or none)"
            ))),
        }
    }
}

/// The result of a compatibility check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CompatibilityReport {
    /// Every breaking change found; empty means compatible.
    pub breaking: Vec<BreakingChange>,
    /// Keywords the checker does not understand but found unchanged and so assumed
    /// compatible, each with its path.
    pub warnings: Vec<String>,
}

impl CompatibilityReport {
    /// True when no breaking change was found.
    pub fn is_compatible(&self) -> bool {
        self.breaking.is_empty()
    }
}

/// Checks `new` against `previous` under `mode` and lists every breaking change.
///
/// Both are JSON Schema documents (draft 2020-12); see the module documentation for what
/// is compared and what is treated conservatively.
pub fn check_compatibility(
    previous: &Value,
    new: &Value,
    mode: CompatibilityMode,
) -> CompatibilityReport {
    let mut report = CompatibilityReport::default();
    let backward = matches!(mode, CompatibilityMode::Backward | CompatibilityMode::Full);
    let forward = matches!(mode, CompatibilityMode::Forward | CompatibilityMode::Full);
    if backward {
        let mut c = Checker::new("the new schema", "the previous version");
        c.check_defs(previous, new);
        c.covers(previous, new, "");
        c.finish_into(&mut report);
    }
    if forward {
        let mut c = Checker::new("the previous version", "the new schema");
        if !backward {
            c.check_defs(new, previous);
        }
        c.covers(new, previous, "");
        c.finish_into(&mut report);
    }
    report
}

// ---------------------------------------------------------------------------------------
// Types as bit sets
// ---------------------------------------------------------------------------------------

const NULL: u8 = 1;
const BOOLEAN: u8 = 2;
const OBJECT: u8 = 4;
const ARRAY: u8 = 8;
const STRING: u8 = 16;
const INTEGER: u8 = 32;
/// Numbers with a fractional part; `number` = `INTEGER | FRACTION`.
const FRACTION: u8 = 64;
const NUMBER: u8 = INTEGER | FRACTION;
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

fn type_names(bits: u8) -> String {
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
fn declared_types(s: &Map<String, Value>) -> u8 {
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
fn finite_values(s: &Map<String, Value>) -> Option<Vec<Value>> {
    if let Some(c) = s.get("const") {
        return Some(vec![c.clone()]);
    }
    match s.get("enum") {
        Some(Value::Array(vs)) => Some(vs.clone()),
        _ => None,
    }
}

/// The types a schema's values can have: `type`, narrowed by `enum`/`const`.
fn effective_types(s: &Map<String, Value>) -> u8 {
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
const INDEPENDENT: [&[&str]; 12] = [
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
const WHOLE_NODE: [&str; 4] = [
    "patternProperties",
    "prefixItems",
    "unevaluatedProperties",
    "unevaluatedItems",
];

/// Keywords the checker compares natively (the rest of `INDEPENDENT` it does not).
const NATIVE_INDEPENDENT: [&str; 3] = ["anyOf", "oneOf", "allOf"];

/// Keywords that only annotate or identify; two schemas differing in these alone are
/// equivalent.
const ANNOTATIONS: [&str; 15] = [
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

fn is_trivially_true(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Object(m) => m.keys().all(|k| ANNOTATIONS.contains(&k.as_str())),
        _ => true,
    }
}

/// A schema as an object (`true` → `{}`); `None` for `false`.
fn as_object(v: &Value) -> Option<Map<String, Value>> {
    match v {
        Value::Bool(false) => None,
        Value::Object(m) => Some(m.clone()),
        _ => Some(Map::new()),
    }
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn uses_ref(v: &Value) -> bool {
    match v {
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| k == "$ref" || k == "$dynamicRef" || uses_ref(v)),
        Value::Array(vs) => vs.iter().any(uses_ref),
        _ => false,
    }
}

fn compile(schema: &Value) -> Option<jsonschema::Validator> {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .ok()
}

/// A numeric bound: the value and whether it is exclusive.
#[derive(Debug, Clone, Copy)]
struct Bound {
    value: f64,
    exclusive: bool,
}

fn lower_bound(s: &Map<String, Value>) -> Option<Bound> {
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

fn upper_bound(s: &Map<String, Value>) -> Option<Bound> {
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

fn show_bound(b: Bound, lower: bool) -> String {
    match (lower, b.exclusive) {
        (true, false) => format!("≥ {}", b.value),
        (true, true) => format!("> {}", b.value),
        (false, false) => format!("≤ {}", b.value),
        (false, true) => format!("< {}", b.value),
    }
}

// ---------------------------------------------------------------------------------------
// The checker
// ---------------------------------------------------------------------------------------

/// Proves "reader accepts everything writer accepts", collecting what it cannot prove.
struct Checker {
    reader: &'static str,
    writer: &'static str,
    breaking: Vec<BreakingChange>,
    warnings: Vec<String>,
}

impl Checker {
    fn new(reader: &'static str, writer: &'static str) -> Self {
        Checker {
            reader,
            writer,
            breaking: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn finish_into(self, report: &mut CompatibilityReport) {
        for b in self.breaking {
            if !report.breaking.contains(&b) {
                report.breaking.push(b);
            }
        }
        for w in self.warnings {
            if !report.warnings.contains(&w) {
                report.warnings.push(w);
            }
        }
    }

    fn brk(&mut self, path: &str, reason: String) {
        let path = if path.is_empty() { "/" } else { path };
        self.breaking.push(BreakingChange {
            path: path.to_string(),
            reason,
        });
    }

    /// `$defs` are reached through `$ref`, which the checker does not follow: any change
    /// there is breaking when either document uses `$ref`.
    fn check_defs(&mut self, writer: &Value, reader: &Value) {
        if !(uses_ref(writer) || uses_ref(reader)) {
            return;
        }
        for key in ["$defs", "definitions"] {
            if writer.get(key) != reader.get(key) {
                self.brk(
                    &format!("/{key}"),
                    format!(
                        "definitions differ between {} and {}, and subschemas reached \
                         through $ref are not compared",
                        self.writer, self.reader
                    ),
                );
            }
        }
    }

    /// Records whether `reader` accepts every value `writer` accepts.
    fn covers(&mut self, writer: &Value, reader: &Value, path: &str) {
        if writer == reader || is_trivially_true(reader) {
            return;
        }
        let Some(mut w) = as_object(writer) else {
            return; // `false` accepts nothing.
        };
        let Some(mut r) = as_object(reader) else {
            self.brk(
                path,
                format!(
                    "{} accepts no value here, but {} does",
                    self.reader, self.writer
                ),
            );
            return;
        };

        // Identical independent conjuncts are satisfied by construction.
        for group in INDEPENDENT {
            let present = group.iter().any(|k| r.contains_key(*k));
            let same = group.iter().all(|k| r.get(*k) == w.get(*k));
            if present && same {
                for k in group {
                    r.remove(*k);
                    w.remove(*k);
                }
                if !NATIVE_INDEPENDENT.contains(&group[0]) {
                    self.warnings.push(format!(
                        "{path}/{}: not understood by the compatibility checker; unchanged, \
                         so assumed compatible",
                        group[0]
                    ));
                }
            }
        }

        // A writer union: every branch must be covered.
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = w.remove(key) {
                for branch in branches.iter() {
                    // Reported at the union's own place: the path names the reader.
                    if let Some(b) = merge_branch(&w, branch) {
                        self.covers(&b, &Value::Object(r.clone()), path);
                    }
                }
                return;
            }
        }

        // A reader union needs each writer type on its own.
        let reader_union = r.contains_key("anyOf") || r.contains_key("oneOf");
        if reader_union {
            if let Some(Value::Array(types)) = w.get("type") {
                if types.len() > 1 {
                    for t in types.clone() {
                        let mut single = w.clone();
                        single.insert("type".into(), t);
                        self.covers(&Value::Object(single), &Value::Object(r.clone()), path);
                    }
                    return;
                }
            }
        }

        let writer_node = Value::Object(w.clone());

        if let Some(Value::Array(branches)) = r.remove("allOf") {
            for (i, branch) in branches.iter().enumerate() {
                self.covers(&writer_node, branch, &format!("{path}/allOf/{i}"));
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = r.remove(key) {
                self.covers_some(&writer_node, &branches, key, path);
            }
        }

        for key in WHOLE_NODE {
            if r.contains_key(key) {
                self.brk(
                    &format!("{path}/{key}"),
                    format!(
                        "'{key}' is not understood by the compatibility checker and this \
                         subschema differs between {} and {}",
                        self.writer, self.reader
                    ),
                );
            }
        }
        for group in INDEPENDENT {
            for key in group.iter().filter(|k| !NATIVE_INDEPENDENT.contains(k)) {
                if r.contains_key(*key) {
                    self.brk(
                        &format!("{path}/{key}"),
                        format!(
                            "'{key}' is not understood by the compatibility checker and \
                             differs between {} and {}",
                            self.writer, self.reader
                        ),
                    );
                }
            }
        }

        // A finite writer is checked exactly, value by value.
        if let Some(values) = finite_values(&w) {
            if let (Some(rv), Some(wv)) =
                (compile(&Value::Object(r.clone())), compile(&writer_node))
            {
                let at = if r.contains_key("const") && !r.contains_key("enum") {
                    format!("{path}/const")
                } else if r.contains_key("enum") {
                    format!("{path}/enum")
                } else {
                    path.to_string()
                };
                for v in values.iter().filter(|v| wv.is_valid(v)) {
                    if !rv.is_valid(v) {
                        self.brk(
                            &at,
                            format!(
                                "{} allows the value {v} but {} rejects it",
                                self.writer, self.reader
                            ),
                        );
                    }
                }
                return;
            }
        }

        let mut wt = effective_types(&w);
        let rt = declared_types(&r);
        let missing = wt & !rt;
        if missing != 0 {
            self.brk(
                &format!("{path}/type"),
                format!(
                    "{} allows {} but {} does not",
                    self.writer,
                    type_names(missing),
                    self.reader
                ),
            );
        }
        wt &= rt;

        if let Some(rv) = finite_values(&r) {
            let at = if r.contains_key("enum") {
                format!("{path}/enum")
            } else {
                format!("{path}/const")
            };
            match finite_values(&w) {
                Some(wv) => {
                    for v in wv.iter().filter(|v| !rv.contains(v)) {
                        self.brk(
                            &at,
                            format!(
                                "{} allows the value {v} but {} does not",
                                self.writer, self.reader
                            ),
                        );
                    }
                }
                None => self.brk(
                    &at,
                    format!(
                        "{} allows only {} here, but {} allows other values",
                        self.reader,
                        Value::Array(rv),
                        self.writer
                    ),
                ),
            }
        }

        if wt & OBJECT != 0 {
            self.objects(&w, &r, path);
        }
        if wt & ARRAY != 0 {
            self.arrays(&w, &r, path);
        }
        if wt & STRING != 0 {
            self.lengths(&w, &r, path, "minLength", "maxLength", "string length");
            for key in ["pattern", "format"] {
                if let Some(rp) = r.get(key) {
                    if w.get(key) != Some(rp) {
                        self.brk(
                            &format!("{path}/{key}"),
                            format!(
                                "{} requires {key} {rp} but {} {}",
                                self.reader,
                                self.writer,
                                match w.get(key) {
                                    Some(wp) => format!("has {key} {wp}"),
                                    None => format!("has no {key}"),
                                }
                            ),
                        );
                    }
                }
            }
        }
        if wt & NUMBER != 0 {
            self.numbers(&w, &r, path);
        }
    }

    /// The writer must be covered by one of the reader's `anyOf`/`oneOf` branches.
    fn covers_some(&mut self, writer: &Value, branches: &[Value], key: &str, path: &str) {
        if key == "oneOf" {
            let bits: Vec<u8> = branches
                .iter()
                .map(|b| as_object(b).map(|m| effective_types(&m)).unwrap_or(0))
                .collect();
            let overlapping = bits
                .iter()
                .enumerate()
                .any(|(i, a)| bits[i + 1..].iter().any(|b| a & b != 0));
            if overlapping {
                self.brk(
                    &format!("{path}/oneOf"),
                    format!(
                        "{} has a oneOf whose branches can match values of the same type; \
                         the compatibility checker cannot prove {} fits exactly one branch",
                        self.reader, self.writer
                    ),
                );
                return;
            }
        }
        let mut best: Option<(usize, Vec<BreakingChange>)> = None;
        for (i, branch) in branches.iter().enumerate() {
            let mut trial = Checker::new(self.reader, self.writer);
            trial.covers(writer, branch, &format!("{path}/{key}/{i}"));
            if trial.breaking.is_empty() {
                self.warnings.extend(trial.warnings);
                return;
            }
            if best
                .as_ref()
                .is_none_or(|(_, b)| trial.breaking.len() < b.len())
            {
                best = Some((i, trial.breaking));
            }
        }
        let closest = best
            .and_then(|(i, b)| b.first().map(|c| format!(" (closest: branch {i}: {c})")))
            .unwrap_or_default();
        self.brk(
            &format!("{path}/{key}"),
            format!(
                "{} allows values that match none of the {key} branches of {}{closest}",
                self.writer, self.reader
            ),
        );
    }

    fn objects(&mut self, w: &Map<String, Value>, r: &Map<String, Value>, path: &str) {
        let names = |s: &Map<String, Value>| -> BTreeSet<String> {
            s.get("required")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let (w_req, r_req) = (names(w), names(r));
        for name in r_req.difference(&w_req) {
            self.brk(
                &format!("{path}/required"),
                format!(
                    "{} requires property \"{name}\" but {} does not (data valid under {} \
                     may lack it)",
                    self.reader, self.writer, self.writer
                ),
            );
        }

        let empty = Map::new();
        let wp = w
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let rp = r
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        // Pattern-matched names escape `additionalProperties`: treat such a writer as open.
        let w_add = if w.contains_key("patternProperties") {
            Value::Bool(true)
        } else {
            w.get("additionalProperties")
                .cloned()
                .unwrap_or(Value::Bool(true))
        };
        let r_add = r.get("additionalProperties");

        for (name, ws) in wp {
            let at = format!("{path}/properties/{}", escape(name));
            match rp.get(name) {
                Some(rs) => self.covers(ws, rs, &at),
                None if ws == &Value::Bool(false) => {}
                None => match r_add {
                    None => {}
                    Some(Value::Bool(false)) => self.brk(
                        &at,
                        format!(
                            "{} allows property \"{name}\" but {} does not list it and \
                             forbids additional properties",
                            self.writer, self.reader
                        ),
                    ),
                    Some(ra) => self.covers(ws, ra, &at),
                },
            }
        }
        for (name, rs) in rp {
            if wp.contains_key(name) {
                continue;
            }
            let at = format!("{path}/properties/{}", escape(name));
            if w_add == Value::Bool(false) || is_trivially_true(rs) {
                continue;
            }
            if is_trivially_true(&w_add) {
                self.brk(
                    &at,
                    format!(
                        "{} constrains property \"{name}\", which {} does not list but \
                         allows with any value as an additional property",
                        self.reader, self.writer
                    ),
                );
            } else {
                self.covers(&w_add, rs, &at);
            }
        }
        if w_add != Value::Bool(false) {
            match r_add {
                None => {}
                Some(Value::Bool(false)) => self.brk(
                    &format!("{path}/additionalProperties"),
                    format!(
                        "{} forbids additional properties that {} allows",
                        self.reader, self.writer
                    ),
                ),
                Some(ra) => self.covers(&w_add, ra, &format!("{path}/additionalProperties")),
            }
        }
        self.lengths(
            w,
            r,
            path,
            "minProperties",
            "maxProperties",
            "property count",
        );
    }

    fn arrays(&mut self, w: &Map<String, Value>, r: &Map<String, Value>, path: &str) {
        if let Some(ri) = r.get("items") {
            let at = format!("{path}/items");
            if let Some(Value::Array(prefix)) = w.get("prefixItems") {
                for p in prefix {
                    self.covers(p, ri, &at);
                }
            }
            let wi = w.get("items").cloned().unwrap_or(Value::Bool(true));
            self.covers(&wi, ri, &at);
        }
        self.lengths(w, r, path, "minItems", "maxItems", "array length");
        if r.get("uniqueItems") == Some(&Value::Bool(true))
            && w.get("uniqueItems") != Some(&Value::Bool(true))
        {
            self.brk(
                &format!("{path}/uniqueItems"),
                format!(
                    "{} requires unique items but {} does not",
                    self.reader, self.writer
                ),
            );
        }
    }

    /// Integer lower/upper limits such as `minLength`/`maxLength`.
    fn lengths(
        &mut self,
        w: &Map<String, Value>,
        r: &Map<String, Value>,
        path: &str,
        min: &str,
        max: &str,
        what: &str,
    ) {
        let get = |s: &Map<String, Value>, k: &str| s.get(k).and_then(Value::as_f64);
        if let Some(rmin) = get(r, min) {
            if get(w, min).is_none_or(|wmin| wmin < rmin) {
                self.brk(
                    &format!("{path}/{min}"),
                    format!(
                        "{} requires {what} ≥ {rmin} but {} allows less",
                        self.reader, self.writer
                    ),
                );
            }
        }
        if let Some(rmax) = get(r, max) {
            if get(w, max).is_none_or(|wmax| wmax > rmax) {
                self.brk(
                    &format!("{path}/{max}"),
                    format!(
                        "{} requires {what} ≤ {rmax} but {} allows more",
                        self.reader, self.writer
                    ),
                );
            }
        }
    }

    fn numbers(&mut self, w: &Map<String, Value>, r: &Map<String, Value>, path: &str) {
        if let Some(rl) = lower_bound(r) {
            let ok = lower_bound(w).is_some_and(|wl| {
                wl.value > rl.value || (wl.value == rl.value && (wl.exclusive || !rl.exclusive))
            });
            if !ok {
                let key = if rl.exclusive {
                    "exclusiveMinimum"
                } else {
                    "minimum"
                };
                self.brk(
                    &format!("{path}/{key}"),
                    format!(
                        "{} requires numbers {} but {} allows smaller ones",
                        self.reader,
                        show_bound(rl, true),
                        self.writer
                    ),
                );
            }
        }
        if let Some(ru) = upper_bound(r) {
            let ok = upper_bound(w).is_some_and(|wu| {
                wu.value < ru.value || (wu.value == ru.value && (wu.exclusive || !ru.exclusive))
            });
            if !ok {
                let key = if ru.exclusive {
                    "exclusiveMaximum"
                } else {
                    "maximum"
                };
                self.brk(
                    &format!("{path}/{key}"),
                    format!(
                        "{} requires numbers {} but {} allows larger ones",
                        self.reader,
                        show_bound(ru, false),
                        self.writer
                    ),
                );
            }
        }
        if let Some(rm) = r.get("multipleOf").and_then(Value::as_f64) {
            let ok = w
                .get("multipleOf")
                .and_then(Value::as_f64)
                .is_some_and(|wm| {
                    let q = wm / rm;
                    rm > 0.0 && (q - q.round()).abs() < 1e-9
                });
            if !ok {
                self.brk(
                    &format!("{path}/multipleOf"),
                    format!(
                        "{} requires multiples of {rm} but {} does not",
                        self.reader, self.writer
                    ),
                );
            }
        }
    }
}

/// A writer's union branch together with the keywords beside the union: merged when no
/// keyword collides (a merge may only accept more than the real conjunction, which keeps
/// the check sound), else the branch alone. `None` for a `false` branch.
fn merge_branch(rest: &Map<String, Value>, branch: &Value) -> Option<Value> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(r: &CompatibilityReport) -> Vec<&str> {
        r.breaking.iter().map(|b| b.path.as_str()).collect()
    }

    #[test]
    fn mode_names_round_trip() {
        for m in [
            CompatibilityMode::Backward,
            CompatibilityMode::Forward,
            CompatibilityMode::Full,
            CompatibilityMode::None,
        ] {
            assert_eq!(m.as_str().parse::<CompatibilityMode>().expect("parse"), m);
            assert_eq!(
                serde_json::to_value(m).expect("ser"),
                json!(m.as_str()),
                "{m}"
            );
        }
        assert_eq!(CompatibilityMode::default(), CompatibilityMode::Backward);
        let err = "sideways".parse::<CompatibilityMode>().expect_err("bad");
        assert_eq!(err.code(), "invalid_argument");
    }

    #[test]
    fn every_breaking_change_is_listed_with_its_path() {
        let old = json!({"type": "object", "additionalProperties": false,
            "properties": {"amount": {"type": "string"}, "note": {"type": "string"}},
            "required": ["amount"]});
        let new = json!({"type": "object", "additionalProperties": false,
            "properties": {"amount": {"type": "number"}, "region": {"type": "string"}},
            "required": ["amount", "region"]});
        let r = check_compatibility(&old, &new, CompatibilityMode::Backward);
        let mut got = paths(&r);
        got.sort_unstable();
        assert_eq!(
            got,
            ["/properties/amount/type", "/properties/note", "/required"],
            "{r:#?}"
        );
    }

    #[test]
    fn integer_is_a_number() {
        let int = json!({"type": "integer"});
        let num = json!({"type": "number"});
        assert!(check_compatibility(&int, &num, CompatibilityMode::Backward).is_compatible());
        let r = check_compatibility(&num, &int, CompatibilityMode::Backward);
        assert_eq!(paths(&r), ["/type"]);
        assert!(r.breaking[0].reason.contains("non-integer"), "{r:?}");
    }

    #[test]
    fn type_array_and_any_of_are_the_same_union() {
        let arr = json!({"type": ["string", "null"]});
        let any = json!({"anyOf": [{"type": "string"}, {"type": "null"}]});
        let r = check_compatibility(&arr, &any, CompatibilityMode::Full);
        assert!(r.is_compatible(), "{r:?}");
    }

    #[test]
    fn bounds_and_lengths() {
        let loose = json!({"type": "integer", "minimum": 0, "maximum": 100});
        let tight = json!({"type": "integer", "exclusiveMinimum": 0, "maximum": 50});
        let r = check_compatibility(&loose, &tight, CompatibilityMode::Backward);
        assert_eq!(paths(&r), ["/exclusiveMinimum", "/maximum"]);
        assert!(check_compatibility(&loose, &tight, CompatibilityMode::Forward).is_compatible());
        let s1 = json!({"type": "string", "maxLength": 10});
        let s2 = json!({"type": "string", "maxLength": 5});
        assert_eq!(
            paths(&check_compatibility(&s1, &s2, CompatibilityMode::Backward)),
            ["/maxLength"]
        );
    }

    #[test]
    fn unknown_keywords_unchanged_are_warnings_changed_are_breaking() {
        let a = json!({"type": "object", "not": {"required": ["x"]}});
        let b = json!({"type": "object", "not": {"required": ["x"]}, "description": "d"});
        let r = check_compatibility(&a, &b, CompatibilityMode::Full);
        assert!(r.is_compatible(), "{r:?}");
        assert!(r.warnings.iter().any(|w| w.contains("/not")), "{r:?}");
        let c = json!({"type": "object", "not": {"required": ["y"]}});
        let r = check_compatibility(&a, &c, CompatibilityMode::Backward);
        assert_eq!(paths(&r), ["/not"]);
    }

    #[test]
    fn refs_with_changed_defs_are_breaking() {
        let a = json!({"$defs": {"id": {"type": "string"}}, "properties": {"x": {"$ref": "#/$defs/id"}}});
        let b = json!({"$defs": {"id": {"type": "integer"}}, "properties": {"x": {"$ref": "#/$defs/id"}}});
        let r = check_compatibility(&a, &b, CompatibilityMode::Backward);
        assert_eq!(paths(&r), ["/$defs"]);
    }
}
