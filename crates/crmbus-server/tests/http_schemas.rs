//! The schema registry over HTTP, with the built-in catalog loaded: listing, validation at
//! publish (every violation listed, nothing stored), versions and compatibility.

mod common;

use common::{error_fields, event, TestServer};
use serde_json::{json, Value};

const CATALOG: &[(&str, &str)] = &[("CRMBUS_SCHEMAS_CATALOG", "true")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_catalog_is_listed() {
    let s = TestServer::start("embedded", CATALOG).await;
    let (st, body) = s.get("/v1/schemas").await;
    assert_eq!(st, 200);
    let types: Vec<&str> = body["types"]
        .as_array()
        .expect("types")
        .iter()
        .map(|t| t["event_type"].as_str().expect("type"))
        .collect();
    for ty in [
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
    ] {
        assert!(types.contains(&ty), "{ty} missing from {types:?}");
    }
    assert_eq!(types.len(), 34);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deal_won_with_two_violations_is_400_listing_both_and_stores_nothing() {
    let s = TestServer::start("embedded", CATALOG).await;
    s.create_topic("deals", 1).await;
    // Two violations: `amount` is not a decimal string, `currency` is not an ISO code.
    let bad = event(
        "w-1",
        "deal.won",
        "deal-42",
        json!({"deal_id": "deal-42", "amount": 1250, "currency": "euro"}),
    );
    let (st, body) = s.publish("deals", &bad).await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(body["code"], "schema_violation");
    let fields = error_fields(&body);
    assert_eq!(fields.len(), 2, "{body}");
    assert!(fields.contains(&"data/amount".to_string()), "{fields:?}");
    assert!(fields.contains(&"data/currency".to_string()), "{fields:?}");
    assert_eq!(s.event_count("deals").await, 0);

    let good = event(
        "w-2",
        "deal.won",
        "deal-42",
        json!({"deal_id": "deal-42", "amount": "1250.00", "currency": "EUR"}),
    );
    let (st, body) = s.publish("deals", &good).await;
    assert_eq!(st, 201, "{body}");
    let (_, body) = s.get("/v1/topics/deals/events").await;
    assert_eq!(
        body["events"][0]["event"]["dataschema"],
        "urn:crmbus:schema:deal.won:2"
    );
    // Types without a schema pass on a topic that does not require schemas…
    let (st, _) = s
        .publish(
            "deals",
            &event("x-1", "com.acme.custom", "k", json!({"any": 1})),
        )
        .await;
    assert_eq!(st, 201);
    // …and are rejected on one that does.
    let (st, body) = s
        .post(
            "/v1/topics",
            json!({"name": "strict", "partitions": 1, "require_schemas": true}),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["require_schemas"], true);
    let (st, body) = s
        .publish(
            "strict",
            &event("x-2", "com.acme.custom", "k", json!({"any": 1})),
        )
        .await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(error_fields(&body), ["type"]);
    let dir = s.stop().await;

    // The topic still requires schemas after a restart.
    let s = TestServer::start_in(dir, "embedded", CATALOG).await;
    let (st, _) = s
        .publish(
            "strict",
            &event("x-3", "com.acme.custom", "k", json!({"any": 1})),
        )
        .await;
    assert_eq!(st, 400);
    assert_eq!(s.event_count("strict").await, 0);
    s.stop().await;
}

/// `require_schemas` is part of the topic's spec, written with the topic in one step: a
/// topic whose spec says so is enforced even if nothing else was recorded about it (as
/// when a server stopped right after creating it), and the flag is reported from the spec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_schemas_is_read_from_the_topic_spec() {
    let mut spec = crmbus::TopicSpec::new("strict", 1);
    spec.require_schemas = true;
    let dir = data_dir_with(spec, None).await;
    assert_strict_topic_enforced(dir).await;
}

/// A data directory with topic `spec` written straight to the embedded log (as a server
/// would leave it), and `legacy_flag` recorded under the state key older servers used.
async fn data_dir_with(spec: crmbus::TopicSpec, legacy_flag: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = crmbus_embedded::EmbeddedLog::open(
        dir.path().join("data"),
        crmbus_embedded::EmbeddedOptions::default(),
    )
    .expect("open the log");
    crmbus::EventLog::create_topic(&log, spec)
        .await
        .expect("create");
    if let Some(topic) = legacy_flag {
        log.state_store()
            .put("server/require_schemas", topic, b"true".to_vec())
            .await
            .expect("legacy record");
    }
    crmbus::EventLog::close(&log).await.expect("close");
    dir
}

/// Starts a server on `dir` and checks that topic `strict` reports and enforces
/// `require_schemas`.
async fn assert_strict_topic_enforced(dir: tempfile::TempDir) {
    let s = TestServer::start_in(dir, "embedded", CATALOG).await;
    let (st, body) = s.get("/v1/topics/strict").await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["require_schemas"], true, "{body}");
    let (st, body) = s
        .publish(
            "strict",
            &event("x-1", "com.acme.custom", "k", json!({"any": 1})),
        )
        .await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(error_fields(&body), ["type"]);
    assert_eq!(s.event_count("strict").await, 0);
    s.stop().await;
}

/// A data directory from before the flag was part of the spec (a topic without it, and
/// the flag recorded in the state store) keeps its enforcement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_schemas_recorded_the_old_way_is_still_enforced() {
    let dir = data_dir_with(crmbus::TopicSpec::new("strict", 1), Some("strict")).await;
    assert_strict_topic_enforced(dir).await;
}

fn v1() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"quote_id": {"type": "string"}, "total": {"type": "string"}},
        "required": ["quote_id"],
        "additionalProperties": false
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_compatibility_check_and_validate() {
    let s = TestServer::start("embedded", CATALOG).await;
    let (st, body) = s
        .post("/v1/schemas/quote.sent/versions", json!({"schema": v1()}))
        .await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(body["uri"], "urn:crmbus:schema:quote.sent:1");
    // The same schema again: the existing version, 200.
    let (st, body) = s
        .post("/v1/schemas/quote.sent/versions", json!({"schema": v1()}))
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["created"], false);

    // Adding an optional property to a closed schema is backward compatible.
    let mut v2 = v1();
    v2["properties"]["note"] = json!({"type": "string"});
    let (st, body) = s
        .post("/v1/schemas/quote.sent/versions", json!({"schema": v2}))
        .await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["version"], 2);

    // Adding a required property and narrowing a type are not: 409 listing both paths.
    let mut v3 = v2.clone();
    v3["properties"]["owner"] = json!({"type": "string"});
    v3["required"] = json!(["quote_id", "owner"]);
    v3["properties"]["total"] = json!({"type": "string", "maxLength": 3});
    let (st, body) = s
        .post(
            "/v1/schemas/quote.sent/versions",
            json!({"schema": v3.clone()}),
        )
        .await;
    assert_eq!(st, 409, "{body}");
    assert_eq!(body["code"], "schema_incompatible");
    let paths = error_fields(&body);
    assert!(paths.iter().any(|p| p.contains("required")), "{paths:?}");
    assert!(
        paths.iter().any(|p| p.contains("/properties/total")),
        "{paths:?}"
    );

    let (st, body) = s
        .post(
            "/v1/schemas/quote.sent/check",
            json!({"schema": v3.clone()}),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(body["compatible"], false);
    assert!(body["breaking"].as_array().expect("breaking").len() >= 2);

    let (st, body) = s
        .client
        .put(s.url("/v1/schemas/quote.sent/compatibility"))
        .json(&json!({"mode": "none"}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map(|st| (st, Value::Null))
        .expect("put");
    assert_eq!(st, 200, "{body}");
    let (st, body) = s
        .post("/v1/schemas/quote.sent/versions", json!({"schema": v3}))
        .await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["version"], 3);

    let (st, body) = s.get("/v1/schemas/quote.sent/versions/2").await;
    assert_eq!(st, 200);
    assert_eq!(body["schema"]["properties"]["note"]["type"], "string");
    let (st, body) = s.get("/v1/schemas/quote.sent/versions/latest").await;
    assert_eq!(st, 200);
    assert_eq!(body["version"], 3);
    let (st, _) = s.get("/v1/schemas/quote.sent/versions/9").await;
    assert_eq!(st, 404);
    let (st, _) = s.get("/v1/schemas/no.such/versions/1").await;
    assert_eq!(st, 404);
    let r = s
        .client
        .put(s.url("/v1/schemas/quote.sent/compatibility"))
        .json(&json!({"mode": "sideways"}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status().as_u16(), 400);
    let (st, body) = s
        .post(
            "/v1/schemas/quote.sent/versions",
            json!({"schema": {"type": 7}}),
        )
        .await;
    assert_eq!(st, 400, "{body}");

    let r = s
        .client
        .post(s.url("/v1/schemas/validate"))
        .header("content-type", "application/cloudevents+json")
        .body(event("v-1", "deal.won", "deal-1", json!({"deal_id": "deal-1"})).to_string())
        .send()
        .await
        .expect("validate");
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["valid"], false);
    let fields = error_fields(&body);
    assert!(fields.contains(&"data/amount".to_string()), "{fields:?}");
    s.stop().await;
}
