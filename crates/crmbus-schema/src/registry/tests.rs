//! Unit tests of naming and schema preparation; the registry itself is tested through
//! its public API in `tests/registry.rs` and `tests/publish.rs`.

use super::*;

#[test]
fn schema_uris_round_trip() {
    let uri = schema_uri("deal.won", 3);
    assert_eq!(uri, "urn:crmbus:schema:deal.won:3");
    assert_eq!(parse_schema_uri(&uri), Some(("deal.won".into(), 3)));
    for bad in [
        "urn:crmbus:schema:deal.won:0",
        "urn:crmbus:schema:deal.won:01",
        "urn:crmbus:schema:deal.won:x",
        "urn:crmbus:schema:deal.won",
        "urn:crmbus:schema::1",
        "https://schemas.example/deal.won/1",
        "urn:crmbus:schema:deal/won:1",
    ] {
        assert_eq!(parse_schema_uri(bad), None, "{bad}");
    }
}

#[test]
fn event_types_are_checked() {
    for ok in ["deal.won", "com.acme.order.v2", "a", "x_y-z.1"] {
        assert!(validate_event_type(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        ".deal",
        "deal/won",
        "deal:won",
        "déal",
        &"x".repeat(201),
    ] {
        assert!(validate_event_type(bad).is_err(), "{bad}");
    }
}

#[test]
fn prepare_rejects_unusable_schemas() {
    let cases = [
        serde_json::json!("string"),
        serde_json::json!({"type": "strin"}),
        serde_json::json!({"$schema": "http://json-schema.org/draft-07/schema#"}),
        serde_json::json!({"$ref": "https://example.invalid/other.json"}),
        serde_json::json!({"type": "string", "pattern": "(("}),
        serde_json::json!({"type": "integer", "examples": ["x"]}),
    ];
    for schema in cases {
        let err = prepare("t", &schema).expect_err("invalid");
        assert_eq!(err.code(), "invalid_schema", "{schema}");
    }
    prepare(
        "t",
        &serde_json::json!({"$schema": DRAFT_2020_12, "type": "integer", "examples": [1]}),
    )
    .expect("valid");
}
