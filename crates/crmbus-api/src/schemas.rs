//! The schema registry: list, register, show, compatibility, check and validate.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::problem::FieldError;

/// One event type in the registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SchemaTypeView {
    /// The event type.
    pub event_type: String,
    /// Its compatibility mode: backward, forward, full or none.
    pub mode: String,
    /// Its versions, ascending.
    pub versions: Vec<u32>,
    /// The latest version.
    pub latest: Option<u32>,
}

/// `GET /v1/schemas`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SchemaList {
    /// Every type with a schema, by name.
    pub types: Vec<SchemaTypeView>,
}

/// A schema document to register or check.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SchemaRequest {
    /// A JSON Schema (draft 2020-12) for the event's `data`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub schema: Value,
}

/// The answer to a registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegistrationView {
    /// The event type.
    pub event_type: String,
    /// The version the schema has (new, or the identical one already registered).
    pub version: u32,
    /// Its URI, which accepted events carry as `dataschema`.
    pub uri: String,
    /// False when an identical schema was already registered.
    pub created: bool,
    /// Keywords the compatibility checker found unchanged but does not understand.
    pub warnings: Vec<String>,
}

/// One version of a type's schema.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SchemaVersionView {
    /// The event type.
    pub event_type: String,
    /// The version.
    pub version: u32,
    /// Its URI.
    pub uri: String,
    /// The JSON Schema.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub schema: Value,
}

/// `PUT /v1/schemas/{type}/compatibility`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CompatibilityRequest {
    /// backward (default), forward, full or none.
    pub mode: String,
}

/// A type's compatibility mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompatibilityView {
    /// The event type.
    pub event_type: String,
    /// Its mode.
    pub mode: String,
}

/// What registering a schema would do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckView {
    /// Registering would succeed.
    pub compatible: bool,
    /// The type's compatibility mode.
    pub mode: String,
    /// The version compared with (the latest), if any.
    pub against: Option<u32>,
    /// An identical registered version, if any.
    pub existing: Option<u32>,
    /// Every breaking change, with its JSON path in the schema.
    pub breaking: Vec<FieldError>,
    /// Keywords found unchanged but not understood.
    pub warnings: Vec<String>,
}

/// Whether an event validates.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidationView {
    /// The event would be accepted by a publish.
    pub valid: bool,
    /// The event's `dataschema` as a publish would store it, when its type has a schema:
    /// the registry URI of the version it was checked against, or the producer's own URI
    /// (kept as sent; the type's latest version was checked).
    pub dataschema: Option<String>,
    /// Every violation (CloudEvents attributes and `data/...` paths).
    pub errors: Vec<FieldError>,
}
