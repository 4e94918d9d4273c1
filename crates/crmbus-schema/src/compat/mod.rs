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
//!
//! # Layout
//!
//! This file holds the public surface (the report, [`check_compatibility`], parsing a
//! [`CompatibilityMode`]); `checker.rs` the proof, one step per keyword family, with the
//! families of each instance type (objects, arrays, strings, numbers) in `families.rs`;
//! `keywords.rs` what the steps know about keywords and values.

use std::str::FromStr;

use serde::Serialize;
use serde_json::Value;

pub use crate::error::BreakingChange;
use crate::error::SchemaError;
pub use crate::mode::CompatibilityMode;
use checker::Checker;

mod checker;
mod families;
mod keywords;
#[cfg(test)]
mod tests;

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

    /// Adds what a checker found, each breaking change and warning once.
    fn absorb(&mut self, checker: Checker) {
        for b in checker.breaking {
            if !self.breaking.contains(&b) {
                self.breaking.push(b);
            }
        }
        for w in checker.warnings {
            if !self.warnings.contains(&w) {
                self.warnings.push(w);
            }
        }
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
        report.absorb(c);
    }
    if forward {
        let mut c = Checker::new("the previous version", "the new schema");
        if !backward {
            c.check_defs(new, previous);
        }
        c.covers(new, previous, "");
        report.absorb(c);
    }
    report
}
