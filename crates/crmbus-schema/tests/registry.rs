//! The registry: versions, identical re-registration, check, modes, errors and durability.

use std::sync::Arc;

use crmbus::{EventLog, MemoryStateStore, StateStore};
use crmbus_embedded::{EmbeddedLog, EmbeddedOptions};
use crmbus_schema::{CompatibilityMode, SchemaError, SchemaRegistry, NAMESPACE};
use serde_json::{json, Value};

fn deal_won_v1() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "description": "test deal.won",
        "type": "object",
        "properties": {
            "deal_id": {"type": "string"},
            "amount": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "close_date": {"type": "string", "format": "date"}
        },
        "required": ["deal_id", "amount", "currency"],
        "additionalProperties": false
    })
}

fn deal_won_v2() -> Value {
    let mut s = deal_won_v1();
    s["properties"]["region"] = json!({"type": "string"});
    s
}

async fn open(store: &MemoryStateStore) -> SchemaRegistry {
    SchemaRegistry::open(Arc::new(store.clone()))
        .await
        .expect("open")
}

#[tokio::test]
async fn versions_count_up_and_are_listed() {
    let registry = open(&MemoryStateStore::new()).await;
    let r1 = registry
        .register("deal.won", deal_won_v1())
        .await
        .expect("v1");
    assert_eq!((r1.version, r1.created), (1, true));
    assert_eq!(r1.uri, "urn:crmbus:schema:deal.won:1");
    let r2 = registry
        .register("deal.won", deal_won_v2())
        .await
        .expect("v2");
    assert_eq!((r2.version, r2.created), (2, true));
    registry
        .register("lead.created", json!({"type": "object"}))
        .await
        .expect("lead");

    assert_eq!(
        registry.get("deal.won", 1).expect("get").schema,
        deal_won_v1()
    );
    let latest = registry.latest("deal.won").expect("latest");
    assert_eq!(
        (latest.version, latest.uri.as_str()),
        (2, "urn:crmbus:schema:deal.won:2")
    );
    let list = registry.list();
    let summary: Vec<(&str, Vec<u32>, Option<u32>)> = list
        .iter()
        .map(|t| (t.event_type.as_str(), t.versions.clone(), t.latest))
        .collect();
    assert_eq!(
        summary,
        [
            ("deal.won", vec![1, 2], Some(2)),
            ("lead.created", vec![1], Some(1))
        ]
    );
}

#[tokio::test]
async fn an_identical_schema_returns_the_existing_version() {
    let store = MemoryStateStore::new();
    let registry = open(&store).await;
    registry
        .register("deal.won", deal_won_v1())
        .await
        .expect("v1");
    registry
        .register("deal.won", deal_won_v2())
        .await
        .expect("v2");
    let keys_before = store.scan(NAMESPACE, "").await.expect("scan").len();

    let again = registry
        .register("deal.won", deal_won_v2())
        .await
        .expect("again");
    assert_eq!((again.version, again.created), (2, false));
    // Also an older version: it is returned, not re-added as a new latest.
    let older = registry
        .register("deal.won", deal_won_v1())
        .await
        .expect("older");
    assert_eq!((older.version, older.created), (1, false));

    assert_eq!(registry.latest("deal.won").expect("latest").version, 2);
    assert_eq!(
        store.scan(NAMESPACE, "").await.expect("scan").len(),
        keys_before
    );
    let check = registry.check("deal.won", &deal_won_v1()).expect("check");
    assert_eq!(check.existing, Some(1));
    assert!(check.is_compatible());
}

#[tokio::test]
async fn check_says_what_register_would_do_without_registering() {
    let registry = open(&MemoryStateStore::new()).await;
    let fresh = registry.check("deal.won", &deal_won_v1()).expect("check");
    assert!(fresh.is_compatible());
    assert_eq!((fresh.against, fresh.existing), (None, None));
    assert!(matches!(
        registry.latest("deal.won"),
        Err(SchemaError::NotFound { version: None, .. })
    ));

    registry
        .register("deal.won", deal_won_v1())
        .await
        .expect("v1");
    let ok = registry.check("deal.won", &deal_won_v2()).expect("check");
    assert!(ok.is_compatible());
    assert_eq!(
        (ok.against, ok.mode),
        (Some(1), CompatibilityMode::Backward)
    );
    let mut breaking = deal_won_v1();
    breaking["required"] = json!(["deal_id", "amount", "currency", "close_date"]);
    let bad = registry.check("deal.won", &breaking).expect("check");
    assert!(!bad.is_compatible());
    assert_eq!(bad.report.breaking[0].path, "/required");
    assert_eq!(registry.latest("deal.won").expect("latest").version, 1);

    let err = registry
        .check("deal.won", &json!({"type": "nope"}))
        .expect_err("invalid");
    assert_eq!(err.code(), "invalid_schema");
}

#[tokio::test]
async fn an_incompatible_version_is_rejected_listing_every_breaking_change() {
    let registry = open(&MemoryStateStore::new()).await;
    registry
        .register("deal.won", deal_won_v1())
        .await
        .expect("v1");
    let mut next = deal_won_v1();
    next["properties"]["amount"] = json!({"type": "number"}); // narrowed to another type
    next["properties"]["region"] = json!({"type": "string"});
    next["required"] = json!(["deal_id", "amount", "currency", "region"]); // added required
    next["properties"]
        .as_object_mut()
        .expect("props")
        .remove("close_date"); // removed from a closed model
    let err = registry
        .register("deal.won", next)
        .await
        .expect_err("incompatible");
    assert_eq!(err.code(), "schema_incompatible");
    let text = err.to_string();
    let SchemaError::Incompatible {
        changes,
        against,
        mode,
        ..
    } = err
    else {
        panic!("expected incompatible");
    };
    assert_eq!((against, mode), (1, CompatibilityMode::Backward));
    let mut paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/properties/amount/type",
            "/properties/close_date",
            "/required"
        ]
    );
    for p in paths {
        assert!(text.contains(p), "{text}");
    }
    assert_eq!(registry.latest("deal.won").expect("latest").version, 1);
}

#[tokio::test]
async fn modes_are_per_type_and_none_accepts_anything() {
    let registry = open(&MemoryStateStore::new()).await;
    assert_eq!(
        registry.compatibility("deal.won"),
        CompatibilityMode::Backward
    );
    registry
        .register("deal.won", deal_won_v1())
        .await
        .expect("v1");
    registry
        .set_compatibility("deal.won", CompatibilityMode::None)
        .await
        .expect("mode");
    assert_eq!(registry.compatibility("deal.won"), CompatibilityMode::None);
    assert_eq!(
        registry.compatibility("deal.lost"),
        CompatibilityMode::Backward
    );
    let r = registry
        .register("deal.won", json!({"type": "string"}))
        .await
        .expect("anything goes");
    assert_eq!(r.version, 2);

    registry
        .set_compatibility("deal.lost", CompatibilityMode::Full)
        .await
        .expect("mode before the first version");
    let listed = registry.list();
    assert!(listed.iter().any(|t| t.event_type == "deal.lost"
        && t.mode == CompatibilityMode::Full
        && t.latest.is_none()));
}

#[tokio::test]
async fn bad_arguments_have_stable_codes() {
    let registry = open(&MemoryStateStore::new()).await;
    let cases: Vec<(SchemaError, &str)> = vec![
        (
            registry
                .register("deal/won", json!({}))
                .await
                .expect_err("type"),
            "invalid_argument",
        ),
        (
            registry
                .register("deal.won", json!(["not", "a", "schema"]))
                .await
                .expect_err("schema"),
            "invalid_schema",
        ),
        (
            registry
                .register(
                    "deal.won",
                    json!({"$schema": "http://json-schema.org/draft-04/schema#"}),
                )
                .await
                .expect_err("draft"),
            "invalid_schema",
        ),
        (
            registry.get("deal.won", 1).expect_err("missing"),
            "schema_not_found",
        ),
        (
            registry
                .validate("deal.won", None, &json!({}))
                .expect_err("missing"),
            "schema_not_found",
        ),
        (
            "sideways".parse::<CompatibilityMode>().expect_err("mode"),
            "invalid_argument",
        ),
    ];
    for (err, code) in cases {
        assert_eq!(err.code(), code, "{err}");
    }
}

#[tokio::test]
async fn validate_uses_the_named_version() {
    let registry = open(&MemoryStateStore::new()).await;
    registry
        .register("deal.won", deal_won_v1())
        .await
        .expect("v1");
    registry
        .register("deal.won", deal_won_v2())
        .await
        .expect("v2");
    let data = json!({"deal_id": "d", "amount": "1", "currency": "EUR", "region": "EMEA"});
    assert_eq!(
        registry
            .validate("deal.won", None, &data)
            .expect("latest")
            .version,
        2
    );
    let err = registry
        .validate("deal.won", Some(1), &data)
        .expect_err("v1 is closed");
    let SchemaError::Violation {
        version,
        violations,
        ..
    } = err
    else {
        panic!("expected a violation");
    };
    assert_eq!(version, 1);
    assert_eq!(violations[0].path, "/region");
    assert_eq!(violations[0].keyword, "additionalProperties");
}

#[tokio::test]
async fn versions_and_modes_survive_reopening_the_state_store() {
    let store = MemoryStateStore::new();
    {
        let registry = open(&store).await;
        registry
            .register("deal.won", deal_won_v1())
            .await
            .expect("v1");
        registry
            .register("deal.won", deal_won_v2())
            .await
            .expect("v2");
        registry
            .set_compatibility("deal.won", CompatibilityMode::Full)
            .await
            .expect("mode");
    }
    let reopened = open(&store).await;
    assert_eq!(
        reopened.get("deal.won", 1).expect("v1").schema,
        deal_won_v1()
    );
    assert_eq!(
        reopened.latest("deal.won").expect("v2").schema,
        deal_won_v2()
    );
    assert_eq!(reopened.compatibility("deal.won"), CompatibilityMode::Full);
    // The reopened registry keeps numbering and checking where it left off.
    let again = reopened
        .register("deal.won", deal_won_v2())
        .await
        .expect("same");
    assert_eq!((again.version, again.created), (2, false));
    let mut v3 = deal_won_v2();
    v3["properties"]["owner_id"] = json!({"type": "string"});
    let err = reopened.register("deal.won", v3).await.expect_err("full");
    assert_eq!(err.code(), "schema_incompatible");
}

#[tokio::test]
async fn versions_survive_reopening_the_embedded_state_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = || EmbeddedOptions {
        retention_interval: None,
        ..EmbeddedOptions::default()
    };
    {
        let log = EmbeddedLog::open(dir.path(), opts()).expect("open log");
        let registry = SchemaRegistry::open(log.state_store()).await.expect("open");
        registry.load_builtin_catalog().await.expect("catalog");
        registry
            .register("deal.won", {
                // A site's own version 3: `amount` optional too (a relaxation).
                let mut s = registry.latest("deal.won").expect("v2").schema.clone();
                s["$id"] = json!("urn:crmbus:schema:deal.won:3");
                s["required"] = json!(["deal_id"]);
                s
            })
            .await
            .expect("v3");
        log.close().await.expect("close");
    }
    let log = EmbeddedLog::open(dir.path(), opts()).expect("reopen log");
    let registry = SchemaRegistry::open(log.state_store())
        .await
        .expect("reopen");
    assert_eq!(
        registry.list().len(),
        crmbus_schema::catalog::EMBEDDED
            .iter()
            .filter(|(_, v, _)| *v == 1)
            .count()
    );
    let won = registry.latest("deal.won").expect("latest");
    assert_eq!(won.version, 3);
    assert_eq!(won.schema["required"], json!(["deal_id"]));
    let data = json!({"deal_id": "d"});
    registry
        .validate("deal.won", None, &data)
        .expect("validates after reopen");
    log.close().await.expect("close");
}

/// Two registries on one store (two servers sharing a backend): a reload takes in what
/// the other registered and the mode it set, and keeps the versions it held (the same
/// objects, with their compiled validators).
#[tokio::test]
async fn reload_takes_in_what_another_registry_wrote_and_keeps_what_it_held() {
    let store = MemoryStateStore::new();
    let here = open(&store).await;
    let there = open(&store).await;
    let v1 = json!({"type": "object", "required": ["deal_id"]});
    here.register("deal.won", v1.clone()).await.expect("v1");
    here.reload().await.expect("reload");
    let held = here.get("deal.won", 1).expect("v1 held");
    there.reload().await.expect("reload there");
    // Backward compatible: it requires less.
    let v2 = json!({"type": "object"});
    there.register("deal.won", v2).await.expect("v2 there");
    there
        .set_compatibility("deal.won", CompatibilityMode::Full)
        .await
        .expect("mode there");
    assert!(here.get("deal.won", 2).is_err(), "not seen before a reload");
    here.reload().await.expect("reload");
    assert_eq!(here.latest("deal.won").expect("latest").version, 2);
    assert_eq!(here.compatibility("deal.won"), CompatibilityMode::Full);
    let kept = here.get("deal.won", 1).expect("v1 still held");
    assert!(
        Arc::ptr_eq(&held, &kept),
        "a reload replaced a version it already held"
    );
}
