//! The CloudEvents HTTP protocol binding (version 1.0): turning a request into events.
//!
//! - **Structured** (`Content-Type: application/cloudevents+json`): the body is one event
//!   in the JSON format. A plain `application/json` body without `ce-` headers is read the
//!   same way, for convenience.
//! - **Binary** (any other content type, with `ce-specversion` and the other `ce-*` headers
//!   carrying the attributes; a structured or batch content type means that mode even
//!   when `ce-*` headers come along): a JSON
//!   body becomes `data`; any other content type becomes binary data (`data_base64` in the
//!   JSON format) with `datacontenttype` kept. Header values are unquoted if they are a
//!   quoted string, then percent-decoded once; a `%` not followed by two hex digits,
//!   decoded bytes that are not UTF-8, and control characters or noncharacters in the
//!   decoded text are errors naming the attribute (the message names the header).
//! - **Batch** (`application/cloudevents-batch+json`): a JSON array of events; the whole
//!   batch is rejected, with every bad element's violations, if any element is invalid.

use std::borrow::Cow;

use axum::body::Bytes;
use axum::http::HeaderMap;
use crmbus::event::{is_forbidden_char, parse_timestamp};
use crmbus::{ErrorCode, Event, EventData, ExtensionValue, InvalidEvent, Violation};
use serde_json::Value;

use crate::problem::{ApiError, FieldError};

/// Content type of a structured event.
pub const STRUCTURED: &str = "application/cloudevents+json";
/// Content type of a batch of events.
pub const BATCH: &str = "application/cloudevents-batch+json";

/// The media type of a request, lower case, without parameters.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let raw = headers
        .get(axum::http::header::CONTENT_TYPE)?
        .to_str()
        .ok()?;
    Some(
        raw.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

fn is_json(media: &str) -> bool {
    media == "application/json" || media.ends_with("+json") || media == "text/json"
}

/// Outside binary mode the `ce-*` headers carry no attributes, but those the API documents
/// must still be well formed: `ce-specversion` (the CloudEvents version of the request) must
/// be `1.0`, and `ce-id`, `ce-source`, `ce-type` and `ce-subject` must not be empty. (In
/// binary mode the event's own validation names them.)
fn check_other_mode_ce_headers(headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(v) = headers.get("ce-specversion") {
        if v.as_bytes() != b"1.0" {
            return Err(ApiError::invalid(
                "ce-specversion",
                format!(
                    "'{}' is not a CloudEvents version this server speaks (1.0)",
                    String::from_utf8_lossy(v.as_bytes())
                ),
            ));
        }
    }
    for name in ["ce-id", "ce-source", "ce-type", "ce-subject"] {
        if headers.get(name).is_some_and(|v| v.is_empty()) {
            return Err(ApiError::invalid(name, "must not be empty"));
        }
    }
    Ok(())
}

/// Added to the error for a plain JSON body that is not a CloudEvent: what the two ways of
/// sending one are.
const PLAIN_JSON_HINT: &str = ". A body without ce-* headers must be a structured CloudEvent \
(`{\"specversion\": \"1.0\", \"id\": …, \"source\": …, \"type\": …, \"data\": {…}}`, as \
application/cloudevents+json or application/json); to send only the data as the body, give \
the attributes as ce-specversion, ce-id, ce-source and ce-type headers (binary mode)";

/// Reads the events of a publish request in whichever mode its headers say.
pub fn events_from_request(headers: &HeaderMap, body: &[u8]) -> Result<Vec<Event>, ApiError> {
    let media = media_type(headers);
    // The content type decides the mode (CloudEvents HTTP binding §3): a structured or batch
    // content type means that mode, whatever ce-* headers came along; binary mode is any
    // other content type with ce-specversion.
    match media.as_deref() {
        Some(BATCH) => {
            check_other_mode_ce_headers(headers)?;
            return batch(body);
        }
        Some(STRUCTURED) => {
            check_other_mode_ce_headers(headers)?;
            return Event::from_json_slice(body)
                .map(|e| vec![e])
                .map_err(|e| ApiError::invalid_event(&e, ""));
        }
        _ => {}
    }
    if headers.contains_key("ce-specversion") {
        return binary_event(headers, media.as_deref(), body).map(|e| vec![e]);
    }
    match media.as_deref() {
        Some("application/json") | None => {
            check_other_mode_ce_headers(headers)?;
            Event::from_json_slice(body).map(|e| vec![e]).map_err(|e| {
                let mut err = ApiError::invalid_event(&e, "");
                err.detail.push_str(PLAIN_JSON_HINT);
                err
            })
        }
        Some(other) => Err(ApiError::new(ErrorCode::UnsupportedMediaType,
            format!(
                "content type '{other}' is not a CloudEvents mode: use {STRUCTURED}, {BATCH}, or binary mode with ce-* headers"
            ),
        )),
    }
}

/// Bodies of a batch at least this large are read in parts at once (see
/// [`events_from_publish`]); below it, handing parts over costs more than it saves.
pub const SPLIT_BATCH_BYTES: usize = 32 * 1024;

/// The size of a part of a batch read in parts: small enough that the last one a helper
/// is on is soon done, large enough that taking parts costs little.
const BATCH_PART_BYTES: usize = 12 * 1024;

/// [`events_from_request`] for a publish: with `share` (the request is alone: see
/// [`crate::shared_work::InFlight`]), a batch of [`SPLIT_BATCH_BYTES`] or more is cut
/// into parts at element boundaries and read by this task and a helper thread together
/// (see [`crate::shared_work`]), so that one client's large batches use a second core.
/// A part that began inside an element is read again from where the part before it
/// ended ([`Event::batch_from_parts`]); anything else a part refuses (an invalid element,
/// malformed JSON) has the batch read again whole, so every answer, errors included, is
/// what [`events_from_request`] gives.
pub async fn events_from_publish(
    headers: &HeaderMap,
    body: &Bytes,
    share: bool,
) -> Result<Vec<Event>, ApiError> {
    if share
        && crate::shared_work::has_second_core()
        && body.len() >= SPLIT_BATCH_BYTES
        && media_type(headers).as_deref() == Some(BATCH)
    {
        check_other_mode_ce_headers(headers)?;
        let cuts = Event::batch_cuts(body, body.len() / BATCH_PART_BYTES);
        if !cuts.is_empty() {
            let bounds: Vec<usize> = [0].into_iter().chain(cuts).chain([body.len()]).collect();
            let (whole, part_bounds) = (Bytes::clone(body), bounds.clone());
            let parts = crate::shared_work::run_in_parts(bounds.len() - 1, move |i| {
                Event::batch_part_from_json_slice(&whole, part_bounds[i], part_bounds[i + 1])
            })
            .await;
            // A part that panicked (`None` outside) counts as one that gave up.
            let parts = parts.into_iter().map(Option::flatten).collect();
            if let Some(events) = Event::batch_from_parts(body, &bounds, parts) {
                return Ok(events);
            }
        }
        // The headers are checked: read the batch whole, as `events_from_request` would.
        return batch(body);
    }
    events_from_request(headers, body)
}

fn batch(body: &[u8]) -> Result<Vec<Event>, ApiError> {
    let items = Event::batch_from_json_slice(body).map_err(|e| {
        let message = e.violations.first().map(|v| v.message.clone());
        ApiError::invalid("(body)", message.unwrap_or_default())
    })?;
    let mut events = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match item {
            Ok(e) => events.push(e),
            Err(inv) => errors.extend(ApiError::invalid_event(&inv, &format!("[{i}].")).errors),
        }
    }
    if errors.is_empty() {
        Ok(events)
    } else {
        Err(batch_error(errors))
    }
}

/// The error for a batch with invalid elements: every violation of every element.
pub fn batch_error(errors: Vec<FieldError>) -> ApiError {
    let fields: Vec<&str> = errors.iter().map(|f| f.field.as_str()).collect();
    ApiError::new(
        ErrorCode::InvalidEvent,
        format!(
            "the batch was rejected whole; invalid: {}",
            fields.join(", ")
        ),
    )
    .with_errors(errors)
}

/// The attribute value header `name` carries: unquoted, percent-decoded, and a CloudEvents
/// String (no control characters or noncharacters). A value that is none of these is a
/// violation naming the attribute, its message naming the header.
fn header_text(headers: &HeaderMap, name: &str, violations: &mut Vec<Violation>) -> Option<String> {
    let value = headers.get(name)?;
    let attribute = name.trim_start_matches("ce-").to_string();
    let decoded = match value.to_str() {
        Ok(s) => percent_decode(&unquote(s)),
        Err(_) => Err("the value is not visible ASCII".to_string()),
    };
    let checked = decoded.and_then(|s| match s.chars().find(|c| is_forbidden_char(*c)) {
        Some(c) => Err(format!(
            "the decoded value must not contain control characters or Unicode noncharacters \
             (found U+{:04X})",
            u32::from(c)
        )),
        None => Ok(s),
    });
    match checked {
        Ok(s) => Some(s),
        Err(message) => {
            violations.push(Violation {
                attribute,
                message: format!("header {name}: {message}"),
            });
            None
        }
    }
}

/// Undoes an HTTP quoted-string (`"a \"b\""` is `a "b"`): the binding's own encoding never
/// quotes, but a receiver must accept the quoted values older senders write.
fn unquote(s: &str) -> Cow<'_, str> {
    let Some(inner) = s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next().unwrap_or('\\')),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// One round of percent-decoding: `%` and two hex digits is a byte, any other byte stands
/// for itself. A `%` not followed by two hex digits is a malformed escape (RFC 3986 §2.1)
/// and an error, and the bytes must be UTF-8 (the binding says to reject them otherwise).
fn percent_decode(s: &str) -> Result<String, String> {
    if !s.contains('%') {
        return Ok(s.to_string());
    }
    let hex = |b: Option<&u8>| b.and_then(|b| char::from(*b).to_digit(16));
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let (Some(hi), Some(lo)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) else {
                return Err(format!(
                    "malformed percent escape at byte {i}: '%' must be followed by two hex \
                     digits (write a literal '%' as %25)"
                ));
            };
            out.extend(u8::try_from(hi * 16 + lo).ok());
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "percent-encoded bytes are not UTF-8".to_string())
}

fn binary_event(headers: &HeaderMap, media: Option<&str>, body: &[u8]) -> Result<Event, ApiError> {
    let mut violations = Vec::new();
    let required = |name: &str, violations: &mut Vec<Violation>| {
        let v = header_text(headers, name, violations);
        if v.is_none()
            && !violations
                .iter()
                .any(|x| format!("ce-{}", x.attribute) == name)
        {
            violations.push(Violation {
                attribute: name.trim_start_matches("ce-").to_string(),
                message: format!("required: send the {name} header"),
            });
        }
        v.unwrap_or_default()
    };
    let id = required("ce-id", &mut violations);
    let source = required("ce-source", &mut violations);
    let ty = required("ce-type", &mut violations);
    let specversion = required("ce-specversion", &mut violations);
    let subject = header_text(headers, "ce-subject", &mut violations);
    let dataschema = header_text(headers, "ce-dataschema", &mut violations);
    let time = match header_text(headers, "ce-time", &mut violations) {
        Some(t) => match parse_timestamp(&t) {
            Ok(t) => Some(t),
            Err(e) => {
                violations.push(Violation {
                    attribute: "time".into(),
                    message: format!("not an RFC 3339 timestamp: {e}"),
                });
                None
            }
        },
        None => None,
    };
    let mut extensions = std::collections::BTreeMap::new();
    for name in headers.keys() {
        let n = name.as_str();
        if let Some(ext) = n.strip_prefix("ce-") {
            if matches!(
                ext,
                "id" | "source" | "type" | "specversion" | "subject" | "dataschema" | "time"
            ) {
                continue;
            }
            if let Some(v) = header_text(headers, n, &mut violations) {
                extensions.insert(ext.to_string(), ExtensionValue::String(v));
            }
        }
    }
    let data = if body.is_empty() {
        None
    } else if media.is_none_or(is_json) {
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => Some(EventData::Json(v)),
            Err(e) => {
                violations.push(Violation {
                    attribute: "data".into(),
                    message: format!("the body is declared JSON but does not parse: {e}"),
                });
                None
            }
        }
    } else {
        Some(EventData::Binary(body.to_vec()))
    };
    if !violations.is_empty() {
        return Err(ApiError::invalid_event(&InvalidEvent { violations }, ""));
    }
    let raw_content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let event = Event {
        id,
        source,
        specversion,
        ty,
        subject,
        time,
        datacontenttype: raw_content_type,
        dataschema,
        data,
        extensions,
    };
    event
        .validate()
        .map_err(|e| ApiError::invalid_event(&e, ""))?;
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn binary_mode_json_body_becomes_data_and_extensions_are_kept() {
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "e-1"),
            ("ce-source", "urn:crm"),
            ("ce-type", "deal.won"),
            ("ce-subject", "deal-42"),
            ("ce-companyid", "acme%20inc"),
            ("content-type", "application/json"),
        ]);
        let events = events_from_request(&h, br#"{"amount":"10.00"}"#).expect("event");
        let e = &events[0];
        assert_eq!(e.subject.as_deref(), Some("deal-42"));
        assert_eq!(e.data_json(), Some(&serde_json::json!({"amount": "10.00"})));
        assert_eq!(
            e.extension_value("companyid"),
            Some(&ExtensionValue::String("acme inc".into()))
        );
    }

    #[test]
    fn binary_mode_other_content_becomes_binary_data() {
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "e-1"),
            ("ce-source", "urn:crm"),
            ("ce-type", "doc.uploaded"),
            ("content-type", "application/pdf"),
        ]);
        let e = &events_from_request(&h, b"%PDF-1.7").expect("event")[0];
        assert_eq!(e.data, Some(EventData::Binary(b"%PDF-1.7".to_vec())));
        assert_eq!(e.datacontenttype.as_deref(), Some("application/pdf"));
        assert!(e.to_json_value().get("data_base64").is_some());
    }

    #[test]
    fn binary_mode_missing_attributes_are_all_listed() {
        let h = headers(&[("ce-specversion", "1.0"), ("ce-time", "yesterday")]);
        let err = events_from_request(&h, b"").expect_err("invalid");
        let fields: Vec<&str> = err.errors.iter().map(|f| f.field.as_str()).collect();
        for f in ["id", "source", "type", "time"] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn binary_mode_header_values_are_unquoted_then_percent_decoded_once() {
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "\"a \\\"b\\\" %25\""),
            ("ce-source", "urn:crm"),
            ("ce-type", "deal.won"),
            ("ce-subject", "50%25+1%2541%E2%82%AC%e2%82%ac"),
        ]);
        let e = &events_from_request(&h, b"").expect("event")[0];
        assert_eq!(e.id, "a \"b\" %");
        assert_eq!(e.subject.as_deref(), Some("50%+1%41€€"));
        for bad in ["%FF", "%C0%A0", "%E2%82"] {
            let h = headers(&[
                ("ce-specversion", "1.0"),
                ("ce-id", "1"),
                ("ce-source", "urn:crm"),
                ("ce-type", "deal.won"),
                ("ce-subject", bad),
            ]);
            let err = events_from_request(&h, b"").expect_err("not UTF-8");
            assert_eq!(err.errors[0].field, "subject", "{bad}");
        }
    }

    fn binary_with(name: &'static str, value: &str) -> HeaderMap {
        let mut h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "urn:crm"),
            ("ce-type", "deal.won"),
        ]);
        h.insert(name, HeaderValue::from_str(value).expect("header"));
        h
    }

    /// RFC 3986 §2.1: a percent-encoding is `%` and two hex digits. Any other `%` is a
    /// malformed escape: a 400 naming the header, not a value passed through.
    #[test]
    fn malformed_percent_escapes_are_rejected_naming_the_header() {
        for (name, bad) in [
            ("ce-subject", "50%off"),
            ("ce-subject", "%zz"),
            ("ce-subject", "trailing%4"),
            ("ce-subject", "%"),
            ("ce-subject", "%4g"),
            ("ce-subject", "\"quoted 100%\""),
            ("ce-id", "a%+1"),
            ("ce-companyid", "acme%2"),
        ] {
            let err = events_from_request(&binary_with(name, bad), b"").expect_err(bad);
            assert_eq!(err.status.as_u16(), 400, "{bad}");
            let attribute = name.trim_start_matches("ce-");
            assert_eq!(err.errors.len(), 1, "{bad}: {:?}", err.errors);
            assert_eq!(err.errors[0].field, attribute, "{bad}");
            assert!(
                err.errors[0].message.contains(name),
                "{bad}: {}",
                err.errors[0].message
            );
        }
    }

    /// CloudEvents String values hold no control characters or noncharacters, whether they
    /// arrive percent-encoded or quoted.
    #[test]
    fn decoded_control_characters_and_noncharacters_are_rejected() {
        for (name, bad) in [
            ("ce-subject", "a%07"),
            ("ce-subject", "%00"),
            ("ce-subject", "%C2%85"),
            ("ce-subject", "%EF%BF%BE"),
            ("ce-subject", "%EF%B7%90"),
            ("ce-id", "%7F"),
            ("ce-type", "%1B"),
            ("ce-source", "urn:x%0A"),
            ("ce-companyid", "%F4%8F%BF%BF"),
            ("ce-time", "2024-05-17T09:30:00Z%00"),
        ] {
            let err = events_from_request(&binary_with(name, bad), b"").expect_err(bad);
            let attribute = name.trim_start_matches("ce-");
            let fields: Vec<&str> = err.errors.iter().map(|f| f.field.as_str()).collect();
            assert_eq!(fields, [attribute], "{bad}");
            assert!(
                err.errors[0].message.contains("control characters"),
                "{bad}: {}",
                err.errors[0].message
            );
        }
    }

    #[test]
    fn batch_names_the_bad_element() {
        let h = headers(&[("content-type", BATCH)]);
        let body = br#"[{"specversion":"1.0","id":"1","source":"s","type":"t"},{"specversion":"1.0","source":"s","type":"t"}]"#;
        let err = events_from_request(&h, body).expect_err("invalid");
        assert!(
            err.errors.iter().any(|f| f.field == "[1].id"),
            "{:?}",
            err.errors
        );
        let err = events_from_request(&h, b"{}").expect_err("not an array");
        assert_eq!(err.status.as_u16(), 400);
        let twice = br#"[{"specversion":"1.0","id":"1","id":"2","source":"s","type":"t"}]"#;
        let err = events_from_request(&h, twice).expect_err("duplicate member");
        assert_eq!(err.errors[0].field, "[0].id");
    }

    /// A batch of `n` events whose notes pad it past [`SPLIT_BATCH_BYTES`], each with an
    /// array of objects in its data (where cuts may be guessed); the notes of the events
    /// whose index is a multiple of `odd` end in `},{` (where cuts may be guessed too),
    /// and event `bad` (if any) has no id.
    fn large_batch(n: usize, odd: usize, bad: Option<usize>) -> Bytes {
        let elements: Vec<String> = (0..n)
            .map(|i| {
                let note = if i % odd == 0 { "x},{" } else { "plain" };
                let id = if Some(i) == bad { String::new() } else { format!("e-{i}") };
                format!(
                    r#"{{"specversion":"1.0","id":"{id}","source":"urn:crm","type":"deal.won","data":{{"items":[{{"k":1}},{{"k":2}}],"note":"{note}","pad":"{}"}}}}"#,
                    "p".repeat(600)
                )
            })
            .collect();
        Bytes::from(format!("[{}]", elements.join(",\n")))
    }

    fn same_answer(a: &Result<Vec<Event>, ApiError>, b: &Result<Vec<Event>, ApiError>) -> bool {
        match (a, b) {
            (Ok(x), Ok(y)) => x == y,
            (Err(x), Err(y)) => x.detail == y.detail && x.errors == y.errors,
            _ => false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_batch_read_in_parts_is_read_as_whole() {
        let h = headers(&[("content-type", BATCH)]);
        let n = 100;
        for (odd, bad) in [
            (n, None),
            (n / 2, None),
            (7, None),
            (1, None),
            (n, Some(n - 1)),
            (7, Some(n / 2)),
            (n, Some(0)),
        ] {
            let body = large_batch(n, odd, bad);
            assert!(body.len() >= SPLIT_BATCH_BYTES);
            let in_parts = events_from_publish(&h, &body, true).await;
            let whole = events_from_request(&h, &body);
            assert!(same_answer(&in_parts, &whole), "odd {odd}, bad {bad:?}");
            assert_eq!(in_parts.is_ok(), bad.is_none());
            if let Ok(events) = in_parts {
                let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
                let expected: Vec<String> = (0..n).map(|i| format!("e-{i}")).collect();
                assert_eq!(ids, expected);
            }
        }
        let err = events_from_publish(&h, &large_batch(n, n, Some(n - 1)), true)
            .await
            .expect_err("invalid");
        assert_eq!(err.errors[0].field, format!("[{}].id", n - 1));
    }

    #[test]
    fn unsupported_content_type_is_415() {
        let h = headers(&[("content-type", "text/plain")]);
        let err = events_from_request(&h, b"hi").expect_err("415");
        assert_eq!(err.status.as_u16(), 415);
    }
}
