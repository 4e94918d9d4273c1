//! How schemas and the types that have them are named: a version's URI,
//! `urn:crmbus:schema:<type>:<version>` ([`schema_uri`], [`parse_schema_uri`]), and the
//! event types the registry can key ([`validate_event_type`]).

use crate::error::SchemaError;

/// The prefix of every schema URI: `urn:crmbus:schema:<type>:<version>`.
pub const URI_PREFIX: &str = "urn:crmbus:schema:";

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
