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

use crmbus::sync::RwLockExt;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

use async_trait::async_trait;
use crmbus::{Event, EventData, InvalidEvent, PublishValidator, StateOp, StateStore, Violation};
use jsonschema::error::ValidationErrorKind;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::compat::{check_compatibility, CompatibilityMode, CompatibilityReport};
use crate::error::{DataViolation, SchemaError};

/// The state-store namespace the registry keeps its records in.
pub const NAMESPACE: &str = "schemas";
/// The prefix of every schema URI: `urn:crmbus:schema:<type>:<version>`.
pub const URI_PREFIX: &str = "urn:crmbus:schema:";
/// The only `$schema` a registered schema may declare (it may also declare none).
pub const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

const VERSION_PREFIX: &str = "v/";
const MODE_PREFIX: &str = "mode/";

/// The URI naming version `version` of `event_type`'s schema:
/// `urn:crmbus:schema:<event_type>:<version>`.
pub fn schema_uri(event_type: &str, version: u32) -> String {
    format!("{URI_PREFIX}{event_type}:{version}")
}

/// The event type and version a schema URI names, or `None` if `uri` is not one of this
/// registry's URIs (see [`schema_uri`]).
pub fn parse_schema_uri(uri: &str) -> Option<(String, u32)> {
    let rest = uri.strip_prefix(URI_PREFIX)?;
    let (ty, version) = rest.rsplit_once(':')?;
    if validate_event_type(ty).is_err() || version.starts_with('0') {
        return None;
    }
    let version: u32 = version.parse().ok()?;
    (version >= 1).then(|| (ty.to_string(), version))
}

/// Checks that `event_type` can be keyed by the registry (1–200 characters of
/// `A–Z a–z 0–9 . _ -`, starting with a letter or digit).
pub fn validate_event_type(event_type: &str) -> Result<(), SchemaError> {
    let ok = !event_type.is_empty()
        && event_type.len() <= 200
        && event_type
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && event_type
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(SchemaError::InvalidArgument(format!(
            "event type '{event_type}' cannot have a schema: use 1-200 characters of \
             A-Z a-z 0-9 . _ - starting with a letter or digit"
        )))
    }
}

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
    fn new(event_type: &str, version: u32, schema: Value) -> Self {
        SchemaVersion {
            event_type: event_type.to_string(),
            version,
            uri: schema_uri(event_type, version),
            schema,
            compiled: OnceLock::new(),
        }
    }

    fn with_validator(mut self, validator: jsonschema::Validator) -> Self {
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
        Ok(SchemaRegistry {
            store,
            types: RwLock::new(types),
            writes: tokio::sync::Mutex::new(()),
        })
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

    /// Validates an event for publishing. If its type has a schema, `data` is checked
    /// against:
    ///
    /// - the registered version its `dataschema` names, when that is one of this registry's
    ///   URIs (`urn:crmbus:schema:<type>:<n>`); a registry URI naming a version that is not
    ///   registered, another type's schema, or no version at all is a `dataschema`
    ///   violation;
    /// - otherwise the type's latest version: when `dataschema` is absent it is then set to
    ///   that version's URI, and any other URI (the producer's own schema) is kept as it is.
    ///
    /// A type without a schema passes unless `require_schema` is set. Every violation is
    /// returned; attributes are `type`, `dataschema`, `data`, or `data` followed by the JSON
    /// Pointer into it (`data/amount`).
    pub fn validate_event(
        &self,
        event: &mut Event,
        require_schema: bool,
    ) -> Result<(), InvalidEvent> {
        let fail = |attribute: &str, message: String| {
            Err(InvalidEvent {
                violations: vec![Violation {
                    attribute: attribute.to_string(),
                    message,
                }],
            })
        };
        let (latest, named) = {
            let types = self.read();
            let entry = types.get(&event.ty);
            let latest = entry.and_then(|e| e.versions.last()).cloned();
            let named = event
                .dataschema
                .as_deref()
                .and_then(parse_schema_uri)
                .map(|(ty, n)| {
                    let v = (ty == event.ty)
                        .then(|| entry.and_then(|e| e.get(n)).cloned())
                        .flatten();
                    (ty, n, v)
                });
            (latest, named)
        };
        // A URI in this registry's namespace that names no version is a mistake, not the
        // producer's own schema.
        if let Some(uri) = event.dataschema.as_deref() {
            if named.is_none() && uri.starts_with(URI_PREFIX) {
                return fail(
                    "dataschema",
                    format!(
                        "'{uri}' is in this registry's namespace but names no schema version: \
                         use {URI_PREFIX}<type>:<version> (versions count from 1), a URI of \
                         your own, or none"
                    ),
                );
            }
        }
        let Some(latest) = latest else {
            if let Some((ty, n, _)) = named {
                return fail(
                    "dataschema",
                    format!("names schema '{ty}' version {n}, which is not registered"),
                );
            }
            if require_schema {
                return fail(
                    "type",
                    format!(
                        "no schema is registered for type '{}', and a target topic requires one",
                        event.ty
                    ),
                );
            }
            return Ok(());
        };
        // Whether an accepted event gets the version's URI as its `dataschema`: not when it
        // carries the producer's own schema URI.
        let mut stamp = true;
        let version = match (&event.dataschema, named) {
            (None, _) => latest,
            (Some(_), Some((_, _, Some(v)))) => v,
            (Some(_), Some((ty, n, None))) if ty == event.ty => {
                return fail(
                    "dataschema",
                    format!(
                        "version {n} of '{ty}' is not registered (the latest is {})",
                        latest.version
                    ),
                )
            }
            (Some(_), Some((ty, _, None))) => {
                return fail(
                    "dataschema",
                    format!(
                        "names a schema of type '{ty}', but the event's type is '{}'",
                        event.ty
                    ),
                )
            }
            // The producer's own schema URI: kept, and the latest version decides.
            (Some(_), None) => {
                stamp = false;
                latest
            }
        };
        let data = match &event.data {
            Some(EventData::Json(v)) => v,
            Some(EventData::Binary(_)) => {
                return fail(
                    "data",
                    format!(
                        "is binary (data_base64), but type '{}' has a JSON schema",
                        event.ty
                    ),
                )
            }
            None => {
                return fail(
                    "data",
                    format!("is missing, but type '{}' has a schema", event.ty),
                )
            }
        };
        match version.violations(data) {
            Ok(found) if found.is_empty() => {
                if stamp {
                    event.dataschema = Some(version.uri.clone());
                }
                Ok(())
            }
            Ok(found) => Err(InvalidEvent {
                violations: found
                    .into_iter()
                    .map(|v| Violation {
                        attribute: format!("data{}", v.path),
                        message: v.message,
                    })
                    .collect(),
            }),
            Err(e) => fail("dataschema", e.to_string()),
        }
    }
}

#[async_trait]
impl PublishValidator for SchemaRegistry {
    async fn validate(&self, event: &mut Event, require_schema: bool) -> Result<(), InvalidEvent> {
        self.validate_event(event, require_schema)
    }
}

fn version_key(event_type: &str, version: u32) -> String {
    format!("{VERSION_PREFIX}{event_type}/{version:010}")
}

fn compile(schema: &Value) -> Result<jsonschema::Validator, jsonschema::ValidationError<'static>> {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
}

/// Checks that `schema` is a usable 2020-12 schema whose examples validate, and compiles it.
fn prepare(event_type: &str, schema: &Value) -> Result<jsonschema::Validator, SchemaError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_uris_round_trip() {
        let uri = schema_uri("deal.won", 3);
        assert_eq!(uri, "urn:crmbus:schema:deal.won:3");
        assert_eq!(parse_schema_uri(&uri), Some(("deal.won".into(), 3)));
        for bad in [
            "urn:crmbus:schema:deal.won:0",
            "urn:crmbus:schema:deal.won:01",
            "urn:crmbus:schema:deal.won:x",
            "urn:crmbus:schema:deal.won",
            "urn:crmbus:schema::1",
            "https://schemas.example/deal.won/1",
            "urn:crmbus:schema:deal/won:1",
        ] {
            assert_eq!(parse_schema_uri(bad), None, "{bad}");
        }
    }

    #[test]
    fn event_types_are_checked() {
        for ok in ["deal.won", "com.acme.order.v2", "a", "x_y-z.1"] {
            assert!(validate_event_type(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".deal",
            "deal/won",
            "deal:won",
            "déal",
            &"x".repeat(201),
        ] {
            assert!(validate_event_type(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prepare_rejects_unusable_schemas() {
        let cases = [
            serde_json::json!("string"),
            serde_json::json!({"type": "strin"}),
            serde_json::json!({"$schema": "http://json-schema.org/draft-07/schema#"}),
            serde_json::json!({"$ref": "https://example.invalid/other.json"}),
            serde_json::json!({"type": "string", "pattern": "(("}),
            serde_json::json!({"type": "integer", "examples": ["x"]}),
        ];
        for schema in cases {
            let err = prepare("t", &schema).expect_err("invalid");
            assert_eq!(err.code(), "invalid_schema", "{schema}");
        }
        prepare(
            "t",
            &serde_json::json!({"$schema": DRAFT_2020_12, "type": "integer", "examples": [1]}),
        )
        .expect("valid");
    }
}
