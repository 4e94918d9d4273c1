//! Reading an [`Event`] from the structured JSON format: from a parsed [`Value`], from bytes
//! with a streaming parser (one event or a batch), and through [`Deserialize`]. The members
//! are gathered by a [`Collector`], which records every broken rule it meets.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, FixedOffset};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Value;

use super::json_text::{shape, Shape};
use super::validate::{
    canonical_number, check_fields, data_too_deep, forbidden_char_message, is_valid_name,
    parse_timestamp, InvalidEvent, Violation, BAD_NAME, DATA, DATACONTENTTYPE, DATASCHEMA,
    DATA_BASE64, ID, MAX_DATA_DEPTH, SOURCE, SPECVERSION, SUBJECT, TIME, TYPE,
};
use super::{Event, EventData, ExtensionValue, JsonText};

// ---------------------------------------------------------------------------------------
// Event: parsing
// ---------------------------------------------------------------------------------------

impl Event {
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
    /// not JSON give one violation on attribute `(body)`. JSON `data` that is compact
    /// (no whitespace between tokens) and holds no number with an exponent or of more than
    /// 17 characters, no escaped surrogate and no member name twice in an object is kept
    /// as the text it came as ([`EventData::JsonText`], written out again exactly so);
    /// other JSON `data` is read into a value ([`EventData::Json`]), and text that is no
    /// value (a lone surrogate, a number beyond `f64`) is malformed JSON. Data nested
    /// deeper than the limit is a violation of `data`. Either way [`Event::data_json`]
    /// gives the value.
    pub fn from_json_slice(bytes: &[u8]) -> Result<Event, InvalidEvent> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let parsed = de::Deserializer::deserialize_any(&mut de, ParsedVisitor::INPUT_TEXT)
            .and_then(|p| de.end().map(|()| p));
        match parsed {
            Ok(Parsed(result)) => result,
            Err(e) => Err(InvalidEvent::single(
                "(body)",
                format!("malformed JSON: {e}"),
            )),
        }
    }

    /// Reads an event this crate wrote and validated before, from stored JSON (a log
    /// record whose checksum passed): parsed and typed as [`Event::from_json_slice`] does,
    /// but the value checks that held when the event was stored (characters, URI and
    /// media-type syntax, time range) are not run again. Bytes that do not hold an event
    /// still fail.
    pub fn from_stored_json_slice(bytes: &[u8]) -> Result<Event, InvalidEvent> {
        Event::from_stored(bytes, ParsedVisitor::STORED)
    }

    /// [`Event::from_stored_json_slice`] of a shared buffer: the event's JSON `data` is
    /// kept as a slice of `bytes` (no copy; see [`EventData::JsonText`]), which holds the
    /// buffer for as long as the event lives.
    pub fn from_stored_json_bytes(bytes: &Bytes) -> Result<Event, InvalidEvent> {
        let visitor = ParsedVisitor {
            shared: Some(Bytes::clone(bytes)),
            ..ParsedVisitor::STORED
        };
        Event::from_stored(bytes, visitor)
    }

    fn from_stored(bytes: &[u8], visitor: ParsedVisitor) -> Result<Event, InvalidEvent> {
        // UTF-8 is checked once for the whole record: parsing from a `str` checks no
        // string (nor the kept `data` text) again.
        let text = std::str::from_utf8(bytes).map_err(|e| {
            InvalidEvent::single("(body)", format!("malformed JSON: not UTF-8: {e}"))
        })?;
        let mut de = serde_json::Deserializer::from_str(text);
        let parsed =
            de::Deserializer::deserialize_any(&mut de, visitor).and_then(|p| de.end().map(|()| p));
        match parsed {
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
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let parsed = de::Deserializer::deserialize_any(&mut de, BatchVisitor)
            .and_then(|p| de.end().map(|()| p));
        match parsed {
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
        deserializer.deserialize_any(ParsedVisitor::INPUT)
    }
}

/// Streams the members of a structured-mode event into a [`Collector`]; any other JSON
/// value becomes an `(event)` violation rather than a parse error.
#[derive(Clone)]
struct ParsedVisitor {
    /// The event was validated when it was stored (see [`Event::from_stored_json_slice`]).
    stored: bool,
    /// `data` is taken as its text ([`JsonText`]) rather than a [`Value`]. Only for
    /// serde_json's own parser of text, which hands a raw value over (through
    /// [`Deserialize`] the input may come from any deserializer).
    data_as_text: bool,
    /// A stored event read from text whose bytes these are: `data` is kept as a slice of
    /// them rather than a copy.
    shared: Option<Bytes>,
}

impl ParsedVisitor {
    /// A stored event: validated when stored, `data` kept as text.
    const STORED: ParsedVisitor = ParsedVisitor {
        stored: true,
        data_as_text: true,
        shared: None,
    };

    /// Input from any deserializer: validated, `data` read into a [`Value`].
    const INPUT: ParsedVisitor = ParsedVisitor {
        stored: false,
        data_as_text: false,
        shared: None,
    };

    /// Input parsed by serde_json from text: validated, plain `data` kept as its text
    /// (see [`super::json_text::shape`]).
    const INPUT_TEXT: ParsedVisitor = ParsedVisitor {
        stored: false,
        data_as_text: true,
        shared: None,
    };

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
        let mut collector = Collector {
            stored: self.stored,
            ..Collector::default()
        };
        while let Some(name) = map.next_key_seed(NameSeed)? {
            // `data` is kept as its text (see `JsonText`): no value is built for it. Input
            // is kept when it is plain, read into a value to be written again when it is
            // not (whitespace, an escaped surrogate, an exponent or a long number: text
            // that is no value, such as a lone surrogate or a number beyond `f64`, is
            // malformed JSON as it would be read whole), and refused when too deep.
            if self.data_as_text && name == "data" {
                if let Some(bytes) = &self.shared {
                    // Borrowed from the text the deserializer reads, which is `bytes`.
                    let raw: &RawValue = map.next_value()?;
                    let text = raw.get();
                    let start = (text.as_ptr() as usize).wrapping_sub(bytes.as_ptr() as usize);
                    // In range, `within` is the very memory `text` is: no need to compare.
                    match bytes.get(start..start.saturating_add(text.len())) {
                        Some(within) => collector.accept_shared_data(bytes.slice_ref(within)),
                        // Not from `bytes` after all: kept as a copy.
                        _ => collector.accept_data_text(raw.to_owned()),
                    }
                    continue;
                }
                let text: Box<RawValue> = map.next_value()?;
                if self.stored {
                    collector.accept_data_text(text);
                    continue;
                }
                match shape(text.get(), MAX_DATA_DEPTH) {
                    Shape::Plain => collector.accept_data_text(text),
                    Shape::Rewrite => {
                        let value: Value = serde_json::from_str(text.get())
                            .map_err(|e| de::Error::custom(format_args!("in data, {e}")))?;
                        collector.accept(name, value);
                    }
                    Shape::TooDeep => collector.data_too_deep(),
                }
                continue;
            }
            // A stored event's time is a string (it was validated): read where it lies,
            // with no string made for it.
            if self.stored && name == "time" {
                let text = map.next_value_seed(NameSeed)?;
                if collector.first_sighting(TIME, "time") {
                    collector.accept_time(&text);
                }
                continue;
            }
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

/// Reads one event with the visitor's settings (the elements of a batch).
impl<'de> DeserializeSeed<'de> for ParsedVisitor {
    type Value = Parsed;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Parsed, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// Streams the elements of a batch (parsed by serde_json from text) into [`Parsed`]
/// events; any other JSON value is noted by its kind.
struct BatchVisitor;

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = ParsedBatch;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of CloudEvents")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ParsedBatch, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(ParsedVisitor::INPUT_TEXT)? {
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

/// Deserializes a member name (or another string), borrowing it from the input when
/// possible so that known attribute names cost no allocation.
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
// Collecting the members
// ---------------------------------------------------------------------------------------

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
    /// `data` kept as text: a stored event's, or plain input (see `ParsedVisitor`).
    data_text: Option<JsonText>,
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
    /// Read from storage, validated when stored: the value checks are not run again.
    stored: bool,
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
                    self.accept_time(&text);
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

    /// The text of `time` (seen for the first time).
    fn accept_time(&mut self, text: &str) {
        if let Some(message) = forbidden_char_message(text).filter(|_| !self.stored) {
            self.violation(TIME, "time", message);
            return;
        }
        match parse_timestamp(text) {
            Ok(t) => self.time = Some(t),
            Err(e) => {
                let message = format!("must be an RFC 3339 timestamp: {e}");
                self.violation(TIME, "time", message);
            }
        }
    }

    /// `data` as its text: a stored event's, or plain input (see `ParsedVisitor`).
    fn accept_data_text(&mut self, text: Box<RawValue>) {
        if self.first_sighting(DATA, "data") {
            self.data_text = Some(JsonText::new(text));
        }
    }

    /// A stored event's `data` text, a slice of the buffer it was read from.
    fn accept_shared_data(&mut self, text: Bytes) {
        if self.first_sighting(DATA, "data") {
            self.data_text = Some(JsonText::shared(text));
        }
    }

    /// `data` that nests too deep to be kept.
    fn data_too_deep(&mut self) {
        if self.first_sighting(DATA, "data") {
            self.violation(DATA, "data", data_too_deep());
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
        if (self.data.is_some() || self.data_text.is_some()) && self.has_data_base64 {
            self.violation(
                DATA_BASE64,
                "data_base64",
                "must not be present together with data",
            );
        }
        let data = match (self.data, self.data_text, self.data_base64) {
            (Some(v), _, _) => Some(EventData::Json(v)),
            (None, Some(t), _) => Some(EventData::JsonText(t)),
            (None, None, Some(b)) => Some(EventData::Binary(b)),
            (None, None, None) => None,
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
        // Extension names were checked member by member above; the values were checked
        // when a stored event was stored.
        if !self.stored {
            check_fields(&event, absent, false, &mut violations);
        }
        if violations.is_empty() {
            Ok(event)
        } else {
            Err(InvalidEvent { violations })
        }
    }
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

mod split;
pub use split::BatchPart;

#[cfg(test)]
mod tests;
