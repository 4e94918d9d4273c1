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

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::RwLock;

use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::format::{Fixed, Item};
use chrono::{DateTime, Datelike, FixedOffset, SecondsFormat, Utc};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Number, Value};

/// The CloudEvents specification version crmbus speaks.
const SPEC_VERSION: &str = "1.0";
/// Media type given to JSON payloads by [`Event::new`].
const JSON_CONTENT_TYPE: &str = "application/json";
/// Environment variable consulted by [`default_source`] when no source was configured.
const SOURCE_ENV: &str = "CRMBUS_EVENT_SOURCE";
/// Source used by [`default_source`] when neither configuration nor environment gives one.
const FALLBACK_SOURCE: &str = "urn:crmbus:default";
/// Longest attribute name the CloudEvents spec allows.
const MAX_NAME_LEN: usize = 20;
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
#[derive(Debug, Clone, PartialEq)]
pub enum EventData {
    /// Any JSON value, serialized as the `data` member.
    Json(Value),
    /// Opaque bytes, serialized as the base64 `data_base64` member.
    Binary(Vec<u8>),
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

/// Why an event was rejected: every [`Violation`] found, not just the first.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid event: {}", ViolationList(.violations))]
pub struct InvalidEvent {
    /// Each broken rule, naming the attribute it concerns.
    pub violations: Vec<Violation>,
}

/// One broken validation rule: which attribute, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    /// The attribute concerned (`id`, an extension name, `(event)` for the whole document,
    /// `(body)` for unparseable input).
    pub attribute: String,
    /// What is wrong, for people.
    pub message: String,
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

    /// The JSON payload, if the event carries `data` as JSON.
    pub fn data_json(&self) -> Option<&Value> {
        match &self.data {
            Some(EventData::Json(v)) => Some(v),
            _ => None,
        }
    }

    /// The value of extension attribute `name`, if set.
    pub fn extension_value(&self, name: &str) -> Option<&ExtensionValue> {
        self.extensions.get(name)
    }

    /// Checks the event against the CloudEvents rules crmbus enforces and returns every
    /// violation found (empty or malformed attributes, bad extension names, ...).
    pub fn validate(&self) -> Result<(), InvalidEvent> {
        let mut violations = Vec::new();
        check_fields(self, 0, true, &mut violations);
        InvalidEvent::from_violations(violations)
    }

    /// Reads a structured-mode CloudEvent from a parsed JSON value and validates it.
    pub fn from_json_value(v: Value) -> Result<Event, InvalidEvent> {
        match v {
            Value::Object(map) => {
                let mut collector = Collector::default();
                for (name, value) in map {
                    collector.accept(Cow::Owned(name), value);
                }
                collector.finish()
            }
            other => Err(not_an_object(json_kind(&other))),
        }
    }

    /// Reads a structured-mode CloudEvent from JSON bytes and validates it; bytes that are
    /// not JSON give one violation on attribute `(body)`.
    pub fn from_json_slice(bytes: &[u8]) -> Result<Event, InvalidEvent> {
        match serde_json::from_slice::<Parsed>(bytes) {
            Ok(Parsed(result)) => result,
            Err(e) => Err(InvalidEvent::single(
                "(body)",
                format!("malformed JSON: {e}"),
            )),
        }
    }

    /// Reads a batch of structured-mode CloudEvents (the JSON batch format: an array of
    /// events), each element read and validated exactly as [`Event::from_json_slice`] reads
    /// one event, so that a member given twice is reported in a batch too. Bytes that are
    /// not JSON, or JSON that is not an array, give one violation on attribute `(body)`.
    pub fn batch_from_json_slice(
        bytes: &[u8],
    ) -> Result<Vec<Result<Event, InvalidEvent>>, InvalidEvent> {
        match serde_json::from_slice::<ParsedBatch>(bytes) {
            Ok(ParsedBatch(Ok(items))) => Ok(items.into_iter().map(|Parsed(r)| r).collect()),
            Ok(ParsedBatch(Err(kind))) => Err(InvalidEvent::single(
                "(body)",
                format!("a batch must be a JSON array of events, not {kind}"),
            )),
            Err(e) => Err(InvalidEvent::single(
                "(body)",
                format!("malformed JSON: {e}"),
            )),
        }
    }

    /// The event in the structured JSON format, as a JSON value.
    pub fn to_json_value(&self) -> Value {
        let mut map = Map::new();
        map.insert(
            "specversion".into(),
            Value::String(self.specversion.clone()),
        );
        map.insert("id".into(), Value::String(self.id.clone()));
        map.insert("source".into(), Value::String(self.source.clone()));
        map.insert("type".into(), Value::String(self.ty.clone()));
        if let Some(s) = &self.subject {
            map.insert("subject".into(), Value::String(s.clone()));
        }
        if let Some(t) = &self.time {
            let text = t.to_rfc3339_opts(SecondsFormat::AutoSi, false);
            map.insert("time".into(), Value::String(text));
        }
        if let Some(s) = &self.datacontenttype {
            map.insert("datacontenttype".into(), Value::String(s.clone()));
        }
        if let Some(s) = &self.dataschema {
            map.insert("dataschema".into(), Value::String(s.clone()));
        }
        for (name, value) in self.serialized_extensions() {
            let v = match value {
                ExtensionValue::String(s) => Value::String(s.clone()),
                ExtensionValue::Number(n) => Value::Number(canonical_number(n)),
                ExtensionValue::Bool(b) => Value::Bool(*b),
            };
            map.insert(name.clone(), v);
        }
        match &self.data {
            Some(EventData::Json(v)) => {
                map.insert("data".into(), v.clone());
            }
            Some(EventData::Binary(b)) => {
                map.insert("data_base64".into(), Value::String(BASE64.encode(b)));
            }
            None => {}
        }
        Value::Object(map)
    }

    /// The event in the structured JSON format, serialized straight to bytes (the storage
    /// path: no intermediate [`Value`], one buffer sized up front).
    pub fn to_json_vec(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.estimated_json_len());
        match serde_json::to_writer(&mut buf, self) {
            Ok(()) => buf,
            // Unreachable in practice: every key is a string, every number finite and a Vec
            // never fails to grow; fall back to the slower but equivalent path regardless.
            Err(_) => self.to_json_value().to_string().into_bytes(),
        }
    }

    /// Extensions that are written out; one named like a context attribute would produce a
    /// duplicate member, so it is skipped ([`Event::validate`] reports it).
    fn serialized_extensions(&self) -> impl Iterator<Item = (&String, &ExtensionValue)> {
        self.extensions
            .iter()
            .filter(|(name, _)| !RESERVED_NAMES.contains(&name.as_str()))
    }

    /// A generous guess of the serialized size, so `to_json_vec` rarely reallocates.
    fn estimated_json_len(&self) -> usize {
        // Member names, quotes, colons, commas and the fixed-width time.
        let mut n = 96 + self.id.len() + self.source.len() + self.specversion.len() + self.ty.len();
        for s in [&self.subject, &self.datacontenttype, &self.dataschema]
            .into_iter()
            .flatten()
        {
            n += s.len() + 20;
        }
        for (name, value) in &self.extensions {
            n += name.len() + 6;
            n += match value {
                ExtensionValue::String(s) => s.len() + 2,
                ExtensionValue::Number(_) => 24,
                ExtensionValue::Bool(_) => 5,
            };
        }
        n += match &self.data {
            Some(EventData::Binary(b)) => b.len().div_ceil(3) * 4 + 16,
            Some(EventData::Json(Value::String(s))) => s.len() + 16,
            Some(EventData::Json(_)) => 256,
            None => 0,
        };
        n
    }
}

// ---------------------------------------------------------------------------------------
// Serialization
// ---------------------------------------------------------------------------------------

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = 4
            + usize::from(self.subject.is_some())
            + usize::from(self.time.is_some())
            + usize::from(self.datacontenttype.is_some())
            + usize::from(self.dataschema.is_some())
            + usize::from(self.data.is_some())
            + self.serialized_extensions().count();
        let mut map = serializer.serialize_map(Some(len))?;
        map.serialize_entry("specversion", &self.specversion)?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("source", &self.source)?;
        map.serialize_entry("type", &self.ty)?;
        if let Some(s) = &self.subject {
            map.serialize_entry("subject", s)?;
        }
        if let Some(t) = &self.time {
            map.serialize_entry("time", &Rfc3339(t))?;
        }
        if let Some(s) = &self.datacontenttype {
            map.serialize_entry("datacontenttype", s)?;
        }
        if let Some(s) = &self.dataschema {
            map.serialize_entry("dataschema", s)?;
        }
        for (name, value) in self.serialized_extensions() {
            map.serialize_entry(name, value)?;
        }
        match &self.data {
            Some(EventData::Json(v)) => map.serialize_entry("data", v)?,
            Some(EventData::Binary(b)) => map.serialize_entry("data_base64", &Base64(b))?,
            None => {}
        }
        map.end()
    }
}

/// Serializes a timestamp as RFC 3339 (`SecondsFormat::AutoSi`, offset kept) without an
/// intermediate `String`.
struct Rfc3339<'a>(&'a DateTime<FixedOffset>);

impl Serialize for Rfc3339<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // `Fixed::RFC3339` is chrono's RFC 3339 writer with `AutoSi` seconds and `+00:00`.
        let items = std::iter::once(Item::Fixed(Fixed::RFC3339));
        serializer.collect_str(&self.0.format_with_items(items))
    }
}

/// Serializes bytes as standard base64 without an intermediate `String`.
struct Base64<'a>(&'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&Base64Display::new(self.0, &BASE64))
    }
}

impl Serialize for ExtensionValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ExtensionValue::String(s) => serializer.serialize_str(s),
            ExtensionValue::Number(n) => match integer_value(n) {
                Some(i) => serializer.serialize_i32(i),
                None => n.serialize(serializer),
            },
            ExtensionValue::Bool(b) => serializer.serialize_bool(*b),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Deserialization
// ---------------------------------------------------------------------------------------

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Parsed::deserialize(deserializer)?
            .0
            .map_err(de::Error::custom)
    }
}

/// A parsed document: well-formed input that is, or is not, a valid event.
struct Parsed(Result<Event, InvalidEvent>);

impl<'de> Deserialize<'de> for Parsed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ParsedVisitor)
    }
}

/// Streams the members of a structured-mode event into a [`Collector`]; any other JSON
/// value becomes an `(event)` violation rather than a parse error.
struct ParsedVisitor;

impl ParsedVisitor {
    fn not_object(kind: &str) -> Parsed {
        Parsed(Err(not_an_object(kind)))
    }
}

impl<'de> Visitor<'de> for ParsedVisitor {
    type Value = Parsed;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a CloudEvents structured-mode JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed, A::Error> {
        let mut collector = Collector::default();
        while let Some(name) = map.next_key_seed(NameSeed)? {
            let value: Value = map.next_value()?;
            collector.accept(name, value);
        }
        Ok(Parsed(collector.finish()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Parsed, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Self::not_object("an array"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Parsed, E> {
        Ok(Self::not_object("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Parsed, E> {
        Ok(Self::not_object("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Parsed, E> {
        Ok(Self::not_object("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Parsed, E> {
        Ok(Self::not_object("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Parsed, E> {
        Ok(Self::not_object("a string"))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Parsed, E> {
        Ok(Self::not_object("bytes"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Parsed, E> {
        Ok(Self::not_object("null"))
    }

    fn visit_none<E: de::Error>(self) -> Result<Parsed, E> {
        Ok(Self::not_object("null"))
    }
}

/// A parsed batch document: its elements, each a [`Parsed`] event, or what kind of JSON
/// value it was instead of an array.
struct ParsedBatch(Result<Vec<Parsed>, &'static str>);

impl<'de> Deserialize<'de> for ParsedBatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BatchVisitor)
    }
}

/// Streams the elements of a batch into [`Parsed`] events; any other JSON value is noted
/// by its kind.
struct BatchVisitor;

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = ParsedBatch;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of CloudEvents")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ParsedBatch, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Parsed>()? {
            items.push(item);
        }
        Ok(ParsedBatch(Ok(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ParsedBatch, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(ParsedBatch(Err("an object")))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<ParsedBatch, E> {
        Ok(ParsedBatch(Err("a boolean")))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<ParsedBatch, E> {
        Ok(ParsedBatch(Err("a number")))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<ParsedBatch, E> {
        Ok(ParsedBatch(Err("a number")))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<ParsedBatch, E> {
        Ok(ParsedBatch(Err("a number")))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<ParsedBatch, E> {
        Ok(ParsedBatch(Err("a string")))
    }

    fn visit_unit<E: de::Error>(self) -> Result<ParsedBatch, E> {
        Ok(ParsedBatch(Err("null")))
    }
}

/// Deserializes a member name, borrowing it from the input when possible so that known
/// attribute names cost no allocation.
struct NameSeed;

impl<'de> DeserializeSeed<'de> for NameSeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(NameVisitor)
    }
}

struct NameVisitor;

impl<'de> Visitor<'de> for NameVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an attribute name")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

/// Bit flags naming the context attributes, for duplicate detection and for skipping
/// checks on attributes already reported.
const ID: u16 = 1 << 0;
const SOURCE: u16 = 1 << 1;
const SPECVERSION: u16 = 1 << 2;
const TYPE: u16 = 1 << 3;
const SUBJECT: u16 = 1 << 4;
const TIME: u16 = 1 << 5;
const DATACONTENTTYPE: u16 = 1 << 6;
const DATASCHEMA: u16 = 1 << 7;
const DATA: u16 = 1 << 8;
const DATA_BASE64: u16 = 1 << 9;

/// Gathers the members of a structured-mode event, recording a violation for each bad one.
#[derive(Default)]
struct Collector {
    id: Option<String>,
    source: Option<String>,
    specversion: Option<String>,
    ty: Option<String>,
    subject: Option<String>,
    time: Option<DateTime<FixedOffset>>,
    datacontenttype: Option<String>,
    dataschema: Option<String>,
    data: Option<Value>,
    data_base64: Option<Vec<u8>>,
    /// `data_base64` was present and not null (even if it failed to decode).
    has_data_base64: bool,
    extensions: BTreeMap<String, ExtensionValue>,
    /// Extensions given as `null` (unset), remembered only to report a duplicate member.
    unset_extensions: Vec<String>,
    /// Attributes seen so far, to report duplicate members.
    seen: u16,
    /// Attributes already reported, so later checks do not pile on.
    reported: u16,
    violations: Vec<Violation>,
}

impl Collector {
    fn violation(&mut self, flag: u16, attribute: &str, message: impl Into<String>) {
        self.reported |= flag;
        self.violations.push(Violation::new(attribute, message));
    }

    /// Records that `flag` was seen; false (and a violation) if it was seen before.
    fn first_sighting(&mut self, flag: u16, attribute: &str) -> bool {
        if self.seen & flag != 0 {
            self.violation(flag, attribute, "appears more than once");
            return false;
        }
        self.seen |= flag;
        true
    }

    /// A string-valued attribute: null is absent, anything else but a string is a violation.
    fn string(&mut self, flag: u16, attribute: &str, value: Value) -> Option<String> {
        if !self.first_sighting(flag, attribute) {
            return None;
        }
        match value {
            Value::String(s) => Some(s),
            Value::Null => None,
            other => {
                let message = format!("must be a string, not {}", json_kind(&other));
                self.violation(flag, attribute, message);
                None
            }
        }
    }

    fn accept(&mut self, name: Cow<'_, str>, value: Value) {
        match &*name {
            "id" => self.id = self.string(ID, "id", value),
            "source" => self.source = self.string(SOURCE, "source", value),
            "specversion" => self.specversion = self.string(SPECVERSION, "specversion", value),
            "type" => self.ty = self.string(TYPE, "type", value),
            "subject" => self.subject = self.string(SUBJECT, "subject", value),
            "datacontenttype" => {
                self.datacontenttype = self.string(DATACONTENTTYPE, "datacontenttype", value);
            }
            "dataschema" => self.dataschema = self.string(DATASCHEMA, "dataschema", value),
            "time" => {
                if let Some(text) = self.string(TIME, "time", value) {
                    if let Some(message) = forbidden_char_message(&text) {
                        self.violation(TIME, "time", message);
                        return;
                    }
                    match parse_timestamp(&text) {
                        Ok(t) => self.time = Some(t),
                        Err(e) => {
                            let message = format!("must be an RFC 3339 timestamp: {e}");
                            self.violation(TIME, "time", message);
                        }
                    }
                }
            }
            "data" => {
                if self.first_sighting(DATA, "data") {
                    self.data = Some(value);
                }
            }
            "data_base64" => {
                if let Some(text) = self.string(DATA_BASE64, "data_base64", value) {
                    self.has_data_base64 = true;
                    match BASE64.decode(text.as_bytes()) {
                        Ok(bytes) => self.data_base64 = Some(bytes),
                        Err(e) => {
                            let message = format!("must be standard base64: {e}");
                            self.violation(DATA_BASE64, "data_base64", message);
                        }
                    }
                }
            }
            _ => self.extension(name.into_owned(), value),
        }
    }

    fn extension(&mut self, name: String, value: Value) {
        if !is_valid_name(&name) {
            self.violations.push(Violation::new(&name, BAD_NAME));
        }
        let value = match value {
            Value::String(s) => ExtensionValue::String(s),
            // An integral float is the integer it stands for; `check_fields` reports numbers
            // that are no CloudEvents Integer.
            Value::Number(n) => ExtensionValue::Number(canonical_number(&n)),
            Value::Bool(b) => ExtensionValue::Bool(b),
            // JSON format §2.2: a `null` attribute value is decoded as unset.
            Value::Null => {
                if self.first_extension_sighting(&name) {
                    self.unset_extensions.push(name);
                }
                return;
            }
            other => {
                let message = format!(
                    "extension value must be a string, number or boolean, not {}",
                    json_kind(&other)
                );
                self.violations.push(Violation::new(&name, message));
                return;
            }
        };
        if self.first_extension_sighting(&name) {
            self.extensions.insert(name, value);
        }
    }

    /// False (and a violation) if extension `name` was seen before. Only reachable with a
    /// streaming parser: a `Value` map has unique keys.
    fn first_extension_sighting(&mut self, name: &str) -> bool {
        if self.extensions.contains_key(name) || self.unset_extensions.iter().any(|n| n == name) {
            self.violations
                .push(Violation::new(name, "appears more than once"));
            return false;
        }
        true
    }

    fn finish(mut self) -> Result<Event, InvalidEvent> {
        let mut absent = 0;
        for (flag, attribute, present) in [
            (ID, "id", self.id.is_some()),
            (SOURCE, "source", self.source.is_some()),
            (SPECVERSION, "specversion", self.specversion.is_some()),
            (TYPE, "type", self.ty.is_some()),
        ] {
            if !present {
                absent |= flag;
                if self.reported & flag == 0 {
                    self.violation(flag, attribute, "is required");
                }
            }
        }
        if self.data.is_some() && self.has_data_base64 {
            self.violation(
                DATA_BASE64,
                "data_base64",
                "must not be present together with data",
            );
        }
        let data = match (self.data, self.data_base64) {
            (Some(v), _) => Some(EventData::Json(v)),
            (None, Some(b)) => Some(EventData::Binary(b)),
            (None, None) => None,
        };
        let event = Event {
            id: self.id.unwrap_or_default(),
            source: self.source.unwrap_or_default(),
            specversion: self.specversion.unwrap_or_default(),
            ty: self.ty.unwrap_or_default(),
            subject: self.subject,
            time: self.time,
            datacontenttype: self.datacontenttype,
            dataschema: self.dataschema,
            data,
            extensions: self.extensions,
        };
        let mut violations = self.violations;
        // Extension names were checked member by member above.
        check_fields(&event, absent, false, &mut violations);
        if violations.is_empty() {
            Ok(event)
        } else {
            Err(InvalidEvent { violations })
        }
    }
}

const BAD_NAME: &str = "attribute names must be 1 to 20 characters of lowercase a-z and 0-9";

/// Checks the typed fields of `event`, skipping the required attributes flagged in `skip`
/// (already reported as missing or mistyped).
fn check_fields(event: &Event, skip: u16, check_extensions: bool, out: &mut Vec<Violation>) {
    // CloudEvents String values: no control characters or noncharacters. An attribute
    // reported here is not checked further.
    let mut bad_text = 0;
    for (flag, attribute, value) in [
        (ID, "id", Some(&event.id)),
        (SOURCE, "source", Some(&event.source)),
        (SPECVERSION, "specversion", Some(&event.specversion)),
        (TYPE, "type", Some(&event.ty)),
        (SUBJECT, "subject", event.subject.as_ref()),
        (
            DATACONTENTTYPE,
            "datacontenttype",
            event.datacontenttype.as_ref(),
        ),
        (DATASCHEMA, "dataschema", event.dataschema.as_ref()),
    ] {
        if skip & flag != 0 {
            continue;
        }
        if let Some(message) = value.and_then(|v| forbidden_char_message(v)) {
            bad_text |= flag;
            out.push(Violation::new(attribute, message));
        }
    }
    let skip = skip | bad_text;
    if skip & ID == 0 && event.id.is_empty() {
        out.push(Violation::new("id", "must not be empty"));
    }
    if skip & SOURCE == 0 {
        if event.source.is_empty() {
            out.push(Violation::new("source", "must not be empty"));
        } else if event
            .source
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            out.push(Violation::new(
                "source",
                "must be a URI-reference without whitespace or control characters",
            ));
        }
    }
    if skip & SPECVERSION == 0 && event.specversion != SPEC_VERSION {
        out.push(Violation::new(
            "specversion",
            format!("must be \"{SPEC_VERSION}\", not {:?}", event.specversion),
        ));
    }
    if skip & TYPE == 0 && event.ty.is_empty() {
        out.push(Violation::new("type", "must not be empty"));
    }
    if skip & SUBJECT == 0 && event.subject.as_deref() == Some("") {
        out.push(Violation::new("subject", "must not be empty"));
    }
    if let Some(t) = &event.time {
        // RFC 3339 has four-digit years and offsets in whole minutes; anything else would
        // not survive a round trip through the JSON form.
        if !(0..=9999).contains(&t.year()) {
            out.push(Violation::new("time", "year must be between 0000 and 9999"));
        }
        if t.offset().local_minus_utc() % 60 != 0 {
            out.push(Violation::new(
                "time",
                "offset must be a whole number of minutes",
            ));
        }
    }
    if let Some(ct) = event
        .datacontenttype
        .as_ref()
        .filter(|_| skip & DATACONTENTTYPE == 0)
    {
        if !is_media_type(ct) {
            out.push(Violation::new(
                "datacontenttype",
                "must be a media type such as application/json",
            ));
        }
    }
    if let Some(schema) = event.dataschema.as_ref().filter(|_| skip & DATASCHEMA == 0) {
        // The URL parser is lenient (it percent-encodes what RFC 3986 forbids), so the
        // characters are checked first.
        if let Some(c) = schema.chars().find(|c| !is_uri_char(*c)) {
            out.push(Violation::new(
                "dataschema",
                format!("must be an absolute URI (RFC 3986): {c:?} is not allowed in one"),
            ));
        } else if let Err(e) = url::Url::parse(schema) {
            out.push(Violation::new(
                "dataschema",
                format!("must be an absolute URI: {e}"),
            ));
        }
    }
    if check_extensions {
        for name in event.extensions.keys() {
            if RESERVED_NAMES.contains(&name.as_str()) {
                out.push(Violation::new(
                    name,
                    "is a CloudEvents attribute and cannot be an extension",
                ));
            } else if !is_valid_name(name) {
                out.push(Violation::new(name, BAD_NAME));
            }
        }
    }
    for (name, value) in &event.extensions {
        match value {
            ExtensionValue::String(s) => {
                if let Some(message) = forbidden_char_message(s) {
                    out.push(Violation::new(name, message));
                }
            }
            ExtensionValue::Number(n) => {
                if integer_value(n).is_none() {
                    out.push(Violation::new(
                        name,
                        format!(
                            "a number extension must be a CloudEvents Integer (a whole number \
                             from {} to {}), not {n}",
                            i32::MIN,
                            i32::MAX
                        ),
                    ));
                }
            }
            ExtensionValue::Bool(_) => {}
        }
    }
}

/// A character a CloudEvents String must not contain: a control character (U+0000-U+001F,
/// U+007F-U+009F) or a Unicode noncharacter (U+FDD0-U+FDEF and every code point ending in
/// FFFE or FFFF). Surrogates cannot occur in a Rust `str`.
pub fn is_forbidden_char(c: char) -> bool {
    let n = u32::from(c);
    c.is_control() || (0xFDD0..=0xFDEF).contains(&n) || n & 0xFFFE == 0xFFFE
}

/// The violation message for text holding a character [`is_forbidden_char`] refuses.
fn forbidden_char_message(text: &str) -> Option<String> {
    let c = text.chars().find(|c| is_forbidden_char(*c))?;
    Some(format!(
        "must not contain control characters or Unicode noncharacters (found U+{:04X})",
        u32::from(c)
    ))
}

/// The CloudEvents Integer a JSON number stands for: an integer, or an integral float
/// (integral floats count as integers), from -2147483648 to 2147483647.
fn integer_value(n: &Number) -> Option<i32> {
    if let Some(i) = n.as_i64() {
        return i32::try_from(i).ok();
    }
    if n.is_u64() {
        return None;
    }
    let f = n.as_f64()?;
    let in_range = (f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&f);
    // In range and without a fraction, so the conversion is exact.
    (in_range && f.fract() == 0.0).then_some(f as i32)
}

/// `n` as the integer it stands for when it is a CloudEvents Integer, else unchanged.
fn canonical_number(n: &Number) -> Number {
    match integer_value(n) {
        Some(i) => Number::from(i),
        None => n.clone(),
    }
}

/// A character RFC 3986 allows in a URI: unreserved, reserved, or `%` of a
/// percent-encoding.
fn is_uri_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c)
}

/// Reads a CloudEvents `Timestamp` (RFC 3339), as `time` is read in every mode. RFC 3339
/// is ASCII; chrono's parser on its own would also take U+2212 MINUS SIGN as the sign of
/// the offset.
pub fn parse_timestamp(text: &str) -> Result<DateTime<FixedOffset>, String> {
    if !text.is_ascii() {
        return Err("not ASCII".to_owned());
    }
    DateTime::parse_from_rfc3339(text).map_err(|e| e.to_string())
}

/// CloudEvents attribute names: 1–20 characters of lowercase ASCII letters and digits.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// `type/subtype` made of RFC 9110 tokens, optionally followed by `; name=value` parameters.
fn is_media_type(s: &str) -> bool {
    let (essence, params) = match s.split_once(';') {
        Some((essence, params)) => (essence, Some(params)),
        None => (s, None),
    };
    let Some((ty, subtype)) = essence.trim_end().split_once('/') else {
        return false;
    };
    if !is_token(ty) || !is_token(subtype) {
        return false;
    }
    params.is_none_or(|params| {
        params.split(';').map(str::trim).all(|param| {
            param.is_empty()
                || param.split_once('=').is_some_and(|(name, value)| {
                    is_token(name.trim_end())
                        && !value.trim_start().is_empty()
                        && !value.chars().any(char::is_control)
                })
        })
    })
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn not_an_object(kind: &str) -> InvalidEvent {
    InvalidEvent::single("(event)", format!("must be a JSON object, not {kind}"))
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

impl InvalidEvent {
    fn single(attribute: &str, message: impl Into<String>) -> InvalidEvent {
        InvalidEvent {
            violations: vec![Violation::new(attribute, message)],
        }
    }

    fn from_violations(violations: Vec<Violation>) -> Result<(), InvalidEvent> {
        if violations.is_empty() {
            Ok(())
        } else {
            Err(InvalidEvent { violations })
        }
    }
}

impl Violation {
    fn new(attribute: &str, message: impl Into<String>) -> Violation {
        Violation {
            attribute: attribute.to_owned(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.attribute, self.message)
    }
}

/// Displays violations as `attr: message; attr2: message2`.
struct ViolationList<'a>(&'a [Violation]);

impl fmt::Display for ViolationList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// ExtensionValue conversions
// ---------------------------------------------------------------------------------------

impl fmt::Display for ExtensionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtensionValue::String(s) => f.write_str(s),
            ExtensionValue::Number(n) => match integer_value(n) {
                Some(i) => write!(f, "{i}"),
                None => write!(f, "{n}"),
            },
            ExtensionValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

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

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::json;
    use std::sync::Mutex;

    /// Serializes the tests that read or change the process-wide default source.
    static GLOBAL_SOURCE: Mutex<()> = Mutex::new(());

    fn lock_global_source() -> std::sync::MutexGuard<'static, ()> {
        GLOBAL_SOURCE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn full_event() -> Event {
        let time = FixedOffset::east_opt(2 * 3600)
            .unwrap()
            .with_ymd_and_hms(2024, 5, 17, 9, 30, 15)
            .unwrap()
            + chrono::Duration::milliseconds(250);
        Event {
            id: "evt-1".into(),
            source: "https://crm.example/deals".into(),
            specversion: "1.0".into(),
            ty: "deal.won".into(),
            subject: Some("deal-42".into()),
            time: Some(time),
            datacontenttype: Some("application/json".into()),
            dataschema: Some("https://schemas.example/deal.won/1".into()),
            data: Some(EventData::Json(
                json!({"amount": 1200.5, "currency": "EUR", "lines": [1, 2, {"x": null}]}),
            )),
            extensions: BTreeMap::new(),
        }
        .extension("userid", "u-7")
        .extension("attempt", 3_i64)
        .extension("ratio", "0.25")
        .extension("vip", true)
    }

    fn minimal() -> Value {
        json!({"specversion": "1.0", "id": "1", "source": "urn:test", "type": "t.x"})
    }

    fn with(mut base: Value, name: &str, value: Value) -> Value {
        base.as_object_mut().unwrap().insert(name.into(), value);
        base
    }

    fn without(mut base: Value, name: &str) -> Value {
        base.as_object_mut().unwrap().remove(name);
        base
    }

    /// The violations of rejected input, as (attribute, message) pairs.
    fn violations_of(v: Value) -> Vec<(String, String)> {
        let err = Event::from_json_value(v.clone()).expect_err("input must be rejected");
        // The byte path must agree with the value path.
        let bytes = serde_json::to_vec(&v).unwrap();
        assert_eq!(Event::from_json_slice(&bytes).unwrap_err(), err);
        err.violations
            .into_iter()
            .map(|v| (v.attribute, v.message))
            .collect()
    }

    fn attributes_of(v: Value) -> Vec<String> {
        violations_of(v).into_iter().map(|(a, _)| a).collect()
    }

    fn validate_attributes(event: &Event) -> Vec<String> {
        event
            .validate()
            .expect_err("event must be invalid")
            .violations
            .into_iter()
            .map(|v| v.attribute)
            .collect()
    }

    #[test]
    fn full_event_round_trips_through_json_bytes() {
        let event = full_event();
        event.validate().unwrap();
        let bytes = event.to_json_vec();
        let back = Event::from_json_slice(&bytes).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.time.unwrap().offset(), event.time.unwrap().offset());
        assert_eq!(
            back.extension_value("attempt"),
            Some(&ExtensionValue::Number(3.into()))
        );
        assert_eq!(
            back.extension_value("ratio"),
            Some(&ExtensionValue::from("0.25"))
        );
        assert_eq!(
            back.extension_value("vip"),
            Some(&ExtensionValue::Bool(true))
        );
        assert_eq!(back.data_json().unwrap()["currency"], "EUR");
        // serde's Deserialize impl and from_json_value agree with from_json_slice.
        assert_eq!(serde_json::from_slice::<Event>(&bytes).unwrap(), event);
        assert_eq!(
            Event::from_json_value(event.to_json_value()).unwrap(),
            event
        );
    }

    #[test]
    fn structured_form_uses_cloudevents_member_names() {
        let event = full_event();
        let v: Value = serde_json::from_slice(&event.to_json_vec()).unwrap();
        assert_eq!(
            v,
            json!({
                "specversion": "1.0",
                "id": "evt-1",
                "source": "https://crm.example/deals",
                "type": "deal.won",
                "subject": "deal-42",
                "time": "2024-05-17T09:30:15.250+02:00",
                "datacontenttype": "application/json",
                "dataschema": "https://schemas.example/deal.won/1",
                "userid": "u-7",
                "attempt": 3,
                "ratio": "0.25",
                "vip": true,
                "data": {"amount": 1200.5, "currency": "EUR", "lines": [1, 2, {"x": null}]}
            })
        );
        assert_eq!(v, event.to_json_value());
    }

    #[test]
    fn absent_optionals_are_omitted() {
        let event = Event::from_json_value(minimal()).unwrap();
        assert_eq!(event.subject, None);
        assert_eq!(event.data, None);
        let v: Value = serde_json::from_slice(&event.to_json_vec()).unwrap();
        assert_eq!(v, minimal());
        assert_eq!(event.to_json_value(), minimal());
    }

    #[test]
    fn null_optionals_count_as_absent() {
        let input = json!({
            "specversion": "1.0", "id": "1", "source": "urn:test", "type": "t.x",
            "subject": null, "time": null, "datacontenttype": null, "dataschema": null,
            "data_base64": null
        });
        let event = Event::from_json_value(input).unwrap();
        assert_eq!(event, Event::from_json_value(minimal()).unwrap());
    }

    #[test]
    fn binary_data_round_trips_via_data_base64() {
        let bytes: Vec<u8> = (0..=255).collect();
        let event = Event::new("file.uploaded", Value::Null)
            .binary_data(bytes.clone(), "application/octet-stream");
        let v: Value = serde_json::from_slice(&event.to_json_vec()).unwrap();
        assert_eq!(v["data_base64"], BASE64.encode(&bytes));
        assert!(v.get("data").is_none());
        assert_eq!(v["datacontenttype"], "application/octet-stream");
        let back = Event::from_json_slice(&event.to_json_vec()).unwrap();
        assert_eq!(back.data, Some(EventData::Binary(bytes)));
        assert_eq!(back.data_json(), None);
        assert_eq!(back, event);
    }

    #[test]
    fn builder_sets_defaults() {
        let _guard = lock_global_source();
        let before = Utc::now();
        let event = Event::new("lead.created", json!({"name": "Ada"}));
        let after = Utc::now();
        let id = uuid::Uuid::parse_str(&event.id).unwrap();
        assert_eq!(id.get_version(), Some(uuid::Version::SortRand));
        let time = event.time.unwrap();
        assert!(
            before <= time && time <= after,
            "{time} not in [{before}, {after}]"
        );
        assert_eq!(time.offset().local_minus_utc(), 0);
        assert_eq!(event.source, default_source());
        assert_eq!(event.specversion, "1.0");
        assert_eq!(event.ty, "lead.created");
        assert_eq!(event.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(event.data_json(), Some(&json!({"name": "Ada"})));
        assert!(event.extensions.is_empty());
        event.validate().unwrap();
        // Two events never share an id.
        assert_ne!(Event::new("lead.created", Value::Null).id, event.id);
    }

    #[test]
    fn builder_methods_set_their_attribute() {
        let t = Utc
            .with_ymd_and_hms(2020, 1, 2, 3, 4, 5)
            .unwrap()
            .fixed_offset();
        let event = Event::new("deal.won", json!(1))
            .id("x-1")
            .source("urn:acme:crm")
            .subject("deal-42")
            .time(t)
            .dataschema("https://schemas.example/deal.won/2")
            .datacontenttype("application/vnd.acme+json")
            .extension("companyid", "c-9");
        assert_eq!(event.id, "x-1");
        assert_eq!(event.source, "urn:acme:crm");
        assert_eq!(event.subject.as_deref(), Some("deal-42"));
        assert_eq!(event.time, Some(t));
        assert_eq!(
            event.dataschema.as_deref(),
            Some("https://schemas.example/deal.won/2")
        );
        assert_eq!(
            event.datacontenttype.as_deref(),
            Some("application/vnd.acme+json")
        );
        assert_eq!(
            event.extension_value("companyid"),
            Some(&ExtensionValue::String("c-9".into()))
        );
        event.validate().unwrap();
    }

    #[test]
    fn set_default_source_is_used_by_new() {
        let _guard = lock_global_source();
        let previous = default_source();
        set_default_source("urn:acme:test-source");
        assert_eq!(default_source(), "urn:acme:test-source");
        assert_eq!(
            Event::new("a.b", Value::Null).source,
            "urn:acme:test-source"
        );
        set_default_source(previous);
    }

    #[test]
    fn environment_source_falls_back_when_unset_or_blank() {
        assert_eq!(source_from_env(None), "urn:crmbus:default");
        assert_eq!(source_from_env(Some("  ".into())), "urn:crmbus:default");
        assert_eq!(source_from_env(Some(" urn:acme ".into())), "urn:acme");
    }

    #[test]
    fn missing_required_attributes_are_reported() {
        for name in ["id", "source", "specversion", "type"] {
            assert_eq!(
                violations_of(without(minimal(), name)),
                vec![(name.to_owned(), "is required".to_owned())]
            );
            // JSON null counts as absent.
            assert_eq!(
                violations_of(with(minimal(), name, Value::Null)),
                vec![(name.to_owned(), "is required".to_owned())]
            );
        }
    }

    #[test]
    fn non_string_required_attribute_is_reported() {
        assert_eq!(
            violations_of(with(minimal(), "id", json!(42))),
            vec![("id".to_owned(), "must be a string, not a number".to_owned())]
        );
        assert_eq!(
            attributes_of(with(minimal(), "type", json!(["a"]))),
            ["type"]
        );
    }

    #[test]
    fn empty_required_attributes_are_reported() {
        for name in ["id", "source", "type"] {
            assert_eq!(
                violations_of(with(minimal(), name, json!(""))),
                vec![(name.to_owned(), "must not be empty".to_owned())]
            );
        }
    }

    #[test]
    fn wrong_specversion_is_reported() {
        let found = violations_of(with(minimal(), "specversion", json!("0.3")));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "specversion");
        assert!(found[0].1.contains("0.3"), "{}", found[0].1);
    }

    #[test]
    fn source_with_whitespace_or_control_is_reported() {
        assert_eq!(
            attributes_of(with(minimal(), "source", json!("urn:has space"))),
            ["source"]
        );
        assert_eq!(
            attributes_of(with(minimal(), "source", json!("urn:x\u{7}"))),
            ["source"]
        );
        // A relative URI-reference is fine.
        Event::from_json_value(with(minimal(), "source", json!("/crm/deals"))).unwrap();
    }

    #[test]
    fn non_string_optional_attributes_are_reported() {
        for name in ["subject", "time", "datacontenttype", "dataschema"] {
            assert_eq!(
                violations_of(with(minimal(), name, json!(true))),
                vec![(
                    name.to_owned(),
                    "must be a string, not a boolean".to_owned()
                )]
            );
        }
    }

    #[test]
    fn empty_subject_is_reported() {
        assert_eq!(
            attributes_of(with(minimal(), "subject", json!(""))),
            ["subject"]
        );
    }

    #[test]
    fn invalid_time_is_reported() {
        for bad in ["yesterday", "2024-13-01T00:00:00Z", "2024-05-17 09:30"] {
            assert_eq!(attributes_of(with(minimal(), "time", json!(bad))), ["time"]);
        }
        let ok = Event::from_json_value(with(minimal(), "time", json!("2024-05-17T09:30:00Z")));
        assert_eq!(
            ok.unwrap().time.unwrap(),
            Utc.with_ymd_and_hms(2024, 5, 17, 9, 30, 0).unwrap()
        );
    }

    #[test]
    fn offset_signs_are_ascii() {
        // U+2212 MINUS SIGN, which chrono's RFC 3339 parser accepts and RFC 3339 does not.
        let minus = with(minimal(), "time", json!("2024-05-17T09:30:00\u{2212}05:00"));
        assert_eq!(attributes_of(minus), ["time"]);
        let ok =
            Event::from_json_value(with(minimal(), "time", json!("2024-05-17T09:30:00-05:00")));
        assert!(ok.is_ok());
    }

    #[test]
    fn relative_dataschema_is_reported() {
        assert_eq!(
            attributes_of(with(minimal(), "dataschema", json!("schemas/deal.won"))),
            ["dataschema"]
        );
        Event::from_json_value(with(
            minimal(),
            "dataschema",
            json!("urn:schema:deal.won:1"),
        ))
        .unwrap();
    }

    #[test]
    fn malformed_datacontenttype_is_reported() {
        for bad in [
            "json",
            "application/",
            "/json",
            "application/json extra",
            "a/b; x",
        ] {
            assert_eq!(
                attributes_of(with(minimal(), "datacontenttype", json!(bad))),
                ["datacontenttype"],
                "{bad}"
            );
        }
        for good in [
            "application/json",
            "application/cloudevents+json; charset=utf-8",
            "text/plain;charset=\"utf-8\"",
        ] {
            Event::from_json_value(with(minimal(), "datacontenttype", json!(good))).unwrap();
        }
    }

    #[test]
    fn data_and_data_base64_together_are_reported() {
        let v = with(
            with(minimal(), "data", json!({"a": 1})),
            "data_base64",
            json!("AAEC"),
        );
        assert_eq!(
            violations_of(v),
            vec![(
                "data_base64".to_owned(),
                "must not be present together with data".to_owned()
            )]
        );
    }

    #[test]
    fn invalid_base64_is_reported() {
        assert_eq!(
            attributes_of(with(minimal(), "data_base64", json!("not base64!"))),
            ["data_base64"]
        );
        assert_eq!(
            violations_of(with(minimal(), "data_base64", json!(12))),
            vec![(
                "data_base64".to_owned(),
                "must be a string, not a number".to_owned()
            )]
        );
    }

    #[test]
    fn bad_attribute_names_are_reported() {
        let long = "a".repeat(21);
        for bad in ["UserId", "user_id", "trace-parent", "", long.as_str()] {
            assert_eq!(
                attributes_of(with(minimal(), bad, json!("x"))),
                [bad],
                "{bad:?}"
            );
        }
        let twenty = "a".repeat(20);
        let ok = Event::from_json_value(with(minimal(), &twenty, json!("x"))).unwrap();
        assert!(ok.extension_value(&twenty).is_some());
    }

    #[test]
    fn non_scalar_extension_values_are_reported() {
        for (bad, kind) in [(json!({"a": 1}), "an object"), (json!([1]), "an array")] {
            let found = violations_of(with(minimal(), "userid", bad));
            assert_eq!(found.len(), 1);
            assert_eq!(found[0].0, "userid");
            assert!(found[0].1.ends_with(kind), "{}", found[0].1);
        }
    }

    #[test]
    fn null_extension_is_unset() {
        // The JSON format's own example event carries `"unsetextension": null`.
        let event = Event::from_json_value(with(minimal(), "unsetextension", Value::Null))
            .expect("null means unset");
        assert_eq!(event, Event::from_json_value(minimal()).unwrap());
        let twice =
            br#"{"specversion":"1.0","id":"1","source":"urn:x","type":"t","ext":null,"ext":1}"#;
        let err = Event::from_json_slice(twice).unwrap_err();
        assert_eq!(err.violations[0].attribute, "ext");
        assert_eq!(err.violations[0].message, "appears more than once");
    }

    #[test]
    fn batch_elements_are_read_like_single_events() {
        let bytes = br#"[{"specversion":"1.0","id":"1","source":"urn:x","type":"t"},
            {"specversion":"1.0","id":"1","id":"2","source":"urn:x","type":"t"}, 7]"#;
        let items = Event::batch_from_json_slice(bytes).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].as_ref().unwrap().id, "1");
        let twice = items[1].as_ref().unwrap_err();
        assert_eq!(twice.violations[0].attribute, "id");
        assert_eq!(twice.violations[0].message, "appears more than once");
        assert_eq!(
            items[2].as_ref().unwrap_err().violations[0].attribute,
            "(event)"
        );
        assert_eq!(Event::batch_from_json_slice(b"[]").unwrap(), []);
        for (bad, what) in [(&b"{}"[..], "not an object"), (b"[1,", "malformed JSON")] {
            let err = Event::batch_from_json_slice(bad).unwrap_err();
            assert_eq!(err.violations[0].attribute, "(body)");
            assert!(err.violations[0].message.contains(what), "{err}");
        }
    }

    #[test]
    fn non_object_top_level_is_reported() {
        for v in [
            json!([]),
            json!("event"),
            json!(1),
            Value::Null,
            json!(true),
        ] {
            assert_eq!(attributes_of(v), ["(event)"]);
        }
    }

    #[test]
    fn malformed_json_is_reported_as_body() {
        for bad in [&b"{\"id\": "[..], b"", b"{} trailing", b"\xff"] {
            let err = Event::from_json_slice(bad).unwrap_err();
            assert_eq!(err.violations.len(), 1);
            assert_eq!(err.violations[0].attribute, "(body)");
        }
    }

    #[test]
    fn duplicate_members_are_reported() {
        let bytes = br#"{"specversion":"1.0","id":"1","id":"2","source":"urn:x","type":"t","ext":1,"ext":2}"#;
        let err = Event::from_json_slice(bytes).unwrap_err();
        let attributes: Vec<_> = err
            .violations
            .iter()
            .map(|v| v.attribute.as_str())
            .collect();
        assert_eq!(attributes, ["id", "ext"]);
    }

    #[test]
    fn several_violations_are_all_listed() {
        let input = json!({
            "specversion": "2.0",
            "source": "has space",
            "type": "",
            "subject": 7,
            "time": "noon",
            "dataschema": "relative",
            "datacontenttype": "nonsense",
            "data": {},
            "data_base64": "AAAA",
            "Bad_Name": "x",
            "obj": {}
        });
        let mut found = attributes_of(input);
        found.sort();
        let mut expected = vec![
            "id",
            "source",
            "specversion",
            "type",
            "subject",
            "time",
            "dataschema",
            "datacontenttype",
            "data_base64",
            "Bad_Name",
            "obj",
        ];
        expected.sort();
        assert_eq!(found, expected);
    }

    #[test]
    fn deserialize_error_lists_violations() {
        let err = serde_json::from_value::<Event>(json!({"specversion": "1.0", "type": ""}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid event:"), "{err}");
        assert!(err.contains("id: is required"), "{err}");
        assert!(err.contains("source: is required"), "{err}");
        assert!(err.contains("type: must not be empty"), "{err}");
    }

    #[test]
    fn invalid_event_display_joins_violations() {
        let err = InvalidEvent {
            violations: vec![
                Violation::new("id", "is required"),
                Violation::new("time", "must be an RFC 3339 timestamp"),
            ],
        };
        assert_eq!(
            err.to_string(),
            "invalid event: id: is required; time: must be an RFC 3339 timestamp"
        );
        assert_eq!(
            serde_json::to_value(&err.violations[0]).unwrap(),
            json!({"attribute": "id", "message": "is required"})
        );
    }

    #[test]
    fn validate_reports_constructed_event_problems() {
        let mut event = full_event().id("").dataschema("not a uri");
        event.specversion = "0.3".into();
        event.subject = Some(String::new());
        event.datacontenttype = Some("text".into());
        event.source = "has space".into();
        event.ty = String::new();
        let event = event
            .extension("Bad", "x")
            .extension("waytoolongextensionname", 1_i64)
            .extension("type", "shadow");
        let mut found = validate_attributes(&event);
        found.sort();
        let mut expected = vec![
            "id",
            "source",
            "specversion",
            "type",
            "subject",
            "datacontenttype",
            "dataschema",
            "Bad",
            "waytoolongextensionname",
            "type",
        ];
        expected.sort();
        assert_eq!(found, expected);
    }

    #[test]
    fn validate_rejects_times_json_cannot_carry() {
        let odd_offset = FixedOffset::east_opt(3600 + 30)
            .unwrap()
            .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
            .unwrap();
        let event = full_event().time(odd_offset);
        assert_eq!(validate_attributes(&event), ["time"]);
        let far = Utc
            .with_ymd_and_hms(10_000, 1, 1, 0, 0, 0)
            .unwrap()
            .fixed_offset();
        assert_eq!(validate_attributes(&full_event().time(far)), ["time"]);
    }

    #[test]
    fn reserved_extension_names_are_not_serialized() {
        let event = full_event().extension("id", "shadow");
        let v: Value = serde_json::from_slice(&event.to_json_vec()).unwrap();
        assert_eq!(v["id"], "evt-1");
        assert_eq!(v, event.to_json_value());
        assert!(event.validate().is_err());
    }

    /// CloudEvents 1.0.2 type system: an Integer is a signed 32-bit whole number; a JSON
    /// number extension that is not one is a violation naming the extension. An integral
    /// float (`3.0`) counts as the integer.
    #[test]
    fn extension_numbers_must_be_32_bit_integers() {
        for bad in [
            "1.5",
            "2147483648",
            "-2147483649",
            "1e10",
            "-0.5",
            "18446744073709551615",
        ] {
            let text = format!(
                r#"{{"specversion":"1.0","id":"1","source":"urn:x","type":"t","n":{bad}}}"#
            );
            let err = Event::from_json_slice(text.as_bytes()).expect_err(bad);
            let attributes: Vec<_> = err
                .violations
                .iter()
                .map(|v| v.attribute.as_str())
                .collect();
            assert_eq!(attributes, ["n"], "{bad}: {err}");
            assert!(err.violations[0].message.contains("Integer"), "{err}");
        }
        for (good, want) in [
            ("3", 3),
            ("3.0", 3),
            ("-0.0", 0),
            ("1e2", 100),
            ("2147483647", i32::MAX),
            ("-2147483648", i32::MIN),
            ("-2147483648.0", i32::MIN),
        ] {
            let text = format!(
                r#"{{"specversion":"1.0","id":"1","source":"urn:x","type":"t","n":{good}}}"#
            );
            let event = Event::from_json_slice(text.as_bytes()).expect(good);
            assert_eq!(
                event.extension_value("n"),
                Some(&ExtensionValue::Number(want.into())),
                "{good}"
            );
            let stored: Value = serde_json::from_slice(&event.to_json_vec()).unwrap();
            assert_eq!(stored["n"], json!(want), "{good}");
        }
        // Events built through the API are held to the same rule by `validate`.
        for (name, value) in [
            ("big", ExtensionValue::from(2_147_483_648_i64)),
            ("small", ExtensionValue::from(-2_147_483_649_i64)),
            ("huge", ExtensionValue::from(u64::MAX)),
            ("half", ExtensionValue::from(1.5)),
        ] {
            let event = full_event().extension(name, value);
            assert_eq!(validate_attributes(&event), [name]);
        }
        let three = full_event().extension("three", 3.0);
        three.validate().unwrap();
        let stored: Value = serde_json::from_slice(&three.to_json_vec()).unwrap();
        assert_eq!(stored["three"], json!(3));
        assert_eq!(three.to_json_value()["three"], json!(3));
    }

    /// CloudEvents 1.0.2 type system: a String must not contain control characters
    /// (U+0000-U+001F, U+007F-U+009F) or noncharacters; every string attribute and every
    /// string extension value is checked, naming the attribute.
    #[test]
    fn control_characters_and_noncharacters_are_reported() {
        let bad_chars = [
            '\u{0}',
            '\u{7}',
            '\u{1f}',
            '\u{7f}',
            '\u{85}',
            '\u{9f}',
            '\u{fdd0}',
            '\u{fdef}',
            '\u{fffe}',
            '\u{ffff}',
            '\u{1fffe}',
            '\u{2ffff}',
            '\u{10fffe}',
            '\u{10ffff}',
        ];
        for c in bad_chars {
            for (name, valid) in [
                ("id", "e-1"),
                ("source", "urn:x"),
                ("type", "deal.won"),
                ("subject", "deal-42"),
                ("datacontenttype", "text/plain; charset=utf-8"),
                ("dataschema", "https://schemas.example/x"),
                ("time", "2024-05-17T09:30:00Z"),
                ("userid", "u-7"),
            ] {
                let value = format!("{valid}{c}");
                assert_eq!(
                    attributes_of(with(minimal(), name, json!(value))),
                    [name],
                    "{name} with {c:?}"
                );
            }
            // The same through the library API.
            let mut event = full_event().extension("userid", format!("u{c}"));
            event.id = format!("e{c}");
            event.subject = Some(format!("s{c}"));
            let mut found = validate_attributes(&event);
            found.sort();
            assert_eq!(found, ["id", "subject", "userid"], "{c:?}");
        }
        // Neighbours of the forbidden ranges are fine.
        for c in [
            '\u{a0}',
            '\u{fdcf}',
            '\u{fdf0}',
            '\u{fffd}',
            '\u{1fffd}',
            '\u{e000}',
        ] {
            let value = format!("x{c}");
            let event = Event::from_json_value(with(
                with(minimal(), "subject", json!(value)),
                "userid",
                json!(value),
            ))
            .unwrap_or_else(|e| panic!("{c:?}: {e}"));
            event.validate().unwrap();
        }
    }

    /// serde_json refuses a lone surrogate escape when it reads a string, so `\ud800`
    /// anywhere in a document is malformed JSON (one `(body)` violation), not a panic.
    #[test]
    fn lone_surrogate_escapes_are_malformed_json() {
        for text in [
            r#"{"specversion":"1.0","id":"\ud800","source":"urn:x","type":"t"}"#,
            r#"{"specversion":"1.0","id":"1","source":"urn:x","type":"t","ext":"a\udc00"}"#,
            r#"{"specversion":"1.0","id":"1","source":"urn:x","type":"t","data":{"k":"\ud800x"}}"#,
        ] {
            let err = Event::from_json_slice(text.as_bytes()).expect_err(text);
            assert_eq!(err.violations.len(), 1, "{err}");
            assert_eq!(err.violations[0].attribute, "(body)", "{err}");
            let batch = format!("[{text}]");
            let err = Event::batch_from_json_slice(batch.as_bytes()).expect_err(text);
            assert_eq!(err.violations[0].attribute, "(body)", "{err}");
        }
    }

    #[test]
    fn extension_value_conversions() {
        assert_eq!(
            ExtensionValue::from("a"),
            ExtensionValue::String("a".into())
        );
        assert_eq!(
            ExtensionValue::from(String::from("b")),
            ExtensionValue::String("b".into())
        );
        assert_eq!(ExtensionValue::from(false), ExtensionValue::Bool(false));
        assert_eq!(ExtensionValue::from(-5_i64).to_string(), "-5");
        assert_eq!(
            ExtensionValue::from(u64::MAX).to_string(),
            u64::MAX.to_string()
        );
        assert_eq!(ExtensionValue::from(7).to_string(), "7");
        assert_eq!(ExtensionValue::from(1.5).to_string(), "1.5");
        assert_eq!(
            ExtensionValue::from(f64::NAN),
            ExtensionValue::String("NaN".into())
        );
        assert_eq!(
            ExtensionValue::from(f64::NEG_INFINITY),
            ExtensionValue::String("-inf".into())
        );
        assert_eq!(ExtensionValue::from("x y").to_string(), "x y");
        assert_eq!(ExtensionValue::from(true).to_string(), "true");
    }

    // --- property test -----------------------------------------------------------------

    /// Floats with short exact decimal forms, which survive JSON text unchanged.
    fn exact_float() -> impl Strategy<Value = f64> {
        (any::<i32>(), 0..4_i32).prop_map(|(m, e)| f64::from(m) / f64::from(1 << e))
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            exact_float().prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// CloudEvents String text (letters, digits, punctuation, symbols and spaces): no
    /// control characters or noncharacters.
    macro_rules! text {
        ($n:literal) => {
            concat!("[\\p{L}\\p{N}\\p{P}\\p{S} ]", $n)
        };
    }

    fn extension_value() -> impl Strategy<Value = ExtensionValue> {
        prop_oneof![
            text!("{0,16}").prop_map(ExtensionValue::String),
            any::<i32>().prop_map(ExtensionValue::from),
            any::<bool>().prop_map(ExtensionValue::Bool),
        ]
    }

    fn time() -> impl Strategy<Value = DateTime<FixedOffset>> {
        // 0000-01-01 .. 9999-12-31, any nanosecond, offsets in whole minutes.
        (
            -62_167_219_200_i64..253_402_214_400,
            0..1_000_000_000_u32,
            -1439..=1439_i32,
        )
            .prop_map(|(secs, nanos, minutes)| {
                let offset = FixedOffset::east_opt(minutes * 60).unwrap();
                DateTime::from_timestamp(secs, nanos)
                    .unwrap()
                    .with_timezone(&offset)
            })
    }

    fn event() -> impl Strategy<Value = Event> {
        let names =
            "[a-z0-9]{1,20}".prop_filter("reserved", |n| !RESERVED_NAMES.contains(&n.as_str()));
        let data = prop_oneof![
            json_value().prop_map(EventData::Json),
            prop::collection::vec(any::<u8>(), 0..48).prop_map(EventData::Binary),
        ];
        (
            (
                text!("{1,24}"),
                "[\\p{L}\\p{N}:/._~%#?=&\"\\\\-]{1,32}",
                text!("{1,24}"),
            ),
            (
                prop::option::of(text!("{1,24}")),
                prop::option::of(time()),
                prop::option::of("(application|text)/[a-z0-9.+-]{1,16}"),
                prop::option::of("https://[a-z]{1,10}\\.example/[a-z0-9/]{0,16}"),
            ),
            prop::option::of(data),
            prop::collection::btree_map(names, extension_value(), 0..5),
        )
            .prop_map(
                |(
                    (id, source, ty),
                    (subject, time, datacontenttype, dataschema),
                    data,
                    extensions,
                )| {
                    Event {
                        id,
                        source,
                        specversion: "1.0".into(),
                        ty,
                        subject,
                        time,
                        datacontenttype,
                        dataschema,
                        data,
                        extensions,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn any_valid_event_round_trips(event in event()) {
            prop_assert_eq!(event.validate(), Ok(()));
            let bytes = event.to_json_vec();
            let back = Event::from_json_slice(&bytes).unwrap();
            prop_assert_eq!(&back, &event);
            prop_assert_eq!(back.time.map(|t| *t.offset()), event.time.map(|t| *t.offset()));
            let value: Value = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(&value, &event.to_json_value());
            prop_assert_eq!(Event::from_json_value(value).unwrap(), event);
        }
    }
}
