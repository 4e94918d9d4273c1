//! Property tests of the server's parsers, run by `cargo test` on stable Rust:
//!
//! - the CloudEvents HTTP binding (`cloudevents::events_from_request`) in its three modes:
//!   structured (one JSON event), binary (`ce-*` headers, the body is the data) and batch
//!   (a JSON array of events);
//! - the configuration loader (`Config::from_toml`: TOML text plus `CRMBUS_<SECTION>_<KEY>`
//!   environment overrides, unknown keys are errors).
//!
//! Each property feeds arbitrary input (bytes, header sets, TOML text) or near-valid input
//! (a valid event or configuration with one thing broken) and checks what the API promises:
//! no panic, invalid input is an error naming the field or key, and what is accepted
//! survives a round trip. proptest prints the seed of a failing case and keeps it in a
//! `.proptest-regressions` file beside this one.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use chrono::{DateTime, FixedOffset};
use crmbus::{BackendKind, Event, EventData};
use crmbus_server::cloudevents::{events_from_request, BATCH, STRUCTURED};
use crmbus_server::config::{
    AuthMode, AuthSection, Config, ConfigError, DurabilitySetting, SchemasSection, ServerSection,
    StorageSection,
};
use crmbus_server::ApiError;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------------------
// CloudEvents: helpers and generators
// ---------------------------------------------------------------------------------------

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.insert(name, value);
        }
    }
    h
}

fn fields(err: &ApiError) -> BTreeSet<String> {
    err.errors.iter().map(|f| f.field.clone()).collect()
}

/// What every accepted event must satisfy: valid, and the structured form reads back as
/// the same event with the same time offset.
fn check_accepted(event: &Event) -> Result<(), TestCaseError> {
    prop_assert_eq!(event.validate(), Ok(()));
    let bytes = event.to_json_vec();
    let back = Event::from_json_slice(&bytes)
        .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&bytes))))?;
    prop_assert_eq!(&back, event);
    prop_assert_eq!(
        back.time.map(|t| *t.offset()),
        event.time.map(|t| *t.offset())
    );
    Ok(())
}

/// A 400 whose every violation names a field.
fn check_rejected(err: &ApiError) -> Result<(), TestCaseError> {
    prop_assert!(
        err.status.is_client_error(),
        "{} {}",
        err.status,
        err.detail
    );
    if err.code == "invalid_event" || err.code == "invalid_request" {
        prop_assert!(!err.errors.is_empty(), "{}", err.detail);
    }
    Ok(())
}

/// CloudEvents String text: letters, digits, punctuation, symbols and spaces from all of
/// Unicode (no control characters or noncharacters).
fn attr_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[\\p{L}\\p{N}\\p{P}\\p{S} ]{1,24}",
        1 => "[a-z0-9.%\" -]{1,12}",
    ]
}

fn source_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "urn:[a-z]{1,8}:[a-z0-9.:%\"-]{0,16}",
        "https://[a-z]{1,10}\\.example/[\\p{L}\\p{N}/_-]{0,16}",
        "/[\\p{L}\\p{N}/._~%#?=&-]{0,24}",
    ]
}

fn time() -> impl Strategy<Value = DateTime<FixedOffset>> {
    (
        -62_167_219_200_i64..253_402_214_400,
        0..1_000_000_000_u32,
        -1439..=1439_i32,
    )
        .prop_filter_map("representable", |(secs, nanos, minutes)| {
            let offset = FixedOffset::east_opt(minutes * 60)?;
            Some(DateTime::from_timestamp(secs, nanos)?.with_timezone(&offset))
        })
}

/// Floats with short exact decimal forms.
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
            prop::collection::btree_map("[a-z]{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const RESERVED: [&str; 10] = [
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

/// A valid event that binary mode can carry: string extensions, and JSON data with a JSON
/// content type (or none) or bytes with another content type.
fn binary_event() -> impl Strategy<Value = Event> {
    let ext_name =
        "[a-z0-9]{1,20}".prop_filter("not a member name", |n| !RESERVED.contains(&n.as_str()));
    let data = prop_oneof![
        1 => Just((None, None)),
        3 => (
            json_value(),
            prop::option::of(prop::sample::select(vec![
                "application/json",
                "application/cloudevents+json",
                "application/json; charset=utf-8",
                "text/json",
            ])),
        )
            .prop_map(|(v, ct)| (Some(EventData::Json(v)), ct.map(str::to_string))),
        2 => (
            prop::collection::vec(any::<u8>(), 1..64),
            prop::sample::select(vec!["application/octet-stream", "application/pdf", "text/plain; charset=utf-8"]),
        )
            .prop_map(|(b, ct)| (Some(EventData::Binary(b)), Some(ct.to_string()))),
    ];
    (
        (attr_text(), source_text(), attr_text()),
        (
            prop::option::of(attr_text()),
            prop::option::of(time()),
            prop::option::of("https://[a-z]{1,10}\\.example/[a-z0-9/]{0,16}"),
        ),
        data,
        prop::collection::btree_map(ext_name, attr_text(), 0..4),
    )
        .prop_map(
            |((id, source, ty), (subject, time, dataschema), (data, ct), ext)| {
                let mut event = Event::new(ty, Value::Null).id(id).source(source);
                event.subject = subject;
                event.time = time;
                event.dataschema = dataschema;
                event.data = data;
                event.datacontenttype = ct;
                for (k, v) in ext {
                    event = event.extension(k, v);
                }
                event
            },
        )
}

/// How a header value is spelt; the decoder must accept every spelling (HTTP binding
/// §3.1.3.2).
#[derive(Debug, Clone, Copy)]
enum Spelling {
    /// Percent-encode what the binding says must be (upper-case hex).
    Minimal,
    /// Percent-encode every byte, in lower-case hex ("unnecessarily encoded").
    Everything,
    /// A double-quoted string (the older form): spaces not percent-encoded, quotes and
    /// backslashes escaped with a backslash.
    Quoted,
}

fn spell(value: &str, how: Spelling) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        let plain = (0x21..=0x7e).contains(&b) && b != b'"' && b != b'%';
        match how {
            Spelling::Minimal if plain => out.push(char::from(b)),
            Spelling::Quoted if b == b'"' || b == b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            Spelling::Quoted if plain || b == b' ' => out.push(char::from(b)),
            Spelling::Everything => out.push_str(&format!("%{b:02x}")),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    match how {
        Spelling::Quoted => format!("\"{out}\""),
        _ => out,
    }
}

fn spelling() -> impl Strategy<Value = Spelling> {
    prop_oneof![
        4 => Just(Spelling::Minimal),
        1 => Just(Spelling::Everything),
        1 => Just(Spelling::Quoted),
    ]
}

/// The binary-mode request for `event`: headers and body.
/// Whether binary mode can carry `event`: its content type must not be a structured or
/// batch CloudEvents media type, which would make the request that mode (HTTP binding §3).
fn sendable_in_binary_mode(event: &Event) -> bool {
    !event.datacontenttype.as_deref().is_some_and(|ct| {
        ct.to_ascii_lowercase()
            .starts_with("application/cloudevents")
    })
}

fn binary_request(event: &Event, how: Spelling) -> (HeaderMap, Vec<u8>) {
    let mut pairs: Vec<(String, String)> = vec![
        ("ce-specversion".into(), event.specversion.clone()),
        ("ce-id".into(), spell(&event.id, how)),
        ("ce-source".into(), spell(&event.source, how)),
        ("ce-type".into(), spell(&event.ty, how)),
    ];
    if let Some(s) = &event.subject {
        pairs.push(("ce-subject".into(), spell(s, how)));
    }
    if let Some(t) = &event.time {
        pairs.push(("ce-time".into(), spell(&t.to_rfc3339(), how)));
    }
    if let Some(s) = &event.dataschema {
        pairs.push(("ce-dataschema".into(), spell(s, how)));
    }
    if let Some(ct) = &event.datacontenttype {
        pairs.push(("content-type".into(), ct.clone()));
    }
    for (name, value) in &event.extensions {
        pairs.push((format!("ce-{name}"), spell(&value.to_string(), how)));
    }
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let body = match &event.data {
        None => Vec::new(),
        Some(EventData::Json(v)) => serde_json::to_vec(v).unwrap_or_default(),
        Some(EventData::JsonText(t)) => t.as_str().as_bytes().to_vec(),
        Some(EventData::Binary(b)) => b.clone(),
    };
    (headers(&refs), body)
}

/// A valid structured-mode document.
fn valid_doc() -> impl Strategy<Value = Map<String, Value>> {
    (binary_event(), any::<bool>()).prop_map(|(e, keep_ct)| {
        let mut m = match e.to_json_value() {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        if !keep_ct && m.contains_key("data") {
            m.remove("datacontenttype");
        }
        m
    })
}

/// A document that may be broken: a member dropped, mistyped, emptied or given twice.
#[derive(Debug, Clone)]
enum Damage {
    None,
    Drop(String),
    Set(String, Value),
    Twice(String, Value),
}

fn damaged_doc() -> impl Strategy<Value = (Map<String, Value>, Damage)> {
    let name = prop::sample::select(
        [
            &RESERVED[..],
            &["userid", "Bad_Name", "waytoolongextensionname"],
        ]
        .concat(),
    )
    .prop_map(str::to_string);
    let value = prop_oneof![
        Just(json!("")),
        Just(json!(null)),
        Just(json!(7)),
        Just(json!("2.0")),
        Just(json!("not a time")),
        Just(json!({"a": 1})),
        attr_text().prop_map(Value::String),
        json_value(),
    ];
    let damage = prop_oneof![
        2 => Just(Damage::None),
        1 => name.clone().prop_map(Damage::Drop),
        2 => (name.clone(), value.clone()).prop_map(|(n, v)| Damage::Set(n, v)),
        2 => (name, value).prop_map(|(n, v)| Damage::Twice(n, v)),
    ];
    (valid_doc(), damage)
}

/// The document as JSON text with its damage done.
fn render(doc: &Map<String, Value>, damage: &Damage) -> String {
    let mut doc = doc.clone();
    let mut extra = String::new();
    match damage {
        Damage::None => {}
        Damage::Drop(n) => {
            doc.remove(n);
        }
        Damage::Set(n, v) => {
            doc.insert(n.clone(), v.clone());
        }
        Damage::Twice(n, v) => {
            if !doc.contains_key(n) {
                doc.insert(n.clone(), json!("first"));
            }
            extra = format!(",{}:{}", Value::String(n.clone()), v);
        }
    }
    let mut text = Value::Object(doc).to_string();
    text.pop();
    text.push_str(&extra);
    text.push('}');
    text
}

// ---------------------------------------------------------------------------------------
// CloudEvents properties
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Any body under any content type: no panic; accepted events are valid and round-trip,
    /// rejections are 4xx naming fields.
    #[test]
    fn any_body_under_any_content_type(
        content_type in prop::option::of(prop_oneof![
            prop::sample::select(vec![
                STRUCTURED, BATCH, "application/json", "text/plain",
                "application/cloudevents+json; charset=utf-8", "APPLICATION/CLOUDEVENTS-BATCH+JSON",
            ]).prop_map(str::to_string),
            "[a-z/+;= -]{0,24}",
        ]),
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            damaged_doc().prop_map(|(d, dmg)| render(&d, &dmg).into_bytes()),
            prop::collection::vec(damaged_doc(), 0..3).prop_map(|docs| {
                let items: Vec<String> = docs.iter().map(|(d, dmg)| render(d, dmg)).collect();
                format!("[{}]", items.join(",")).into_bytes()
            }),
        ],
    ) {
        let h = match &content_type {
            Some(ct) => headers(&[("content-type", ct)]),
            None => HeaderMap::new(),
        };
        match events_from_request(&h, &body) {
            Ok(events) => {
                // Only a batch may be empty (an empty batch is a valid batch).
                let is_batch = content_type
                    .as_deref()
                    .is_some_and(|ct| ct.to_ascii_lowercase().starts_with(BATCH));
                prop_assert!(!events.is_empty() || is_batch, "{:?}", content_type);
                for e in &events {
                    check_accepted(e)?;
                }
            }
            Err(err) => check_rejected(&err)?,
        }
    }

    /// Any set of `ce-` headers (names and raw byte values) with any body: no panic;
    /// accepted events are valid and round-trip.
    #[test]
    fn any_binary_mode_headers(
        pairs in prop::collection::vec(
            (
                prop_oneof![
                    prop::sample::select(vec![
                        "ce-specversion", "ce-id", "ce-source", "ce-type", "ce-subject", "ce-time",
                        "ce-dataschema", "ce-datacontenttype", "ce-data", "content-type",
                    ]).prop_map(str::to_string),
                    "ce-[a-z0-9_-]{0,22}",
                ],
                prop_oneof![
                    Just(b"1.0".to_vec()),
                    "[ -~]{0,24}".prop_map(String::into_bytes),
                    "(%[0-9A-Fa-f]{2}|[a-z%+\"]){0,12}".prop_map(String::into_bytes),
                    prop::collection::vec(1_u8..=255, 0..16),
                ],
            ),
            0..10,
        ),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut h = HeaderMap::new();
        h.insert("ce-specversion", HeaderValue::from_static("1.0"));
        for (name, value) in pairs {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(&value)) {
                h.insert(n, v);
            }
        }
        match events_from_request(&h, &body) {
            Ok(events) => {
                prop_assert_eq!(events.len(), 1);
                check_accepted(&events[0])?;
            }
            Err(err) => check_rejected(&err)?,
        }
    }

    /// A percent-encoding is `%` followed by two hex digits (RFC 3986 §2.1); any other `%`
    /// is a malformed escape, rejected naming the attribute, with the header named in the
    /// message (`50%+1` is neither `50\u{1}` nor passed through as it is).
    #[test]
    fn stray_percent_signs_are_rejected(subject in "[a-z0-9 ]{0,4}%([+g-z _-][0-9a-f]?|[0-9a-f]?)[a-z0-9]{0,4}") {
        let raw = subject.replace(' ', "_");
        prop_assume!(!raw.split('%').nth(1).is_some_and(|rest| {
            rest.len() >= 2 && rest.bytes().take(2).all(|b| b.is_ascii_hexdigit())
        }));
        let h = headers(&[
            ("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-source", "urn:t"), ("ce-type", "t"),
            ("ce-subject", &raw),
        ]);
        let err = events_from_request(&h, b"").err();
        prop_assert_eq!(err.as_ref().map(fields), Some(["subject".to_string()].into()), "{}", raw);
        let message = err.as_ref().map(|e| e.errors[0].message.clone()).unwrap_or_default();
        prop_assert!(message.contains("ce-subject"), "{}", message);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// A valid event sent in binary mode, its header values spelt any way the binding
    /// allows (minimal or full percent-encoding, upper or lower hex, quoted strings), is
    /// read back as the same event.
    #[test]
    fn binary_mode_round_trips(event in binary_event(), how in spelling()) {
        prop_assume!(sendable_in_binary_mode(&event));
        let (h, body) = binary_request(&event, how);
        let read = events_from_request(&h, &body)
            .map_err(|e| TestCaseError::fail(format!("{}: {:?}", e.detail, e.errors)))?;
        prop_assert_eq!(read.len(), 1);
        prop_assert_eq!(&read[0], &event);
        prop_assert_eq!(read[0].time.map(|t| *t.offset()), event.time.map(|t| *t.offset()));
        check_accepted(&read[0])?;
    }

    /// Percent-encoded bytes that are not UTF-8 are rejected, naming the attribute
    /// (HTTP binding §3.1.3.2: "encoded byte sequences which are invalid in UTF-8 MUST be
    /// rejected"), instead of turning into U+FFFD.
    #[test]
    fn invalid_utf8_in_headers_is_rejected(
        name in prop::sample::select(vec!["id", "source", "type", "subject", "companyid"]),
        bad in prop::sample::select(vec!["%FF", "%C0%A0", "%E2%82", "%80", "%ED%A0%80", "%F8%88%80%80%80"]),
        before in "[a-z]{0,4}",
    ) {
        let value = format!("{before}{bad}");
        let header = format!("ce-{name}");
        let mut pairs = vec![("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-source", "urn:t"), ("ce-type", "t")];
        pairs.retain(|(k, _)| *k != header);
        pairs.push((&header, &value));
        let err = events_from_request(&headers(&pairs), b"").err();
        prop_assert_eq!(err.as_ref().map(fields), Some([name.to_string()].into()), "{} = {}", header, value);
    }

    /// Dropping required headers is an error naming each dropped attribute.
    #[test]
    fn missing_binary_headers_are_named(
        event in binary_event(),
        drop in prop::collection::btree_set(prop::sample::select(vec!["id", "source", "type"]), 1..=3),
    ) {
        prop_assume!(sendable_in_binary_mode(&event));
        let (mut h, body) = binary_request(&event, Spelling::Minimal);
        for name in &drop {
            h.remove(format!("ce-{name}").as_str());
        }
        let err = events_from_request(&h, &body).err();
        let want: BTreeSet<String> = drop.iter().map(|s| s.to_string()).collect();
        prop_assert_eq!(err.as_ref().map(fields), Some(want));
    }

    /// Bad binary-mode values are errors naming the attribute: a specversion other than
    /// 1.0, a time that is not RFC 3339 (including one whose minus sign is U+2212), a body
    /// declared JSON that does not parse.
    #[test]
    fn bad_binary_values_are_named(
        event in binary_event(),
        (header, value, field) in prop_oneof![
            ".{0,6}".prop_filter("not 1.0", |s| s != "1.0")
                .prop_map(|s| ("ce-specversion", spell(&s, Spelling::Minimal), "specversion")),
            prop::sample::select(vec![
                "yesterday", "2024-13-01T00:00:00Z", "2024-02-30T00:00:00Z", "2024-01-01T24:00:00Z",
                "2024-01-01T00:00:00", "2024-01-01T00:00:00%E2%88%9205:00", "2024-01-01",
            ]).prop_map(|s| ("ce-time", s.to_string(), "time")),
        ],
    ) {
        prop_assume!(sendable_in_binary_mode(&event));
        let (mut h, body) = binary_request(&event, Spelling::Minimal);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(header.as_bytes()), HeaderValue::from_str(&value)) {
            h.insert(n, v);
        }
        let err = events_from_request(&h, &body).err();
        prop_assert_eq!(err.as_ref().map(fields), Some([field.to_string()].into()), "{} = {}", header, value);
    }

    /// A document reads the same in structured mode and as a one-element batch: the same
    /// event, or the same violations with the batch's fields prefixed `[0].` (so a member
    /// given twice is an error in a batch too).
    #[test]
    fn structured_and_batch_agree((doc, damage) in damaged_doc()) {
        let text = render(&doc, &damage);
        let structured = events_from_request(&headers(&[("content-type", STRUCTURED)]), text.as_bytes());
        let batch_body = format!("[{text}]");
        let batch = events_from_request(&headers(&[("content-type", BATCH)]), batch_body.as_bytes());
        match (&structured, &batch) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(a, b);
                check_accepted(&a[0])?;
            }
            (Err(a), Err(b)) => {
                let prefixed: Vec<String> = a.errors.iter().map(|f| format!("[0].{}", f.field)).collect();
                let got: Vec<String> = b.errors.iter().map(|f| f.field.clone()).collect();
                prop_assert_eq!(got, prefixed, "{}", text);
            }
            _ => prop_assert!(false, "structured {:?} but batch {:?} for {}",
                structured.as_ref().map(|_| ()).map_err(|e| &e.errors),
                batch.as_ref().map(|_| ()).map_err(|e| &e.errors), text),
        }
    }

}

// Several documents per case, each also read alone: fewer cases.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A batch is all or nothing: with every element valid it gives every event in order;
    /// otherwise the error names fields of the bad elements only, each prefixed `[i].`.
    #[test]
    fn batches_are_all_or_nothing(docs in prop::collection::vec(damaged_doc(), 1..6)) {
        let texts: Vec<String> = docs.iter().map(|(d, dmg)| render(d, dmg)).collect();
        let alone: Vec<_> = texts
            .iter()
            .map(|t| events_from_request(&headers(&[("content-type", STRUCTURED)]), t.as_bytes()))
            .collect();
        let body = format!("[{}]", texts.join(","));
        let batch = events_from_request(&headers(&[("content-type", BATCH)]), body.as_bytes());
        let bad: BTreeSet<usize> = alone.iter().enumerate().filter(|(_, r)| r.is_err()).map(|(i, _)| i).collect();
        match batch {
            Ok(events) => {
                prop_assert!(bad.is_empty(), "batch accepted with bad elements {:?}", bad);
                let want: Vec<Event> = alone.into_iter().flat_map(|r| r.unwrap_or_default()).collect();
                prop_assert_eq!(events, want);
            }
            Err(err) => {
                prop_assert!(!bad.is_empty(), "batch rejected with every element valid: {:?}", err.errors);
                let named: BTreeSet<usize> = err.errors.iter().filter_map(|f| {
                    f.field.strip_prefix('[')?.split_once(']')?.0.parse().ok()
                }).collect();
                prop_assert_eq!(named, bad);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Configuration: generators
// ---------------------------------------------------------------------------------------

/// Every key, by section, with whether its value is text.
const KEYS: &[(&str, &[(&str, Kind)])] = &[
    (
        "server",
        &[
            ("listen", Kind::Text),
            ("max_body_bytes", Kind::Number),
            ("auto_create_topics", Kind::Bool),
            ("default_partitions", Kind::Number),
            ("stream_buffer", Kind::Number),
            ("shutdown_timeout_ms", Kind::Number),
            ("slow_client_timeout_ms", Kind::Number),
            ("tls_cert", Kind::Text),
            ("tls_key", Kind::Text),
        ],
    ),
    (
        "storage",
        &[
            ("backend", Kind::Text),
            ("data_dir", Kind::Text),
            ("durability", Kind::Text),
            ("url", Kind::Text),
            ("prefix", Kind::Text),
            ("bootstrap_servers", Kind::Text),
            ("state_url", Kind::Text),
            ("kafka_settings", Kind::Text),
            ("dedupe_window_ms", Kind::Number),
            ("commit_file_bytes", Kind::Number),
            ("log_data_fields", Kind::Text),
        ],
    ),
    (
        "schemas",
        &[
            ("catalog", Kind::Bool),
            ("catalog_dir", Kind::Text),
            ("validate", Kind::Bool),
        ],
    ),
    (
        "cluster",
        &[
            ("enabled", Kind::Bool),
            ("lease_ttl_ms", Kind::Number),
            ("advertise_url", Kind::Text),
        ],
    ),
    (
        "push",
        &[
            ("enabled", Kind::Bool),
            ("allow_private_targets", Kind::Bool),
            ("allowed_targets", Kind::Text),
            ("secret_overlap_ms", Kind::Number),
            ("ca_file", Kind::Text),
        ],
    ),
    (
        "auth",
        &[("mode", Kind::Text), ("stream_recheck_ms", Kind::Number)],
    ),
    (
        "limits",
        &[
            ("key_requests_per_second", Kind::Rate),
            ("key_burst", Kind::Number),
            ("topic_events_per_second", Kind::Rate),
            ("topic_burst", Kind::Number),
        ],
    ),
    (
        "audit",
        &[
            ("retention_days", Kind::Number),
            ("auth_failure_burst", Kind::Number),
        ],
    ),
    (
        "tracing",
        &[("otlp_endpoint", Kind::Text), ("service_name", Kind::Text)],
    ),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Number,
    Bool,
    /// A rate: 0 (off) or a number at least 1e-6, integer or not.
    Rate,
}

fn is_key(section: &str, key: &str) -> bool {
    KEYS.iter()
        .any(|(s, keys)| *s == section && keys.iter().any(|(k, _)| *k == key))
}

/// Any text a string key may hold, including text that looks like a number or a boolean.
fn config_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,16}",
        "[a-z0-9/._-]{1,16}",
        (0..100_000_u32).prop_map(|n| n.to_string()),
        prop::sample::select(vec!["true", "false", "-1", "2024", "0"]).prop_map(str::to_string),
    ]
}

fn listen() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u16; 8]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
    .prop_map(|a| a.to_string())
}

/// A valid configuration (every value passes the loader's checks).
fn valid_config() -> impl Strategy<Value = Config> {
    let server = (
        listen(),
        1..=u32::MAX as usize,
        any::<bool>(),
        1..=4096_u32,
        1..=1_000_000_usize,
        0..=i64::MAX as u64,
        0..=i64::MAX as u64,
    )
        .prop_map(
            |(listen, max_body_bytes, auto, parts, buffer, shutdown, slow)| ServerSection {
                listen,
                max_body_bytes,
                auto_create_topics: auto,
                default_partitions: parts,
                stream_buffer: buffer,
                shutdown_timeout_ms: shutdown,
                slow_client_timeout_ms: slow,
                // Both or neither; a pair is checked when the server starts.
                tls_cert: PathBuf::new(),
                tls_key: PathBuf::new(),
            },
        );
    let storage = (
        prop::sample::select(BackendKind::ALL.to_vec()),
        config_text(),
        prop::sample::select(vec![DurabilitySetting::Fsync, DurabilitySetting::Os]),
        config_text(),
        config_text(),
        any::<u32>(),
        config_text(),
        config_text(),
        config_text(),
        prop_oneof![
            Just(String::new()),
            "[a-z.]{1,12}=[a-zA-Z0-9_]{0,8}(,[a-z.]{1,12}=[a-zA-Z0-9_]{0,8}){0,2}",
        ],
        prop_oneof![Just(0u64), (64u64 << 10)..=(1u64 << 30)],
    )
        .prop_map(
            |(
                backend,
                dir,
                durability,
                url,
                prefix,
                window,
                log_fields,
                bootstrap,
                state_url,
                kafka_settings,
                commit_file_bytes,
            )| {
                let remote = matches!(backend, BackendKind::Redis | BackendKind::Nats);
                let url = if url.is_empty() && remote {
                    "redis://127.0.0.1:6379".to_string()
                } else {
                    url
                };
                let kafka = backend == BackendKind::Kafka;
                let needed = |v: String, default: &str| {
                    if kafka && v.trim().is_empty() {
                        default.to_string()
                    } else {
                        v
                    }
                };
                StorageSection {
                    backend,
                    data_dir: PathBuf::from(dir),
                    durability,
                    url,
                    prefix,
                    bootstrap_servers: needed(bootstrap, "127.0.0.1:9092"),
                    state_url: needed(state_url, "postgres://127.0.0.1/crm"),
                    kafka_settings,
                    dedupe_window_ms: u64::from(window),
                    commit_file_bytes,
                    log_data_fields: log_fields,
                }
            },
        );
    let schemas =
        (any::<bool>(), config_text(), any::<bool>()).prop_map(|(catalog, dir, validate)| {
            SchemasSection {
                catalog,
                catalog_dir: PathBuf::from(dir),
                validate,
            }
        });
    let cluster = (
        any::<bool>(),
        1000u64..600_000,
        prop_oneof![
            Just(String::new()),
            Just("http://10.0.0.7:7480".to_string())
        ],
    )
        .prop_map(|(enabled, lease_ttl_ms, advertise_url)| {
            crmbus_server::config::ClusterSection {
                enabled,
                lease_ttl_ms,
                advertise_url,
            }
        });
    let push = (
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(String::new()),
            Just("127.0.0.1".to_string()),
            Just("10.0.0.0/8, ::1".to_string())
        ],
        any::<u32>(),
    )
        .prop_map(
            |(enabled, allow_private_targets, allowed_targets, overlap)| {
                crmbus_server::config::PushSection {
                    enabled,
                    allow_private_targets,
                    allowed_targets,
                    secret_overlap_ms: u64::from(overlap),
                    ca_file: PathBuf::new(),
                }
            },
        );
    let auth = (
        prop::sample::select(vec![AuthMode::Auto, AuthMode::Keys, AuthMode::None]),
        100..=u64::from(u32::MAX),
    )
        .prop_map(|(mode, stream_recheck_ms)| AuthSection {
            mode,
            stream_recheck_ms,
        });
    let rate = prop_oneof![
        Just(0.0),
        1e-6..1e7_f64,
        (1..100_000_u32).prop_map(f64::from)
    ];
    let limits = (rate.clone(), any::<u32>(), rate, any::<u32>()).prop_map(
        |(key_rate, key_burst, topic_rate, topic_burst)| crmbus_server::config::LimitsSection {
            key_requests_per_second: key_rate,
            key_burst: u64::from(key_burst),
            topic_events_per_second: topic_rate,
            topic_burst: u64::from(topic_burst),
        },
    );
    let audit = (any::<u32>(), any::<u32>()).prop_map(|(days, burst)| {
        crmbus_server::config::AuditSection {
            retention_days: u64::from(days),
            auth_failure_burst: u64::from(burst),
        }
    });
    let tracing = (
        prop_oneof![
            Just(String::new()),
            Just("http://127.0.0.1:4318/v1/traces".to_string())
        ],
        "[a-z][a-z0-9-]{0,20}",
    )
        .prop_map(
            |(otlp_endpoint, service_name)| crmbus_server::config::TracingSection {
                otlp_endpoint,
                service_name,
            },
        );
    (
        server, storage, schemas, cluster, push, auth, limits, audit, tracing,
    )
        .prop_map(
            |(server, storage, schemas, cluster, push, auth, limits, audit, tracing)| Config {
                server,
                storage,
                schemas,
                cluster,
                push,
                auth,
                limits,
                audit,
                tracing,
                outbox: Vec::new(),
            },
        )
}

/// The configuration as `CRMBUS_<SECTION>_<KEY>` variables, each value as its text.
fn as_env(c: &Config) -> Vec<(String, String)> {
    let v = serde_json::to_value(c).unwrap_or_default();
    let mut env = Vec::new();
    for (section, keys) in KEYS {
        for (key, _) in *keys {
            let text = match &v[section][key] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            env.push((
                format!("CRMBUS_{}_{}", section.to_uppercase(), key.to_uppercase()),
                text,
            ));
        }
    }
    env
}

/// How the loader types an environment value for a key that is not text.
fn env_typed(raw: &str) -> toml::Value {
    match raw {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => raw.parse::<i64>().map_or_else(
            |_| match raw.parse::<f64>() {
                Ok(f) if f.is_finite() => toml::Value::Float(f),
                _ => toml::Value::String(raw.to_string()),
            },
            toml::Value::Integer,
        ),
    }
}

/// Whether `key` (of kind `kind`) set to `v` must fail to load: a wrong type, a negative
/// number, a zero where at least 1 is needed, more than 4096 partitions, or text that is
/// not an address, backend or durability where one is needed.
/// An item of `push.allowed_targets`: empty, an IP address, or a network in CIDR notation.
fn address_or_network(item: &str) -> bool {
    let item = item.trim();
    if item.is_empty() {
        return true;
    }
    let (addr, len) = match item.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (item, None),
    };
    let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    len.is_none_or(|l| l.parse::<u8>().is_ok_and(|l| l <= max))
}

/// Whether `storage.kafka_settings` text is a list of `key=value` pairs.
fn kafka_settings_ok(s: &str) -> bool {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .all(|p| p.split_once('=').is_some_and(|(k, _)| !k.trim().is_empty()))
}

fn expect_error(c: &Config, kind: Kind, key: &str, v: &toml::Value) -> bool {
    let kafka = c.storage.backend == BackendKind::Kafka;
    match (kind, v) {
        (Kind::Text, toml::Value::String(s)) => {
            matches!(key, "listen" | "backend" | "durability")
                || (kafka && key == "kafka_settings" && !kafka_settings_ok(s))
                || (kafka
                    && matches!(key, "bootstrap_servers" | "state_url")
                    && s.trim().is_empty())
                || (key == "mode" && !matches!(s.as_str(), "auto" | "keys" | "none"))
                || (key == "advertise_url"
                    && !s.is_empty()
                    && !url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https")))
                // Valid configurations serve plain HTTP: an https:// advertised URL is wrong.
                || (key == "advertise_url" && s.starts_with("https://"))
                || (key == "allowed_targets" && !s.split(',').all(address_or_network))
                || (key == "otlp_endpoint"
                    && !s.is_empty()
                    && !url::Url::parse(s).is_ok_and(|u| {
                        matches!(u.scheme(), "http" | "https") && u.host().is_some()
                    }))
                || (key == "service_name" && s.trim().is_empty())
                // The other of the pair is empty in every valid configuration.
                || (matches!(key, "tls_cert" | "tls_key") && !s.is_empty())
        }
        (Kind::Bool, toml::Value::Boolean(_)) => false,
        (Kind::Rate, toml::Value::Integer(n)) => *n < 0,
        (Kind::Rate, toml::Value::Float(f)) => !(*f == 0.0 || (f.is_finite() && *f >= 1e-6)),
        (Kind::Number, toml::Value::Integer(n)) => {
            *n < 0
                || (*n == 0
                    && matches!(
                        key,
                        "max_body_bytes" | "default_partitions" | "stream_buffer"
                    ))
                || (key == "default_partitions" && *n > 4096)
                || (key == "lease_ttl_ms" && !(1000..=600_000).contains(n))
                || (key == "stream_recheck_ms" && *n < 100)
                || (key == "commit_file_bytes" && *n != 0 && !((64 << 10)..=(1 << 30)).contains(n))
        }
        _ => true,
    }
}

fn message(e: &ConfigError) -> String {
    e.to_string()
}

// ---------------------------------------------------------------------------------------
// Configuration properties
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any text as the configuration file: no panic, and what is accepted is a
    /// configuration that loads again from its own TOML.
    #[test]
    fn any_config_text(text in prop_oneof![
        ".{0,64}",
        "(\\[(server|storage|schemas|x)\\]\n|[a-z_]{1,12} = (\"[a-z0-9:./]{0,12}\"|[0-9]{1,6}|true|false|\\[\\]|\\{\\})\n){0,8}",
        (valid_config(), any::<prop::sample::Index>(), ".{0,3}").prop_map(|(c, i, s)| {
            let mut t = toml::to_string(&c).unwrap_or_default();
            let mut at = i.index(t.len() + 1);
            while !t.is_char_boundary(at) { at -= 1; }
            t.insert_str(at, &s);
            t
        }),
    ]) {
        match Config::from_toml(&text, Vec::new()) {
            Ok(c) => {
                let again = toml::to_string(&c).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let back = Config::from_toml(&again, Vec::new()).map_err(|e| TestCaseError::fail(message(&e)))?;
                prop_assert_eq!(back, c);
            }
            Err(e) => prop_assert!(!message(&e).is_empty()),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// A valid configuration written as TOML loads as itself.
    #[test]
    fn configs_round_trip_through_toml(c in valid_config()) {
        let text = toml::to_string(&c).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = Config::from_toml(&text, Vec::new()).map_err(|e| TestCaseError::fail(format!("{e} in\n{text}")))?;
        prop_assert_eq!(back, c);
    }

    /// Every key can be set from the environment, whatever the text of a string key (also
    /// `2024`, `true` or `-1`, which are not numbers or booleans there), overriding the file;
    /// other variables are ignored.
    #[test]
    fn every_key_can_come_from_the_environment(file in valid_config(), env in valid_config(), other in "[A-Z_]{1,12}") {
        let text = toml::to_string(&file).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut vars = as_env(&env);
        vars.push((other.clone(), "x".into()));
        vars.push(("CRMBUS_LOG".into(), "debug".into()));
        vars.push(("CRMBUS_URL".into(), "http://127.0.0.1:7480".into()));
        let loaded = Config::from_toml(&text, vars).map_err(|e| TestCaseError::fail(message(&e)))?;
        prop_assert_eq!(loaded, env);
    }

    /// An unknown key (in a section, at the top, or as a section) is an error naming it,
    /// from the file or from the environment.
    #[test]
    fn unknown_keys_are_named(
        c in valid_config(),
        section in prop::sample::select(vec!["server", "storage", "schemas"]),
        key in "[a-z][a-z0-9_]{0,14}",
        where_ in 0..4_u8,
    ) {
        prop_assume!(!is_key(section, &key) && !["server", "storage", "schemas"].contains(&key.as_str()));
        let text = toml::to_string(&c).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (text, env) = match where_ {
            0 => {
                let mut table = toml::Table::try_from(&c).map_err(|e| TestCaseError::fail(e.to_string()))?;
                if let Some(toml::Value::Table(t)) = table.get_mut(section) {
                    t.insert(key.clone(), toml::Value::Integer(1));
                }
                (toml::to_string(&table).map_err(|e| TestCaseError::fail(e.to_string()))?, Vec::new())
            }
            1 => (format!("{key} = 1\n{text}"), Vec::new()),
            2 => (format!("{text}\n[{key}]\nx = 1\n"), Vec::new()),
            _ => (text, vec![(format!("CRMBUS_{}_{}", section.to_uppercase(), key.to_uppercase()), "1".to_string())]),
        };
        let result = Config::from_toml(&text, env);
        let err = result.err().map(|e| message(&e));
        let err = err.ok_or_else(|| TestCaseError::fail(format!("accepted unknown key {key}")))?;
        prop_assert!(err.contains(&key), "{:?} does not name {:?}", err, key);
    }

    /// A value of the wrong type or out of range is an error naming the key, whether it
    /// comes from the file or from the environment.
    #[test]
    fn bad_values_are_named(
        c in valid_config(),
        (section, key, kind) in prop::sample::select(
            KEYS.iter().flat_map(|(s, keys)| keys.iter().map(move |(k, kind)| (*s, *k, *kind))).collect::<Vec<_>>()
        ),
        bad in prop_oneof![
            Just("\"text\"".to_string()),
            Just("-1".to_string()),
            Just("0".to_string()),
            Just("1.5".to_string()),
            Just("true".to_string()),
            Just("[1, 2]".to_string()),
            Just("{ a = 1 }".to_string()),
            Just("1979-05-27T07:32:00Z".to_string()),
            Just("99999999999".to_string()),
        ],
        from_env in any::<bool>(),
    ) {
        let parsed: toml::Table = toml::from_str(&format!("v = {bad}")).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let value = parsed.get("v").cloned().ok_or_else(|| TestCaseError::fail("no value"))?;
        let result = if from_env {
            // From the environment every value is text: skip what text cannot spell.
            let raw = match &value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => return Ok(()),
            };
            let typed = match kind {
                Kind::Text => toml::Value::String(raw.clone()),
                _ => env_typed(&raw),
            };
            let base = toml::to_string(&c).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let var = format!("CRMBUS_{}_{}", section.to_uppercase(), key.to_uppercase());
            let r = Config::from_toml(&base, vec![(var, raw)]);
            prop_assert_eq!(r.is_err(), expect_error(&c, kind, key, &typed), "{}.{} = {} from env: {:?}", section, key, bad, r);
            r
        } else {
            let mut table = toml::Table::try_from(&c).map_err(|e| TestCaseError::fail(e.to_string()))?;
            if let Some(toml::Value::Table(t)) = table.get_mut(section) {
                t.insert(key.to_string(), value.clone());
            }
            let text = toml::to_string(&table).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let r = Config::from_toml(&text, Vec::new());
            prop_assert_eq!(r.is_err(), expect_error(&c, kind, key, &value), "{}.{} = {}: {:?}", section, key, bad, r);
            r
        };
        if let Err(e) = result {
            let m = message(&e);
            prop_assert!(m.contains(key), "{:?} does not name {:?}", m, key);
        }
    }
}
