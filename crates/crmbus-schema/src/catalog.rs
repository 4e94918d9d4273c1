//! The built-in CRM event catalog: one JSON Schema file per event type and version,
//! `schemas/<type>/<n>.json` at the repository root.
//!
//! The files are embedded in the binary at build time ([`builtin`], loaded with
//! [`SchemaRegistry::load_builtin_catalog`](crate::SchemaRegistry::load_builtin_catalog)),
//! so `crmbus serve` works from any directory; a directory laid out the same way can be
//! loaded instead or as well ([`read_dir`],
//! [`SchemaRegistry::load_catalog`](crate::SchemaRegistry::load_catalog)).
//!
//! Loading registers each type's files in version order through the normal registration
//! path: a file identical to a registered version changes nothing (so loading at every
//! start is idempotent), a newer file becomes the type's latest version, and a version
//! registered at run time stays latest until a newer catalog file arrives. A catalog file
//! that is incompatible with what the registry already holds is skipped and reported in
//! [`CatalogLoad::skipped`] (and logged) rather than failing the start; a malformed file
//! fails the load. `<n>` orders the files; the registry numbers versions itself, so on a
//! fresh registry file `n` becomes version `n`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::error::SchemaError;
use crate::registry::{schema_uri, validate_event_type, Registration, SchemaRegistry};

/// One catalog file, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogEntry {
    /// The event type (the file's directory name).
    pub event_type: String,
    /// The file's version number (its name, `<n>.json`).
    pub version: u32,
    /// Where it came from (`<type>/<n>.json`, or a path on disk).
    pub file: String,
    /// The JSON Schema.
    pub schema: Value,
}

/// What loading a catalog did.
#[derive(Debug, Default)]
pub struct CatalogLoad {
    /// One per file registered or found already registered (`created` tells which).
    pub registrations: Vec<Registration>,
    /// Files skipped because they are incompatible with the registered versions.
    pub skipped: Vec<SkippedSchema>,
}

/// A catalog file that was not registered, and why.
#[derive(Debug)]
pub struct SkippedSchema {
    /// The file.
    pub file: String,
    /// Why (a [`SchemaError::Incompatible`] listing the breaking changes).
    pub error: SchemaError,
}

/// Loading a catalog into a registry: each entry goes through [`SchemaRegistry::register`].
impl SchemaRegistry {
    /// Registers every schema of the catalog in `dir` (`<dir>/<type>/<n>.json`), each
    /// type's versions in order; see [`crate::catalog`] for what is skipped.
    pub async fn load_catalog(&self, dir: &Path) -> Result<CatalogLoad, SchemaError> {
        let entries = read_dir(dir)?;
        self.load_entries(entries).await
    }

    /// Registers the catalog built into this crate (the repository's `schemas/` at build
    /// time); see [`crate::catalog`].
    pub async fn load_builtin_catalog(&self) -> Result<CatalogLoad, SchemaError> {
        self.load_entries(builtin()?).await
    }

    async fn load_entries(&self, entries: Vec<CatalogEntry>) -> Result<CatalogLoad, SchemaError> {
        let mut load = CatalogLoad::default();
        for entry in entries {
            match self.register(&entry.event_type, entry.schema).await {
                Ok(r) => load.registrations.push(r),
                Err(error @ SchemaError::Incompatible { .. }) => {
                    tracing::warn!(file = %entry.file, %error, "catalog schema skipped");
                    load.skipped.push(SkippedSchema {
                        file: entry.file,
                        error,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(load)
    }
}

macro_rules! embedded {
    ($($ty:literal $v:literal),* $(,)?) => {
        &[$((
            $ty,
            $v,
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"), "/../../schemas/", $ty, "/", $v, ".json"
            )),
        )),*]
    };
}

/// Every embedded catalog file: (event type, version, text). A test keeps this list equal
/// to the files under `schemas/`.
pub const EMBEDDED: &[(&str, u32, &str)] = embedded![
    "account.created" 1,
    "account.created" 2,
    "account.merged" 1,
    "account.merged" 2,
    "account.updated" 1,
    "account.updated" 2,
    "alert.triggered" 1,
    "alert.triggered" 2,
    "contact.bounced" 1,
    "contact.bounced" 2,
    "contact.created" 1,
    "contact.created" 2,
    "contact.updated" 1,
    "contact.updated" 2,
    "deal.created" 1,
    "deal.created" 2,
    "deal.deleted" 1,
    "deal.deleted" 2,
    "deal.lost" 1,
    "deal.lost" 2,
    "deal.stage_changed" 1,
    "deal.stage_changed" 2,
    "deal.updated" 1,
    "deal.updated" 2,
    "deal.won" 1,
    "deal.won" 2,
    "incident.created" 1,
    "incident.created" 2,
    "inventory.updated" 1,
    "inventory.updated" 2,
    "invoice.generated" 1,
    "invoice.generated" 2,
    "lead.converted" 1,
    "lead.converted" 2,
    "lead.created" 1,
    "lead.created" 2,
    "lead.qualified" 1,
    "lead.qualified" 2,
    "lead.rejected" 1,
    "lead.rejected" 2,
    "order.created" 1,
    "order.created" 2,
    "payment.processed" 1,
    "payment.processed" 2,
    "task.assigned" 1,
    "task.assigned" 2,
    "task.completed" 1,
    "task.completed" 2,
    "threat.detected" 1,
    "threat.detected" 2,
    "user.created" 1,
    "user.deleted" 1,
    "user.deleted" 2,
    "user.logged_in" 1,
    "user.logged_in" 2,
    "user.login" 1,
    "user.logout" 1,
    "user.registered" 1,
    "user.registered" 2,
    "user.updated" 1,
    "user.updated" 2,
    "workflow.completed" 1,
    "workflow.completed" 2,
    "workflow.started" 1,
    "workflow.started" 2,
];

/// The embedded catalog, parsed and checked, sorted by type then version.
pub fn builtin() -> Result<Vec<CatalogEntry>, SchemaError> {
    let entries = EMBEDDED
        .iter()
        .map(|(ty, v, text)| parse_entry(&format!("{ty}/{v}.json"), ty, *v, text))
        .collect::<Result<Vec<_>, _>>()?;
    finish(entries)
}

/// Reads a catalog directory laid out as `<dir>/<type>/<n>.json` (other top-level files,
/// such as a README, and non-`.json` files are ignored), parsed and checked, sorted by
/// type then version.
pub fn read_dir(dir: &Path) -> Result<Vec<CatalogEntry>, SchemaError> {
    let io_err = |path: &Path, e: std::io::Error| SchemaError::Catalog {
        file: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut entries = Vec::new();
    for type_dir in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let type_dir = type_dir.map_err(|e| io_err(dir, e))?;
        let path = type_dir.path();
        if !path.is_dir() {
            continue;
        }
        let ty = type_dir.file_name().to_string_lossy().into_owned();
        for file in std::fs::read_dir(&path).map_err(|e| io_err(&path, e))? {
            let file = file.map_err(|e| io_err(&path, e))?;
            let file_path = file.path();
            let name = file.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            let shown = file_path.display().to_string();
            let version = parse_version(&shown, stem)?;
            let text = std::fs::read_to_string(&file_path).map_err(|e| io_err(&file_path, e))?;
            entries.push(parse_entry(&shown, &ty, version, &text)?);
        }
    }
    finish(entries)
}

fn parse_version(file: &str, stem: &str) -> Result<u32, SchemaError> {
    match stem.parse::<u32>() {
        Ok(v) if v >= 1 && !stem.starts_with('0') => Ok(v),
        _ => Err(SchemaError::Catalog {
            file: file.to_string(),
            reason: "a catalog file must be named <version>.json, version 1, 2, ...".into(),
        }),
    }
}

fn parse_entry(
    file: &str,
    ty: &str,
    version: u32,
    text: &str,
) -> Result<CatalogEntry, SchemaError> {
    let bad = |reason: String| SchemaError::Catalog {
        file: file.to_string(),
        reason,
    };
    validate_event_type(ty).map_err(|e| bad(e.to_string()))?;
    let schema: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let expected = schema_uri(ty, version);
    match schema.get("$id") {
        None => {}
        Some(Value::String(id)) if *id == expected => {}
        Some(other) => {
            return Err(bad(format!(
                "$id is {other}, expected \"{expected}\" for this file"
            )))
        }
    }
    Ok(CatalogEntry {
        event_type: ty.to_string(),
        version,
        file: file.to_string(),
        schema,
    })
}

/// Sorts and checks that every type's versions run 1, 2, ... without gaps.
fn finish(mut entries: Vec<CatalogEntry>) -> Result<Vec<CatalogEntry>, SchemaError> {
    entries.sort_by(|a, b| (&a.event_type, a.version).cmp(&(&b.event_type, b.version)));
    let mut next: BTreeMap<&str, u32> = BTreeMap::new();
    for e in &entries {
        let want = next.entry(&e.event_type).or_insert(1);
        if e.version != *want {
            return Err(SchemaError::Catalog {
                file: e.file.clone(),
                reason: format!(
                    "versions of '{}' must run 1, 2, ... without gaps; expected {}.json",
                    e.event_type, want
                ),
            });
        }
        *want += 1;
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_file_names() {
        assert_eq!(parse_version("f", "1").ok(), Some(1));
        assert_eq!(parse_version("f", "12").ok(), Some(12));
        for bad in ["0", "01", "v1", "", "-1"] {
            assert!(parse_version("f", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gaps_and_wrong_ids_are_rejected() {
        let e = |ty: &str, v: u32| CatalogEntry {
            event_type: ty.into(),
            version: v,
            file: format!("{ty}/{v}.json"),
            schema: Value::Bool(true),
        };
        assert!(finish(vec![e("a", 2), e("a", 1), e("b", 1)]).is_ok());
        let err = finish(vec![e("a", 1), e("a", 3)]).expect_err("gap");
        assert_eq!(err.code(), "catalog_error");
        let err = parse_entry("a/1.json", "a", 1, r#"{"$id": "urn:crmbus:schema:a:2"}"#)
            .expect_err("wrong $id");
        assert!(err.to_string().contains("expected"), "{err}");
        assert!(parse_entry("a/1.json", "a", 1, "{").is_err());
    }
}
