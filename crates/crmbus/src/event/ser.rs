//! Writing an [`Event`] in the structured JSON format: as a [`Value`], as bytes, and through
//! [`Serialize`].

use std::fmt;

use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, FixedOffset, SecondsFormat};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::validate::{canonical_number, integer_value};
use super::{Event, EventData, ExtensionValue, RESERVED_NAMES};

// ---------------------------------------------------------------------------------------
// Event: the structured JSON form
// ---------------------------------------------------------------------------------------

impl Event {
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
            let text = t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
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
            Some(EventData::JsonText(t)) => {
                map.insert("data".into(), t.value().clone());
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
            Some(EventData::JsonText(t)) => t.as_str().len() + 8,
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
            Some(EventData::JsonText(t)) => map.serialize_entry("data", t)?,
            Some(EventData::Binary(b)) => map.serialize_entry("data_base64", &Base64(b))?,
            None => {}
        }
        map.end()
    }
}

/// Serializes a timestamp as RFC 3339 (`SecondsFormat::AutoSi`, offset kept, a zero
/// offset as `Z`, its shortest form), as [`Event::to_json_value`] writes it. chrono's
/// dedicated writer and its `String` take about 50 ns here, a fifth of what its generic
/// format items take without one.
struct Rfc3339<'a>(&'a DateTime<FixedOffset>);

impl Serialize for Rfc3339<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true))
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

#[cfg(test)]
mod tests;
