//! The CloudEvents 1.0 envelope that crmbus stores and delivers.
//!
//! [`Event`] is a CloudEvents 1.0 event with its own serde implementation of the
//! structured JSON format: context attributes are top-level members, the payload is
//! `data` (any JSON value) or `data_base64` (binary), and extension attributes are
//! flattened next to the context attributes. Parsing ([`Event::from_json_slice`],
//! [`Event::from_json_value`], [`Event::batch_from_json_slice`] and the
//! [`serde::Deserialize`] impl) validates the event and reports every rule it breaks at
//! once, each [`Violation`] naming its attribute.
//! [`Event::new`] is the builder for business events: it fills in `id` (a UUIDv7),
//! `time` and `source` for the caller.
//!
//! The module is split by concern: `ser` writes the structured JSON format, `de` reads it
//! (one document, a batch, or through serde), and `validate` holds the CloudEvents rules
//! and the error types ([`InvalidEvent`], [`Violation`]) they report with.

use std::collections::BTreeMap;
use std::sync::RwLock;

use chrono::{DateTime, FixedOffset, Utc};
use serde_json::{Number, Value};

mod de;
mod json_text;
mod ser;
mod validate;

pub use de::BatchPart;
pub use json_text::JsonText;
pub use validate::{is_forbidden_char, parse_timestamp, InvalidEvent, Violation};

/// The CloudEvents specification version crmbus speaks.
const SPEC_VERSION: &str = "1.0";
/// Media type given to JSON payloads by [`Event::new`].
const JSON_CONTENT_TYPE: &str = "application/json";
/// Environment variable consulted by [`default_source`] when no source was configured.
const SOURCE_ENV: &str = "CRMBUS_EVENT_SOURCE";
/// Source used by [`default_source`] when neither configuration nor environment gives one.
const FALLBACK_SOURCE: &str = "urn:crmbus:default";
/// Attribute names with a meaning of their own in the structured JSON format; an extension
/// may not use them.
const RESERVED_NAMES: [&str; 10] = [
    "id",
    "source",
    "specversion",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
];

/// A CloudEvents 1.0 event: the unit crmbus publishes, stores and delivers.
///
/// The fields are the CloudEvents context attributes; `source` + `id` is the event's
/// identity and the producer dedupe key. Build business events with [`Event::new`] and the
/// builder methods, read them with [`Event::from_json_slice`], and check hand-built ones
/// with [`Event::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Identifies the event; unique per `source`. [`Event::new`] uses a UUIDv7.
    pub id: String,
    /// URI-reference naming the context in which the event happened.
    pub source: String,
    /// CloudEvents specification version; always `"1.0"`.
    pub specversion: String,
    /// The CloudEvents `type` attribute, e.g. `deal.won`.
    pub ty: String,
    /// The business key (`deal-42`); decides the partition and the ordering.
    pub subject: Option<String>,
    /// When the occurrence happened.
    pub time: Option<DateTime<FixedOffset>>,
    /// Media type of `data`, e.g. `application/json`.
    pub datacontenttype: Option<String>,
    /// Absolute URI naming the schema (version) that `data` adheres to.
    pub dataschema: Option<String>,
    /// The event payload.
    pub data: Option<EventData>,
    /// Extension attributes (`userid`, `traceparent`, ...), keyed by attribute name.
    pub extensions: BTreeMap<String, ExtensionValue>,
}

/// The payload of an [`Event`]: JSON carried as `data`, or bytes carried as `data_base64`.
///
/// An event read back from the embedded log, or parsed from JSON text
/// ([`Event::from_json_slice`]), carries JSON as [`EventData::JsonText`], the text, parsed
/// only when asked; read JSON data through [`Event::data_json`], which answers for both
/// JSON variants, rather than matching [`EventData::Json`] alone.
#[derive(Debug, Clone)]
pub enum EventData {
    /// Any JSON value, serialized as the `data` member.
    Json(Value),
    /// Opaque bytes, serialized as the base64 `data_base64` member.
    Binary(Vec<u8>),
    /// JSON as the text it was stored or published as, serialized as the `data` member
    /// exactly so; its value is parsed on first use ([`JsonText::value`]).
    JsonText(JsonText),
}

impl PartialEq for EventData {
    /// JSON data is equal when the values are, whichever variant holds them.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (EventData::Json(a), EventData::Json(b)) => a == b,
            (EventData::Binary(a), EventData::Binary(b)) => a == b,
            (EventData::JsonText(a), EventData::JsonText(b)) => a == b,
            (EventData::Json(a), EventData::JsonText(b))
            | (EventData::JsonText(b), EventData::Json(a)) => a == b.value(),
            _ => false,
        }
    }
}

/// The value of an extension attribute: the JSON scalars CloudEvents allows there.
///
/// CloudEvents Binary, URI, URI-reference and Timestamp values are strings in the JSON
/// format, so they are [`ExtensionValue::String`] here.
#[derive(Debug, Clone, PartialEq)]
pub enum ExtensionValue {
    /// A CloudEvents String: no control characters or Unicode noncharacters (validation
    /// reports them).
    String(String),
    /// A CloudEvents Integer: a whole number from -2147483648 to 2147483647 (validation
    /// reports any other number; an integral float such as `3.0` counts as the integer and
    /// is written as one).
    Number(Number),
    /// A boolean value.
    Bool(bool),
}

// ---------------------------------------------------------------------------------------
// Default source
// ---------------------------------------------------------------------------------------

/// The process-wide default `source`; `None` until configured or first resolved.
static DEFAULT_SOURCE: RwLock<Option<String>> = RwLock::new(None);

/// Sets the process-wide `source` that [`Event::new`] gives new events, e.g.
/// `"urn:acme:crm"`; call it once at startup.
pub fn set_default_source(source: impl Into<String>) {
    let mut slot = DEFAULT_SOURCE
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *slot = Some(source.into());
}

/// The `source` that [`Event::new`] uses: the one set with [`set_default_source`], else the
/// `CRMBUS_EVENT_SOURCE` environment variable (read once, on first use), else
/// `"urn:crmbus:default"`.
pub fn default_source() -> String {
    {
        let slot = DEFAULT_SOURCE
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(source) = slot.as_ref() {
            return source.clone();
        }
    }
    let resolved = source_from_env(std::env::var(SOURCE_ENV).ok());
    let mut slot = DEFAULT_SOURCE
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // A concurrent `set_default_source` may have won the race; keep its value.
    slot.get_or_insert(resolved).clone()
}

/// Picks the default source from the environment variable's value, if usable.
fn source_from_env(value: Option<String>) -> String {
    match value {
        Some(v) if !v.trim().is_empty() => v.trim().to_owned(),
        _ => FALLBACK_SOURCE.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// Event: builder and accessors
// ---------------------------------------------------------------------------------------

impl Event {
    /// Builds a business event of type `ty` carrying `data` as JSON: `id` is a fresh UUIDv7,
    /// `time` is now (UTC), `source` is [`default_source`], `datacontenttype` is
    /// `application/json`.
    pub fn new(ty: impl Into<String>, data: Value) -> Event {
        Event {
            id: uuid::Uuid::now_v7().to_string(),
            source: default_source(),
            specversion: SPEC_VERSION.to_owned(),
            ty: ty.into(),
            subject: None,
            time: Some(Utc::now().fixed_offset()),
            datacontenttype: Some(JSON_CONTENT_TYPE.to_owned()),
            dataschema: None,
            data: Some(EventData::Json(data)),
            extensions: BTreeMap::new(),
        }
    }

    /// Sets `subject`, the business key that decides partition and ordering.
    #[must_use]
    pub fn subject(mut self, s: impl Into<String>) -> Self {
        self.subject = Some(s.into());
        self
    }

    /// Replaces `source` (otherwise [`default_source`]).
    #[must_use]
    pub fn source(mut self, s: impl Into<String>) -> Self {
        self.source = s.into();
        self
    }

    /// Replaces `id`, e.g. to make a retried publish idempotent.
    #[must_use]
    pub fn id(mut self, s: impl Into<String>) -> Self {
        self.id = s.into();
        self
    }

    /// Replaces `time`, e.g. with the time of the business occurrence.
    #[must_use]
    pub fn time(mut self, t: DateTime<FixedOffset>) -> Self {
        self.time = Some(t);
        self
    }

    /// Sets `dataschema`, the absolute URI of the schema version `data` follows.
    #[must_use]
    pub fn dataschema(mut self, s: impl Into<String>) -> Self {
        self.dataschema = Some(s.into());
        self
    }

    /// Replaces `datacontenttype`, the media type of `data`.
    #[must_use]
    pub fn datacontenttype(mut self, s: impl Into<String>) -> Self {
        self.datacontenttype = Some(s.into());
        self
    }

    /// Replaces the payload with `bytes` (carried as `data_base64`) of media type
    /// `content_type`.
    #[must_use]
    pub fn binary_data(mut self, bytes: Vec<u8>, content_type: impl Into<String>) -> Self {
        self.data = Some(EventData::Binary(bytes));
        self.datacontenttype = Some(content_type.into());
        self
    }

    /// Sets the extension attribute `name` (lowercase a–z and 0–9, at most 20 characters)
    /// to `value`.
    #[must_use]
    pub fn extension(mut self, name: impl Into<String>, value: impl Into<ExtensionValue>) -> Self {
        self.extensions.insert(name.into(), value.into());
        self
    }

    /// The JSON payload, if the event carries `data` as JSON (parsed on the first call for
    /// an event read from storage, see [`EventData::JsonText`]).
    pub fn data_json(&self) -> Option<&Value> {
        match &self.data {
            Some(EventData::Json(v)) => Some(v),
            Some(EventData::JsonText(t)) => Some(t.value()),
            _ => None,
        }
    }

    /// The value of extension attribute `name`, if set.
    pub fn extension_value(&self, name: &str) -> Option<&ExtensionValue> {
        self.extensions.get(name)
    }
}

// ---------------------------------------------------------------------------------------
// ExtensionValue conversions
// ---------------------------------------------------------------------------------------

impl From<&str> for ExtensionValue {
    fn from(v: &str) -> Self {
        ExtensionValue::String(v.to_owned())
    }
}

impl From<String> for ExtensionValue {
    fn from(v: String) -> Self {
        ExtensionValue::String(v)
    }
}

impl From<bool> for ExtensionValue {
    fn from(v: bool) -> Self {
        ExtensionValue::Bool(v)
    }
}

impl From<i32> for ExtensionValue {
    fn from(v: i32) -> Self {
        ExtensionValue::Number(Number::from(v))
    }
}

impl From<u32> for ExtensionValue {
    fn from(v: u32) -> Self {
        ExtensionValue::Number(Number::from(v))
    }
}

impl From<i64> for ExtensionValue {
    fn from(v: i64) -> Self {
        ExtensionValue::Number(Number::from(v))
    }
}

impl From<u64> for ExtensionValue {
    fn from(v: u64) -> Self {
        ExtensionValue::Number(Number::from(v))
    }
}

/// A finite float becomes a number; NaN and the infinities, which JSON cannot carry as
/// numbers, become the strings `"NaN"`, `"inf"` and `"-inf"`.
impl From<f64> for ExtensionValue {
    fn from(v: f64) -> Self {
        match Number::from_f64(v) {
            Some(n) => ExtensionValue::Number(n),
            None => ExtensionValue::String(v.to_string()),
        }
    }
}

impl From<Number> for ExtensionValue {
    fn from(v: Number) -> Self {
        ExtensionValue::Number(v)
    }
}

#[cfg(test)]
mod tests;
