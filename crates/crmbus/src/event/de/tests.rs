//! Tests of reading the structured JSON form, one event or a batch.

use super::super::tests::{attributes_of, minimal, violations_of, with, without};
use super::*;
use serde_json::json;

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
    let twice = br#"{"specversion":"1.0","id":"1","source":"urn:x","type":"t","ext":null,"ext":1}"#;
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
    let bytes =
        br#"{"specversion":"1.0","id":"1","id":"2","source":"urn:x","type":"t","ext":1,"ext":2}"#;
    let err = Event::from_json_slice(bytes).unwrap_err();
    let attributes: Vec<_> = err
        .violations
        .iter()
        .map(|v| v.attribute.as_str())
        .collect();
    assert_eq!(attributes, ["id", "ext"]);
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

/// A stored event is read without running the value checks again, but bytes that hold
/// no event (not JSON, not an object, a required attribute missing or mistyped, trailing
/// bytes) still fail.
#[test]
fn stored_events_skip_the_value_checks_and_nothing_else() {
    // A subject with a control character: refused on publish, read from storage.
    let text = r#"{"specversion":"1.0","id":"1","source":"urn:x","type":"t","subject":"a\u0001b"}"#;
    assert!(Event::from_json_slice(text.as_bytes()).is_err());
    let stored = Event::from_stored_json_slice(text.as_bytes()).expect("stored event");
    assert_eq!(stored.subject.as_deref(), Some("a\u{1}b"));
    for bad in [
        "not json",
        "[1, 2]",
        r#"{"specversion":"1.0","source":"urn:x","type":"t"}"#,
        r#"{"specversion":"1.0","id":7,"source":"urn:x","type":"t"}"#,
        r#"{"specversion":"1.0","id":"1","source":"urn:x","type":"t","time":"yesterday"}"#,
        r#"{"specversion":"1.0","id":"1","source":"urn:x","type":"t"} trailing"#,
    ] {
        assert!(
            Event::from_stored_json_slice(bad.as_bytes()).is_err(),
            "{bad} was read"
        );
    }
    // Bytes that are not UTF-8, in an attribute or in the data kept as text.
    for bad in [
        &b"{\"specversion\":\"1.0\",\"id\":\"\xff\",\"source\":\"urn:x\",\"type\":\"t\"}"[..],
        b"{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"urn:x\",\"type\":\"t\",\"data\":\"\xc3\"}",
    ] {
        let refused = Event::from_stored_json_slice(bad);
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("not UTF-8")),
            "{refused:?}"
        );
    }
}

/// The printable-ASCII fast path of the character check lets nothing through that the
/// full check refuses.
#[test]
fn the_character_check_agrees_with_its_definition_on_every_ascii_byte_and_more() {
    for c in (0u32..0x200).chain([0xFDD0, 0xFDEF, 0xFFFE, 0x1FFFF, 0x10FFFF, 0xE9]) {
        let Some(c) = char::from_u32(c) else { continue };
        let text = format!("ok{c}ok");
        assert_eq!(
            forbidden_char_message(&text).is_some(),
            crate::event::is_forbidden_char(c),
            "U+{:04X}",
            u32::from(c)
        );
    }
}

/// Wraps `data` (JSON text) in an event, as one document and as a batch of one.
fn documents_with_data(data: &str) -> [String; 2] {
    let one =
        format!(r#"{{"specversion":"1.0","id":"1","source":"urn:x","type":"t","data":{data}}}"#);
    let batch = format!("[{one}]");
    [one, batch]
}

fn read_document(text: &str) -> Result<Event, InvalidEvent> {
    if text.starts_with('[') {
        let mut items = Event::batch_from_json_slice(text.as_bytes())?;
        assert_eq!(items.len(), 1);
        items.remove(0)
    } else {
        Event::from_json_slice(text.as_bytes())
    }
}

/// Plain `data` is kept as the text it came as and written out exactly so; other `data`
/// is read into a value and written compactly. Both read as the same value.
#[test]
fn plain_data_is_kept_as_its_text_and_the_rest_is_rewritten() {
    let plain =
        r#"{"amount":"10.00","lines":[{"sku":"A-1","qty":2,"price":-1.5}],"x":"caf\u00e9"}"#;
    for text in documents_with_data(plain) {
        let event = read_document(&text).expect("valid");
        match &event.data {
            Some(EventData::JsonText(t)) => assert_eq!(t.as_str(), plain),
            other => panic!("plain data was not kept as text: {other:?}"),
        }
        let written = serde_json::to_string(&event).expect("writes");
        assert!(written.contains(&format!(r#""data":{plain}"#)), "{written}");
        assert_eq!(
            event.data_json(),
            Some(&serde_json::from_str::<Value>(plain).expect("value"))
        );
    }
    for (data, compact) in [
        (r#"{ "a": [1, 2] }"#, r#"{"a":[1,2]}"#),
        (r#"{"a":1E2}"#, r#"{"a":100.0}"#),
        // A member given twice keeps its last value, as a reader of the value has it.
        (r#"{"a":1,"b":[],"a":2}"#, r#"{"a":2,"b":[]}"#),
        (r#"{"a":"\ud83d\ude00"}"#, "{\"a\":\"\u{1F600}\"}"),
    ] {
        for text in documents_with_data(data) {
            let event = read_document(&text).expect("valid");
            assert!(matches!(event.data, Some(EventData::Json(_))), "{data}");
            let written = serde_json::to_string(&event).expect("writes");
            assert!(
                written.contains(&format!(r#""data":{compact}"#)),
                "{written}"
            );
        }
    }
}

/// serde_json does not limit the nesting of text it keeps whole, so the depth limit is
/// checked on the text: data one level too deep, or far deeper than serde_json's own
/// limit of 128, is refused on `data` (it is not malformed JSON).
#[test]
fn data_kept_as_text_is_held_to_the_depth_limit() {
    use crate::event::validate::MAX_DATA_DEPTH;
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    for text in documents_with_data(&nested(MAX_DATA_DEPTH)) {
        read_document(&text).expect("at the limit");
    }
    for depth in [MAX_DATA_DEPTH + 1, 5_000] {
        for text in documents_with_data(&nested(depth)) {
            let err = read_document(&text).expect_err("too deep");
            assert_eq!(err.violations.len(), 1, "{err}");
            assert_eq!(err.violations[0].attribute, "data", "{err}");
            assert!(err.violations[0].message.contains("levels deep"), "{err}");
        }
    }
}

/// A number beyond `f64` is no value crmbus can read back: the document is malformed,
/// as it was when `data` was read whole.
#[test]
fn data_numbers_beyond_f64_are_malformed_json() {
    for text in documents_with_data(r#"{"a":1e400}"#) {
        let err = if text.starts_with('[') {
            Event::batch_from_json_slice(text.as_bytes()).expect_err("refused")
        } else {
            Event::from_json_slice(text.as_bytes()).expect_err("refused")
        };
        assert_eq!(err.violations[0].attribute, "(body)", "{err}");
        assert!(err.violations[0].message.contains("in data"), "{err}");
    }
}
