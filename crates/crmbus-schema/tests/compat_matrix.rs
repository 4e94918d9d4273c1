//! The compatibility matrix: each kind of change, old → new, and whether each mode accepts
//! it — checked both with `check_compatibility` and through `SchemaRegistry::register`.

use std::sync::Arc;

use crmbus::MemoryStateStore;
use crmbus_schema::{check_compatibility, CompatibilityMode, SchemaError, SchemaRegistry};
use serde_json::{json, Value};

/// A closed object (`additionalProperties: false`) with the given extra keywords.
fn closed(props: Value, required: Value) -> Value {
    json!({"type": "object", "properties": props, "required": required,
           "additionalProperties": false})
}

/// An open object (`additionalProperties` absent).
fn open(props: Value, required: Value) -> Value {
    json!({"type": "object", "properties": props, "required": required})
}

fn base_props() -> Value {
    json!({"id": {"type": "string"}, "amount": {"type": "number"}})
}

fn with(extra: Value) -> Value {
    let mut p = base_props();
    for (k, v) in extra.as_object().expect("object") {
        p[k] = v.clone();
    }
    p
}

const Y: bool = true;
const N: bool = false;

struct Row {
    change: &'static str,
    old: Value,
    new: Value,
    /// Accepted under (backward, forward, full, none).
    expect: [bool; 4],
    /// Every rejection must name a path starting with one of these (`|`-separated).
    path: &'static str,
}

fn row(change: &'static str, old: Value, new: Value, expect: [bool; 4], path: &'static str) -> Row {
    Row {
        change,
        old,
        new,
        expect,
        path,
    }
}

fn matrix() -> Vec<Row> {
    let req = json!(["id"]);
    vec![
        //  change                                old → new                                                                       backward forward full none
        row(
            "add optional property (closed)",
            closed(base_props(), req.clone()),
            closed(with(json!({"region": {"type": "string"}})), req.clone()),
            [Y, N, N, Y],
            "/properties/region",
        ),
        row(
            "add optional property (open)",
            open(base_props(), req.clone()),
            open(with(json!({"region": {"type": "string"}})), req.clone()),
            [N, Y, N, Y],
            "/properties/region",
        ),
        row(
            "add required property (closed)",
            closed(base_props(), req.clone()),
            closed(
                with(json!({"region": {"type": "string"}})),
                json!(["id", "region"]),
            ),
            [N, N, N, Y],
            "/required|/properties/region",
        ),
        row(
            "add required property (open)",
            open(base_props(), req.clone()),
            open(
                with(json!({"region": {"type": "string"}})),
                json!(["id", "region"]),
            ),
            [N, Y, N, Y],
            "/required",
        ),
        row(
            "remove optional property (closed)",
            closed(base_props(), req.clone()),
            closed(json!({"id": {"type": "string"}}), req.clone()),
            [N, Y, N, Y],
            "/properties/amount",
        ),
        row(
            "remove optional property (open)",
            open(base_props(), req.clone()),
            open(json!({"id": {"type": "string"}}), req.clone()),
            [Y, N, N, Y],
            "/properties/amount",
        ),
        row(
            "remove required property (closed)",
            closed(base_props(), req.clone()),
            closed(json!({"amount": {"type": "number"}}), json!([])),
            [N, N, N, Y],
            "/properties/id|/required",
        ),
        row(
            "rename property (closed)",
            closed(base_props(), req.clone()),
            closed(
                json!({"id": {"type": "string"}, "total": {"type": "number"}}),
                req.clone(),
            ),
            [N, N, N, Y],
            "/properties/",
        ),
        row(
            "rename required property (closed)",
            closed(base_props(), req.clone()),
            closed(
                json!({"key": {"type": "string"}, "amount": {"type": "number"}}),
                json!(["key"]),
            ),
            [N, N, N, Y],
            "/",
        ),
        row(
            "widen type integer → number",
            closed(with(json!({"amount": {"type": "integer"}})), req.clone()),
            closed(base_props(), req.clone()),
            [Y, N, N, Y],
            "/properties/amount/type",
        ),
        row(
            "widen type string → string|null",
            closed(base_props(), req.clone()),
            closed(
                with(json!({"id": {"type": ["string", "null"]}})),
                req.clone(),
            ),
            [Y, N, N, Y],
            "/properties/id/type",
        ),
        row(
            "narrow type number → integer",
            closed(base_props(), req.clone()),
            closed(with(json!({"amount": {"type": "integer"}})), req.clone()),
            [N, Y, N, Y],
            "/properties/amount/type",
        ),
        row(
            "change type number → string",
            closed(base_props(), req.clone()),
            closed(with(json!({"amount": {"type": "string"}})), req.clone()),
            [N, N, N, Y],
            "/properties/amount/type",
        ),
        row(
            "enum value added",
            closed(
                with(json!({"stage": {"enum": ["open", "won"]}})),
                req.clone(),
            ),
            closed(
                with(json!({"stage": {"enum": ["open", "won", "lost"]}})),
                req.clone(),
            ),
            [Y, N, N, Y],
            "/properties/stage/enum",
        ),
        row(
            "enum value removed",
            closed(
                with(json!({"stage": {"enum": ["open", "won", "lost"]}})),
                req.clone(),
            ),
            closed(
                with(json!({"stage": {"enum": ["open", "won"]}})),
                req.clone(),
            ),
            [N, Y, N, Y],
            "/properties/stage/enum",
        ),
        row(
            "const changed",
            closed(with(json!({"kind": {"const": "deal"}})), req.clone()),
            closed(with(json!({"kind": {"const": "lead"}})), req.clone()),
            [N, N, N, Y],
            "/properties/kind/const",
        ),
        row(
            "nested object: optional property added",
            closed(
                with(json!({"owner": closed(json!({"id": {"type": "string"}}), json!(["id"]))})),
                req.clone(),
            ),
            closed(
                with(
                    json!({"owner": closed(json!({"id": {"type": "string"}, "name": {"type": "string"}}), json!(["id"]))}),
                ),
                req.clone(),
            ),
            [Y, N, N, Y],
            "/properties/owner/properties/name",
        ),
        row(
            "nested object: required property added",
            closed(
                with(json!({"owner": closed(json!({"id": {"type": "string"}}), json!(["id"]))})),
                req.clone(),
            ),
            closed(
                with(
                    json!({"owner": closed(json!({"id": {"type": "string"}, "name": {"type": "string"}}), json!(["id", "name"]))}),
                ),
                req.clone(),
            ),
            [N, N, N, Y],
            "/properties/owner/",
        ),
        row(
            "array items narrowed",
            closed(
                with(json!({"tags": {"type": "array", "items": {"type": ["string", "integer"]}}})),
                req.clone(),
            ),
            closed(
                with(json!({"tags": {"type": "array", "items": {"type": "string"}}})),
                req.clone(),
            ),
            [N, Y, N, Y],
            "/properties/tags/items/type",
        ),
        row(
            "type union: string → anyOf string|number",
            closed(with(json!({"ref": {"type": "string"}})), req.clone()),
            closed(
                with(json!({"ref": {"anyOf": [{"type": "string"}, {"type": "number"}]}})),
                req.clone(),
            ),
            [Y, N, N, Y],
            "/properties/ref/",
        ),
        row(
            "type union: anyOf ↔ type array (same set)",
            closed(
                with(json!({"ref": {"type": ["string", "number"]}})),
                req.clone(),
            ),
            closed(
                with(json!({"ref": {"anyOf": [{"type": "string"}, {"type": "number"}]}})),
                req.clone(),
            ),
            [Y, Y, Y, Y],
            "",
        ),
        row(
            "type union: oneOf branch dropped",
            closed(
                with(json!({"ref": {"oneOf": [{"type": "string"}, {"type": "integer"}]}})),
                req.clone(),
            ),
            closed(
                with(json!({"ref": {"oneOf": [{"type": "string"}]}})),
                req.clone(),
            ),
            [N, Y, N, Y],
            "/properties/ref/",
        ),
        row(
            "additionalProperties false → true",
            closed(base_props(), req.clone()),
            open(base_props(), req.clone()),
            [Y, N, N, Y],
            "/additionalProperties",
        ),
        row(
            "additionalProperties true → false",
            open(base_props(), req.clone()),
            closed(base_props(), req.clone()),
            [N, Y, N, Y],
            "/additionalProperties",
        ),
        row(
            "optional → required",
            closed(base_props(), req.clone()),
            closed(base_props(), json!(["id", "amount"])),
            [N, Y, N, Y],
            "/required",
        ),
        row(
            "required → optional",
            closed(base_props(), json!(["id", "amount"])),
            closed(base_props(), req.clone()),
            [Y, N, N, Y],
            "/required",
        ),
        row(
            "maxLength tightened",
            closed(
                with(json!({"id": {"type": "string", "maxLength": 100}})),
                req.clone(),
            ),
            closed(
                with(json!({"id": {"type": "string", "maxLength": 50}})),
                req.clone(),
            ),
            [N, Y, N, Y],
            "/properties/id/maxLength",
        ),
        row(
            "minimum raised",
            closed(
                with(json!({"amount": {"type": "number", "minimum": 0}})),
                req.clone(),
            ),
            closed(
                with(json!({"amount": {"type": "number", "minimum": 10}})),
                req.clone(),
            ),
            [N, Y, N, Y],
            "/properties/amount/minimum",
        ),
        row(
            "pattern added",
            closed(base_props(), req.clone()),
            closed(
                with(json!({"id": {"type": "string", "pattern": "^d-"}})),
                req.clone(),
            ),
            [N, Y, N, Y],
            "/properties/id/pattern",
        ),
        row(
            "format added",
            closed(with(json!({"at": {"type": "string"}})), req.clone()),
            closed(
                with(json!({"at": {"type": "string", "format": "date-time"}})),
                req.clone(),
            ),
            [N, Y, N, Y],
            "/properties/at/format",
        ),
        row(
            "description and examples only",
            closed(base_props(), req.clone()),
            {
                let mut s = closed(base_props(), req.clone());
                s["description"] = json!("now documented");
                s["examples"] = json!([{"id": "x"}]);
                s
            },
            [Y, Y, Y, Y],
            "",
        ),
        row(
            "not understood keyword changed (not)",
            closed(
                with(json!({"id": {"type": "string", "not": {"const": "a"}}})),
                req.clone(),
            ),
            closed(
                with(json!({"id": {"type": "string", "not": {"const": "b"}}})),
                req.clone(),
            ),
            [N, N, N, Y],
            "/properties/id/not",
        ),
    ]
}

const MODES: [CompatibilityMode; 4] = [
    CompatibilityMode::Backward,
    CompatibilityMode::Forward,
    CompatibilityMode::Full,
    CompatibilityMode::None,
];

#[test]
fn the_matrix_has_the_kinds_of_change_asked_for() {
    let rows = matrix();
    assert!(rows.len() >= 30);
    for kind in [
        "add optional",
        "add required",
        "remove",
        "rename",
        "widen type",
        "narrow type",
        "enum value added",
        "enum value removed",
        "nested object",
        "type union",
        "additionalProperties",
    ] {
        assert!(rows.iter().any(|r| r.change.contains(kind)), "{kind}");
    }
}

#[test]
fn compatibility_matrix() {
    let mut failures = Vec::new();
    for r in matrix() {
        for (mode, expected) in MODES.iter().zip(r.expect) {
            let report = check_compatibility(&r.old, &r.new, *mode);
            if report.is_compatible() != expected {
                failures.push(format!(
                    "{} under {mode}: expected {}, got {:?}",
                    r.change,
                    if expected { "accept" } else { "reject" },
                    report.breaking
                ));
            }
            let named = |b: &crmbus_schema::BreakingChange| {
                r.path.split('|').any(|p| b.path.starts_with(p))
            };
            if !expected && !report.breaking.iter().any(named) {
                failures.push(format!(
                    "{} under {mode}: no breaking change under {}: {:?}",
                    r.change, r.path, report.breaking
                ));
            }
            for b in &report.breaking {
                assert!(b.path.starts_with('/') && !b.reason.is_empty(), "{b:?}");
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn the_registry_applies_the_matrix_per_mode() {
    for r in matrix() {
        for (mode, expected) in MODES.iter().zip(r.expect) {
            let registry = SchemaRegistry::open(Arc::new(MemoryStateStore::new()))
                .await
                .expect("open");
            registry
                .set_compatibility("t.changed", *mode)
                .await
                .expect("mode");
            registry
                .register("t.changed", r.old.clone())
                .await
                .expect("v1");
            let check = registry.check("t.changed", &r.new).expect("check");
            assert_eq!(check.is_compatible(), expected, "{} under {mode}", r.change);
            match registry.register("t.changed", r.new.clone()).await {
                Ok(reg) => {
                    assert!(expected, "{} under {mode} was registered", r.change);
                    // An identical schema returns its existing version instead.
                    assert_eq!(reg.version, if r.old == r.new { 1 } else { 2 });
                }
                Err(SchemaError::Incompatible {
                    changes,
                    against,
                    mode: m,
                    ..
                }) => {
                    assert!(!expected, "{} under {mode}: {changes:?}", r.change);
                    assert_eq!((against, m), (1, *mode));
                    assert!(!changes.is_empty());
                    assert_eq!(registry.latest("t.changed").expect("latest").version, 1);
                }
                Err(other) => panic!("{}: {other}", r.change),
            }
        }
    }
}
