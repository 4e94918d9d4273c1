//! The HTTP API keeps the promises of its OpenAPI document: found by schemathesis's
//! positive and negative data checks (scripts/schemathesis.sh), each pinned here.

mod common;

use common::TestServer;
use serde_json::{json, Value};

async fn post_raw(
    s: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let mut req = s.client.post(s.url(path)).body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("POST");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// CloudEvents HTTP binding §3: the content type decides the mode. A structured event that
/// comes with stray ce-* headers is still read as structured (it was read as a binary-mode
/// event whose data was the whole body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_structured_content_type_means_structured_mode_whatever_the_ce_headers() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("orders", 1).await;
    let event = json!({"specversion": "1.0", "id": "e-1", "source": "urn:acme:crm", "type": "order.placed", "data": {"n": 1}});
    let headers = [
        ("content-type", "application/cloudevents+json"),
        ("ce-specversion", "1.0"),
        ("ce-id", "header-id"),
        ("ce-source", "urn:header"),
        ("ce-type", "header.type"),
    ];
    let (st, body) = post_raw(&s, "/v1/topics/orders/events", &headers, &event.to_string()).await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["receipts"][0]["id"], "e-1", "{body}");
    let (_, read) = s.get("/v1/topics/orders/events").await;
    assert_eq!(read["events"][0]["event"]["type"], "order.placed", "{read}");
    assert_eq!(
        read["events"][0]["event"]["data"],
        json!({"n": 1}),
        "{read}"
    );
}

/// `POST /v1/schemas/validate` documents 400 for a body that is not a CloudEvent at all;
/// no body, or JSON that is not an object, got 200 `{valid: false}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validating_a_body_that_is_no_event_at_all_is_a_400() {
    let s = TestServer::start("embedded", &[]).await;
    let ct = [("content-type", "application/cloudevents+json")];
    for body in ["", "[1", "42", "[]"] {
        let (st, problem) = post_raw(&s, "/v1/schemas/validate", &ct, body).await;
        assert_eq!(st, 400, "{body:?}: {problem}");
    }
    let (st, answer) = post_raw(&s, "/v1/schemas/validate", &ct, r#"{"specversion":"1.0"}"#).await;
    assert_eq!(st, 200, "{answer}");
    assert_eq!(answer["valid"], false, "{answer}");
}

/// JSON Schema counts `2.0` as the integer 2, and the document says `integer`: an integral
/// float is taken where an integer is read (it was a 400 "expected u32").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integral_floats_are_integers() {
    let s = TestServer::start("embedded", &[]).await;
    let (st, body) = s
        .post(
            "/v1/topics",
            json!({"name": "t", "partitions": 2.0, "retention": {"max_age_ms": 1000.0}}),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["partitions"], 2, "{body}");
    assert_eq!(body["retention"]["max_age_ms"], 1000, "{body}");
    let (st, body) = s
        .post("/v1/topics", json!({"name": "u", "partitions": 2.5}))
        .await;
    assert_eq!(st, 400, "{body}");
    let (st, body) = s
        .post(
            "/v1/topics",
            json!({"name": "v", "partitions": 4294967296.0}),
        )
        .await;
    assert_eq!(st, 400, "{body}");
    let (st, body) = s
        .post(
            "/v1/topics/t/subscriptions",
            json!({"name": "w", "ack_timeout_ms": 1000.0}),
        )
        .await;
    assert_eq!(st, 201, "{body}");
}

/// The request bodies are JSON objects; serde also read a struct from an array (member
/// by position), so `{"filter": [null, null]}` redrove every dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_and_nested_members_must_be_objects() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("t", 1).await;
    let (st, body) = s.post("/v1/topics", json!(["x", 1, null, false])).await;
    assert_eq!(st, 400, "{body}");
    let (st, body) = s
        .post(
            "/v1/topics",
            json!({"name": "y", "retention": [1000, null]}),
        )
        .await;
    assert_eq!(st, 400, "{body}");
    let (st, body) = s
        .post(
            "/v1/topics/t/subscriptions",
            json!({"name": "z", "retry": [3]}),
        )
        .await;
    assert_eq!(st, 400, "{body}");
    let (st, body) = s
        .post("/v1/topics/t/subscriptions", json!({"name": "z"}))
        .await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = s
        .post(
            "/v1/subscriptions/z/dlq/redrive",
            json!({"filter": [null, null]}),
        )
        .await;
    assert_eq!(st, 400, "{body}");
    let (st, body) = s
        .post("/v1/subscriptions/z/dlq/redrive", json!({"filter": {}}))
        .await;
    assert_eq!(st, 200, "{body}");
}

/// CloudEvents `dataschema` is a URI (RFC 3986): ASCII only, no spaces or control
/// characters. The WHATWG URL parser accepted such a value (and percent-encoded it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataschema_that_is_not_an_rfc_3986_uri_is_rejected() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("orders", 1).await;
    let ct = [("content-type", "application/cloudevents+json")];
    for bad in [
        "urn:x:\u{8b}+0",
        "https://schemas.example/a b",
        "https://x/\u{e9}",
        "no-scheme",
    ] {
        let event = json!({"specversion": "1.0", "id": "e-1", "source": "urn:acme:crm", "type": "order.placed", "dataschema": bad});
        let (st, problem) = post_raw(&s, "/v1/topics/orders/events", &ct, &event.to_string()).await;
        assert_eq!(st, 400, "{bad:?}: {problem}");
        assert_eq!(problem["errors"][0]["field"], "dataschema", "{problem}");
    }
    let event = json!({"specversion": "1.0", "id": "e-2", "source": "urn:acme:crm", "type": "order.placed", "dataschema": "https://schemas.example/order.placed/1?v=%20#x"});
    let (st, body) = post_raw(&s, "/v1/topics/orders/events", &ct, &event.to_string()).await;
    assert_eq!(st, 201, "{body}");
}

/// A seek to an offset past a partition's end conflicts with the partition as it is now
/// (409, `offset_out_of_range`): the request itself is well formed, so not a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeking_past_the_end_of_a_partition_is_a_conflict() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("orders", 1).await;
    let (st, body) = s
        .post("/v1/topics/orders/subscriptions", json!({"name": "w"}))
        .await;
    assert_eq!(st, 201, "{body}");
    let (st, problem) = s
        .post(
            "/v1/subscriptions/w/seek",
            json!({"to": {"offsets": {"0": 18446744073709551614u64}}}),
        )
        .await;
    assert_eq!(st, 409, "{problem}");
    assert_eq!(problem["code"], "offset_out_of_range", "{problem}");
    let (st, body) = s
        .post(
            "/v1/subscriptions/w/seek",
            json!({"to": {"offsets": {"0": 0}}}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
}

/// A `ce-specversion` header names the CloudEvents version of the request; one this server
/// does not speak is refused in every mode (a structured request ignored it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ce_specversion_header_other_than_1_0_is_refused_in_every_mode() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("orders", 1).await;
    let event = json!({"specversion": "1.0", "id": "e-1", "source": "urn:acme:crm", "type": "order.placed"});
    for ct in [
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
    ] {
        let body = if ct.contains("batch") {
            json!([event]).to_string()
        } else {
            event.to_string()
        };
        let headers = [("content-type", ct), ("ce-specversion", "{}")];
        let (st, problem) = post_raw(&s, "/v1/topics/orders/events", &headers, &body).await;
        assert_eq!(st, 400, "{ct}: {problem}");
    }
    assert_eq!(s.event_count("orders").await, 0);
}

/// The document says what the server checks of the binary-mode headers: ce-id, ce-source
/// and ce-type must not be empty (the server refuses an empty one with 400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_mode_headers_are_documented_as_non_empty() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("orders", 1).await;
    let (_, doc) = s.get("/openapi.json").await;
    let params = doc["paths"]["/v1/topics/{topic}/events"]["post"]["parameters"]
        .as_array()
        .expect("parameters")
        .clone();
    for name in ["ce-id", "ce-source", "ce-type", "ce-subject"] {
        let p = params
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} is documented"));
        assert_eq!(p["schema"]["minLength"], 1, "{name}: {p}");
    }
    let headers = [
        ("content-type", "application/json"),
        ("ce-specversion", "1.0"),
        ("ce-id", "e-1"),
        ("ce-source", ""),
        ("ce-type", "order.placed"),
    ];
    let (st, problem) = post_raw(&s, "/v1/topics/orders/events", &headers, "{}").await;
    assert_eq!(st, 400, "{problem}");
}

/// Seek offsets are integers as JSON Schema counts them: `3.0` is the offset 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seek_offset_written_as_an_integral_float_is_an_offset() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("orders", 1).await;
    let (st, body) = s
        .post("/v1/topics/orders/subscriptions", json!({"name": "w"}))
        .await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = s
        .post(
            "/v1/subscriptions/w/seek",
            json!({"to": {"offsets": {"0": 0.0}}}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let (st, problem) = s
        .post(
            "/v1/subscriptions/w/seek",
            json!({"to": {"offsets": {"0": 0.5}}}),
        )
        .await;
    assert_eq!(st, 400, "{problem}");
}

/// An empty ce-id, ce-source, ce-type or ce-subject header is refused in every mode, as
/// the document says (a structured request ignored them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_ce_attribute_header_is_refused_in_every_mode() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("orders", 1).await;
    let event = json!({"specversion": "1.0", "id": "e-1", "source": "urn:acme:crm", "type": "order.placed"});
    for name in ["ce-id", "ce-source", "ce-type", "ce-subject"] {
        let headers = [("content-type", "application/cloudevents+json"), (name, "")];
        let (st, problem) =
            post_raw(&s, "/v1/topics/orders/events", &headers, &event.to_string()).await;
        assert_eq!(st, 400, "{name}: {problem}");
    }
    assert_eq!(s.event_count("orders").await, 0);
}

/// An empty batch is a valid batch (CloudEvents JSON format §4): 201 with no receipts and
/// nothing stored; the topics must still exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_batch_is_a_valid_batch() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("orders", 1).await;
    s.create_topic("audit", 1).await;
    let ct = [("content-type", "application/cloudevents-batch+json")];
    let (st, body) = post_raw(&s, "/v1/topics/orders/events", &ct, "[]").await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["receipts"], json!([]), "{body}");
    let (st, body) = post_raw(&s, "/v1/events?topic=orders&topic=audit", &ct, "[]").await;
    assert_eq!(st, 201, "{body}");
    let (st, problem) = post_raw(&s, "/v1/topics/missing/events", &ct, "[]").await;
    assert_eq!(st, 404, "{problem}");
    let (st, problem) = post_raw(&s, "/v1/events?topic=orders&topic=missing", &ct, "[]").await;
    assert_eq!(st, 404, "{problem}");
    assert_eq!(s.event_count("orders").await, 0);
}
