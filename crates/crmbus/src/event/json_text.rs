//! [`JsonText`]: an event's JSON `data` kept as the text it was stored or published as,
//! parsed into a [`Value`] only when something asks for the value.
//!
//! Reading an event back from storage is most of a consumer's cost, and building a
//! [`Value`] tree for `data` (then freeing it) was most of that, though a delivery that
//! hands the stored JSON on never looks inside. The event read keeps the text instead; a
//! filter, transformation or handler that calls [`crate::Event::data_json`] parses it
//! once, and every later call gets the same value.
//!
//! Publishing is the same story the other way: an event parsed from a JSON body (see
//! [`crate::Event::from_json_slice`]) keeps its `data` as the text that came in when
//! [`shape`] finds it plain — compact, no deeper than the limit, every number one that
//! any JSON reader turns into the same `f64` or integer — so it is written to storage as
//! it came, with no tree built, serialized and freed on the way.

use std::fmt;
use std::sync::OnceLock;

use bytes::Bytes;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// JSON `data` as text: one JSON value, as crmbus stored it (serde_json's writing of a
/// [`Value`], or publisher's text that `shape` found plain), with the parsed value made
/// on first use.
///
/// Two `JsonText`s, or a `JsonText` and an [`crate::EventData::Json`], are equal when
/// their values are; the spelling of the text does not count.
#[derive(Clone)]
pub struct JsonText {
    text: Text,
    parsed: OnceLock<Value>,
}

/// Where a [`JsonText`]'s text lives.
#[derive(Clone)]
enum Text {
    /// A copy of its own.
    Owned(Box<RawValue>),
    /// A slice of the buffer a stored record was read into (shared, not copied), which
    /// holds UTF-8 text: it was sliced out of a `str` (see [`JsonText::shared`]).
    Shared(Bytes),
}

impl JsonText {
    /// Keeps `text`, which holds one JSON value (serde_json checked its syntax) that
    /// crmbus wrote from a [`Value`] or that [`shape`] found plain.
    pub(crate) fn new(text: Box<RawValue>) -> JsonText {
        JsonText {
            text: Text::Owned(text),
            parsed: OnceLock::new(),
        }
    }

    /// Keeps `text` without copying it: a slice of a stored record's buffer that holds
    /// one JSON value in UTF-8 (serde_json read it as a raw value out of the record's
    /// checked text).
    pub(crate) fn shared(text: Bytes) -> JsonText {
        JsonText {
            text: Text::Shared(text),
            parsed: OnceLock::new(),
        }
    }

    /// The JSON text, as stored or published.
    pub fn as_str(&self) -> &str {
        match &self.text {
            Text::Owned(raw) => raw.get(),
            // Sliced out of a `str` at a value's bounds, so always UTF-8; the check is
            // kept rather than trusted, and text that failed it would read as null.
            Text::Shared(bytes) => std::str::from_utf8(bytes).unwrap_or("null"),
        }
    }

    /// The value, parsed on the first call. Text that is valid JSON syntax but no
    /// [`Value`] (a number beyond `f64`, nesting deeper than serde_json's limit) is never
    /// kept: crmbus's writer writes finite numbers, `shape` lets no long number or
    /// exponent through as published, and data nested deeper is refused before anything
    /// is stored. If such text turns up all the same, it is logged and reads as `null`.
    pub fn value(&self) -> &Value {
        self.parsed.get_or_init(|| self.parse())
    }

    /// The value parsed now, kept by the caller only, unless [`JsonText::value`] already
    /// has it: for a look that is the last (schema validation at publish), so that the
    /// value is freed when the look ends, where it was built, instead of living as long as
    /// the event.
    pub fn value_once(&self) -> std::borrow::Cow<'_, Value> {
        match self.parsed.get() {
            Some(v) => std::borrow::Cow::Borrowed(v),
            None => std::borrow::Cow::Owned(self.parse()),
        }
    }

    fn parse(&self) -> Value {
        match serde_json::from_str(self.as_str()) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "event data kept as text does not parse as a JSON value; read as null");
                Value::Null
            }
        }
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
        match &self.text {
            Text::Owned(raw) => raw.serialize(serializer),
            // A raw value borrowed from the shared text (serde_json checks its syntax).
            Text::Shared(_) => match serde_json::from_str::<&RawValue>(self.as_str()) {
                Ok(raw) => raw.serialize(serializer),
                Err(e) => Err(serde::ser::Error::custom(format_args!(
                    "event data kept as text is not one JSON value: {e}"
                ))),
            },
        }
    }
}

/// What [`shape`] found in a JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Kept as it is: no whitespace between tokens, nesting within the limit, no member
    /// name twice in an object, and every number at most [`PLAIN_NUMBER_LEN`] characters
    /// with no exponent (so it is within `f64` range). Such text reads as the same value
    /// as crmbus's own writing of it does.
    Plain,
    /// Best parsed into a [`Value`] and written again: whitespace to drop, an escaped
    /// surrogate (a lone one is no text), a number with an exponent or many digits (it
    /// may be beyond `f64`), or a member name given twice in an object (or one that
    /// cannot be compared as it is: escaped, or in an object of more than
    /// [`PLAIN_MEMBERS`] members). The value keeps the last of a repeated member, as
    /// serde_json reads it, and its writing has each name once.
    Rewrite,
    /// Arrays and objects nest more levels deep than the limit.
    TooDeep,
}

/// Longest number [`Shape::Plain`] text holds: 17 characters (`-` and `.` included) fit
/// an `f64` or a 64-bit integer, whatever they are.
pub(crate) const PLAIN_NUMBER_LEN: usize = 17;

/// Most members an object of [`Shape::Plain`] text has: names are compared with every
/// other of their object, so a larger object is rewritten instead.
pub(crate) const PLAIN_MEMBERS: usize = 64;

/// An array or object [`shape`] is inside.
struct Open {
    object: bool,
    /// Where its member names start in the list of names seen.
    names_from: usize,
}

/// Reads the shape of `text`, one JSON value whose syntax serde_json checked: whether it
/// may be kept as it is, must be rewritten, or nests arrays and objects more than
/// `max_depth` levels deep (`{}` is one level). One pass over the bytes; strings are
/// skipped whole (their escapes were checked by the parser), member names compared
/// within their object.
pub(crate) fn shape(text: &str, max_depth: usize) -> Shape {
    let bytes = text.as_bytes();
    // Room for the usual event's data from the start: growing these one push at a time
    // was half of what reading a shape cost.
    let mut open: Vec<Open> = Vec::with_capacity(8);
    // The member names of the objects open, outermost first.
    let mut names: Vec<&[u8]> = Vec::with_capacity(32);
    // Whether the next string is a member name (just after `{` or an object's `,`).
    let mut name_next = false;
    let mut plain = true;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => {
                // To the closing quote: a backslash always takes the byte after it.
                let start = i + 1;
                let mut escaped = false;
                i += 1;
                while let Some(&c) = bytes.get(i) {
                    match c {
                        b'\\' => {
                            escaped = true;
                            // An escaped surrogate (`\ud800`-`\udfff`) may be a lone one,
                            // which is no text: the parser of values decides.
                            if bytes.get(i + 1) == Some(&b'u')
                                && matches!(bytes.get(i + 2), Some(b'd' | b'D'))
                                && matches!(
                                    bytes.get(i + 3),
                                    Some(b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
                                )
                            {
                                plain = false;
                            }
                            i += 2;
                        }
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                if name_next && plain {
                    let name = bytes.get(start..i).unwrap_or_default();
                    let from = open.last().map_or(0, |o| o.names_from);
                    let same = names[from..].contains(&name);
                    if escaped || same || names.len() - from >= PLAIN_MEMBERS {
                        plain = false;
                    } else {
                        names.push(name);
                    }
                }
                name_next = false;
            }
            b'[' | b'{' => {
                if open.len() >= max_depth {
                    return Shape::TooDeep;
                }
                open.push(Open {
                    object: b == b'{',
                    names_from: names.len(),
                });
                name_next = b == b'{';
            }
            b']' | b'}' => {
                if let Some(o) = open.pop() {
                    names.truncate(o.names_from);
                }
                name_next = false;
            }
            b',' => name_next = open.last().is_some_and(|o| o.object),
            b'-' | b'0'..=b'9' => {
                let start = i;
                while bytes
                    .get(i + 1)
                    .is_some_and(|c| matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                {
                    i += 1;
                }
                let number = &bytes[start..=i];
                if number.len() > PLAIN_NUMBER_LEN
                    || number.iter().any(|c| matches!(c, b'e' | b'E'))
                {
                    plain = false;
                }
            }
            b' ' | b'\t' | b'\n' | b'\r' => plain = false,
            _ => {}
        }
        i += 1;
    }
    if plain {
        Shape::Plain
    } else {
        Shape::Rewrite
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(s: &str) -> JsonText {
        JsonText::new(RawValue::from_string(s.to_string()).expect("valid JSON"))
    }

    /// A look for once parses a value the caller keeps, and leaves none behind; once the
    /// value is kept, it is what a look for once gets.
    #[test]
    fn a_look_for_once_keeps_no_value_behind() {
        let t = text(r#"{"amount":12.5}"#);
        let once = t.value_once();
        assert!(matches!(once, std::borrow::Cow::Owned(_)));
        assert_eq!(*once, json!({"amount": 12.5}));
        assert!(t.parsed.get().is_none(), "the value was kept");
        let kept: *const Value = t.value();
        match t.value_once() {
            std::borrow::Cow::Borrowed(v) => assert!(std::ptr::eq(v, kept)),
            std::borrow::Cow::Owned(_) => panic!("parsed again though kept"),
        }
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

    #[test]
    fn compact_text_with_short_numbers_is_plain() {
        for t in [
            r#"{"amount":12.5,"lines":[{"sku":"A-1","qty":-2}],"ok":true,"n":null}"#,
            r#""a string with spaces, [brackets] {braces} and \" \\ escapes""#,
            "12345678901234567",
            "-1234567890123456",
            "[]",
            r#"{"a":"\\"}"#,
            r#""caf\u00e9 \u20ac""#,
        ] {
            assert_eq!(shape(t, 100), Shape::Plain, "{t}");
        }
    }

    #[test]
    fn whitespace_exponents_and_long_numbers_are_rewritten() {
        for t in [
            r#"{"a": 1}"#,
            "[1,\n2]",
            r#""\ud83d\ude00""#,
            r#"["\uDC00"]"#,
            "1e400",
            "1E2",
            "123456789012345678",
            "0.000000000000000001",
            r#"{"a":[1,2.5e-3]}"#,
        ] {
            assert_eq!(shape(t, 100), Shape::Rewrite, "{t}");
        }
        // Plain text parses to the same value it is written from.
        let t = r#"{"x":-12345.678901234,"y":[0,1.5]}"#;
        let v: Value = serde_json::from_str(t).expect("parses");
        assert_eq!(shape(t, 100), Shape::Plain);
        assert_eq!(serde_json::to_string(&v).expect("writes"), t);
    }

    #[test]
    fn a_member_name_twice_in_one_object_is_rewritten() {
        for t in [
            r#"{"a":1,"a":2}"#,
            r#"{"x":{"b":1,"c":[{"d":1}],"b":2}}"#,
            // Names that may be the same once unescaped are not compared: rewritten.
            r#"{"\u0061":1}"#,
        ] {
            assert_eq!(shape(t, 100), Shape::Rewrite, "{t}");
        }
        // The same name in different objects, or as a value, is no repeat.
        for t in [
            r#"{"a":{"a":1},"b":[{"a":1},{"a":2}],"c":"a"}"#,
            r#"[{"a":1},{"a":1}]"#,
            r#"{"a":"x","b":"a"}"#,
        ] {
            assert_eq!(shape(t, 100), Shape::Plain, "{t}");
        }
        let many = |n: usize| {
            let members: Vec<String> = (0..n).map(|i| format!(r#""k{i}":{i}"#)).collect();
            format!("{{{}}}", members.join(","))
        };
        assert_eq!(shape(&many(PLAIN_MEMBERS), 100), Shape::Plain);
        assert_eq!(shape(&many(PLAIN_MEMBERS + 1), 100), Shape::Rewrite);
    }

    #[test]
    fn depth_counts_arrays_and_objects_not_brackets_in_strings() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(shape(&nested(3), 3), Shape::Plain);
        assert_eq!(shape(&nested(4), 3), Shape::TooDeep);
        assert_eq!(shape(r#"[{"a":"[[[[[[{{{{"}]"#, 2), Shape::Plain);
        assert_eq!(shape(r#"[{"a":[1]}]"#, 2), Shape::TooDeep);
        assert_eq!(shape(r#"[[1],[2],{"a":3}]"#, 2), Shape::Plain);
    }
}
