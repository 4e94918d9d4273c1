//! Validation at publish: [`SchemaRegistry::validate_event`], which is also the
//! registry's [`PublishValidator`] impl.

use async_trait::async_trait;
use crmbus::{Event, EventData, InvalidEvent, PublishValidator, Violation};

use super::naming::{parse_schema_uri, URI_PREFIX};
use super::SchemaRegistry;

impl SchemaRegistry {
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
        // Data kept as text and found valid as it lies needs no value (the common case);
        // any other data is read into one and checked again, which says what is wrong.
        if let Some(EventData::JsonText(t)) = &event.data {
            if version.accepts_text(t.as_str()) {
                if stamp {
                    event.dataschema = Some(version.uri.clone());
                }
                return Ok(());
            }
        }
        let data = match &event.data {
            Some(EventData::Json(v)) => std::borrow::Cow::Borrowed(v),
            // Parsed for this look only: nothing after validation reads the value at
            // publish, and it is freed here, on the thread that built it.
            Some(EventData::JsonText(t)) => t.value_once(),
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
        match version.violations(&data) {
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
