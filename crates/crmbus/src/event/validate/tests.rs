//! Tests of the validation rules, through the parser and through `Event::validate`.

use super::super::tests::{
    attributes_of, full_event, minimal, validate_attributes, violations_of, with,
};
use super::*;
use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

#[test]
fn empty_required_attributes_are_reported() {
    for name in ["id", "source", "type"] {
        assert_eq!(
            violations_of(with(minimal(), name, json!(""))),
            vec![(name.to_owned(), "must not be empty".to_owned())]
        );
    }
}

#[test]
fn wrong_specversion_is_reported() {
    let found = violations_of(with(minimal(), "specversion", json!("0.3")));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, "specversion");
    assert!(found[0].1.contains("0.3"), "{}", found[0].1);
}

#[test]
fn source_with_whitespace_or_control_is_reported() {
    assert_eq!(
        attributes_of(with(minimal(), "source", json!("urn:has space"))),
        ["source"]
    );
    assert_eq!(
        attributes_of(with(minimal(), "source", json!("urn:x\u{7}"))),
        ["source"]
    );
    // A relative URI-reference is fine.
    Event::from_json_value(with(minimal(), "source", json!("/crm/deals"))).unwrap();
}

#[test]
fn empty_subject_is_reported() {
    assert_eq!(
        attributes_of(with(minimal(), "subject", json!(""))),
        ["subject"]
    );
}

#[test]
fn invalid_time_is_reported() {
    for bad in ["yesterday", "2024-13-01T00:00:00Z", "2024-05-17 09:30"] {
        assert_eq!(attributes_of(with(minimal(), "time", json!(bad))), ["time"]);
    }
    let ok = Event::from_json_value(with(minimal(), "time", json!("2024-05-17T09:30:00Z")));
    assert_eq!(
        ok.unwrap().time.unwrap(),
        Utc.with_ymd_and_hms(2024, 5, 17, 9, 30, 0).unwrap()
    );
}

#[test]
fn offset_signs_are_ascii() {
    // U+2212 MINUS SIGN, which chrono's RFC 3339 parser accepts and RFC 3339 does not.
    let minus = with(minimal(), "time", json!("2024-05-17T09:30:00\u{2212}05:00"));
    assert_eq!(attributes_of(minus), ["time"]);
    let ok = Event::from_json_value(with(minimal(), "time", json!("2024-05-17T09:30:00-05:00")));
    assert!(ok.is_ok());
}

#[test]
fn relative_dataschema_is_reported() {
    assert_eq!(
        attributes_of(with(minimal(), "dataschema", json!("schemas/deal.won"))),
        ["dataschema"]
    );
    Event::from_json_value(with(
        minimal(),
        "dataschema",
        json!("urn:schema:deal.won:1"),
    ))
    .unwrap();
}

#[test]
fn malformed_datacontenttype_is_reported() {
    for bad in [
        "json",
        "application/",
        "/json",
        "application/json extra",
        "a/b; x",
    ] {
        assert_eq!(
            attributes_of(with(minimal(), "datacontenttype", json!(bad))),
            ["datacontenttype"],
            "{bad}"
        );
    }
    for good in [
        "application/json",
        "application/cloudevents+json; charset=utf-8",
        "text/plain;charset=\"utf-8\"",
    ] {
        Event::from_json_value(with(minimal(), "datacontenttype", json!(good))).unwrap();
    }
}

#[test]
fn bad_attribute_names_are_reported() {
    let long = "a".repeat(21);
    for bad in ["UserId", "user_id", "trace-parent", "", long.as_str()] {
        assert_eq!(
            attributes_of(with(minimal(), bad, json!("x"))),
            [bad],
            "{bad:?}"
        );
    }
    let twenty = "a".repeat(20);
    let ok = Event::from_json_value(with(minimal(), &twenty, json!("x"))).unwrap();
    assert!(ok.extension_value(&twenty).is_some());
}

#[test]
fn several_violations_are_all_listed() {
    let input = json!({
        "specversion": "2.0",
        "source": "has space",
        "type": "",
        "subject": 7,
        "time": "noon",
        "dataschema": "relative",
        "datacontenttype": "nonsense",
        "data": {},
        "data_base64": "AAAA",
        "Bad_Name": "x",
        "obj": {}
    });
    let mut found = attributes_of(input);
    found.sort();
    let mut expected = vec![
        "id",
        "source",
        "specversion",
        "type",
        "subject",
        "time",
        "dataschema",
        "datacontenttype",
        "data_base64",
        "Bad_Name",
        "obj",
    ];
    expected.sort();
    assert_eq!(found, expected);
}

#[test]
fn invalid_event_display_joins_violations() {
    let err = InvalidEvent {
        violations: vec![
            Violation::new("id", "is required"),
            Violation::new("time", "must be an RFC 3339 timestamp"),
        ],
    };
    assert_eq!(
        err.to_string(),
        "invalid event: id: is required; time: must be an RFC 3339 timestamp"
    );
    assert_eq!(
        serde_json::to_value(&err.violations[0]).unwrap(),
        json!({"attribute": "id", "message": "is required"})
    );
}

#[test]
fn validate_reports_constructed_event_problems() {
    let mut event = full_event().id("").dataschema("not a uri");
    event.specversion = "0.3".into();
    event.subject = Some(String::new());
    event.datacontenttype = Some("text".into());
    event.source = "has space".into();
    event.ty = String::new();
    let event = event
        .extension("Bad", "x")
        .extension("waytoolongextensionname", 1_i64)
        .extension("type", "shadow");
    let mut found = validate_attributes(&event);
    found.sort();
    let mut expected = vec![
        "id",
        "source",
        "specversion",
        "type",
        "subject",
        "datacontenttype",
        "dataschema",
        "Bad",
        "waytoolongextensionname",
        "type",
    ];
    expected.sort();
    assert_eq!(found, expected);
}

#[test]
fn validate_rejects_times_json_cannot_carry() {
    let odd_offset = FixedOffset::east_opt(3600 + 30)
        .unwrap()
        .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .unwrap();
    let event = full_event().time(odd_offset);
    assert_eq!(validate_attributes(&event), ["time"]);
    let far = Utc
        .with_ymd_and_hms(10_000, 1, 1, 0, 0, 0)
        .unwrap()
        .fixed_offset();
    assert_eq!(validate_attributes(&full_event().time(far)), ["time"]);
}

/// CloudEvents 1.0.2 type system: an Integer is a signed 32-bit whole number; a JSON
/// number extension that is not one is a violation naming the extension. An integral
/// float (`3.0`) counts as the integer.
#[test]
fn extension_numbers_must_be_32_bit_integers() {
    for bad in [
        "1.5",
        "2147483648",
        "-2147483649",
        "1e10",
        "-0.5",
        "18446744073709551615",
    ] {
        let text =
            format!(r#"{{"specversion":"1.0","id":"1","source":"urn:x","type":"t","n":{bad}}}"#);
        let err = Event::from_json_slice(text.as_bytes()).expect_err(bad);
        let attributes: Vec<_> = err
            .violations
            .iter()
            .map(|v| v.attribute.as_str())
            .collect();
        assert_eq!(attributes, ["n"], "{bad}: {err}");
        assert!(err.violations[0].message.contains("Integer"), "{err}");
    }
    for (good, want) in [
        ("3", 3),
        ("3.0", 3),
        ("-0.0", 0),
        ("1e2", 100),
        ("2147483647", i32::MAX),
        ("-2147483648", i32::MIN),
        ("-2147483648.0", i32::MIN),
    ] {
        let text =
            format!(r#"{{"specversion":"1.0","id":"1","source":"urn:x","type":"t","n":{good}}}"#);
        let event = Event::from_json_slice(text.as_bytes()).expect(good);
        assert_eq!(
            event.extension_value("n"),
            Some(&ExtensionValue::Number(want.into())),
            "{good}"
        );
        let stored: Value = serde_json::from_slice(&event.to_json_vec()).unwrap();
        assert_eq!(stored["n"], json!(want), "{good}");
    }
    // Events built through the API are held to the same rule by `validate`.
    for (name, value) in [
        ("big", ExtensionValue::from(2_147_483_648_i64)),
        ("small", ExtensionValue::from(-2_147_483_649_i64)),
        ("huge", ExtensionValue::from(u64::MAX)),
        ("half", ExtensionValue::from(1.5)),
    ] {
        let event = full_event().extension(name, value);
        assert_eq!(validate_attributes(&event), [name]);
    }
    let three = full_event().extension("three", 3.0);
    three.validate().unwrap();
    let stored: Value = serde_json::from_slice(&three.to_json_vec()).unwrap();
    assert_eq!(stored["three"], json!(3));
    assert_eq!(three.to_json_value()["three"], json!(3));
}

/// CloudEvents 1.0.2 type system: a String must not contain control characters
/// (U+0000-U+001F, U+007F-U+009F) or noncharacters; every string attribute and every
/// string extension value is checked, naming the attribute.
#[test]
fn control_characters_and_noncharacters_are_reported() {
    let bad_chars = [
        '\u{0}',
        '\u{7}',
        '\u{1f}',
        '\u{7f}',
        '\u{85}',
        '\u{9f}',
        '\u{fdd0}',
        '\u{fdef}',
        '\u{fffe}',
        '\u{ffff}',
        '\u{1fffe}',
        '\u{2ffff}',
        '\u{10fffe}',
        '\u{10ffff}',
    ];
    for c in bad_chars {
        for (name, valid) in [
            ("id", "e-1"),
            ("source", "urn:x"),
            ("type", "deal.won"),
            ("subject", "deal-42"),
            ("datacontenttype", "text/plain; charset=utf-8"),
            ("dataschema", "https://schemas.example/x"),
            ("time", "2024-05-17T09:30:00Z"),
            ("userid", "u-7"),
        ] {
            let value = format!("{valid}{c}");
            assert_eq!(
                attributes_of(with(minimal(), name, json!(value))),
                [name],
                "{name} with {c:?}"
            );
        }
        // The same through the library API.
        let mut event = full_event().extension("userid", format!("u{c}"));
        event.id = format!("e{c}");
        event.subject = Some(format!("s{c}"));
        let mut found = validate_attributes(&event);
        found.sort();
        assert_eq!(found, ["id", "subject", "userid"], "{c:?}");
    }
    // Neighbours of the forbidden ranges are fine.
    for c in [
        '\u{a0}',
        '\u{fdcf}',
        '\u{fdf0}',
        '\u{fffd}',
        '\u{1fffd}',
        '\u{e000}',
    ] {
        let value = format!("x{c}");
        let event = Event::from_json_value(with(
            with(minimal(), "subject", json!(value)),
            "userid",
            json!(value),
        ))
        .unwrap_or_else(|e| panic!("{c:?}: {e}"));
        event.validate().unwrap();
    }
}

/// The last valid `dataschema` is remembered per thread: a different one is still checked,
/// and one that failed is not taken for the remembered one.
#[test]
fn a_remembered_dataschema_does_not_hide_a_bad_one() {
    let good = "https://schemas.example/deal.won/1";
    for dataschema in [
        good,
        "not a uri",
        "not a uri",
        good,
        "relative/x",
        good,
        "https://ok.example/y",
    ] {
        let parsed = Event::from_json_value(with(minimal(), "dataschema", json!(dataschema)));
        if dataschema.starts_with("https://") {
            assert!(parsed.is_ok(), "{dataschema}: {parsed:?}");
        } else {
            let err = parsed.expect_err(dataschema);
            assert_eq!(err.violations.len(), 1, "{err}");
            assert_eq!(err.violations[0].attribute, "dataschema", "{err}");
        }
    }
}
