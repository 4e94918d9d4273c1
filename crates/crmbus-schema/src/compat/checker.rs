//! The [`Checker`]: proves "reader accepts everything writer accepts" one keyword family at
//! a time. [`Checker::covers`] runs the steps in order: boolean schemas, conjuncts that are
//! the same on both sides, unions (`anyOf`/`oneOf`, `type` arrays), `allOf`, keywords it
//! does not understand, `enum`/`const`, `type`, and then the keywords of each instance
//! type (objects, arrays, strings, numbers: `families.rs`).

use serde_json::{Map, Value};

use super::keywords::{
    as_object, compile, declared_types, effective_types, finite_values, is_trivially_true,
    merge_branch, type_names, uses_ref, ARRAY, INDEPENDENT, NATIVE_INDEPENDENT, NUMBER, OBJECT,
    STRING, WHOLE_NODE,
};
use crate::error::BreakingChange;

/// Proves "reader accepts everything writer accepts", collecting what it cannot prove.
pub(super) struct Checker {
    pub(super) reader: &'static str,
    pub(super) writer: &'static str,
    pub(super) breaking: Vec<BreakingChange>,
    pub(super) warnings: Vec<String>,
}

impl Checker {
    pub(super) fn new(reader: &'static str, writer: &'static str) -> Self {
        Checker {
            reader,
            writer,
            breaking: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub(super) fn brk(&mut self, path: &str, reason: String) {
        let path = if path.is_empty() { "/" } else { path };
        self.breaking.push(BreakingChange {
            path: path.to_string(),
            reason,
        });
    }

    /// `$defs` are reached through `$ref`, which the checker does not follow: any change
    /// there is breaking when either document uses `$ref`.
    pub(super) fn check_defs(&mut self, writer: &Value, reader: &Value) {
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
    pub(super) fn covers(&mut self, writer: &Value, reader: &Value, path: &str) {
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
        self.set_aside_identical(&mut w, &mut r, path);
        if self.split_writer_union(&mut w, &r, path) || self.split_writer_types(&w, &r, path) {
            return;
        }
        let writer_node = Value::Object(w.clone());
        self.reader_combinators(&writer_node, &mut r, path);
        self.not_understood(&r, path);
        if self.finite_writer(&w, &r, &writer_node, path) {
            return;
        }
        let wt = self.types(&w, &r, path);
        self.reader_values(&w, &r, path);
        if wt & OBJECT != 0 {
            self.objects(&w, &r, path);
        }
        if wt & ARRAY != 0 {
            self.arrays(&w, &r, path);
        }
        if wt & STRING != 0 {
            self.strings(&w, &r, path);
        }
        if wt & NUMBER != 0 {
            self.numbers(&w, &r, path);
        }
    }

    /// Identical independent conjuncts are satisfied by construction: removed from both
    /// sides (with a warning for those the checker does not understand).
    fn set_aside_identical(
        &mut self,
        w: &mut Map<String, Value>,
        r: &mut Map<String, Value>,
        path: &str,
    ) {
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
    }

    /// A writer union (`anyOf`/`oneOf`): every branch must be covered. Takes the first
    /// union keyword out of `w`; true when it was an array and so checked branch by branch.
    fn split_writer_union(
        &mut self,
        w: &mut Map<String, Value>,
        r: &Map<String, Value>,
        path: &str,
    ) -> bool {
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = w.remove(key) {
                for branch in branches.iter() {
                    // Reported at the union's own place: the path names the reader.
                    if let Some(b) = merge_branch(w, branch) {
                        self.covers(&b, &Value::Object(r.clone()), path);
                    }
                }
                return true;
            }
        }
        false
    }

    /// A reader union needs each writer type on its own: a writer `type` array is checked
    /// one type at a time. True when it was.
    fn split_writer_types(
        &mut self,
        w: &Map<String, Value>,
        r: &Map<String, Value>,
        path: &str,
    ) -> bool {
        let reader_union = r.contains_key("anyOf") || r.contains_key("oneOf");
        if !reader_union {
            return false;
        }
        let Some(Value::Array(types)) = w.get("type") else {
            return false;
        };
        if types.len() <= 1 {
            return false;
        }
        for t in types.clone() {
            let mut single = w.clone();
            single.insert("type".into(), t);
            self.covers(&Value::Object(single), &Value::Object(r.clone()), path);
        }
        true
    }

    /// The reader's `allOf` (every branch must cover the writer) and `anyOf`/`oneOf` (one
    /// branch must), taken out of `r`.
    fn reader_combinators(&mut self, writer: &Value, r: &mut Map<String, Value>, path: &str) {
        if let Some(Value::Array(branches)) = r.remove("allOf") {
            for (i, branch) in branches.iter().enumerate() {
                self.covers(writer, branch, &format!("{path}/allOf/{i}"));
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = r.remove(key) {
                self.covers_some(writer, &branches, key, path);
            }
        }
    }

    /// Reader keywords the checker does not understand (and that were not set aside as
    /// identical) are breaking.
    fn not_understood(&mut self, r: &Map<String, Value>, path: &str) {
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
    }

    /// A finite writer (`enum`/`const`) is checked exactly, value by value, when both
    /// schemas compile. True when it was, and nothing else needs checking.
    fn finite_writer(
        &mut self,
        w: &Map<String, Value>,
        r: &Map<String, Value>,
        writer: &Value,
        path: &str,
    ) -> bool {
        let Some(values) = finite_values(w) else {
            return false;
        };
        let (Some(rv), Some(wv)) = (compile(&Value::Object(r.clone())), compile(writer)) else {
            return false;
        };
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
        true
    }

    /// `type`: every type the writer's values can have must be one the reader allows.
    /// Returns the writer types left to check against the reader.
    fn types(&mut self, w: &Map<String, Value>, r: &Map<String, Value>, path: &str) -> u8 {
        let wt = effective_types(w);
        let rt = declared_types(r);
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
        wt & rt
    }

    /// The reader's `enum`/`const`: the writer must be as finite, within the same values.
    fn reader_values(&mut self, w: &Map<String, Value>, r: &Map<String, Value>, path: &str) {
        let Some(rv) = finite_values(r) else {
            return;
        };
        let at = if r.contains_key("enum") {
            format!("{path}/enum")
        } else {
            format!("{path}/const")
        };
        match finite_values(w) {
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
}
