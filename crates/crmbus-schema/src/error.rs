//! [`SchemaError`]: the one error enum of the crate, each variant with a stable code, and
//! the details its variants list ([`DataViolation`], [`BreakingChange`]).

use std::fmt;

use crmbus::LogError;

use crate::mode::CompatibilityMode;

/// One place in an event's `data` that breaks its schema.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DataViolation {
    /// JSON Pointer into `data` (`""` is `data` itself, `/amount`, `/items/0/sku`). For a
    /// missing required property or an unexpected extra one it points at that property.
    pub path: String,
    /// The schema keyword that failed (`type`, `required`, `pattern`, ...).
    pub keyword: String,
    /// What is wrong, for people. Instance values are not echoed (they may be personal
    /// data); property names are.
    pub message: String,
}

impl fmt::Display for DataViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(root)"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.message)
    }
}

/// One change that breaks compatibility: where in the schema, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BreakingChange {
    /// JSON Pointer into the schema, e.g. `/properties/amount/type`.
    pub path: String,
    /// Why it breaks compatibility, for people.
    pub reason: String,
}

impl fmt::Display for BreakingChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// An error of the schema registry, the compatibility checker, the catalog or validation.
///
/// Each variant has a stable machine-readable [`code`](SchemaError::code) that the server
/// maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The new schema breaks the type's compatibility mode; every breaking change is listed.
    #[error(
        "schema for '{event_type}' breaks {mode} compatibility with version {against}: {}",
        list(.changes)
    )]
    Incompatible {
        /// The event type.
        event_type: String,
        /// The mode that was checked.
        mode: CompatibilityMode,
        /// The version it was checked against (the latest).
        against: u32,
        /// Every breaking change found, each with its JSON path in the schema.
        changes: Vec<BreakingChange>,
    },
    /// No schema (or no such version) is registered for the type.
    #[error("no schema registered for '{event_type}'{}", version_suffix(*.version))]
    NotFound {
        /// The event type asked for.
        event_type: String,
        /// The version asked for, if one was.
        version: Option<u32>,
    },
    /// The schema document itself is unusable (not a JSON Schema 2020-12 document, an
    /// unresolvable `$ref`, a bad regex, ...).
    #[error("invalid schema{}: {reason}", for_type(.event_type))]
    InvalidSchema {
        /// The event type, when known.
        event_type: Option<String>,
        /// What is wrong, with the JSON path of the offending keyword where known.
        reason: String,
    },
    /// An argument is malformed (an event type the registry cannot key, an unknown
    /// compatibility mode, more versions than a type can hold).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Data does not validate against its schema; every violation is listed.
    #[error(
        "data does not match schema '{event_type}' version {version}: {}",
        list(.violations)
    )]
    Violation {
        /// The event type.
        event_type: String,
        /// The version validated against.
        version: u32,
        /// Every violation found.
        violations: Vec<DataViolation>,
    },
    /// A catalog file could not be read or is malformed.
    #[error("catalog file {file}: {reason}")]
    Catalog {
        /// The file (path or embedded name).
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The state store failed, or holds a record the registry cannot read.
    #[error("schema store: {0}")]
    Store(String),
}

impl SchemaError {
    /// A stable machine-readable code for this error, used by the HTTP API and the CLI.
    pub fn code(&self) -> crmbus::ErrorCode {
        use crmbus::ErrorCode;
        match self {
            SchemaError::Incompatible { .. } => ErrorCode::SchemaIncompatible,
            SchemaError::NotFound { .. } => ErrorCode::SchemaNotFound,
            SchemaError::InvalidSchema { .. } => ErrorCode::InvalidSchema,
            SchemaError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            SchemaError::Violation { .. } => ErrorCode::SchemaViolation,
            SchemaError::Catalog { .. } => ErrorCode::CatalogError,
            SchemaError::Store(_) => ErrorCode::SchemaStoreError,
        }
    }
}

impl From<LogError> for SchemaError {
    fn from(e: LogError) -> Self {
        SchemaError::Store(e.to_string())
    }
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn version_suffix(version: Option<u32>) -> String {
    version.map(|v| format!(" version {v}")).unwrap_or_default()
}

fn for_type(event_type: &Option<String>) -> String {
    event_type
        .as_ref()
        .map(|t| format!(" for '{t}'"))
        .unwrap_or_default()
}
