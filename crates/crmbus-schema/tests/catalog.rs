//! The built-in catalog: every file is well-formed and follows the catalog policy, every
//! example validates, each version only relaxes the one before, and mutated examples are
//! rejected with the offending path named while undescribed fields are accepted.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use crmbus::MemoryStateStore;
use crmbus_schema::catalog::{self, CatalogEntry};
use crmbus_schema::{check_compatibility, CompatibilityMode, SchemaError, SchemaRegistry};
use serde_json::{json, Value};

const EXPECTED_TYPES: [&str; 34] = [
    "deal.created",
    "deal.updated",
    "deal.stage_changed",
    "deal.won",
    "deal.lost",
    "deal.deleted",
    "lead.created",
    "lead.qualified",
    "lead.converted",
    "lead.rejected",
    "account.created",
    "account.updated",
    "account.merged",
    "contact.created",
    "contact.updated",
    "contact.bounced",
    "user.registered",
    "user.updated",
    "user.logged_in",
    "user.deleted",
    "user.created",
    "user.login",
    "user.logout",
    "order.created",
    "invoice.generated",
    "payment.processed",
    "inventory.updated",
    "workflow.started",
    "workflow.completed",
    "task.assigned",
    "task.completed",
    "threat.detected",
    "incident.created",
    "alert.triggered",
];

fn catalog_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

fn entries() -> Vec<CatalogEntry> {
    catalog::builtin().expect("the built-in catalog parses")
}

async fn registry() -> SchemaRegistry {
    let registry = SchemaRegistry::open(Arc::new(MemoryStateStore::new()))
        .await
        .expect("open");
    let load = registry.load_builtin_catalog().await.expect("load");
    assert!(load.skipped.is_empty(), "{:?}", load.skipped);
    registry
}

fn violation_paths(err: SchemaError) -> Vec<String> {
    match err {
        SchemaError::Violation { violations, .. } => {
            violations.into_iter().map(|v| v.path).collect()
        }
        other => panic!("expected schema_violation, got {other:?}"),
    }
}

#[test]
fn the_catalog_has_every_expected_type() {
    let got: BTreeSet<String> = entries().into_iter().map(|e| e.event_type).collect();
    let want: BTreeSet<String> = EXPECTED_TYPES.iter().map(|s| s.to_string()).collect();
    assert_eq!(got, want);
}

#[test]
fn the_embedded_list_matches_the_schemas_directory() {
    let on_disk = catalog::read_dir(&catalog_dir()).expect("read schemas/");
    let embedded = entries();
    let key = |e: &CatalogEntry| (e.event_type.clone(), e.version, e.schema.clone());
    assert_eq!(
        on_disk.iter().map(key).collect::<Vec<_>>(),
        embedded.iter().map(key).collect::<Vec<_>>(),
        "add new files under schemas/ to catalog::EMBEDDED"
    );
}

/// Every type's latest version: what publishes are validated against.
fn latest_entries() -> Vec<CatalogEntry> {
    let mut latest: Vec<CatalogEntry> = Vec::new();
    for e in entries() {
        match latest.last_mut() {
            Some(last) if last.event_type == e.event_type => *last = e,
            _ => latest.push(e),
        }
    }
    latest
}

/// Every `additionalProperties: false` in a schema, by its path.
fn closed_paths(schema: &Value, path: &str, found: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "examples" {
                    continue;
                }
                if k == "additionalProperties" && *v == json!(false) {
                    found.push(path.to_string());
                }
                closed_paths(v, &format!("{path}/{k}"), found);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                closed_paths(v, &format!("{path}/{i}"), found);
            }
        }
        _ => {}
    }
}

fn required(e: &CatalogEntry) -> Vec<String> {
    e.schema["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

#[test]
fn every_schema_follows_the_catalog_policy() {
    for e in entries() {
        let s = &e.schema;
        let ty = &e.event_type;
        assert_eq!(
            s["$schema"],
            json!("https://json-schema.org/draft/2020-12/schema"),
            "{ty}"
        );
        assert_eq!(
            s["$id"],
            json!(format!("urn:crmbus:schema:{ty}:{}", e.version)),
            "{ty}"
        );
        assert_eq!(s["title"], json!(ty), "{ty}");
        assert!(
            s["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{ty}"
        );
        assert_eq!(s["type"], json!("object"), "{ty}");
        assert!(
            s["examples"].as_array().is_some_and(|a| !a.is_empty()),
            "{ty}: examples"
        );
        let props = s["properties"].as_object().expect("properties");
        for r in required(&e) {
            assert!(
                props.contains_key(&r),
                "{ty}: required {r} is not a property"
            );
        }
        for (name, p) in props {
            assert!(
                p["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{ty}.{name}: description"
            );
            if name.ends_with("_at") {
                assert_eq!(p["format"], json!("date-time"), "{ty}.{name}");
            }
            if name.ends_with("_date") {
                assert_eq!(p["format"], json!("date"), "{ty}.{name}");
            }
            if name == "amount" {
                assert_eq!(
                    p["type"],
                    json!("string"),
                    "{ty}: money is a decimal string"
                );
                assert!(p["pattern"].is_string(), "{ty}: money pattern");
                assert!(
                    props.contains_key("currency"),
                    "{ty}: amount needs currency"
                );
            }
            if name == "currency" {
                assert_eq!(p["pattern"], json!("^[A-Z]{3}$"), "{ty}");
            }
        }
    }
}

/// What the latest versions promise beyond the policy every version follows: open content
/// models, ids that are strings or integers, and for an optional currency, what to assume
/// when it is absent.
#[test]
fn the_latest_versions_are_open_and_say_what_an_absent_field_means() {
    for e in latest_entries() {
        let ty = &e.event_type;
        let mut closed = Vec::new();
        closed_paths(&e.schema, "", &mut closed);
        assert!(closed.is_empty(), "{ty}: closed at {closed:?}");
        let required = required(&e);
        let props = e.schema["properties"].as_object().expect("properties");
        for (name, p) in props {
            if name.ends_with("_id") {
                assert_eq!(p["type"], json!(["string", "integer"]), "{ty}.{name}");
            }
            if name == "currency" && !required.contains(name) {
                let d = p["description"].as_str().unwrap_or("");
                assert!(d.contains("absent"), "{ty}.currency: {d}");
            }
        }
    }
}

#[test]
fn each_new_version_only_relaxes_the_one_before() {
    let all = entries();
    let mut relaxed = 0;
    for pair in all.windows(2) {
        let (old, new) = (&pair[0], &pair[1]);
        if old.event_type != new.event_type {
            continue;
        }
        let ty = &new.event_type;
        let report = check_compatibility(&old.schema, &new.schema, CompatibilityMode::Backward);
        assert!(
            report.is_compatible(),
            "{ty} v{}: {:?}",
            new.version,
            report.breaking
        );
        let old_required = required(old);
        for r in required(new) {
            assert!(
                old_required.contains(&r),
                "{ty} v{}: {r} newly required",
                new.version
            );
        }
        relaxed += 1;
    }
    assert_eq!(
        relaxed, 31,
        "every type of version 1 has a relaxed version 2"
    );
}

#[tokio::test]
async fn every_example_validates() {
    let registry = registry().await;
    let mut checked = 0;
    for e in entries() {
        for (i, example) in e.schema["examples"]
            .as_array()
            .expect("examples")
            .iter()
            .enumerate()
        {
            if let Err(err) = registry.validate(&e.event_type, Some(e.version), example) {
                panic!("{} v{} example {i}: {err}", e.event_type, e.version);
            }
            checked += 1;
        }
    }
    assert!(checked >= 65 + 34);
}

/// A value of a JSON type the property schema does not allow.
fn wrong_value(property: &Value) -> Value {
    let allowed: Vec<&str> = match &property["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        other => panic!("no type in {other}"),
    };
    let candidates = [
        ("boolean", json!(true)),
        ("string", json!("not this")),
        ("number", json!(1.5)),
        ("array", json!([])),
        ("object", json!({})),
    ];
    candidates
        .into_iter()
        .find(|(t, _)| !allowed.contains(t))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no wrong value for {allowed:?}"))
}

#[tokio::test]
async fn mutated_examples_are_rejected_naming_the_path() {
    let registry = registry().await;
    let mut wrong_types = 0;
    for e in latest_entries() {
        let ty = &e.event_type;
        let example = e.schema["examples"][0].clone();
        for field in required(&e) {
            // A missing required field.
            let mut missing = example.clone();
            missing.as_object_mut().expect("object").remove(&field);
            let err = registry
                .validate(ty, None, &missing)
                .expect_err("missing required field");
            assert_eq!(err.code(), "schema_violation");
            assert_eq!(violation_paths(err), [format!("/{field}")], "{ty}.{field}");
        }
        // A wrong type in every field the example carries, required or optional: what
        // the schema describes is validated when present.
        for field in example.as_object().expect("object").keys() {
            let mut wrong = example.clone();
            wrong[field.as_str()] = wrong_value(&e.schema["properties"][field.as_str()]);
            let paths =
                violation_paths(registry.validate(ty, None, &wrong).expect_err("wrong type"));
            assert!(
                paths.iter().all(|p| p == &format!("/{field}")) && !paths.is_empty(),
                "{ty}.{field}: {paths:?}"
            );
            wrong_types += 1;
        }

        // A field the schema does not describe is accepted: producers add fields before
        // consumers know them.
        let mut extra = example.clone();
        extra["field_added_by_a_later_deploy"] = json!({"any": ["shape"]});
        registry
            .validate(ty, None, &extra)
            .unwrap_or_else(|err| panic!("{ty}: an undescribed field is rejected: {err}"));
    }
    assert!(wrong_types > 150, "{wrong_types}");
}

#[tokio::test]
async fn formats_money_and_nested_objects_are_enforced() {
    let registry = registry().await;
    let won = json!({"deal_id": "d-1", "amount": "1,250.00", "currency": "eur",
        "close_date": "2026-13-01", "won_at": "yesterday"});
    let mut paths = violation_paths(registry.validate("deal.won", None, &won).expect_err("bad"));
    paths.sort();
    assert_eq!(paths, ["/amount", "/close_date", "/currency", "/won_at"]);

    // An amount without its currency is in the organisation's default currency.
    let created = json!({"deal_id": "d-1", "name": "n", "amount": "10"});
    registry
        .validate("deal.created", None, &created)
        .expect("currency is optional");
    // Version 1 still says otherwise for a producer that pins it.
    assert_eq!(
        violation_paths(
            registry
                .validate("deal.created", Some(1), &created)
                .expect_err("no currency")
        ),
        ["/currency"],
        "an amount without its currency (version 1's dependentRequired)"
    );

    let task = json!({"task_id": "t-1", "assignee_id": "u-1",
        "related_to": {"entity_type": "planet", "entity_id": "p-1", "extra": 1}});
    assert_eq!(
        violation_paths(
            registry
                .validate("task.assigned", None, &task)
                .expect_err("nested")
        ),
        ["/related_to/entity_type"]
    );

    let order = json!({"order_id": "o-1", "account_id": "a-1", "amount": "5", "currency": "EUR",
        "items": [{"sku": "s", "quantity": 1}, {"sku": "s", "quantity": 0}]});
    assert_eq!(
        violation_paths(
            registry
                .validate("order.created", None, &order)
                .expect_err("items")
        ),
        ["/items/1/quantity"]
    );
}

/// The catalog is open, but a site can still make a type strict: switch the type to
/// `forward` (a closed version accepts only what the open one did) and register it.
#[tokio::test]
async fn a_stricter_version_can_be_registered_per_type() {
    let registry = registry().await;
    let mut strict = registry.latest("deal.won").expect("latest").schema.clone();
    strict["$id"] = json!("urn:crmbus:schema:deal.won:3");
    strict["additionalProperties"] = json!(false);
    strict["required"] = json!(["deal_id", "amount", "currency"]);
    strict["examples"] = json!([{"deal_id": "d-1", "amount": "5", "currency": "EUR"}]);

    let err = registry
        .register("deal.won", strict.clone())
        .await
        .expect_err("closing is not backward compatible");
    assert_eq!(err.code(), "schema_incompatible");

    registry
        .set_compatibility("deal.won", CompatibilityMode::Forward)
        .await
        .expect("mode");
    let registration = registry
        .register("deal.won", strict)
        .await
        .expect("register");
    assert_eq!(registration.version, 3);
    let extra = json!({"deal_id": "d-1", "amount": "5", "currency": "EUR", "region": "EMEA"});
    assert_eq!(
        violation_paths(
            registry
                .validate("deal.won", None, &extra)
                .expect_err("closed")
        ),
        ["/region"]
    );
    let no_currency = json!({"deal_id": "d-1", "amount": "5"});
    assert_eq!(
        violation_paths(
            registry
                .validate("deal.won", None, &no_currency)
                .expect_err("required")
        ),
        ["/currency"]
    );
}

#[tokio::test]
async fn violations_do_not_echo_values() {
    let registry = registry().await;
    let data = json!({"contact_id": "c-1", "email": "secret-person@@example"});
    let err = registry
        .validate("contact.bounced", None, &data)
        .expect_err("bad email");
    assert!(!err.to_string().contains("secret-person"), "{err}");
    assert!(err.to_string().contains("/email"), "{err}");
}

#[tokio::test]
async fn loading_the_catalog_twice_changes_nothing() {
    let store = MemoryStateStore::new();
    let registry = SchemaRegistry::open(Arc::new(store.clone()))
        .await
        .expect("open");
    let first = registry.load_builtin_catalog().await.expect("load");
    assert_eq!(first.registrations.len(), entries().len());
    assert!(first.registrations.iter().all(|r| r.created));
    let second = registry
        .load_catalog(&catalog_dir())
        .await
        .expect("load dir");
    assert!(second.registrations.iter().all(|r| !r.created));
    for t in registry.list() {
        let files = entries()
            .iter()
            .filter(|e| e.event_type == t.event_type)
            .count() as u32;
        assert_eq!(
            t.versions,
            (1..=files).collect::<Vec<_>>(),
            "{}",
            t.event_type
        );
    }
}

#[tokio::test]
async fn a_newer_catalog_file_becomes_latest_and_an_incompatible_one_is_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let won = dir.path().join("deal.won");
    std::fs::create_dir_all(&won).expect("mkdir");
    let v1 = std::fs::read_to_string(catalog_dir().join("deal.won/1.json")).expect("read");
    std::fs::write(won.join("1.json"), &v1).expect("write");
    let mut v2: Value = serde_json::from_str(&v1).expect("json");
    v2["$id"] = json!("urn:crmbus:schema:deal.won:2");
    v2["properties"]["region"] = json!({"type": "string", "description": "Sales region."});
    std::fs::write(won.join("2.json"), v2.to_string()).expect("write");
    std::fs::write(dir.path().join("README.md"), "ignored").expect("write");

    let registry = SchemaRegistry::open(Arc::new(MemoryStateStore::new()))
        .await
        .expect("open");
    let load = registry.load_catalog(dir.path()).await.expect("load");
    assert_eq!(load.registrations.len(), 2);
    assert_eq!(registry.latest("deal.won").expect("latest").version, 2);

    // A catalog whose next file breaks compatibility: skipped and reported, not fatal.
    let mut v3 = v2.clone();
    v3["$id"] = json!("urn:crmbus:schema:deal.won:3");
    v3["required"] = json!(["deal_id", "amount", "currency", "region"]);
    v3["examples"] = json!([{"deal_id": "d", "amount": "1", "currency": "EUR", "region": "EMEA"}]);
    std::fs::write(won.join("3.json"), v3.to_string()).expect("write");
    let load = registry.load_catalog(dir.path()).await.expect("load");
    assert_eq!(load.skipped.len(), 1);
    assert_eq!(load.skipped[0].error.code(), "schema_incompatible");
    assert_eq!(registry.latest("deal.won").expect("latest").version, 2);

    // A gap in the numbering is a malformed catalog.
    std::fs::remove_file(won.join("2.json")).expect("rm");
    let err = registry.load_catalog(dir.path()).await.expect_err("gap");
    assert_eq!(err.code(), "catalog_error");
}
