//! A CloudEvents 1.0.2 corpus derived from the spec text (core spec, JSON event format,
//! HTTP protocol binding), one case per rule, run against a real server.
//!
//! Each case is a short name quoting the rule, a request in one of the three HTTP modes
//! (structured, batch, binary) sent to a topic of its own, and the expected outcome: the
//! events stored (read back and compared attribute by attribute, `null` meaning absent) or
//! a 400 whose problem document names the attribute (and, where the rule says so, the
//! header) with nothing stored. Every case runs; the failures are reported together by name.
//! The server runs with the built-in schema catalog, so the `dataschema` cases meet a type
//! (`deal.won`) that has a schema; the other cases use a type without one.

mod common;

use common::{error_fields, status_json, TestServer};
use serde_json::{json, Value};

/// How a case's request is sent.
enum Request {
    /// `Content-Type: application/cloudevents+json`, this body text (plus these headers).
    Structured(String, Vec<(&'static str, &'static str)>),
    /// `Content-Type: application/cloudevents-batch+json`, this body text.
    Batch(String),
    /// Binary mode: these headers (`ce-*` and content-type) and this body.
    Binary(Vec<(&'static str, &'static str)>, Vec<u8>),
}

/// What the server must do with it.
enum Expect {
    /// 201, and these events stored in this order: every member given must be stored with
    /// that value (`null`: must be absent).
    Stored(Vec<Value>),
    /// 400 naming each of these fields, the first error's message containing `mentions` if
    /// given; nothing stored.
    Refused(&'static [&'static str], Option<&'static str>),
}

struct Case {
    name: &'static str,
    request: Request,
    expect: Expect,
}

/// The minimal valid event, with `changes` applied (`null` removes a member).
fn event(changes: Value) -> Value {
    let mut e = json!({"specversion": "1.0", "id": "e-1", "source": "urn:acme:crm", "type": "acme.deal.closed"});
    if let (Some(map), Some(changes)) = (e.as_object_mut(), changes.as_object()) {
        for (k, v) in changes {
            map.insert(k.clone(), v.clone());
        }
    }
    e
}

/// The minimal valid event with `member` removed.
fn without(member: &str) -> Value {
    let mut e = event(json!({}));
    if let Some(map) = e.as_object_mut() {
        map.remove(member);
    }
    e
}

fn structured(v: Value) -> Request {
    Request::Structured(v.to_string(), Vec::new())
}

/// The minimal valid event as JSON text with `extra` (raw JSON member text) appended.
fn structured_raw(extra: &str) -> Request {
    let mut text = event(json!({})).to_string();
    text.pop();
    Request::Structured(format!("{text},{extra}}}"), Vec::new())
}

fn batch(items: &[Value]) -> Request {
    Request::Batch(Value::Array(items.to_vec()).to_string())
}

/// Binary mode with the four required headers plus `extra` (which may replace them), no
/// body.
fn binary(extra: &[(&'static str, &'static str)]) -> Request {
    binary_with_body(extra, b"")
}

fn binary_with_body(extra: &[(&'static str, &'static str)], body: &[u8]) -> Request {
    let mut headers = vec![
        ("ce-specversion", "1.0"),
        ("ce-id", "e-1"),
        ("ce-source", "urn:acme:crm"),
        ("ce-type", "acme.deal.closed"),
    ];
    for &(k, v) in extra {
        headers.retain(|(name, _)| *name != k);
        headers.push((k, v));
    }
    Request::Binary(headers, body.to_vec())
}

/// Binary mode without header `name`.
fn binary_without(name: &str) -> Request {
    let Request::Binary(mut headers, body) = binary(&[]) else {
        unreachable!()
    };
    headers.retain(|(k, _)| *k != name);
    Request::Binary(headers, body)
}

fn stored(v: Value) -> Expect {
    Expect::Stored(vec![v])
}

fn refused(fields: &'static [&'static str]) -> Expect {
    Expect::Refused(fields, None)
}

/// Events in [`large_batch`].
const LARGE_BATCH: usize = 60;

/// [`LARGE_BATCH`] events of about 700 bytes each, each with an array of objects in its
/// data and every fifth with a note that ends in `},{` (where a reader in parts may guess
/// an element starts); event `bad`, if any, without an id.
fn large_batch(bad: Option<usize>) -> Vec<Value> {
    (0..LARGE_BATCH)
        .map(|i| {
            let note = if i % 5 == 0 { "a},{" } else { "plain" };
            let id = if Some(i) == bad {
                Value::Null
            } else {
                json!(format!("big-{i}"))
            };
            event(json!({"id": id, "data": {
                "items": [{"sku": "a"}, {"sku": "b"}], "note": note, "pad": "p".repeat(600)
            }}))
        })
        .collect()
}

fn cases() -> Vec<Case> {
    let case = |name, request, expect| Case {
        name,
        request,
        expect,
    };
    let twenty = "abcdefghijklmnopqrst";
    let twenty_one = "abcdefghijklmnopqrstu";
    vec![
        // --- Required attributes (core §3.1) -----------------------------------------
        case(
            "core §3.1.1 id REQUIRED: missing is refused",
            structured(without("id")),
            refused(&["id"]),
        ),
        case(
            "core §3.1.1 id MUST be a non-empty string: empty is refused",
            structured(event(json!({"id": ""}))),
            refused(&["id"]),
        ),
        case(
            "core §3.1.1 id is a String: a number is refused",
            structured(event(json!({"id": 42}))),
            refused(&["id"]),
        ),
        case(
            "core §3.1.1 source REQUIRED: missing is refused",
            structured(without("source")),
            refused(&["source"]),
        ),
        case(
            "core §3.1.1 source MUST be a non-empty URI-reference: empty is refused",
            structured(event(json!({"source": ""}))),
            refused(&["source"]),
        ),
        case(
            "core §3.1.1 source is a URI-reference: a relative reference is kept",
            structured(event(json!({"source": "/crm/deals"}))),
            stored(json!({"source": "/crm/deals"})),
        ),
        case(
            "core §3.1.1 source is a URI-reference: whitespace is refused",
            structured(event(json!({"source": "urn:acme crm"}))),
            refused(&["source"]),
        ),
        case(
            "core §3.1.1 specversion REQUIRED: missing is refused",
            structured(without("specversion")),
            refused(&["specversion"]),
        ),
        case(
            "core §3.1.1 specversion is 1.0 for this version: 0.3 is refused",
            structured(event(json!({"specversion": "0.3"}))),
            refused(&["specversion"]),
        ),
        case(
            "core §3.1.1 specversion is 1.0 for this version: 1.0.2 is refused",
            structured(event(json!({"specversion": "1.0.2"}))),
            refused(&["specversion"]),
        ),
        case(
            "core §3.1.1 specversion is a String: a number is refused",
            structured(event(json!({"specversion": 1.0}))),
            refused(&["specversion"]),
        ),
        case(
            "core §3.1.1 type REQUIRED: missing is refused",
            structured(without("type")),
            refused(&["type"]),
        ),
        case(
            "core §3.1.1 type MUST be a non-empty string: empty is refused",
            structured(event(json!({"type": ""}))),
            refused(&["type"]),
        ),
        case(
            "core §3.1.1 type is a String: a boolean is refused",
            structured(event(json!({"type": true}))),
            refused(&["type"]),
        ),
        case(
            "binding §3.1.3 binary mode: a missing ce-id is refused",
            binary_without("ce-id"),
            refused(&["id"]),
        ),
        case(
            "binding §3.1.3 binary mode: ce-specversion other than 1.0 is refused",
            binary(&[("ce-specversion", "0.3")]),
            refused(&["specversion"]),
        ),
        // --- Attribute names (core §3.1.1 naming) ----------------------------------
        case(
            "core §3.1.1 names MUST be lower-case a-z or 0-9: upper case is refused",
            structured(event(json!({"userId": "u-7"}))),
            refused(&["userId"]),
        ),
        case(
            "core §3.1.1 names MUST be lower-case a-z or 0-9: an underscore is refused",
            structured(event(json!({"user_id": "u-7"}))),
            refused(&["user_id"]),
        ),
        case(
            "core §3.1.1 names SHOULD NOT exceed 20 characters: 20 is kept",
            structured(event(json!({twenty: "x"}))),
            stored(json!({twenty: "x"})),
        ),
        case(
            "core §3.1.1 names SHOULD NOT exceed 20 characters: 21 is refused",
            structured(event(json!({twenty_one: "x"}))),
            refused(&["abcdefghijklmnopqrstu"]),
        ),
        case(
            "core §3.1.1 names may start with a digit (1.0.2): kept",
            structured(event(json!({"1ext": "x"}))),
            stored(json!({"1ext": "x"})),
        ),
        case(
            "binding §3.1.3.1 binary mode: ce-user_id names an invalid attribute",
            binary(&[("ce-user_id", "u-7")]),
            refused(&["user_id"]),
        ),
        // --- JSON §2.2 null is unset ------------------------------------------------
        case(
            "JSON §2.2 null is unset: optional attributes given null are absent",
            structured(event(
                json!({"subject": null, "time": null, "datacontenttype": null, "dataschema": null}),
            )),
            stored(json!({"id": "e-1", "subject": null, "time": null, "datacontenttype": null, "dataschema": null})),
        ),
        case(
            "JSON §2.2 null is unset: an extension given null is absent",
            structured(event(json!({"unsetextension": null, "userid": "u-7"}))),
            stored(json!({"unsetextension": null, "userid": "u-7"})),
        ),
        case(
            "JSON §2.2 null is unset: a null id is a missing id",
            structured(event(json!({"id": null}))),
            refused(&["id"]),
        ),
        case(
            "JSON §2.2 null is unset: in a batch too",
            batch(&[event(json!({"subject": null, "ext": null}))]),
            stored(json!({"subject": null, "ext": null})),
        ),
        // --- Extension types (core §3.1.1 type system) ------------------------------
        case(
            "core type system Integer is a whole number: 1.5 is refused",
            structured_raw(r#""n":1.5"#),
            refused(&["n"]),
        ),
        case(
            "core type system Integer is at most +2,147,483,647: 2147483648 is refused",
            structured_raw(r#""n":2147483648"#),
            refused(&["n"]),
        ),
        case(
            "core type system Integer is at least -2,147,483,648: -2147483649 is refused",
            structured_raw(r#""n":-2147483649"#),
            refused(&["n"]),
        ),
        case(
            "core type system Integer range is inclusive: both ends are kept",
            structured_raw(r#""max":2147483647,"min":-2147483648"#),
            stored(json!({"max": 2147483647, "min": -2147483648})),
        ),
        case(
            "core type system Integer: the integral float 3.0 is the integer 3",
            structured_raw(r#""n":3.0"#),
            stored(json!({"n": 3})),
        ),
        case(
            "core type system Integer: a batch element with 1.5 is refused",
            Request::Batch(format!(
                "[{},{}]",
                event(json!({})),
                event(json!({"id": "e-2", "n": 1.5}))
            )),
            refused(&["[1].n"]),
        ),
        case(
            "core type system Boolean and String extensions are kept",
            structured(event(json!({"vip": true, "churned": false, "userid": "u-7"}))),
            stored(json!({"vip": true, "churned": false, "userid": "u-7"})),
        ),
        case(
            "core type system: an object is no extension type",
            structured(event(json!({"ext": {"a": 1}}))),
            refused(&["ext"]),
        ),
        // --- String: no control characters, surrogates or noncharacters --------------
        case(
            "core type system String MUST NOT contain U+0000-U+001F: subject with BEL",
            structured(event(json!({"subject": "deal\u{7}42"}))),
            refused(&["subject"]),
        ),
        case(
            "core type system String MUST NOT contain U+007F-U+009F: type with U+009F",
            structured(event(json!({"type": "acme.deal.closed\u{9f}"}))),
            refused(&["type"]),
        ),
        case(
            "core type system String MUST NOT contain noncharacters: id with U+FFFE",
            structured(event(json!({"id": "e\u{fffe}1"}))),
            refused(&["id"]),
        ),
        case(
            "core type system String MUST NOT contain noncharacters: source with U+FDD0",
            structured(event(json!({"source": "urn:acme:\u{fdd0}"}))),
            refused(&["source"]),
        ),
        case(
            "core type system String MUST NOT contain noncharacters: extension with U+10FFFF",
            structured(event(json!({"userid": "u\u{10ffff}"}))),
            refused(&["userid"]),
        ),
        case(
            "core type system String MUST NOT contain control characters: extension with NUL",
            structured(event(json!({"userid": "u\u{0}"}))),
            refused(&["userid"]),
        ),
        case(
            "core type system String MUST NOT contain control characters: time with a newline",
            structured(event(json!({"time": "2024-05-17T09:30:00Z\n"}))),
            refused(&["time"]),
        ),
        case(
            "core type system String MUST NOT contain control characters: in a batch",
            batch(&[event(json!({"subject": "a\u{1b}b"}))]),
            refused(&["[0].subject"]),
        ),
        case(
            "core type system String MUST NOT contain control characters: binary ce-subject %07",
            binary(&[("ce-subject", "deal%0742")]),
            refused(&["subject"]),
        ),
        case(
            "core type system String MUST NOT contain noncharacters: binary ce-userid %EF%BF%BF",
            binary(&[("ce-userid", "u%EF%BF%BF")]),
            refused(&["userid"]),
        ),
        case(
            "core type system String: U+00A0 and U+FFFD are allowed",
            structured(event(json!({"subject": "a\u{a0}b\u{fffd}", "userid": "\u{fdf0}"}))),
            stored(json!({"subject": "a\u{a0}b\u{fffd}", "userid": "\u{fdf0}"})),
        ),
        case(
            "core type system String MUST NOT contain surrogates: a lone \\ud800 is refused",
            Request::Structured(
                r#"{"specversion":"1.0","id":"e-\ud800","source":"urn:acme:crm","type":"acme.deal.closed"}"#
                    .to_string(),
                Vec::new(),
            ),
            refused(&["(body)"]),
        ),
        case(
            "core type system String MUST NOT contain surrogates: in a batch",
            Request::Batch(
                r#"[{"specversion":"1.0","id":"1","source":"urn:acme:crm","type":"t","x":"\udc00"}]"#
                    .to_string(),
            ),
            refused(&["(body)"]),
        ),
        case(
            "core type system String MUST NOT contain surrogates: in binary-mode JSON data",
            binary_with_body(
                &[("content-type", "application/json")],
                br#"{"note":"\ud800"}"#,
            ),
            refused(&["data"]),
        ),
        // --- time: Timestamp, RFC 3339 --------------------------------------------
        case(
            "core §3.1.4 time is an RFC 3339 Timestamp: kept with its offset",
            structured(event(json!({"time": "2024-05-17T09:30:15.250+02:00"}))),
            stored(json!({"time": "2024-05-17T09:30:15.250+02:00"})),
        ),
        case(
            "core §3.1.4 time is an RFC 3339 Timestamp: a zero offset is stored as Z",
            structured(event(json!({"time": "2024-05-17T09:30:15.250+00:00"}))),
            stored(json!({"time": "2024-05-17T09:30:15.250Z"})),
        ),
        case(
            "core §3.1.4 time, RFC 3339 §5.6 NOTE: a space for T may be used, stored with T",
            structured(event(json!({"time": "2024-05-17 09:30:15Z"}))),
            stored(json!({"time": "2024-05-17T09:30:15Z"})),
        ),
        case(
            "core §3.1.4 time MUST adhere to RFC 3339: a date alone is refused",
            structured(event(json!({"time": "2024-05-17"}))),
            refused(&["time"]),
        ),
        case(
            "core §3.1.4 time MUST adhere to RFC 3339: no offset is refused",
            structured(event(json!({"time": "2024-05-17T09:30:15"}))),
            refused(&["time"]),
        ),
        case(
            "core §3.1.4 time MUST adhere to RFC 3339: binary ce-time is read",
            binary(&[("ce-time", "2024-05-17T09:30:15Z")]),
            stored(json!({"time": "2024-05-17T09:30:15Z"})),
        ),
        case(
            "core §3.1.4 time MUST adhere to RFC 3339: binary ce-time yesterday is refused",
            binary(&[("ce-time", "yesterday")]),
            refused(&["time"]),
        ),
        // --- datacontenttype: RFC 2046 media type -----------------------------------
        case(
            "core §3.1.3 datacontenttype MUST adhere to RFC 2046: a media type is kept",
            structured(event(
                json!({"datacontenttype": "application/json; charset=utf-8", "data": {"a": 1}}),
            )),
            stored(json!({"datacontenttype": "application/json; charset=utf-8", "data": {"a": 1}})),
        ),
        case(
            "core §3.1.3 datacontenttype MUST adhere to RFC 2046: json is refused",
            structured(event(json!({"datacontenttype": "json"}))),
            refused(&["datacontenttype"]),
        ),
        // --- dataschema: absolute URI ---------------------------------------------
        case(
            "core §3.1.3 dataschema is a URI: a relative reference is refused",
            structured(event(json!({"dataschema": "schemas/deal.won.json"}))),
            refused(&["dataschema"]),
        ),
        case(
            "core §3.1.3 dataschema MUST be non-empty: empty is refused",
            structured(event(json!({"dataschema": ""}))),
            refused(&["dataschema"]),
        ),
        case(
            "core §3.1.3 dataschema: the producer's own absolute URI is kept",
            structured(event(json!({"dataschema": "https://schemas.acme.example/deal-won.json"}))),
            stored(json!({"dataschema": "https://schemas.acme.example/deal-won.json"})),
        ),
        // --- dataschema and the schema registry (issue 13) ----------------------------
        case(
            "issue 13 dataschema absent: the type's latest version validates and is named",
            structured(json!({
                "specversion": "1.0", "id": "w-1", "source": "urn:acme:crm", "type": "deal.won",
                "data": {"deal_id": "d-1", "amount": "10.00", "currency": "EUR"},
            })),
            stored(json!({"dataschema": "urn:crmbus:schema:deal.won:2"})),
        ),
        case(
            "issue 13 dataschema: a producer's own URI is kept, the latest version validates",
            structured(json!({
                "specversion": "1.0", "id": "w-1", "source": "urn:acme:crm", "type": "deal.won",
                "dataschema": "https://schemas.acme.example/deal-won.json",
                "data": {"deal_id": "d-1", "amount": "10.00", "currency": "EUR"},
            })),
            stored(json!({"dataschema": "https://schemas.acme.example/deal-won.json"})),
        ),
        case(
            "issue 13 dataschema: with a producer's own URI, data the latest refuses is refused",
            structured(json!({
                "specversion": "1.0", "id": "w-1", "source": "urn:acme:crm", "type": "deal.won",
                "dataschema": "https://schemas.acme.example/deal-won.json",
                "data": {"deal_id": "d-1", "amount": 10, "currency": "EUR"},
            })),
            refused(&["data/amount"]),
        ),
        case(
            "issue 13 dataschema: a registry URI naming an unregistered version is refused",
            structured(json!({
                "specversion": "1.0", "id": "w-1", "source": "urn:acme:crm", "type": "deal.won",
                "dataschema": "urn:crmbus:schema:deal.won:99",
                "data": {"deal_id": "d-1", "amount": "10.00", "currency": "EUR"},
            })),
            refused(&["dataschema"]),
        ),
        // --- subject ----------------------------------------------------------------
        case(
            "core §3.1.3 subject MUST be a non-empty string: empty is refused",
            structured(event(json!({"subject": ""}))),
            refused(&["subject"]),
        ),
        // --- data and data_base64 (JSON §3.1) ---------------------------------------
        case(
            "JSON §3.1 data_base64 is Binary data: decoded and kept",
            structured(event(
                json!({"datacontenttype": "application/octet-stream", "data_base64": "AAEC/w=="}),
            )),
            stored(json!({"data_base64": "AAEC/w==", "data": null})),
        ),
        case(
            "JSON §3.1 data_base64 MUST be Base64: not base64 is refused",
            structured(event(json!({"data_base64": "not base64!"}))),
            refused(&["data_base64"]),
        ),
        case(
            "JSON §3.1 data and data_base64 are exclusive: both are refused",
            structured(event(json!({"data": {"a": 1}, "data_base64": "AAEC"}))),
            refused(&["data_base64"]),
        ),
        case(
            "JSON §3.1 data is any JSON value: kept as is",
            structured(event(json!({"data": [1, "two", {"three": null}]}))),
            stored(json!({"data": [1, "two", {"three": null}]})),
        ),
        // --- Binary mode header values (binding §3.1.3.2) ----------------------------
        case(
            "binding §3.1.3.2 a single round of percent-decoding MUST be performed",
            binary(&[("ce-subject", "deal%2042%E2%82%AC%2541")]),
            stored(json!({"subject": "deal 42€%41"})),
        ),
        case(
            "binding §3.1.3.2 unnecessarily encoded values MUST be accepted",
            binary(&[("ce-id", "%65%2d%31"), ("ce-userid", "%75%2D%37")]),
            stored(json!({"id": "e-1", "userid": "u-7"})),
        ),
        case(
            "binding §3.1.3.2 (RFC 3986 §2.1) a malformed escape is refused: 50%off",
            binary(&[("ce-subject", "50%off")]),
            Expect::Refused(&["subject"], Some("ce-subject")),
        ),
        case(
            "binding §3.1.3.2 (RFC 3986 §2.1) a malformed escape is refused: trailing %4",
            binary(&[("ce-userid", "u%4")]),
            Expect::Refused(&["userid"], Some("ce-userid")),
        ),
        case(
            "binding §3.1.3.2 invalid UTF-8 after decoding MUST be rejected: %C0%A0",
            binary(&[("ce-subject", "a%C0%A0")]),
            Expect::Refused(&["subject"], Some("ce-subject")),
        ),
        case(
            "binding §3.1.3.2 RFC 7230 quoted-strings MUST be supported",
            binary(&[("ce-subject", r#""deal \"42\" 100%25""#)]),
            stored(json!({"subject": "deal \"42\" 100%"})),
        ),
        case(
            "binding §3.1.1 binary mode: a JSON body is the event's data",
            binary_with_body(&[("content-type", "application/json")], br#"{"a":1}"#),
            stored(json!({"data": {"a": 1}, "datacontenttype": "application/json"})),
        ),
        case(
            "binding §3.1.1 binary mode: other content is binary data with its content type",
            binary_with_body(&[("content-type", "application/pdf")], b"%PDF\x00\xff"),
            stored(json!({"data_base64": "JVBERgD/", "datacontenttype": "application/pdf"})),
        ),
        // --- Modes (binding §3) ------------------------------------------------------
        case(
            "binding §3 the content type decides the mode: structured with ce-* headers stores the body's event",
            Request::Structured(
                event(json!({"data": {"n": 1}})).to_string(),
                vec![
                    ("ce-specversion", "1.0"),
                    ("ce-id", "header-id"),
                    ("ce-source", "urn:header"),
                    ("ce-type", "header.type"),
                ],
            ),
            stored(json!({"id": "e-1", "source": "urn:acme:crm", "type": "acme.deal.closed", "data": {"n": 1}})),
        ),
        case(
            "JSON §4 batch format: an empty batch is a valid batch",
            Request::Batch("[]".to_string()),
            Expect::Stored(Vec::new()),
        ),
        // A batch this large (over 32 KiB) is read in parts by two threads when it is
        // the only publish under way: the answers must be the same.
        case(
            "JSON §4 batch format: a large batch is stored whole and in order, `},{` in its data",
            batch(&large_batch(None)),
            Expect::Stored(large_batch(None)),
        ),
        case(
            "JSON §4 batch format: a large batch with one bad element is refused whole",
            batch(&large_batch(Some(LARGE_BATCH - 1))),
            refused(&["[59].id"]),
        ),
        case(
            "JSON §4 batch format: every event of a batch is stored in order",
            batch(&[
                event(json!({"id": "b-1"})),
                event(json!({"id": "b-2", "n": 7})),
            ]),
            Expect::Stored(vec![json!({"id": "b-1"}), json!({"id": "b-2", "n": 7})]),
        ),
    ]
}

/// Sends `request` to topic `topic`; returns the status and the JSON body.
async fn send(s: &TestServer, topic: &str, request: &Request) -> (u16, Value) {
    let url = s.url(&format!("/v1/topics/{topic}/events"));
    let req = match request {
        Request::Structured(body, headers) => {
            let mut r = s
                .client
                .post(url)
                .header("content-type", "application/cloudevents+json")
                .body(body.clone());
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r
        }
        Request::Batch(body) => s
            .client
            .post(url)
            .header("content-type", "application/cloudevents-batch+json")
            .body(body.clone()),
        Request::Binary(headers, body) => {
            let mut r = s.client.post(url).body(body.clone());
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r
        }
    };
    status_json(req.send().await.expect("POST")).await
}

/// The events stored in `topic`, in the structured JSON format.
async fn stored_events(s: &TestServer, topic: &str) -> Vec<Value> {
    let (st, body) = s.get(&format!("/v1/topics/{topic}/events")).await;
    assert_eq!(st, 200, "{body}");
    body["events"]
        .as_array()
        .map(|a| a.iter().map(|e| e["event"].clone()).collect())
        .unwrap_or_default()
}

/// Runs one case against its own topic; the reason it failed, if it did.
async fn run(s: &TestServer, topic: &str, case: &Case) -> Result<(), String> {
    let (status, body) = send(s, topic, &case.request).await;
    let events = stored_events(s, topic).await;
    match &case.expect {
        Expect::Stored(want) => {
            if status != 201 {
                return Err(format!("expected 201, got {status}: {body}"));
            }
            let receipts = body["receipts"].as_array().map_or(0, Vec::len);
            if receipts != want.len() || events.len() != want.len() {
                return Err(format!(
                    "expected {} events stored, got {receipts} receipts and {} stored: {body}",
                    want.len(),
                    events.len()
                ));
            }
            for (i, (got, want)) in events.iter().zip(want).enumerate() {
                for (name, value) in want.as_object().into_iter().flatten() {
                    let found = got.get(name).unwrap_or(&Value::Null);
                    if found != value {
                        return Err(format!(
                            "event {i}: {name} stored as {found}, expected {value}; stored {got}"
                        ));
                    }
                }
            }
            Ok(())
        }
        Expect::Refused(fields, mentions) => {
            if status != 400 {
                return Err(format!("expected 400, got {status}: {body}"));
            }
            let named = error_fields(&body);
            if let Some(missing) = fields.iter().find(|f| !named.iter().any(|n| n == *f)) {
                return Err(format!(
                    "the problem does not name {missing} (it names {named:?}): {body}"
                ));
            }
            if let Some(text) = mentions {
                let message = body["errors"][0]["message"].as_str().unwrap_or("");
                if !message.contains(text) {
                    return Err(format!("the message does not mention {text}: {body}"));
                }
            }
            if !events.is_empty() {
                return Err(format!("refused, yet {} events stored", events.len()));
            }
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_edge_keeps_every_rule_of_cloudevents_1_0_2() {
    // The built-in catalog is on for the dataschema cases (`deal.won` has a schema); the
    // other cases use a type without one.
    let s = TestServer::start("embedded", &[("CRMBUS_SCHEMAS_CATALOG", "true")]).await;
    let cases = cases();
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let topic = format!("spec{i}");
        s.create_topic(&topic, 1).await;
        if let Err(reason) = run(&s, &topic, case).await {
            failures.push(format!("{}: {reason}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
