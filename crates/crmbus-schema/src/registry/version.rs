//! [`SchemaVersion`]: one registered version of a type's schema and its compiled
//! validator; checking a schema before it is registered ([`prepare`]); and the violations
//! of data, with paths that point at the offending property.

use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

use super::naming::schema_uri;
use super::text_instance::{TextDocument, TextJson};
use crate::error::{DataViolation, SchemaError};

/// The only `$schema` a registered schema may declare (it may also declare none).
pub const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// One registered version of a type's schema, with its compiled validator (compiled on
/// first use and cached for the life of the registry).
pub struct SchemaVersion {
    /// The event type.
    pub event_type: String,
    /// The version number, from 1.
    pub version: u32,
    /// Its URI, `urn:crmbus:schema:<type>:<version>`.
    pub uri: String,
    /// The JSON Schema document.
    pub schema: Value,
    compiled: OnceLock<Result<jsonschema::Validator, String>>,
    /// The same schema compiled for data read as text ([`SchemaVersion::accepts_text`]):
    /// `None` when it does not compile (the `Value` path reports why).
    compiled_for_text: OnceLock<Option<jsonschema::Validator<TextJson>>>,
}

impl std::fmt::Debug for SchemaVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaVersion")
            .field("event_type", &self.event_type)
            .field("version", &self.version)
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl SchemaVersion {
    pub(super) fn new(event_type: &str, version: u32, schema: Value) -> Self {
        SchemaVersion {
            event_type: event_type.to_string(),
            version,
            uri: schema_uri(event_type, version),
            schema,
            compiled: OnceLock::new(),
            compiled_for_text: OnceLock::new(),
        }
    }

    pub(super) fn with_validator(mut self, validator: jsonschema::Validator) -> Self {
        self.compiled = OnceLock::from(Ok(validator));
        self
    }

    fn validator(&self) -> Result<&jsonschema::Validator, SchemaError> {
        self.compiled
            .get_or_init(|| compile(&self.schema).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|reason| SchemaError::InvalidSchema {
                event_type: Some(self.event_type.clone()),
                reason: reason.clone(),
            })
    }

    /// Whether JSON `text` is valid under this schema, decided without building a `Value`
    /// of it (see [`super::text_instance`]). `false` means "not shown valid": the text is
    /// invalid, is no single JSON value, names a member of an object twice, or the schema
    /// does not compile. Check such data with [`SchemaVersion::violations`], which says why.
    pub fn accepts_text(&self, text: &str) -> bool {
        let validator = self.compiled_for_text.get_or_init(|| {
            jsonschema::options_for::<TextJson>()
                .with_draft(jsonschema::Draft::Draft202012)
                .should_validate_formats(true)
                .build(&self.schema)
                .ok()
        });
        match (validator, TextDocument::read(text)) {
            (Some(validator), Some(document)) => validator.is_valid(document.root()),
            _ => false,
        }
    }

    /// Every place where `data` breaks this schema (empty when it validates). Format
    /// keywords (`date-time`, `email`, ...) are asserted, not just annotated.
    pub fn violations(&self, data: &Value) -> Result<Vec<DataViolation>, SchemaError> {
        Ok(collect_violations(self.validator()?, data))
    }

    /// Validates `data`: `Ok` or [`SchemaError::Violation`] listing every violation.
    pub fn validate(&self, data: &Value) -> Result<(), SchemaError> {
        let violations = self.violations(data)?;
        if violations.is_empty() {
            Ok(())
        } else {
            Err(SchemaError::Violation {
                event_type: self.event_type.clone(),
                version: self.version,
                violations,
            })
        }
    }
}

fn compile(schema: &Value) -> Result<jsonschema::Validator, jsonschema::ValidationError<'static>> {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
}

/// Checks that `schema` is a usable 2020-12 schema whose examples validate, and compiles it.
pub(super) fn prepare(
    event_type: &str,
    schema: &Value,
) -> Result<jsonschema::Validator, SchemaError> {
    let invalid = |reason: String| SchemaError::InvalidSchema {
        event_type: Some(event_type.to_string()),
        reason,
    };
    let Value::Object(map) = schema else {
        return Err(invalid("a schema must be a JSON object".into()));
    };
    match map.get("$schema") {
        None => {}
        Some(Value::String(s)) if s.trim_end_matches('#') == DRAFT_2020_12 => {}
        Some(other) => {
            return Err(invalid(format!(
                "/$schema: {other} is not supported; use {DRAFT_2020_12}"
            )))
        }
    }
    let validator = compile(schema).map_err(|e| {
        let at = e.instance_path().as_str();
        invalid(if at.is_empty() {
            e.to_string()
        } else {
            format!("{at}: {e}")
        })
    })?;
    if let Some(examples) = map.get("examples") {
        let Value::Array(examples) = examples else {
            return Err(invalid("/examples: must be an array".into()));
        };
        for (i, example) in examples.iter().enumerate() {
            let found = collect_violations(&validator, example);
            if let Some(first) = found.first() {
                return Err(invalid(format!(
                    "/examples/{i} does not validate against the schema: {first}"
                )));
            }
        }
    }
    Ok(validator)
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Every violation of `data`, with paths that point at the offending property.
fn collect_violations(validator: &jsonschema::Validator, data: &Value) -> Vec<DataViolation> {
    let mut out = Vec::new();
    // The common case, valid data, takes the validator's short-circuiting path.
    if validator.is_valid(data) {
        return out;
    }
    for e in validator.iter_errors(data) {
        let base = e.instance_path().as_str().to_string();
        let keyword = e.kind().keyword().to_string();
        match e.kind() {
            ValidationErrorKind::Required { property } => {
                let name = property
                    .as_str()
                    .map_or_else(|| property.to_string(), str::to_string);
                out.push(DataViolation {
                    path: format!("{base}/{}", escape(&name)),
                    keyword,
                    message: format!("required property \"{name}\" is missing"),
                });
            }
            ValidationErrorKind::AdditionalProperties { unexpected }
            | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
                for name in unexpected {
                    out.push(DataViolation {
                        path: format!("{base}/{}", escape(name)),
                        keyword: keyword.clone(),
                        message: format!(
                            "property \"{name}\" is not allowed (the schema forbids additional \
                             properties)"
                        ),
                    });
                }
            }
            _ => out.push(DataViolation {
                path: base,
                keyword,
                message: e.masked().to_string(),
            }),
        }
    }
    out
}
