//! # crmbus-schema
//!
//! crmbus's schema registry: JSON Schemas (draft 2020-12) per event type and version, kept
//! durably in a [`crmbus::StateStore`]; compatibility rules checked when a version is
//! registered ([`compat`]); validation of events at publish; and the built-in CRM event
//! catalog ([`catalog`], the repository's `schemas/`).
//!
//! ```no_run
//! # async fn demo(bus_log: std::sync::Arc<dyn crmbus::EventLog>) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use crmbus_schema::SchemaRegistry;
//!
//! let registry = Arc::new(SchemaRegistry::open(Arc::new(crmbus::MemoryStateStore::new())).await?);
//! registry.load_builtin_catalog().await?;
//! let bus = crmbus::EventBus::builder().log(bus_log).validator(registry.clone()).build();
//! // A `deal.won` whose data breaks the catalog schema now fails with
//! // `BusError::Validation` listing every violation, and nothing is written.
//! # let _ = bus; Ok(()) }
//! ```
//!
//! Validation at publish ([`SchemaRegistry::validate_event`], also the
//! [`crmbus::PublishValidator`] impl): an event whose type has a schema is checked against
//! the registered version its `dataschema` names (`urn:crmbus:schema:<type>:<version>`),
//! otherwise against the type's latest version; every violation is reported as attribute
//! `data/<JSON pointer>` with a reason. An accepted event without a `dataschema` gets the
//! version's URI; a producer's own `dataschema` (any other absolute URI) is kept unchanged,
//! while a registry URI naming a version that is not registered is refused. Formats
//! (`date-time`, `email`, `uri`, ...) are asserted. Compiled validators are cached per
//! type and version, so a validation is a map lookup plus the validator run.

pub mod catalog;
pub mod compat;
pub mod docs;
pub mod error;
pub mod registry;

mod mode;

pub use catalog::{CatalogEntry, CatalogLoad, SkippedSchema};
pub use compat::{check_compatibility, BreakingChange, CompatibilityMode, CompatibilityReport};
pub use error::{DataViolation, SchemaError};
pub use registry::{
    parse_schema_uri, schema_uri, validate_event_type, CheckOutcome, Registration, SchemaRegistry,
    SchemaVersion, TypeSummary, NAMESPACE, URI_PREFIX,
};
