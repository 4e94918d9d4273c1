//! [`JsonText`]: an event's JSON `data` kept as the text it was stored as, parsed into a
//! [`Value`] only when something asks for the value.
//!
//! Reading an event back from storage is most of a consumer's cost, and building a
//! [`Value`] tree for `data` (then freeing it) was most of that, though a delivery that
//! hands the stored JSON on never looks inside. The event read keeps the text instead; a
//! filter, transformation or handler that calls [`crate::Event::data_json`] parses it
//! once, and every later call gets the same value.

use std::fmt;
use std::sync::OnceLock;

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// JSON `data` as text: the bytes crmbus stored (one JSON value, as serde_json wrote it
/// from a [`Value`]), with the parsed value made on first use.
///
/// Two `JsonText`s, or a `JsonText` and an [`crate::EventData::Json`], are equal when
/// their values are; the spelling of the text does not count.
#[derive(Clone)]
pub struct JsonText {
    text: Box<RawValue>,
    parsed: OnceLock<Value>,
}

impl JsonText {
    /// Keeps `text`, which holds one JSON value (serde_json checked its syntax) that
    /// crmbus wrote from a [`Value`].
    pub(crate) fn new(text: Box<RawValue>) -> JsonText {
        JsonText {
            text,
            parsed: OnceLock::new(),
        }
    }

    /// The JSON text, as stored.
    pub fn as_str(&self) -> &str {
        self.text.get()
    }

    /// The value, parsed on the first call. Text that is valid JSON syntax but no
    /// [`Value`] (a number beyond `f64`, nesting deeper than serde_json's limit) cannot come
    /// from crmbus's own writer (it writes finite numbers, and validation refuses deeper
    /// data before anything is stored); if it does, it is logged and reads as `null`.
    pub fn value(&self) -> &Value {
        self.parsed
            .get_or_init(|| match serde_json::from_str(self.text.get()) {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(error = %e, "stored event data does not parse as a JSON value; read as null");
                    Value::Null
                }
            })
    }
}

impl fmt::Debug for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JsonText").field(&self.as_str()).finish()
    }
}

impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str() || self.value() == other.value()
    }
}

impl Serialize for JsonText {
    /// Writes the text as it is through serde_json (`serde_json::to_value` gives the
    /// value). Other serializers receive serde_json's raw-value token, a one-member struct
    /// holding the text: turn the event into a [`Value`] first
    /// ([`crate::Event::to_json_value`]) to write it in another format.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.text.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(s: &str) -> JsonText {
        JsonText::new(RawValue::from_string(s.to_string()).expect("valid JSON"))
    }

    #[test]
    fn the_value_is_parsed_once_and_equal_to_the_text() {
        let t = text(r#"{"amount":12.5,"lines":[{"sku":"A-1","qty":2}]}"#);
        let first: *const Value = t.value();
        assert_eq!(
            t.value(),
            &json!({"amount": 12.5, "lines": [{"sku": "A-1", "qty": 2}]})
        );
        assert!(std::ptr::eq(first, t.value()), "parsed again");
    }

    #[test]
    fn texts_are_equal_when_their_values_are() {
        assert_eq!(text(r#"{"a":1,"b":2}"#), text(r#"{ "b": 2, "a": 1 }"#));
        assert_ne!(text(r#"{"a":1}"#), text(r#"{"a":2}"#));
    }

    #[test]
    fn it_serializes_as_its_text_and_clones_with_its_value() {
        let t = text(r#"{"b":2,"a":[1,2.5,"x"]}"#);
        assert_eq!(
            serde_json::to_string(&t).expect("serializes"),
            r#"{"b":2,"a":[1,2.5,"x"]}"#
        );
        let _ = t.value();
        let c = t.clone();
        assert_eq!(c.as_str(), t.as_str());
        assert_eq!(c.value(), t.value());
    }

    #[test]
    fn text_that_is_no_value_reads_as_null() {
        // Valid syntax, but beyond f64: serde_json's parser refuses it.
        let t = text("1e400");
        assert_eq!(t.value(), &Value::Null);
    }
}
