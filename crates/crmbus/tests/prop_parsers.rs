//! Property tests of the parsers in `crmbus`, run by `cargo test` on stable Rust:
//!
//! - the structured-mode CloudEvents reader (`Event::from_json_slice`,
//!   `Event::from_json_value`) and `Event::validate`;
//! - subscription filters (`Filter` read from JSON) and type patterns (`glob_match`).
//!
//! Each property feeds arbitrary input (bytes, JSON values, strings) or near-valid input (a
//! valid event or filter with one thing broken: a dropped or mistyped attribute, a bad time,
//! a bad name, a duplicated member, a huge or unusual string) and checks what the API
//! promises: it never panics, invalid input is an error naming the attribute, and accepted
//! input survives a round trip (parse → serialize → parse gives the same event). proptest
//! prints the seed of a failing case and keeps it in `proptest-regressions/`.

use std::collections::BTreeSet;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use crmbus::delivery::{glob_match, Condition, Filter, Op};
use crmbus::{Event, EventData, ExtensionValue, InvalidEvent};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------

/// Context attributes every event must have.
const REQUIRED: [&str; 4] = ["id", "source", "specversion", "type"];
/// Optional context attributes, all strings in JSON.
const OPTIONAL: [&str; 4] = ["subject", "time", "datacontenttype", "dataschema"];
/// Every member name with a meaning of its own in the structured format.
const MEMBERS: [&str; 10] = [
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

fn attributes(err: &InvalidEvent) -> BTreeSet<String> {
    err.violations.iter().map(|v| v.attribute.clone()).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// What every accepted event must satisfy: it is valid, and both serializations read back
/// as the same event (including the time's offset, which `==` on times ignores).
fn check_accepted(event: &Event) -> Result<(), TestCaseError> {
    prop_assert_eq!(event.validate(), Ok(()));
    prop_assert_eq!(event.specversion.as_str(), "1.0");
    prop_assert!(!event.id.is_empty() && !event.source.is_empty() && !event.ty.is_empty());
    let bytes = event.to_json_vec();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let back = Event::from_json_slice(&bytes);
    prop_assert_eq!(back.as_ref().ok(), Some(event), "re-read of {}", text);
    let back = back.map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(
        back.time.map(|t| *t.offset()),
        event.time.map(|t| *t.offset())
    );
    let via_value = Event::from_json_value(event.to_json_value());
    prop_assert_eq!(
        via_value.as_ref().ok(),
        Some(event),
        "value re-read of {}",
        text
    );
    Ok(())
}

/// Every violation of rejected input `doc` names the document (`(body)`, `(event)`), a
/// member of it, or a required attribute it lacks.
fn check_rejected_names(
    err: &InvalidEvent,
    doc: Option<&Map<String, Value>>,
) -> Result<(), TestCaseError> {
    prop_assert!(!err.violations.is_empty());
    for v in &err.violations {
        let known = v.attribute == "(body)"
            || v.attribute == "(event)"
            || REQUIRED.contains(&v.attribute.as_str())
            || doc.is_some_and(|d| d.contains_key(&v.attribute));
        prop_assert!(known, "violation names no field: {:?}", v);
        prop_assert!(!v.message.is_empty());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

/// Attribute text a CloudEvents String may hold: letters, digits, punctuation, symbols and
/// spaces from all of Unicode (no control characters or noncharacters).
fn attr_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[\\p{L}\\p{N}\\p{P}\\p{S} ]{1,24}",
        1 => "[a-z0-9.-]{1,12}",
        1 => "[\\p{L}\\p{N}\\p{P}\\p{S} ]{200,400}",
    ]
}

fn source_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "urn:[a-z]{1,8}:[a-z0-9.:-]{0,16}",
        "https://[a-z]{1,10}\\.example/[a-z0-9/_-]{0,16}",
        "/[\\p{L}\\p{N}/._~%#?=&-]{0,24}",
        "[\\p{L}\\p{N}:/._~%#?=&\"\\\\-]{1,32}",
    ]
}

/// Any finite float (the JSON number space), not only the ones with short decimal forms.
fn any_float() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("finite", |f| f.is_finite())
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any_float().prop_map(Value::from),
        ".{0,16}".prop_map(Value::String),
        "\\PC{0,8}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON object whose member names are mostly CloudEvents names, with arbitrary values.
fn event_like_object() -> impl Strategy<Value = Map<String, Value>> {
    let name = prop_oneof![
        3 => prop::sample::select(MEMBERS.to_vec()).prop_map(str::to_string),
        1 => "[a-z0-9]{1,21}",
        1 => ".{0,6}",
    ];
    let value = prop_oneof![
        2 => json_value(),
        2 => attr_text().prop_map(Value::String),
        1 => Just(Value::String("1.0".into())),
        1 => Just(Value::String("2024-05-17T09:30:00Z".into())),
    ];
    prop::collection::btree_map(name, value, 0..12).prop_map(|m| m.into_iter().collect())
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        _ => 0,
    }
}

/// A valid RFC 3339 timestamp in any of the spellings the grammar allows.
fn valid_time() -> impl Strategy<Value = String> {
    (
        (0..=9999_u32, 1..=12_u32, 1..=31_u32),
        (0..=23_u32, 0..=59_u32, 0..=59_u32),
        prop::option::of("[0-9]{1,9}"),
        prop::sample::select(vec!['T', 't']),
        prop_oneof![
            Just("Z".to_string()),
            Just("z".to_string()),
            (prop::sample::select(vec!['+', '-']), 0..=23_u32, 0..=59_u32)
                .prop_map(|(s, h, m)| format!("{s}{h:02}:{m:02}")),
        ],
    )
        .prop_map(|((y, mo, d), (h, mi, s), frac, sep, offset)| {
            let d = d.min(days_in_month(y, mo));
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{frac}{offset}")
        })
}

/// Timestamps near RFC 3339: every field may be out of range or misspelled.
fn near_time() -> impl Strategy<Value = String> {
    let two = |max: u32| {
        prop_oneof![
            4 => (0..=max).prop_map(|v| format!("{v:02}")),
            1 => (0..=9_u32).prop_map(|v| v.to_string()),
            1 => Just("xx".to_string()),
        ]
    };
    let year = prop_oneof![
        6 => (0..=9999_u32).prop_map(|y| format!("{y:04}")),
        1 => (0..=99_u32).prop_map(|y| format!("{y:02}")),
        1 => (10_000..=99_999_u32).prop_map(|y| y.to_string()),
        1 => Just("-001".to_string()),
        1 => Just("+2024".to_string()),
    ];
    let offset = prop_oneof![
        Just("Z".to_string()),
        Just("z".to_string()),
        Just(String::new()),
        Just("UTC".to_string()),
        (
            prop::sample::select(vec!["+", "-", "−"]),
            0..=25_u32,
            0..=61_u32,
            prop::sample::select(vec![":", "", "."])
        )
            .prop_map(|(s, h, m, c)| format!("{s}{h:02}{c}{m:02}")),
        (prop::sample::select(vec!["+", "-"]), 0..=23_u32).prop_map(|(s, h)| format!("{s}{h:02}")),
    ];
    let parts = (
        (year, two(13), two(32)),
        prop::sample::select(vec!["T", "t", " ", "_", "", "TT"]),
        (two(25), two(61), two(61)),
        prop::option::of("[0-9]{0,12}"),
        offset,
    )
        .prop_map(|((y, mo, d), sep, (h, mi, s), frac, off)| {
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            format!("{y}-{mo}-{d}{sep}{h}:{mi}:{s}{frac}{off}")
        });
    prop_oneof![
        6 => parts,
        2 => valid_time(),
        1 => (valid_time(), any::<prop::sample::Index>()).prop_map(|(t, i)| {
            let cut = i.index(t.len());
            t[..cut].to_string()
        }),
        1 => (valid_time(), ".{1,3}").prop_map(|(t, tail)| t + &tail),
        1 => ".{0,30}",
    ]
}

/// The fields of an RFC 3339 `date-time` (RFC 3339 §5.6), read without chrono:
/// (local `YYYY-MM-DDTHH:MM:SS`, fraction digits, offset in minutes, seconds field).
fn rfc3339_reference(s: &str) -> Option<(String, String, i32, u32)> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(at(4, b'-') && at(7, b'-') && at(13, b':') && at(16, b':')) {
        return None;
    }
    if !(at(10, b'T') || at(10, b't')) {
        return None;
    }
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac = String::new();
    if at(i, b'.') {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            frac.push(char::from(b[i]));
            i += 1;
        }
        if frac.is_empty() {
            return None;
        }
    }
    let offset = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && at(i + 3, b':') => {
            let (h, m) = (digits(i + 1..i + 3)?, digits(i + 4..i + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = i32::try_from(h * 60 + m).ok()?;
            if *sign == b'-' {
                -minutes
            } else {
                minutes
            }
        }
        _ => return None,
    };
    let local = format!("{}T{}", &s[..10], &s[11..19]);
    Some((local, frac, offset, second))
}

/// A valid structured-mode event as a JSON object, with its optional parts chosen at
/// random (sometimes given as `null`, which means absent).
fn valid_doc() -> impl Strategy<Value = Map<String, Value>> {
    let ext_name =
        "[a-z0-9]{1,20}".prop_filter("not a member name", |n| !MEMBERS.contains(&n.as_str()));
    // CloudEvents extension types: String, Integer (signed 32-bit), Boolean.
    let ext_value = prop_oneof![
        attr_text().prop_map(Value::String),
        any::<i32>().prop_map(Value::from),
        any::<bool>().prop_map(Value::Bool),
    ];
    let data = prop_oneof![
        2 => Just(None),
        3 => json_value().prop_map(|v| Some(("data", v))),
        1 => prop::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| Some(("data_base64", Value::String(BASE64.encode(b))))),
    ];
    let optional = |s: BoxedStrategy<String>| {
        prop_oneof![
            3 => Just(None),
            1 => Just(Some(Value::Null)),
            4 => s.prop_map(|s| Some(Value::String(s))),
        ]
    };
    (
        (attr_text(), source_text(), attr_text()),
        (
            optional(attr_text().boxed()),
            optional(valid_time().boxed()),
            optional(
                "(application|text|image)/[a-z0-9.+-]{1,16}(; ?charset=utf-8)?"
                    .prop_map(String::from)
                    .boxed(),
            ),
            optional(
                "(https://[a-z]{1,10}\\.example/[a-z0-9/]{0,16}|urn:[a-z]{1,8}:[a-z0-9]{1,8})"
                    .prop_map(String::from)
                    .boxed(),
            ),
        ),
        data,
        prop::collection::btree_map(ext_name, ext_value, 0..5),
    )
        .prop_map(|((id, source, ty), optionals, data, extensions)| {
            let mut m = Map::new();
            m.insert("specversion".into(), json!("1.0"));
            m.insert("id".into(), Value::String(id));
            m.insert("source".into(), Value::String(source));
            m.insert("type".into(), Value::String(ty));
            let (subject, time, ct, schema) = optionals;
            for (name, v) in [
                ("subject", subject),
                ("time", time),
                ("datacontenttype", ct),
                ("dataschema", schema),
            ] {
                if let Some(v) = v {
                    m.insert(name.into(), v);
                }
            }
            if let Some((name, v)) = data {
                m.insert(name.into(), v);
            }
            for (name, v) in extensions {
                m.insert(name, v);
            }
            m
        })
}

/// The event `doc` describes, for comparison with what the parser made of it.
fn check_matches_doc(event: &Event, doc: &Map<String, Value>) -> Result<(), TestCaseError> {
    let text = |name: &str| doc.get(name).and_then(Value::as_str).map(str::to_string);
    prop_assert_eq!(Some(event.id.clone()), text("id"));
    prop_assert_eq!(Some(event.source.clone()), text("source"));
    prop_assert_eq!(Some(event.ty.clone()), text("type"));
    prop_assert_eq!(event.subject.clone(), text("subject"));
    prop_assert_eq!(event.datacontenttype.clone(), text("datacontenttype"));
    prop_assert_eq!(event.dataschema.clone(), text("dataschema"));
    match (text("time"), event.time) {
        (None, None) => {}
        (Some(t), Some(parsed)) => {
            let (local, frac, offset, _) = rfc3339_reference(&t)
                .ok_or_else(|| TestCaseError::fail("generator made a bad time"))?;
            prop_assert_eq!(parsed.offset().local_minus_utc(), offset * 60);
            let shown = parsed.format("%Y-%m-%dT%H:%M:%S").to_string();
            prop_assert_eq!(shown, local);
            // Nanosecond precision: digits past the ninth are dropped.
            let nanos = format!("{:0<9}", &frac[..frac.len().min(9)])
                .parse::<u32>()
                .unwrap_or(0);
            prop_assert_eq!(parsed.timestamp_subsec_nanos() % 1_000_000_000, nanos);
        }
        (t, parsed) => prop_assert!(false, "time {:?} read as {:?}", t, parsed),
    }
    match (doc.get("data"), doc.get("data_base64"), &event.data) {
        // JSON data is kept as its text or read into a value: either way it reads as
        // the value written.
        (Some(v), None, Some(EventData::Json(_) | EventData::JsonText(_))) => {
            prop_assert_eq!(Some(v), event.data_json());
        }
        (None, Some(Value::String(b)), Some(EventData::Binary(bytes))) => {
            prop_assert_eq!(b.clone(), BASE64.encode(bytes));
        }
        (None, None | Some(Value::Null), None) => {}
        (d, b, got) => prop_assert!(false, "data {:?} / {:?} read as {:?}", d, b, got),
    }
    let extensions: Vec<(&String, &Value)> = doc
        .iter()
        .filter(|(k, v)| !MEMBERS.contains(&k.as_str()) && !v.is_null())
        .collect();
    prop_assert_eq!(extensions.len(), event.extensions.len());
    for (name, v) in extensions {
        let want = match v {
            Value::String(s) => ExtensionValue::String(s.clone()),
            Value::Number(n) => ExtensionValue::Number(n.clone()),
            Value::Bool(b) => ExtensionValue::Bool(*b),
            _ => return Err(TestCaseError::fail("generator made a bad extension")),
        };
        prop_assert_eq!(
            event.extension_value(name),
            Some(&want),
            "extension {}",
            name
        );
    }
    Ok(())
}

/// `doc` as JSON text with member `name` given twice (the second time with `again`).
fn with_duplicate(doc: &Map<String, Value>, name: &str, again: &Value) -> Vec<u8> {
    let mut text = serde_json::to_string(&Value::Object(doc.clone())).unwrap_or_default();
    text.pop();
    if !doc.is_empty() {
        text.push(',');
    }
    text.push_str(&serde_json::to_string(name).unwrap_or_default());
    text.push(':');
    text.push_str(&again.to_string());
    text.push('}');
    text.into_bytes()
}

// ---------------------------------------------------------------------------------------
// Event properties
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any bytes: no panic; whatever is accepted is a valid event that round-trips, and
    /// whatever is rejected names a field of the input.
    #[test]
    fn event_from_arbitrary_bytes(bytes in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        (valid_doc(), prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4))
            .prop_map(|(doc, edits)| {
                let mut b = serde_json::to_vec(&Value::Object(doc)).unwrap_or_default();
                for (i, byte) in edits {
                    if b.is_empty() { break; }
                    let at = i.index(b.len());
                    match byte % 3 {
                        0 => b[at] = byte,
                        1 => { b.remove(at); }
                        _ => b.insert(at, byte),
                    }
                }
                b
            }),
    ]) {
        match Event::from_json_slice(&bytes) {
            Ok(event) => check_accepted(&event)?,
            Err(err) => {
                let doc = serde_json::from_slice::<Map<String, Value>>(&bytes).ok();
                check_rejected_names(&err, doc.as_ref())?;
            }
        }
    }

    /// The non-object JSON values are rejected as a whole document.
    #[test]
    fn non_object_documents_are_rejected(v in json_value().prop_filter("not an object", |v| !v.is_object())) {
        let err = Event::from_json_value(v.clone()).err();
        prop_assert_eq!(err.as_ref().map(attributes), Some(set(&["(event)"])));
        let bytes = serde_json::to_vec(&v).unwrap_or_default();
        prop_assert_eq!(Event::from_json_slice(&bytes).err(), err);
    }
}

// Inputs built from whole valid events cost more to generate: fewer cases.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Any JSON object with CloudEvents-like members: no panic, the value reader and the
    /// byte reader agree, accepted events round-trip, rejections name a member.
    #[test]
    fn event_from_arbitrary_json(doc in event_like_object()) {
        let by_value = Event::from_json_value(Value::Object(doc.clone()));
        let bytes = serde_json::to_vec(&doc).unwrap_or_default();
        let by_bytes = Event::from_json_slice(&bytes);
        prop_assert_eq!(&by_value, &by_bytes);
        match by_value {
            Ok(event) => {
                check_accepted(&event)?;
                for name in REQUIRED {
                    prop_assert!(doc.get(name).and_then(Value::as_str).is_some_and(|s| !s.is_empty()));
                }
            }
            Err(err) => check_rejected_names(&err, Some(&doc))?,
        }
    }

    /// Valid documents (Unicode text, nulls for absent attributes, any JSON data, binary
    /// data, any finite numbers) are accepted as written and round-trip.
    #[test]
    fn valid_documents_are_read_as_written(doc in valid_doc()) {
        let event = Event::from_json_value(Value::Object(doc.clone()))
            .map_err(|e| TestCaseError::fail(format!("{e} in {}", Value::Object(doc.clone()))))?;
        check_matches_doc(&event, &doc)?;
        check_accepted(&event)?;
        let bytes = serde_json::to_vec(&doc).unwrap_or_default();
        let from_bytes = Event::from_json_slice(&bytes);
        prop_assert_eq!(from_bytes.as_ref().ok(), Some(&event));
    }

    /// A batch read in parts, cut where `batch_cuts` guesses or anywhere at all, and
    /// joined, is the batch read whole: always when the whole reading finds only valid
    /// events, and never anything else.
    #[test]
    fn a_batch_read_in_parts_is_the_batch(
        docs in prop::collection::vec(prop_oneof![3 => valid_doc(), 1 => event_like_object()], 0..6),
        pretty in any::<bool>(),
        parts in 2usize..6,
        anywhere in prop::collection::vec(any::<prop::sample::Index>(), 1..4),
    ) {
        let array = Value::Array(docs.into_iter().map(Value::Object).collect());
        let bytes = if pretty {
            serde_json::to_vec_pretty(&array)
        } else {
            serde_json::to_vec(&array)
        }
        .unwrap_or_default();
        let whole: Option<Vec<Event>> = Event::batch_from_json_slice(&bytes)
            .ok()
            .and_then(|items| items.into_iter().collect::<Result<_, _>>().ok());
        let guessed = Event::batch_cuts(&bytes, parts);
        let mut chosen: Vec<usize> = anywhere.iter().map(|i| 1 + i.index(bytes.len().max(1))).collect();
        chosen.sort_unstable();
        chosen.dedup();
        chosen.retain(|&c| c < bytes.len());
        for cuts in [guessed, chosen] {
            let bounds: Vec<usize> = [0].into_iter().chain(cuts).chain([bytes.len()]).collect();
            let read: Vec<_> = bounds
                .windows(2)
                .map(|w| Event::batch_part_from_json_slice(&bytes, w[0], w[1]))
                .collect();
            let joined = Event::batch_from_parts(&bytes, &bounds, read);
            match (&joined, &whole) {
                (Some(_), _) => prop_assert_eq!(&joined, &whole, "bounds {:?}", bounds),
                // An empty array is left to the whole reading.
                (None, Some(events)) => prop_assert!(events.is_empty(), "bounds {:?} refused", bounds),
                (None, None) => {}
            }
        }
    }

    /// A JSON `null` for an extension attribute means the attribute is unset (JSON format
    /// §2.2: "When decoding attributes and a null value is encountered, it MUST be treated
    /// as the equivalent of unset or omitted").
    #[test]
    fn null_extension_is_unset(doc in valid_doc(), name in "[a-z0-9]{1,20}") {
        prop_assume!(!MEMBERS.contains(&name.as_str()));
        let mut with_null = doc.clone();
        with_null.insert(name.clone(), Value::Null);
        let mut without = doc;
        without.remove(&name);
        let a = Event::from_json_value(Value::Object(with_null));
        let b = Event::from_json_value(Value::Object(without));
        prop_assert!(a.is_ok(), "{:?}", a);
        prop_assert_eq!(a, b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Dropping required attributes (or setting them to null) is an error naming exactly
    /// the dropped ones, each "is required".
    #[test]
    fn missing_required_attributes_are_named(
        doc in valid_doc(),
        drop in prop::collection::btree_set(prop::sample::select(REQUIRED.to_vec()), 1..=4),
        as_null in any::<bool>(),
    ) {
        let mut doc = doc;
        for name in &drop {
            if as_null {
                doc.insert(name.to_string(), Value::Null);
            } else {
                doc.remove(*name);
            }
        }
        let err = Event::from_json_value(Value::Object(doc)).err();
        let err = err.ok_or_else(|| TestCaseError::fail("accepted without required attributes"))?;
        let want: BTreeSet<String> = drop.iter().map(|s| s.to_string()).collect();
        prop_assert_eq!(attributes(&err), want);
        prop_assert!(err.violations.iter().all(|v| v.message == "is required"), "{:?}", err);
    }

    /// A context attribute of the wrong JSON type is an error naming it (and only it).
    #[test]
    fn mistyped_attributes_are_named(
        doc in valid_doc(),
        name in prop::sample::select([&REQUIRED[..], &OPTIONAL[..], &["data_base64"]].concat()),
        value in json_value().prop_filter("not a string or null", |v| !v.is_string() && !v.is_null()),
    ) {
        let mut doc = doc;
        if name == "data_base64" {
            doc.remove("data");
        }
        doc.insert(name.to_string(), value);
        let err = Event::from_json_value(Value::Object(doc.clone())).err();
        prop_assert_eq!(err.as_ref().map(attributes), Some(set(&[name])), "{:?}", err);
        let bytes = serde_json::to_vec(&doc).unwrap_or_default();
        prop_assert_eq!(Event::from_json_slice(&bytes).err(), err);
    }

    /// Bad values of the string attributes are errors naming the attribute: empty required
    /// strings, a source with whitespace, any specversion but "1.0", a relative dataschema, a
    /// content type that is not a media type, data_base64 that is not base64, an empty
    /// subject.
    #[test]
    fn bad_attribute_values_are_named(
        doc in valid_doc(),
        (name, bad) in prop_oneof![
            prop::sample::select(vec!["id", "source", "type", "subject"]).prop_map(|n| (n, String::new())),
            ("[a-z:/]{0,8}", prop::sample::select(vec![" ", "\t", "\n", "\u{0}", "\u{85}", "\u{3000}"]), "[a-z:/]{0,8}")
                .prop_map(|(a, ws, b)| ("source", format!("{a}{ws}{b}"))),
            ".{0,8}".prop_filter("not 1.0", |s| s != "1.0").prop_map(|s| ("specversion", s)),
            prop::sample::select(vec!["1.0 ", " 1.0", "1", "1.0.2", "0.3", "1.00", "v1.0"])
                .prop_map(|s| ("specversion", s.to_string())),
            "[a-z0-9./#?-]{0,16}".prop_map(|s| ("dataschema", s)),
            prop_oneof![
                "[a-z]{0,12}", "[a-z]{1,8}/", "/[a-z]{1,8}", "[a-z]{1,5} /[a-z]{1,5}",
                "[a-z]{1,5}/[a-z]{1,5}; ?[a-z]{1,5}", "[a-z]{1,5}/[a-z]{1,5}; ?[a-z]{1,5}=",
                "[a-z]{1,5}/[a-z]{1,5}\\(\\)", "[a-z]{1,5}/[a-z]{1,5}/[a-z]{1,5}",
            ].prop_map(|s| ("datacontenttype", s)),
            prop_oneof![
                "[A-Za-z0-9+/]{1,3}", "[A-Za-z0-9_-]{0,6}[_-][A-Za-z0-9_-]{0,6}",
                "[A-Za-z0-9+/]{2}={3}", "[A-Za-z0-9+/]{4} [A-Za-z0-9+/]{4}",
                "=[A-Za-z0-9+/]{3}",
            ].prop_map(|s| ("data_base64", s)),
        ],
    ) {
        let mut doc = doc;
        if name == "data_base64" {
            doc.remove("data");
        }
        doc.insert(name.to_string(), Value::String(bad.clone()));
        let err = Event::from_json_value(Value::Object(doc)).err();
        prop_assert_eq!(err.as_ref().map(attributes), Some(set(&[name])), "{} = {:?}", name, bad);
    }

    /// Extension names are accepted exactly when they are 1-20 lowercase letters and digits;
    /// a bad one is an error naming it.
    #[test]
    fn extension_names_are_checked(doc in valid_doc(), name in prop_oneof![
        "[a-z0-9]{1,24}", "[a-zA-Z0-9_.-]{0,12}", "\\PC{1,6}", Just(String::new()),
    ]) {
        prop_assume!(!MEMBERS.contains(&name.as_str()) && !doc.contains_key(&name));
        let mut doc = doc;
        doc.insert(name.clone(), json!("x"));
        let valid = (1..=20).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        match Event::from_json_value(Value::Object(doc)) {
            Ok(event) => {
                prop_assert!(valid, "accepted extension name {:?}", name);
                prop_assert_eq!(event.extension_value(&name), Some(&ExtensionValue::String("x".into())));
            }
            Err(err) => {
                prop_assert!(!valid, "rejected extension name {:?}: {}", name, err);
                prop_assert_eq!(attributes(&err), set(&[name.as_str()]));
            }
        }
    }

    /// Extension values must be JSON scalars of a CloudEvents type: arrays and objects are
    /// errors naming the extension, and so are numbers that are no signed 32-bit Integer
    /// and strings holding control characters or noncharacters; null is unset; an integral
    /// float is read as the integer.
    #[test]
    fn extension_values_are_checked(doc in valid_doc(), value in json_value()) {
        let mut doc = doc;
        doc.insert("myext".into(), value.clone());
        let result = Event::from_json_value(Value::Object(doc));
        let forbidden = |c: char| {
            c.is_control() || ('\u{fdd0}'..='\u{fdef}').contains(&c) || u32::from(c) & 0xfffe == 0xfffe
        };
        let integer = |n: &serde_json::Number| match n.as_i64() {
            Some(i) => i32::try_from(i).ok(),
            None if n.is_u64() => None,
            None => n.as_f64().filter(|f| {
                f.fract() == 0.0 && (-2_147_483_648.0..=2_147_483_647.0).contains(f)
            }).map(|f| f as i32),
        };
        match value {
            Value::Array(_) | Value::Object(_) => {
                prop_assert_eq!(result.err().as_ref().map(attributes), Some(set(&["myext"])));
            }
            Value::String(s) if s.chars().any(forbidden) => {
                prop_assert_eq!(result.err().as_ref().map(attributes), Some(set(&["myext"])));
            }
            Value::Number(n) if integer(&n).is_none() => {
                prop_assert_eq!(result.err().as_ref().map(attributes), Some(set(&["myext"])));
            }
            Value::Number(n) => {
                let event = result.map_err(|e| TestCaseError::fail(e.to_string()))?;
                let want = integer(&n).map(|i| ExtensionValue::Number(i.into()));
                prop_assert_eq!(event.extension_value("myext"), want.as_ref());
                check_accepted(&event)?;
            }
            Value::Null => {
                let event = result.map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(event.extension_value("myext"), None);
            }
            scalar => {
                let event = result.map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(event.extension_value("myext").is_some(), "{}", scalar);
                check_accepted(&event)?;
            }
        }
    }

    /// `data` and `data_base64` together are an error naming data_base64.
    #[test]
    fn data_and_data_base64_are_exclusive(doc in valid_doc(), data in json_value(), bytes in prop::collection::vec(any::<u8>(), 0..16)) {
        let mut doc = doc;
        doc.insert("data".into(), data);
        doc.insert("data_base64".into(), Value::String(BASE64.encode(bytes)));
        let err = Event::from_json_value(Value::Object(doc)).err();
        prop_assert_eq!(err.as_ref().map(attributes), Some(set(&["data_base64"])));
    }

    /// Accepted data_base64 is canonical: it is written back exactly as it came.
    #[test]
    fn data_base64_is_kept_canonical(doc in valid_doc(), text in "[A-Za-z0-9+/]{0,12}={0,2}") {
        let mut doc = doc;
        doc.remove("data");
        doc.insert("data_base64".into(), Value::String(text.clone()));
        if let Ok(event) = Event::from_json_value(Value::Object(doc)) {
            let written = event.to_json_value();
            prop_assert_eq!(written["data_base64"].as_str(), Some(text.as_str()));
        }
    }

    /// A member that appears twice is an error naming it, for context attributes, data
    /// and extensions alike.
    #[test]
    fn duplicate_members_are_named(
        doc in valid_doc(),
        pick in any::<prop::sample::Index>(),
        again in prop_oneof![attr_text().prop_map(Value::String), json_value()],
    ) {
        let names: Vec<String> = doc.iter().filter(|(_, v)| !v.is_null()).map(|(k, _)| k.clone()).collect();
        let name = names[pick.index(names.len())].clone();
        let bytes = with_duplicate(&doc, &name, &again);
        let err = Event::from_json_slice(&bytes).err();
        let err = err.ok_or_else(|| TestCaseError::fail(format!("accepted {}", String::from_utf8_lossy(&bytes))))?;
        prop_assert!(attributes(&err).contains(&name), "{:?} not named in {}", name, err);
    }
}

// Timestamps: many spellings to try, so more cases.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// `time` is accepted exactly when it is RFC 3339 (§5.6; a space instead of `T` may go
    /// either way, a leap second may be refused), and then read field for field.
    #[test]
    fn time_is_accepted_exactly_when_rfc3339(doc in valid_doc(), time in near_time()) {
        let mut doc = doc;
        doc.insert("time".into(), Value::String(time.clone()));
        let result = Event::from_json_value(Value::Object(doc.clone()));
        let reference = rfc3339_reference(&time);
        let spaced = time.len() > 10 && time.as_bytes()[10] == b' '
            && rfc3339_reference(&format!("{}T{}", &time[..10], &time[11..])).is_some();
        match (&result, &reference) {
            (Ok(event), Some(_)) => {
                check_matches_doc(event, &doc)?;
                check_accepted(event)?;
                let shown = event.to_json_value()["time"].as_str().unwrap_or("").to_string();
                prop_assert!(rfc3339_reference(&shown).is_some(), "{} written as {}", time, shown);
            }
            (Err(err), None) => prop_assert_eq!(attributes(err), set(&["time"])),
            (Err(_), Some((_, _, _, 60))) => {}
            (Ok(event), None) if spaced => check_accepted(event)?,
            (r, reference) => prop_assert!(false, "{:?}: reference {:?}, parser {:?}", time, reference, r.as_ref().map(|e| e.time)),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Huge attribute values and data (up to 1 MiB) are read and round-trip.
    #[test]
    fn huge_values_round_trip(
        doc in valid_doc(),
        name in prop::sample::select(vec!["id", "subject", "type", "bigext", "data"]),
        len in 1_usize..1_048_576,
        fill in "[\\p{L}\\p{N} ]",
    ) {
        let mut doc = doc;
        let value: String = fill.repeat(len / fill.len().max(1) + 1);
        if name == "data" {
            doc.remove("data_base64");
        }
        doc.insert(name.to_string(), Value::String(value));
        let bytes = serde_json::to_vec(&doc).unwrap_or_default();
        let event = Event::from_json_slice(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_matches_doc(&event, &doc)?;
        check_accepted(&event)?;
    }
}

// ---------------------------------------------------------------------------------------
// Filter properties
// ---------------------------------------------------------------------------------------

/// Glob matching by dynamic programming over (pattern, text) positions: `*` is any run of
/// characters, everything else matches itself. Independent of `glob_match`'s algorithm.
fn glob_reference(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // row[j]: does p[..i] match t[..j]?
    let mut row = vec![false; t.len() + 1];
    row[0] = true;
    for &pc in &p {
        let mut next = vec![false; t.len() + 1];
        if pc == '*' {
            let mut any = false;
            for j in 0..=t.len() {
                any |= row[j];
                next[j] = any;
            }
        } else {
            for j in 1..=t.len() {
                next[j] = row[j - 1] && t[j - 1] == pc;
            }
        }
        row = next;
    }
    row[t.len()]
}

fn op() -> impl Strategy<Value = Op> {
    let value = prop_oneof![json_leaf(), json_value()];
    prop_oneof![
        value.clone().prop_map(Op::Eq),
        value.clone().prop_map(Op::Ne),
        prop::collection::vec(value, 0..4).prop_map(Op::In),
        any::<bool>().prop_map(Op::Exists),
        any_float().prop_map(Op::Gt),
        any_float().prop_map(Op::Gte),
        any_float().prop_map(Op::Lt),
        any_float().prop_map(Op::Lte),
    ]
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "data(\\.[a-z0-9]{1,4}){1,3}",
        prop::sample::select(vec![
            "subject",
            "source",
            "type",
            "id",
            "datacontenttype",
            "dataschema"
        ])
        .prop_map(str::to_string),
        "(ext\\.)?[a-z0-9]{1,8}",
        ".{0,10}",
    ]
}

fn filter() -> impl Strategy<Value = Filter> {
    (
        prop::collection::vec(prop_oneof!["[a-z.*]{0,10}", ".{0,8}"], 0..4),
        prop::collection::vec((field_name(), op()), 0..4),
    )
        .prop_map(|(types, conditions)| Filter {
            types,
            conditions: conditions
                .into_iter()
                .map(|(field, op)| Condition { field, op })
                .collect(),
        })
}

/// An event with data and extensions for the filters to look at.
fn filter_event() -> impl Strategy<Value = Event> {
    (
        "[a-z.]{1,10}",
        prop::option::of("[a-z0-9-]{1,8}"),
        json_value(),
        prop::collection::btree_map(
            "[a-z0-9]{1,8}",
            prop_oneof![
                ".{0,6}".prop_map(ExtensionValue::String),
                any::<i64>().prop_map(ExtensionValue::from),
                any::<bool>().prop_map(ExtensionValue::Bool),
            ],
            0..3,
        ),
    )
        .prop_map(|(ty, subject, data, ext)| {
            let mut e = Event::new(ty, data).source("urn:prop").id("1");
            e.subject = subject;
            for (k, v) in ext {
                e = e.extension(k, v);
            }
            e
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any bytes read as a filter: no panic, and a filter that is accepted round-trips.
    #[test]
    fn filter_from_arbitrary_bytes(bytes in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..128),
        (filter(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(f, i, byte)| {
            let mut b = serde_json::to_vec(&f).unwrap_or_default();
            let at = i.index(b.len());
            b[at] = byte;
            b
        }),
    ]) {
        if let Ok(f) = serde_json::from_slice::<Filter>(&bytes) {
            let back = serde_json::to_vec(&f).unwrap_or_default();
            prop_assert_eq!(serde_json::from_slice::<Filter>(&back).ok(), Some(f));
        }
    }

    /// A filter written as JSON reads back as the same filter (any finite thresholds, any
    /// JSON comparison values).
    #[test]
    fn filters_round_trip_through_json(f in filter()) {
        let text = serde_json::to_string(&f).unwrap_or_default();
        let back = serde_json::from_str::<Filter>(&text);
        prop_assert_eq!(back.as_ref().ok(), Some(&f), "{} read as {:?}", text, back);
    }

    /// `glob_match` agrees with a reference matcher, on a small alphabet (so that matches
    /// are common) and on arbitrary Unicode.
    #[test]
    fn glob_match_agrees_with_reference(
        (pattern, text) in prop_oneof![
            ("[ab.*]{0,8}", "[ab.]{0,10}"),
            ("[é*ab]{0,6}", "[éab]{0,8}"),
            ("\\PC{0,6}", "\\PC{0,8}"),
        ],
    ) {
        prop_assert_eq!(glob_match(&pattern, &text), glob_reference(&pattern, &text),
            "pattern {:?} text {:?}", pattern, text);
        if !pattern.contains('*') {
            prop_assert_eq!(glob_match(&pattern, &text), pattern == text);
        }
        prop_assert!(glob_match("*", &text));
        prop_assert!(text.contains('*') || glob_match(&text, &text));
    }

    /// A type-only filter passes an event exactly when one pattern matches its type; the
    /// empty filter passes everything.
    #[test]
    fn type_filters_match_by_pattern(
        patterns in prop::collection::vec("[a-z.*]{0,8}", 0..4),
        ty in "[a-z.]{1,10}",
    ) {
        let event = Event::new(ty.clone(), Value::Null);
        let want = patterns.is_empty() || patterns.iter().any(|p| glob_reference(p, &ty));
        prop_assert_eq!(Filter::types(patterns).matches(&event), want);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Conditions on any field of any event never panic, and the operators are consistent:
    /// `ne` is the negation of `eq`, `in` is `eq` on any member, `exists` splits events in
    /// two, `gt` implies `gte` and `lt` implies `lte`.
    #[test]
    fn conditions_are_consistent(event in filter_event(), field in field_name(), value in json_leaf(), bound in any_float(), f in filter()) {
        let holds = |op: Op| Filter::default().with(field.clone(), op).matches(&event);
        prop_assert_ne!(holds(Op::Eq(value.clone())), holds(Op::Ne(value.clone())));
        prop_assert_ne!(holds(Op::Exists(true)), holds(Op::Exists(false)));
        prop_assert_eq!(holds(Op::In(vec![value.clone()])), holds(Op::Eq(value.clone())));
        prop_assert!(!holds(Op::In(vec![])));
        prop_assert!(!holds(Op::Gt(bound)) || holds(Op::Gte(bound)));
        prop_assert!(!holds(Op::Lt(bound)) || holds(Op::Lte(bound)));
        prop_assert!(!(holds(Op::Gt(bound)) && holds(Op::Lte(bound))));
        let _ = f.matches(&event);
    }

    /// Near-valid filter JSON is an error that says what is wrong: an unknown member (of the
    /// filter or of a condition, e.g. a misspelt `types`), an unknown operator, a value of
    /// the wrong type, a missing field.
    #[test]
    fn near_valid_filters_are_rejected(
        f in filter().prop_filter("has a condition", |f| !f.conditions.is_empty()),
        which in 0..5_u8,
        extra in "[a-z_]{1,10}",
        bad in prop_oneof![Just(json!("5")), Just(json!([1])), Just(json!({"x": 1})), Just(json!(null))],
    ) {
        let mut v = serde_json::to_value(&f).unwrap_or_default();
        let (mutated, needle) = match which {
            0 => {
                prop_assume!(extra != "types" && extra != "where");
                v[extra.as_str()] = json!(["deal.*"]);
                (v, extra.clone())
            }
            1 => {
                prop_assume!(!["field", "op", "value"].contains(&extra.as_str()));
                v["where"][0][extra.as_str()] = json!(true);
                (v, extra.clone())
            }
            2 => {
                prop_assume!(!["eq", "ne", "in", "exists", "gt", "gte", "lt", "lte"].contains(&extra.as_str()));
                v["where"][0]["op"] = json!(extra);
                (v, extra.clone())
            }
            3 => {
                v["where"][0] = json!({"field": "data.x", "op": "gte", "value": bad});
                (v, String::new())
            }
            _ => {
                if let Some(c) = v["where"][0].as_object_mut() {
                    c.remove("field");
                }
                (v, "field".to_string())
            }
        };
        let result = serde_json::from_value::<Filter>(mutated.clone());
        let err = result.err().map(|e| e.to_string());
        prop_assert!(err.is_some(), "accepted {}", mutated);
        let err = err.unwrap_or_default();
        prop_assert!(err.contains(&needle), "{:?} does not name {:?} ({})", err, needle, mutated);
    }
}
