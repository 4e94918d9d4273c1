//! [`SchemaRegistry`]: JSON Schema versions per event type, kept in a
//! [`crmbus::StateStore`], checked for compatibility when registered, and used to validate
//! events at publish (it is a [`crmbus::PublishValidator`]).
//!
//! # Storage
//!
//! Everything lives in the state-store namespace [`NAMESPACE`] (`schemas`): key
//! `v/<type>/<version, 10 digits>` holds a version (`{"schema": ...}`), key `mode/<type>`
//! the type's compatibility mode when one was set. A registration is one atomic
//! [`StateStore::apply`]; [`SchemaRegistry::open`] loads every key, so versions survive a
//! restart. Registrations are serialized within a process; one store should back one
//! registry at a time.
//!
//! # Schema URIs
//!
//! Version `n` of type `t` is named `urn:crmbus:schema:<t>:<n>` (see [`schema_uri`] and
//! [`parse_schema_uri`]); that is what accepted events without a `dataschema` get as
//! theirs. A producer's own `dataschema` (any URI outside `urn:crmbus:schema:`) is kept,
//! and the type's latest version validates the event (see
//! [`SchemaRegistry::validate_event`]). Event types
//! that can have a schema are 1–200 characters of `A–Z a–z 0–9 . _ -`, starting with a
//! letter or digit (so they fit in keys, URIs and catalog paths unescaped).
//!
//! Loading a catalog ([`SchemaRegistry::load_catalog`],
//! [`SchemaRegistry::load_builtin_catalog`]) lives beside the catalog, in [`crate::catalog`].
//!
//! # Layout
//!
//! This file holds the registry, its stored records and what its calls return;
//! `naming.rs` schema URIs and event-type names; `version.rs` a [`SchemaVersion`], its
//! validator and the checks a schema passes before it is registered; `publish.rs`
//! validation at publish.

use crmbus::sync::RwLockExt;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crmbus::{StateOp, StateStore};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::compat::{check_compatibility, CompatibilityMode, CompatibilityReport};
use crate::error::SchemaError;
pub use naming::{parse_schema_uri, schema_uri, validate_event_type, URI_PREFIX};
use version::prepare;
pub use version::{SchemaVersion, DRAFT_2020_12};

mod naming;
mod publish;
#[cfg(test)]
mod tests;
mod text_instance;
mod version;

/// The state-store namespace the registry keeps its records in.
pub const NAMESPACE: &str = "schemas";

const VERSION_PREFIX: &str = "v/";
const MODE_PREFIX: &str = "mode/";

/// What [`SchemaRegistry::register`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registration {
    /// The event type.
    pub event_type: String,
    /// The version the schema has: new, or the existing identical one.
    pub version: u32,
    /// The version's URI.
    pub uri: String,
    /// False when an identical schema was already registered (nothing was written).
    pub created: bool,
    /// Keywords the compatibility checker did not understand but found unchanged.
    pub warnings: Vec<String>,
}

/// What [`SchemaRegistry::check`] found: whether registering would succeed, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckOutcome {
    /// The event type.
    pub event_type: String,
    /// The type's compatibility mode.
    pub mode: CompatibilityMode,
    /// The version the schema was compared with (the latest), if any.
    pub against: Option<u32>,
    /// An identical registered version, if any (registering would return it).
    pub existing: Option<u32>,
    /// The comparison; `breaking` is empty when the schema would be accepted.
    pub report: CompatibilityReport,
}

impl CheckOutcome {
    /// True when registering the schema would succeed.
    pub fn is_compatible(&self) -> bool {
        self.existing.is_some() || self.report.is_compatible()
    }
}

/// One type in [`SchemaRegistry::list`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TypeSummary {
    /// The event type.
    pub event_type: String,
    /// Its compatibility mode.
    pub mode: CompatibilityMode,
    /// Its versions, ascending.
    pub versions: Vec<u32>,
    /// The latest version, if any.
    pub latest: Option<u32>,
}

#[derive(Default)]
struct TypeEntry {
    mode: Option<CompatibilityMode>,
    versions: Vec<Arc<SchemaVersion>>,
}

impl TypeEntry {
    fn mode(&self) -> CompatibilityMode {
        self.mode.unwrap_or_default()
    }

    fn get(&self, version: u32) -> Option<&Arc<SchemaVersion>> {
        self.versions
            .binary_search_by_key(&version, |v| v.version)
            .ok()
            .and_then(|i| self.versions.get(i))
    }
}

/// The stored form of a version.
#[derive(Serialize, Deserialize)]
struct StoredVersion {
    schema: Value,
}

/// JSON Schemas per event type, durable in a [`StateStore`]; see the module docs.
///
/// Reads (`get`, `latest`, `list`, validation) take a short read lock and never touch the
/// store; writes are serialized and persisted before they become visible.
pub struct SchemaRegistry {
    store: Arc<dyn StateStore>,
    types: RwLock<BTreeMap<String, TypeEntry>>,
    writes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry").finish_non_exhaustive()
    }
}

impl SchemaRegistry {
    /// Opens the registry kept in `store`, loading every stored version and mode.
    pub async fn open(store: Arc<dyn StateStore>) -> Result<SchemaRegistry, SchemaError> {
        let types = Self::load(store.as_ref()).await?;
        Ok(SchemaRegistry {
            store,
            types: RwLock::new(types),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    /// Reads the store again and takes in what other writers registered (servers sharing
    /// the backend); what this registry holds stays if the store cannot be read.
    /// Versions already held are kept as they are (with the validators compiled for
    /// them), so a reload that finds nothing new costs publishing nothing.
    pub async fn reload(&self) -> Result<(), SchemaError> {
        let _serialized = self.writes.lock().await;
        let mut types = Self::load(self.store.as_ref()).await?;
        {
            let held = self.read();
            for (ty, entry) in types.iter_mut() {
                let Some(old) = held.get(ty) else { continue };
                for v in entry.versions.iter_mut() {
                    if let Some(same) = old.get(v.version).filter(|o| o.schema == v.schema) {
                        *v = Arc::clone(same);
                    }
                }
            }
        }
        *self.write() = types;
        Ok(())
    }

    /// Every stored version and mode, by type.
    async fn load(store: &dyn StateStore) -> Result<BTreeMap<String, TypeEntry>, SchemaError> {
        let mut types: BTreeMap<String, TypeEntry> = BTreeMap::new();
        for (key, bytes) in store.scan(NAMESPACE, VERSION_PREFIX).await? {
            let corrupt = |why: &str| SchemaError::Store(format!("record '{key}': {why}"));
            let rest = key.strip_prefix(VERSION_PREFIX).unwrap_or(&key);
            let (ty, version) = rest
                .rsplit_once('/')
                .ok_or_else(|| corrupt("malformed key"))?;
            let version: u32 = version.parse().map_err(|_| corrupt("malformed version"))?;
            let stored: StoredVersion =
                serde_json::from_slice(&bytes).map_err(|e| corrupt(&e.to_string()))?;
            types
                .entry(ty.to_string())
                .or_default()
                .versions
                .push(Arc::new(SchemaVersion::new(ty, version, stored.schema)));
        }
        for (key, bytes) in store.scan(NAMESPACE, MODE_PREFIX).await? {
            let ty = key.strip_prefix(MODE_PREFIX).unwrap_or(&key);
            let mode: CompatibilityMode = serde_json::from_slice(&bytes)
                .map_err(|e| SchemaError::Store(format!("record '{key}': {e}")))?;
            types.entry(ty.to_string()).or_default().mode = Some(mode);
        }
        for entry in types.values_mut() {
            entry.versions.sort_by_key(|v| v.version);
        }
        Ok(types)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, TypeEntry>> {
        self.types.read_locked()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, TypeEntry>> {
        self.types.write_locked()
    }

    /// Says whether `schema` would be accepted as the next version of `event_type`, without
    /// registering it. Fails only when the type or the schema itself is unusable.
    pub fn check(&self, event_type: &str, schema: &Value) -> Result<CheckOutcome, SchemaError> {
        validate_event_type(event_type)?;
        prepare(event_type, schema)?;
        Ok(self.compare(event_type, schema))
    }

    fn compare(&self, event_type: &str, schema: &Value) -> CheckOutcome {
        let types = self.read();
        let entry = types.get(event_type);
        let mode = entry.map(TypeEntry::mode).unwrap_or_default();
        let existing = entry
            .and_then(|e| e.versions.iter().find(|v| &v.schema == schema))
            .map(|v| v.version);
        let latest = entry.and_then(|e| e.versions.last());
        let report = match (existing, latest) {
            (None, Some(latest)) => check_compatibility(&latest.schema, schema, mode),
            _ => CompatibilityReport::default(),
        };
        CheckOutcome {
            event_type: event_type.to_string(),
            mode,
            against: latest.map(|v| v.version),
            existing,
            report,
        }
    }

    /// Registers `schema` as the next version of `event_type` if it is compatible with the
    /// latest version under the type's mode. A schema identical (as JSON) to any registered
    /// version returns that version and writes nothing. Top-level `examples` must validate.
    pub async fn register(
        &self,
        event_type: &str,
        schema: Value,
    ) -> Result<Registration, SchemaError> {
        validate_event_type(event_type)?;
        let validator = prepare(event_type, &schema)?;
        let _serialized = self.writes.lock().await;
        let outcome = self.compare(event_type, &schema);
        if let Some(version) = outcome.existing {
            return Ok(Registration {
                event_type: event_type.to_string(),
                version,
                uri: schema_uri(event_type, version),
                created: false,
                warnings: Vec::new(),
            });
        }
        if let (Some(against), false) = (outcome.against, outcome.report.is_compatible()) {
            return Err(SchemaError::Incompatible {
                event_type: event_type.to_string(),
                mode: outcome.mode,
                against,
                changes: outcome.report.breaking,
            });
        }
        let version = outcome.against.map_or(Ok(1), |v| {
            v.checked_add(1)
                .ok_or_else(|| SchemaError::InvalidArgument("too many versions".into()))
        })?;
        let record = serde_json::to_vec(&StoredVersion {
            schema: schema.clone(),
        })
        .map_err(|e| SchemaError::Store(e.to_string()))?;
        self.store
            .apply(vec![StateOp::Put {
                namespace: NAMESPACE.to_string(),
                key: version_key(event_type, version),
                value: record,
            }])
            .await?;
        let registered =
            Arc::new(SchemaVersion::new(event_type, version, schema).with_validator(validator));
        self.write()
            .entry(event_type.to_string())
            .or_default()
            .versions
            .push(registered);
        tracing::info!(event_type, version, "schema version registered");
        Ok(Registration {
            event_type: event_type.to_string(),
            version,
            uri: schema_uri(event_type, version),
            created: true,
            warnings: outcome.report.warnings,
        })
    }

    /// Sets `event_type`'s compatibility mode (durably); it applies to the next
    /// registration. A type may get a mode before its first version.
    pub async fn set_compatibility(
        &self,
        event_type: &str,
        mode: CompatibilityMode,
    ) -> Result<(), SchemaError> {
        validate_event_type(event_type)?;
        let _serialized = self.writes.lock().await;
        let value = serde_json::to_vec(&mode).map_err(|e| SchemaError::Store(e.to_string()))?;
        self.store
            .put(NAMESPACE, &format!("{MODE_PREFIX}{event_type}"), value)
            .await?;
        self.write().entry(event_type.to_string()).or_default().mode = Some(mode);
        Ok(())
    }

    /// `event_type`'s compatibility mode (`backward` unless set).
    pub fn compatibility(&self, event_type: &str) -> CompatibilityMode {
        self.read()
            .get(event_type)
            .map(TypeEntry::mode)
            .unwrap_or_default()
    }

    /// Version `version` of `event_type`'s schema.
    pub fn get(&self, event_type: &str, version: u32) -> Result<Arc<SchemaVersion>, SchemaError> {
        self.read()
            .get(event_type)
            .and_then(|e| e.get(version))
            .cloned()
            .ok_or_else(|| SchemaError::NotFound {
                event_type: event_type.to_string(),
                version: Some(version),
            })
    }

    /// The latest version of `event_type`'s schema.
    pub fn latest(&self, event_type: &str) -> Result<Arc<SchemaVersion>, SchemaError> {
        self.read()
            .get(event_type)
            .and_then(|e| e.versions.last())
            .cloned()
            .ok_or_else(|| SchemaError::NotFound {
                event_type: event_type.to_string(),
                version: None,
            })
    }

    /// Every type with a schema or a mode, sorted by type.
    pub fn list(&self) -> Vec<TypeSummary> {
        self.read()
            .iter()
            .map(|(ty, e)| TypeSummary {
                event_type: ty.clone(),
                mode: e.mode(),
                versions: e.versions.iter().map(|v| v.version).collect(),
                latest: e.versions.last().map(|v| v.version),
            })
            .collect()
    }

    /// Validates `data` against version `version` of `event_type`'s schema (the latest
    /// when `None`); returns the version used, or [`SchemaError::Violation`] listing every
    /// violation.
    pub fn validate(
        &self,
        event_type: &str,
        version: Option<u32>,
        data: &Value,
    ) -> Result<Arc<SchemaVersion>, SchemaError> {
        let v = match version {
            Some(n) => self.get(event_type, n)?,
            None => self.latest(event_type)?,
        };
        v.validate(data)?;
        Ok(v)
    }
}

fn version_key(event_type: &str, version: u32) -> String {
    format!("{VERSION_PREFIX}{event_type}/{version:010}")
}
