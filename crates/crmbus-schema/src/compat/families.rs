//! The keyword families of each instance type, as [`Checker`] steps: objects, arrays,
//! strings and numbers. [`Checker::covers`] runs a family when the writer's values can
//! have that type.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::checker::Checker;
use super::keywords::{escape, is_trivially_true, Side};

impl Checker {
    /// Objects: `required`, `properties`, `additionalProperties` (absent = open),
    /// `minProperties`/`maxProperties`.
    pub(super) fn objects(&mut self, w: &Map<String, Value>, r: &Map<String, Value>, path: &str) {
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

    /// Arrays: `items` (and a writer's `prefixItems`), `minItems`/`maxItems`,
    /// `uniqueItems`.
    pub(super) fn arrays(&mut self, w: &Map<String, Value>, r: &Map<String, Value>, path: &str) {
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

    /// Strings: `minLength`/`maxLength`; `pattern` and `format` compared as text (a reader
    /// pattern or format must be the writer's own).
    pub(super) fn strings(&mut self, w: &Map<String, Value>, r: &Map<String, Value>, path: &str) {
        self.lengths(w, r, path, "minLength", "maxLength", "string length");
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

    /// Numbers: `minimum`/`maximum`, `exclusiveMinimum`/`exclusiveMaximum`, `multipleOf`.
    pub(super) fn numbers(&mut self, w: &Map<String, Value>, r: &Map<String, Value>, path: &str) {
        for side in [Side::Lower, Side::Upper] {
            let Some(rb) = side.bound(r) else {
                continue;
            };
            if !side.bound(w).is_some_and(|wb| side.within(wb, rb)) {
                self.brk(
                    &format!("{path}/{}", side.key(rb)),
                    format!(
                        "{} requires numbers {} but {} allows {} ones",
                        self.reader,
                        side.show(rb),
                        self.writer,
                        side.beyond()
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
