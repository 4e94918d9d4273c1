//! The CloudEvents rules crmbus enforces ([`Event::validate`] and the checks the parser
//! shares), the character, name, media type, URI and timestamp rules they are made of, and
//! the error types ([`InvalidEvent`], [`Violation`]) they report with.

use std::fmt;

use chrono::{DateTime, Datelike, FixedOffset};
use serde::Serialize;
use serde_json::{Number, Value};

use super::{Event, EventData, ExtensionValue, RESERVED_NAMES, SPEC_VERSION};

/// Longest attribute name the CloudEvents spec allows.
const MAX_NAME_LEN: usize = 20;

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
// Validation
// ---------------------------------------------------------------------------------------

impl Event {
    /// Checks the event against the CloudEvents rules crmbus enforces and returns every
    /// violation found (empty or malformed attributes, bad extension names, ...).
    pub fn validate(&self) -> Result<(), InvalidEvent> {
        let mut violations = Vec::new();
        check_fields(self, 0, true, &mut violations);
        InvalidEvent::from_violations(violations)
    }
}

/// The deepest nesting of arrays and objects `data` may have. serde_json's parser reads
/// 127 levels in all, and crmbus puts an event up to four levels down in what it writes
/// and reads (a batch, a dead letter, a pull or read response): data within this limit
/// reads back everywhere, with room to spare. An event built in code could nest deeper,
/// be stored, and then fail to read back, so it is refused when validated, and when parsed
/// from text ([`Event::from_json_slice`] reads `data` as text, which serde_json does not
/// limit).
pub(crate) const MAX_DATA_DEPTH: usize = 100;

/// The violation message for `data` nested deeper than [`MAX_DATA_DEPTH`].
pub(super) fn data_too_deep() -> String {
    format!("must not nest arrays and objects more than {MAX_DATA_DEPTH} levels deep")
}

/// Whether `v` nests arrays and objects more than `limit` levels deep (`{}` is one level).
/// Recurses at most `limit` levels.
fn nests_deeper_than(v: &Value, limit: usize) -> bool {
    match v {
        Value::Array(items) => limit == 0 || items.iter().any(|x| nests_deeper_than(x, limit - 1)),
        Value::Object(map) => limit == 0 || map.values().any(|x| nests_deeper_than(x, limit - 1)),
        _ => false,
    }
}

/// Bit flags naming the context attributes, for duplicate detection and for skipping
/// checks on attributes already reported.
pub(super) const ID: u16 = 1 << 0;
pub(super) const SOURCE: u16 = 1 << 1;
pub(super) const SPECVERSION: u16 = 1 << 2;
pub(super) const TYPE: u16 = 1 << 3;
pub(super) const SUBJECT: u16 = 1 << 4;
pub(super) const TIME: u16 = 1 << 5;
pub(super) const DATACONTENTTYPE: u16 = 1 << 6;
pub(super) const DATASCHEMA: u16 = 1 << 7;
pub(super) const DATA: u16 = 1 << 8;
pub(super) const DATA_BASE64: u16 = 1 << 9;

pub(super) const BAD_NAME: &str =
    "attribute names must be 1 to 20 characters of lowercase a-z and 0-9";

/// Checks the typed fields of `event`, skipping the required attributes flagged in `skip`
/// (already reported as missing or mistyped).
pub(super) fn check_fields(
    event: &Event,
    skip: u16,
    check_extensions: bool,
    out: &mut Vec<Violation>,
) {
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
        if let Some(message) = dataschema_problem(schema) {
            out.push(Violation::new("dataschema", message));
        }
    }
    if let Some(EventData::Json(data)) = &event.data {
        if nests_deeper_than(data, MAX_DATA_DEPTH) {
            out.push(Violation::new("data", data_too_deep()));
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

thread_local! {
    /// The last `dataschema` found to be an absolute URI on this thread. Events of a type
    /// carry the same one (the server sets it from the schema registry), and parsing it as
    /// a URL was most of what checking an event cost.
    static LAST_VALID_DATASCHEMA: std::cell::RefCell<Option<String>> =
        const { std::cell::RefCell::new(None) };
}

/// Why `schema` is no absolute URI, if it is not.
fn dataschema_problem(schema: &str) -> Option<String> {
    let known = LAST_VALID_DATASCHEMA.with(|last| last.borrow().as_deref() == Some(schema));
    if known {
        return None;
    }
    // The URL parser is lenient (it percent-encodes what RFC 3986 forbids), so the
    // characters are checked first.
    if let Some(c) = schema.chars().find(|c| !is_uri_char(*c)) {
        return Some(format!(
            "must be an absolute URI (RFC 3986): {c:?} is not allowed in one"
        ));
    }
    if let Err(e) = url::Url::parse(schema) {
        return Some(format!("must be an absolute URI: {e}"));
    }
    LAST_VALID_DATASCHEMA.with(|last| *last.borrow_mut() = Some(schema.to_string()));
    None
}

/// A character a CloudEvents String must not contain: a control character (U+0000-U+001F,
/// U+007F-U+009F) or a Unicode noncharacter (U+FDD0-U+FDEF and every code point ending in
/// FFFE or FFFF). Surrogates cannot occur in a Rust `str`.
pub fn is_forbidden_char(c: char) -> bool {
    let n = u32::from(c);
    c.is_control() || (0xFDD0..=0xFDEF).contains(&n) || n & 0xFFFE == 0xFFFE
}

/// The violation message for text holding a character [`is_forbidden_char`] refuses.
pub(super) fn forbidden_char_message(text: &str) -> Option<String> {
    // Most attribute values are printable ASCII, which holds no forbidden character: a
    // byte test the compiler vectorizes, instead of decoding every char.
    if text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    let c = text.chars().find(|c| is_forbidden_char(*c))?;
    Some(format!(
        "must not contain control characters or Unicode noncharacters (found U+{:04X})",
        u32::from(c)
    ))
}

/// The CloudEvents Integer a JSON number stands for: an integer, or an integral float
/// (integral floats count as integers), from -2147483648 to 2147483647.
pub(super) fn integer_value(n: &Number) -> Option<i32> {
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
pub(super) fn canonical_number(n: &Number) -> Number {
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
pub(super) fn is_valid_name(name: &str) -> bool {
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

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

impl InvalidEvent {
    pub(super) fn single(attribute: &str, message: impl Into<String>) -> InvalidEvent {
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
    pub(super) fn new(attribute: &str, message: impl Into<String>) -> Violation {
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

#[cfg(test)]
mod tests;
