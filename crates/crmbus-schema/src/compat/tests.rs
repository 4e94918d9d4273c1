//! Unit tests of the compatibility checker; the full matrix is `tests/compat_matrix.rs`.

use super::*;
use serde_json::json;

fn paths(r: &CompatibilityReport) -> Vec<&str> {
    r.breaking.iter().map(|b| b.path.as_str()).collect()
}

#[test]
fn mode_names_round_trip() {
    for m in [
        CompatibilityMode::Backward,
        CompatibilityMode::Forward,
        CompatibilityMode::Full,
        CompatibilityMode::None,
    ] {
        assert_eq!(m.as_str().parse::<CompatibilityMode>().expect("parse"), m);
        assert_eq!(
            serde_json::to_value(m).expect("ser"),
            json!(m.as_str()),
            "{m}"
        );
    }
    assert_eq!(CompatibilityMode::default(), CompatibilityMode::Backward);
    let err = "sideways".parse::<CompatibilityMode>().expect_err("bad");
    assert_eq!(err.code(), "invalid_argument");
}

#[test]
fn every_breaking_change_is_listed_with_its_path() {
    let old = json!({"type": "object", "additionalProperties": false,
        "properties": {"amount": {"type": "string"}, "note": {"type": "string"}},
        "required": ["amount"]});
    let new = json!({"type": "object", "additionalProperties": false,
        "properties": {"amount": {"type": "number"}, "region": {"type": "string"}},
        "required": ["amount", "region"]});
    let r = check_compatibility(&old, &new, CompatibilityMode::Backward);
    let mut got = paths(&r);
    got.sort_unstable();
    assert_eq!(
        got,
        ["/properties/amount/type", "/properties/note", "/required"],
        "{r:#?}"
    );
}

#[test]
fn integer_is_a_number() {
    let int = json!({"type": "integer"});
    let num = json!({"type": "number"});
    assert!(check_compatibility(&int, &num, CompatibilityMode::Backward).is_compatible());
    let r = check_compatibility(&num, &int, CompatibilityMode::Backward);
    assert_eq!(paths(&r), ["/type"]);
    assert!(r.breaking[0].reason.contains("non-integer"), "{r:?}");
}

#[test]
fn type_array_and_any_of_are_the_same_union() {
    let arr = json!({"type": ["string", "null"]});
    let any = json!({"anyOf": [{"type": "string"}, {"type": "null"}]});
    let r = check_compatibility(&arr, &any, CompatibilityMode::Full);
    assert!(r.is_compatible(), "{r:?}");
}

#[test]
fn bounds_and_lengths() {
    let loose = json!({"type": "integer", "minimum": 0, "maximum": 100});
    let tight = json!({"type": "integer", "exclusiveMinimum": 0, "maximum": 50});
    let r = check_compatibility(&loose, &tight, CompatibilityMode::Backward);
    assert_eq!(paths(&r), ["/exclusiveMinimum", "/maximum"]);
    assert!(check_compatibility(&loose, &tight, CompatibilityMode::Forward).is_compatible());
    let s1 = json!({"type": "string", "maxLength": 10});
    let s2 = json!({"type": "string", "maxLength": 5});
    assert_eq!(
        paths(&check_compatibility(&s1, &s2, CompatibilityMode::Backward)),
        ["/maxLength"]
    );
}

#[test]
fn unknown_keywords_unchanged_are_warnings_changed_are_breaking() {
    let a = json!({"type": "object", "not": {"required": ["x"]}});
    let b = json!({"type": "object", "not": {"required": ["x"]}, "description": "d"});
    let r = check_compatibility(&a, &b, CompatibilityMode::Full);
    assert!(r.is_compatible(), "{r:?}");
    assert!(r.warnings.iter().any(|w| w.contains("/not")), "{r:?}");
    let c = json!({"type": "object", "not": {"required": ["y"]}});
    let r = check_compatibility(&a, &c, CompatibilityMode::Backward);
    assert_eq!(paths(&r), ["/not"]);
}

#[test]
fn refs_with_changed_defs_are_breaking() {
    let a =
        json!({"$defs": {"id": {"type": "string"}}, "properties": {"x": {"$ref": "#/$defs/id"}}});
    let b =
        json!({"$defs": {"id": {"type": "integer"}}, "properties": {"x": {"$ref": "#/$defs/id"}}});
    let r = check_compatibility(&a, &b, CompatibilityMode::Backward);
    assert_eq!(paths(&r), ["/$defs"]);
}
