//! The HTTP API against a real server on an ephemeral port (embedded backend in a temp
//! directory unless a test says otherwise): every route and each error status.

mod common;

use std::time::Duration;

use common::{error_fields, event, TestServer};
use futures_util::StreamExt;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_create_list_show_delete_and_their_errors() {
    let s = TestServer::start("embedded", &[]).await;
    let (st, body) = s
        .post(
            "/v1/topics",
            json!({"name": "deals", "partitions": 3, "retention": {"max_age_ms": 86400000}}),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["partitions"], 3);
    assert_eq!(body["retention"]["max_age_ms"], 86400000);

    let (st, body) = s.post("/v1/topics", json!({"name": "deals"})).await;
    assert_eq!(st, 409, "{body}");
    assert_eq!(body["code"], "topic_exists");
    assert_eq!(body["status"], 409);

    let (st, body) = s.post("/v1/topics", json!({"name": "bad name!"})).await;
    assert_eq!(st, 400);
    assert_eq!(error_fields(&body), ["name"]);
    let (st, body) = s
        .post("/v1/topics", json!({"name": "x", "partitions": 0}))
        .await;
    assert_eq!(st, 400);
    assert_eq!(error_fields(&body), ["partitions"]);
    let (st, body) = s
        .post("/v1/topics", json!({"name": "x", "partitionz": 2}))
        .await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(error_fields(&body), ["partitionz"]);

    s.create_topic("leads", 1).await;
    let (st, body) = s.get("/v1/topics").await;
    assert_eq!(st, 200);
    let names: Vec<&str> = body["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .map(|t| t["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["deals", "leads"]);

    let (st, body) = s.get("/v1/topics/deals").await;
    assert_eq!(st, 200);
    assert_eq!(body["partition_info"].as_array().expect("parts").len(), 3);
    assert_eq!(body["partition_info"][0]["next_offset"], 0);

    let r = s
        .client
        .get(s.url("/v1/topics/nope"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(
        r.headers()["content-type"].to_str().expect("ct"),
        "application/problem+json"
    );
    let (st, _) = s.delete("/v1/topics/leads").await;
    assert_eq!(st, 204);
    let (st, body) = s.delete("/v1/topics/leads").await;
    assert_eq!(st, 404);
    assert_eq!(body["code"], "topic_not_found");
    let (st, body) = s.get("/v1/no/such/route").await;
    assert_eq!(st, 404);
    assert_eq!(body["code"], "not_found");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_structured_binary_and_batch_then_read_back() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("deals", 1).await;

    let ev = event("e-1", "deal.won", "deal-1", json!({"amount": "10.00"}));
    let (st, body) = s.publish("deals", &ev).await;
    assert_eq!(st, 201, "{body}");
    let first = body["receipts"][0].clone();
    assert_eq!(first["duplicate"], false);
    assert_eq!(first["offset"], 0);

    // The same source + id again: 200, the first receipt, duplicate.
    let (st, body) = s.publish("deals", &ev).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["receipts"][0]["duplicate"], true);
    assert_eq!(body["receipts"][0]["offset"], first["offset"]);

    // Binary mode, JSON body.
    let r = s
        .client
        .post(s.url("/v1/topics/deals/events"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "e-2")
        .header("ce-source", "urn:test:crm")
        .header("ce-type", "deal.stage_changed")
        .header("ce-subject", "deal-2")
        .header("ce-companyid", "acme")
        .header("content-type", "application/json")
        .body(r#"{"stage":"proposal"}"#)
        .send()
        .await
        .expect("binary");
    assert_eq!(r.status().as_u16(), 201);

    // Binary mode, non-JSON body: kept as bytes with its content type.
    let r = s
        .client
        .post(s.url("/v1/topics/deals/events"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "e-3")
        .header("ce-source", "urn:test:crm")
        .header("ce-type", "deal.document_attached")
        .header("content-type", "application/pdf")
        .body(b"%PDF-1.7 bytes".to_vec())
        .send()
        .await
        .expect("binary pdf");
    assert_eq!(r.status().as_u16(), 201);

    // Batch mode.
    let batch = json!([
        event("b-1", "deal.created", "deal-3", json!({})),
        event("b-2", "deal.created", "deal-4", json!({})),
        event("b-3", "deal.created", "deal-5", json!({})),
    ]);
    let r = s
        .client
        .post(s.url("/v1/topics/deals/events"))
        .header("content-type", "application/cloudevents-batch+json")
        .body(batch.to_string())
        .send()
        .await
        .expect("batch");
    assert_eq!(r.status().as_u16(), 201);
    let body: Value = r.json().await.expect("json");
    let offsets: Vec<u64> = body["receipts"]
        .as_array()
        .expect("receipts")
        .iter()
        .map(|r| r["offset"].as_u64().expect("offset"))
        .collect();
    assert_eq!(offsets, [3, 4, 5]);

    let (st, body) = s
        .get("/v1/topics/deals/events?partition=0&from=0&limit=10")
        .await;
    assert_eq!(st, 200, "{body}");
    let events = body["events"].as_array().expect("events");
    assert_eq!(events.len(), 6);
    assert_eq!(events[0]["event"]["data"]["amount"], "10.00");
    assert_eq!(events[1]["event"]["data"]["stage"], "proposal");
    assert_eq!(events[1]["event"]["companyid"], "acme");
    assert_eq!(events[2]["event"]["datacontenttype"], "application/pdf");
    assert!(events[2]["event"]["data_base64"].is_string());
    assert_eq!(body["next"]["0"], 6);

    let (st, body) = s
        .get("/v1/topics/deals/events?partition=0&from=2&limit=2")
        .await;
    assert_eq!(st, 200);
    let offsets: Vec<u64> = body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["offset"].as_u64().expect("offset"))
        .collect();
    assert_eq!(offsets, [2, 3]);
    assert_eq!(body["next"]["0"], 4);

    let (st, _) = s.get("/v1/topics/deals/events?partition=9").await;
    assert_eq!(st, 404);
    let (st, body) = s.get("/v1/topics/deals/events?limit=0").await;
    assert_eq!(st, 400);
    assert_eq!(error_fields(&body), ["limit"]);
    let (st, body) = s.get("/v1/topics/deals/events?from_time=yesterday").await;
    assert_eq!(st, 400);
    assert_eq!(error_fields(&body), ["from_time"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_are_400_naming_every_attribute_and_write_nothing() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("deals", 2).await;

    let bad = json!({"specversion": "1.0", "source": "", "type": "deal.won", "time": "noon"});
    let (st, body) = s.publish("deals", &bad).await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(body["code"], "invalid_event");
    let fields = error_fields(&body);
    for f in ["id", "source", "time"] {
        assert!(fields.iter().any(|x| x == f), "{f} not in {fields:?}");
    }

    // A batch with one bad element stores nothing.
    let batch = json!([
        event("ok-1", "deal.created", "deal-1", json!({})),
        {"specversion": "1.0", "source": "urn:x", "type": "deal.created"},
        event("ok-2", "deal.created", "deal-2", json!({})),
    ]);
    let r = s
        .client
        .post(s.url("/v1/topics/deals/events"))
        .header("content-type", "application/cloudevents-batch+json")
        .body(batch.to_string())
        .send()
        .await
        .expect("batch");
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.expect("json");
    assert_eq!(error_fields(&body), ["[1].id"]);
    assert_eq!(s.event_count("deals").await, 0);

    let r = s
        .client
        .post(s.url("/v1/topics/deals/events"))
        .header("content-type", "application/cloudevents+json")
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 400);
    let r = s
        .client
        .post(s.url("/v1/topics/deals/events"))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 415);
    assert_eq!(s.event_count("deals").await, 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topic_is_404_unless_auto_create_and_large_bodies_are_413() {
    let s = TestServer::start("embedded", &[("CRMBUS_SERVER_MAX_BODY_BYTES", "2048")]).await;
    let ev = event("e-1", "lead.created", "lead-1", json!({}));
    let (st, body) = s.publish("leads", &ev).await;
    assert_eq!(st, 404, "{body}");
    assert_eq!(body["code"], "topic_not_found");

    s.create_topic("leads", 1).await;
    let big = event(
        "e-2",
        "lead.created",
        "lead-2",
        json!({"notes": "x".repeat(4096)}),
    );
    let (st, body) = s.publish("leads", &big).await;
    assert_eq!(st, 413, "{body}");
    assert_eq!(body["code"], "payload_too_large");
    assert_eq!(s.event_count("leads").await, 0);
    s.stop().await;

    let s = TestServer::start("memory", &[("CRMBUS_SERVER_AUTO_CREATE_TOPICS", "true")]).await;
    let (st, body) = s.publish("leads", &ev).await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(s.event_count("leads").await, 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_to_several_topics_all_or_nothing() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("deals", 1).await;
    s.create_topic("notifications", 1).await;
    let ev = event("m-1", "deal.won", "deal-1", json!({}));
    let r = s
        .client
        .post(s.url("/v1/events?topic=deals&topic=notifications"))
        .header("content-type", "application/cloudevents+json")
        .body(ev.to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 201);
    let body: Value = r.json().await.expect("json");
    let topics: Vec<&str> = body["receipts"]
        .as_array()
        .expect("receipts")
        .iter()
        .map(|r| r["topic"].as_str().expect("topic"))
        .collect();
    assert_eq!(topics, ["deals", "notifications"]);

    let ev2 = event("m-2", "deal.won", "deal-2", json!({}));
    let r = s
        .client
        .post(s.url("/v1/events?topic=deals&topic=missing"))
        .header("content-type", "application/cloudevents+json")
        .body(ev2.to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(s.event_count("deals").await, 1);
    let r = s
        .client
        .post(s.url("/v1/events"))
        .header("content-type", "application/cloudevents+json")
        .body(ev2.to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 400);
    s.stop().await;
}

/// A time (RFC 3339, microseconds) strictly after every event appended before the call
/// and strictly before every event appended after it: the embedded log stamps events with
/// the wall clock in microseconds, so this waits (bounded) for the clock to pass the
/// microsecond of the call, takes that as the cut, and waits for it to pass the cut too.
async fn cut_between_appends() -> String {
    async fn past(us: i64) -> i64 {
        let limit = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now = chrono::Utc::now().timestamp_micros();
            if now > us {
                return now;
            }
            assert!(
                std::time::Instant::now() < limit,
                "the wall clock did not pass {us} µs in 5 s"
            );
            tokio::task::yield_now().await;
        }
    }
    let cut = past(chrono::Utc::now().timestamp_micros()).await;
    past(cut).await;
    chrono::DateTime::from_timestamp_micros(cut)
        .expect("a time")
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_from_a_time() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("deals", 2).await;
    for i in 0..4 {
        let (st, body) = s
            .publish(
                "deals",
                &event(
                    &format!("old-{i}"),
                    "deal.created",
                    &format!("d{i}"),
                    json!({}),
                ),
            )
            .await;
        assert_eq!(st, 201, "{body}");
    }
    let t = cut_between_appends().await;
    for i in 0..3 {
        let (st, _) = s
            .publish(
                "deals",
                &event(
                    &format!("new-{i}"),
                    "deal.created",
                    &format!("d{i}"),
                    json!({}),
                ),
            )
            .await;
        assert_eq!(st, 201);
    }
    let (st, body) = s
        .get(&format!(
            "/v1/topics/deals/events?from_time={}",
            t.replace('+', "%2B")
        ))
        .await;
    assert_eq!(st, 200, "{body}");
    let mut ids: Vec<&str> = body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event"]["id"].as_str().expect("id"))
        .collect();
    ids.sort();
    assert_eq!(ids, ["new-0", "new-1", "new-2"]);
    s.stop().await;
}

async fn pull(s: &TestServer, sub: &str, max: u64, wait_ms: u64) -> Vec<Value> {
    let (st, body) = s
        .post(
            &format!("/v1/subscriptions/{sub}/pull"),
            json!({"max_events": max, "wait_ms": wait_ms}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    body["deliveries"].as_array().expect("deliveries").clone()
}

async fn ack(s: &TestServer, sub: &str, ids: &[&str]) -> Value {
    let (st, body) = s
        .post(
            &format!("/v1/subscriptions/{sub}/ack"),
            json!({"ack_ids": ids}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    body
}

/// Pulls and acks until `n` deliveries have arrived (at most 20 long polls); their event ids.
async fn pull_ack_n(s: &TestServer, sub: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..20 {
        if ids.len() >= n {
            break;
        }
        let got = pull(s, sub, 10, 2000).await;
        let acks: Vec<&str> = got
            .iter()
            .map(|d| d["ack_id"].as_str().expect("id"))
            .collect();
        if !acks.is_empty() {
            ack(s, sub, &acks).await;
        }
        ids.extend(
            got.iter()
                .map(|d| d["event"]["id"].as_str().expect("id").to_string()),
        );
    }
    assert_eq!(ids.len(), n, "deliveries: {ids:?}");
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_lease_expiry_redelivers_with_the_next_attempt_and_ack_finishes() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("deals", 1).await;
    let (st, body) = s
        .post(
            "/v1/topics/deals/subscriptions",
            json!({"name": "erp", "ack_timeout_ms": 300, "retry": {"initial_backoff_ms": 10, "max_backoff_ms": 10}}),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = s
        .post("/v1/topics/deals/subscriptions", json!({"name": "erp"}))
        .await;
    assert_eq!(st, 409, "{body}");
    let (st, _) = s
        .post("/v1/topics/nope/subscriptions", json!({"name": "x"}))
        .await;
    assert_eq!(st, 404);
    let (st, body) = s
        .post(
            "/v1/topics/deals/subscriptions",
            json!({"name": "y", "ordering": "random"}),
        )
        .await;
    assert_eq!(st, 400);
    assert_eq!(error_fields(&body), ["ordering"]);

    s.publish("deals", &event("e-1", "deal.won", "deal-1", json!({})))
        .await;
    let first = pull(&s, "erp", 10, 5000).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["attempt"], 1);
    assert_eq!(first[0]["event"]["id"], "e-1");

    // Not acked within 300 ms: delivered again, attempt 2.
    let again = pull(&s, "erp", 10, 5000).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["event"]["id"], "e-1");
    assert_eq!(again[0]["attempt"], 2);
    // The first lease is gone.
    let old = first[0]["ack_id"].as_str().expect("ack id");
    let body = ack(&s, "erp", &[old]).await;
    assert_eq!(body["settled"], 0);
    assert_eq!(body["unknown"][0], old);
    let body = ack(&s, "erp", &[again[0]["ack_id"].as_str().expect("ack id")]).await;
    assert_eq!(body["settled"], 1);
    assert!(pull(&s, "erp", 10, 700).await.is_empty());

    let (st, body) = s.get("/v1/subscriptions/erp").await;
    assert_eq!(st, 200);
    assert_eq!(body["status"]["lag"], 0, "{body}");
    assert_eq!(body["status"]["acked"], 1);
    assert_eq!(body["status"]["partitions"][0]["committed"], 1);

    let (st, body) = s.get("/v1/subscriptions").await;
    assert_eq!(st, 200);
    assert_eq!(body["subscriptions"].as_array().expect("subs").len(), 1);
    let (st, _) = s.get("/v1/subscriptions/nope").await;
    assert_eq!(st, 404);
    let (st, body) = s
        .post("/v1/subscriptions/erp/pull", json!({"max_events": 0}))
        .await;
    assert_eq!(st, 400);
    assert_eq!(error_fields(&body), ["max_events"]);
    let (st, _) = s.delete("/v1/subscriptions/erp").await;
    assert_eq!(st, 204);
    let (st, _) = s.delete("/v1/subscriptions/erp").await;
    assert_eq!(st, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_with_delay_redelivers_after_the_delay() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("deals", 1).await;
    let (st, _) = s
        .post("/v1/topics/deals/subscriptions", json!({"name": "mailer"}))
        .await;
    assert_eq!(st, 201);
    s.publish("deals", &event("e-1", "deal.won", "deal-1", json!({})))
        .await;
    let got = pull(&s, "mailer", 1, 5000).await;
    assert_eq!(got.len(), 1);
    let id = got[0]["ack_id"].as_str().expect("ack id");
    // Retry deadlines are wall-clock times (they are kept across restarts), so the delay
    // is measured on the wall clock too: a monotonic clock drifts from it when the
    // system's time is stepped (a VM restored from a snapshot), and a wall-clock step
    // forward rightly brings a due retry nearer.
    let started = std::time::SystemTime::now();
    let (st, body) = s
        .post(
            "/v1/subscriptions/mailer/nack",
            json!({"ack_ids": [id], "delay_ms": 800, "error": "smtp 451"}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["settled"], 1);
    let again = pull(&s, "mailer", 1, 10_000).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["attempt"], 2);
    // Correctness, not timing: it must not come back before the delay asked for.
    let waited = std::time::SystemTime::now()
        .duration_since(started)
        .unwrap_or_default();
    assert!(
        waited >= Duration::from_millis(800),
        "redelivered after {waited:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_listed_shown_redriven_and_discarded_over_http() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("billing", 1).await;
    let (st, body) = s
        .post(
            "/v1/topics/billing/subscriptions",
            json!({"name": "erp", "retry": {"max_attempts": 1}}),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    s.publish(
        "billing",
        &event("inv-1", "invoice.generated", "inv-1", json!({})),
    )
    .await;
    s.publish(
        "billing",
        &event("inv-2", "invoice.generated", "inv-2", json!({})),
    )
    .await;
    for _ in 0..2 {
        let got = pull(&s, "erp", 1, 5000).await;
        let id = got[0]["ack_id"].as_str().expect("ack id");
        let (st, _) = s
            .post(
                "/v1/subscriptions/erp/nack",
                json!({"ack_ids": [id], "error": "ERP returned 500"}),
            )
            .await;
        assert_eq!(st, 200);
    }
    // Polls (the subscription's engine stores the result in the background), for at most
    // 30 s.
    let mut entries = Vec::new();
    for _ in 0..600 {
        let (st, body) = s.get("/v1/subscriptions/erp/dlq").await;
        assert_eq!(st, 200);
        entries = body["entries"].as_array().expect("entries").clone();
        if entries.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        entries.len(),
        2,
        "the two exhausted events did not reach the DLQ within 30 s: {entries:?}"
    );
    assert_eq!(entries[0]["last_error"], "ERP returned 500");
    let (_, body) = s.get("/v1/subscriptions/erp").await;
    assert_eq!(body["status"]["dlq_size"], 2);
    // The DLQ size and lag reach /metrics too (exported about once a second).
    let gauge = "crmbus_subscription_dlq_size{topic=\"billing\",group=\"erp\"} 2";
    let mut text = String::new();
    for _ in 0..300 {
        text = s.metrics().await;
        if text.contains(gauge) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        text.contains(gauge),
        "/metrics did not show {gauge} within 30 s:\n{text}"
    );
    assert!(text.contains("crmbus_subscription_lag{topic=\"billing\",group=\"erp\"}"));
    assert!(text.contains("crmbus_deliveries_total"));

    let first = entries[0]["id"].as_str().expect("id").to_string();
    let second = entries[1]["id"].as_str().expect("id").to_string();
    let (st, body) = s.get(&format!("/v1/subscriptions/erp/dlq/{first}")).await;
    assert_eq!(st, 200);
    assert_eq!(body["event"]["id"], "inv-1");
    let (st, _) = s.get("/v1/subscriptions/erp/dlq/9-9").await;
    assert_eq!(st, 404);
    let (st, body) = s
        .get("/v1/subscriptions/erp/dlq?type=invoice.*&error=500")
        .await;
    assert_eq!(st, 200);
    assert_eq!(body["entries"].as_array().expect("entries").len(), 2);
    let (st, body) = s.get("/v1/subscriptions/erp/dlq?type=deal.*").await;
    assert_eq!(st, 200);
    assert!(body["entries"].as_array().expect("entries").is_empty());

    let (st, body) = s.post("/v1/subscriptions/erp/dlq/redrive", json!({})).await;
    assert_eq!(st, 400, "{body}");
    let (st, body) = s
        .post(
            "/v1/subscriptions/erp/dlq/redrive",
            json!({"entries": [first]}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["redriven"], 1);
    let got = pull(&s, "erp", 1, 5000).await;
    assert_eq!(got[0]["event"]["id"], "inv-1");
    ack(&s, "erp", &[got[0]["ack_id"].as_str().expect("ack id")]).await;

    let r = s
        .client
        .delete(s.url(&format!("/v1/subscriptions/erp/dlq/{second}")))
        .header("x-crmbus-actor", "alice")
        .send()
        .await
        .expect("discard");
    assert_eq!(r.status().as_u16(), 204);
    let (st, _) = s
        .delete(&format!("/v1/subscriptions/erp/dlq/{second}"))
        .await;
    assert_eq!(st, 404);
    // Polls (the subscription's engine stores the result in the background), for at most
    // 30 s.
    let mut left = usize::MAX;
    for _ in 0..600 {
        let (_, body) = s.get("/v1/subscriptions/erp/dlq").await;
        left = body["entries"].as_array().expect("entries").len();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        left, 0,
        "the DLQ did not drain within 30 s of the redrive and the discard"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_to_a_time_and_to_earliest_replays() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("deals", 1).await;
    let (st, _) = s
        .post("/v1/topics/deals/subscriptions", json!({"name": "bi"}))
        .await;
    assert_eq!(st, 201);
    for i in 0..3 {
        s.publish(
            "deals",
            &event(&format!("a-{i}"), "deal.won", &format!("d{i}"), json!({})),
        )
        .await;
    }
    let t = cut_between_appends().await;
    for i in 0..2 {
        s.publish(
            "deals",
            &event(&format!("b-{i}"), "deal.won", &format!("d{i}"), json!({})),
        )
        .await;
    }
    pull_ack_n(&s, "bi", 5).await;
    let (st, body) = s
        .post("/v1/subscriptions/bi/seek", json!({"to": {"time": t}}))
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["partitions"][0]["committed"], 3);
    let mut ids = pull_ack_n(&s, "bi", 2).await;
    ids.sort();
    assert_eq!(ids, ["b-0", "b-1"]);

    let (st, body) = s
        .post("/v1/subscriptions/bi/seek", json!({"to": "earliest"}))
        .await;
    assert_eq!(st, 200, "{body}");
    let again = pull_ack_n(&s, "bi", 5).await.len();
    assert_eq!(again, 5);
    let (st, body) = s
        .post("/v1/subscriptions/bi/seek", json!({"to": "yesterday"}))
        .await;
    assert_eq!(st, 400);
    assert_eq!(error_fields(&body), ["to"]);
    let (st, _) = s
        .post(
            "/v1/subscriptions/bi/seek",
            json!({"to": {"offsets": {"7": 0}}}),
        )
        .await;
    assert_eq!(st, 404);
    s.stop().await;
}

/// Reads SSE messages until `n` have arrived: (id, data).
/// Reads an SSE response as (id, data) messages, each as soon as it arrives.
struct SseReader {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buf: String,
    ready: std::collections::VecDeque<(String, Value)>,
}

impl SseReader {
    fn new(resp: reqwest::Response) -> SseReader {
        SseReader {
            stream: resp.bytes_stream().map(|c| c.map(|b| b.to_vec())).boxed(),
            buf: String::new(),
            ready: std::collections::VecDeque::new(),
        }
    }

    /// The next `n` messages, each within 10 s.
    async fn next(&mut self, n: usize) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        while out.len() < n {
            if let Some(m) = self.ready.pop_front() {
                out.push(m);
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.stream.next())
                .await
                .expect("an SSE message within 10 s")
                .expect("stream open")
                .expect("chunk");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut id = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if !data.is_empty() {
                    self.ready
                        .push_back((id, serde_json::from_str(&data).expect("data is JSON")));
                }
            }
        }
        out
    }
}

async fn read_sse(resp: reqwest::Response, n: usize) -> Vec<(String, Value)> {
    SseReader::new(resp).next(n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_resume_from_last_event_id() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("deals", 1).await;
    for i in 0..5 {
        s.publish(
            "deals",
            &event(&format!("e-{i}"), "deal.won", "deal-1", json!({"n": i})),
        )
        .await;
    }
    let r = s
        .client
        .get(s.url("/v1/topics/deals/stream?from=earliest"))
        .send()
        .await
        .expect("stream");
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("text/event-stream"));
    let first = read_sse(r, 3).await;
    let ids: Vec<&str> = first.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["0-0", "0-1", "0-2"]);
    assert_eq!(first[2].1["event"]["id"], "e-2");

    let r = s
        .client
        .get(s.url("/v1/topics/deals/stream"))
        .header("last-event-id", "0-2")
        .send()
        .await
        .expect("resume");
    // The backlog first; once it has arrived the stream has caught up with the log, and
    // e-5, published only then, must come through the live wait.
    let mut reader = SseReader::new(r);
    let mut rest = reader.next(2).await;
    s.publish(
        "deals",
        &event("e-5", "deal.won", "deal-1", json!({"n": 5})),
    )
    .await;
    rest.extend(reader.next(1).await);
    let ids: Vec<&str> = rest
        .iter()
        .map(|(_, v)| v["event"]["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["e-3", "e-4", "e-5"]);

    let r = s
        .client
        .get(s.url("/v1/topics/deals/stream"))
        .header("last-event-id", "garbage")
        .send()
        .await
        .expect("bad resume");
    assert_eq!(r.status().as_u16(), 400);
    let (st, _) = s.get("/v1/topics/nope/stream").await;
    assert_eq!(st, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_streams_matching_events() {
    use tokio_tungstenite::tungstenite::Message;
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("crm", 2).await;
    let url = format!(
        "{}/v1/topics/crm/ws?type=deal.*",
        s.base.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connect");
    // No wait needed: the server places the stream's cursors ("latest") before it answers
    // the upgrade, so everything published from here on is streamed.
    s.publish("crm", &event("l-1", "lead.created", "lead-1", json!({})))
        .await;
    s.publish(
        "crm",
        &event("d-1", "deal.won", "deal-1", json!({"amount": "5.00"})),
    )
    .await;
    let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a message within 10 s")
        .expect("open")
        .expect("message");
    let Message::Text(text) = msg else {
        panic!("expected a text message, got {msg:?}");
    };
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["event"]["id"], "d-1");
    assert_eq!(v["event"]["data"]["amount"], "5.00");
    ws.close(None).await.expect("close");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_openapi() {
    let s = TestServer::start("embedded", &[]).await;
    let (st, body) = s.get("/healthz").await;
    assert_eq!(st, 200);
    assert_eq!(body["backend"], "embedded");
    let (st, body) = s.get("/readyz").await;
    assert_eq!(st, 200, "{body}");
    s.create_topic("deals", 1).await;
    s.publish("deals", &event("e-1", "deal.won", "deal-1", json!({})))
        .await;

    let r = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.expect("text");
    assert!(text.contains("crmbus_http_requests_total"), "{text}");
    assert!(
        text.contains("route=\"/v1/topics/{topic}/events\""),
        "{text}"
    );
    assert!(
        text.contains("crmbus_published_events_total{topic=\"deals\"}"),
        "{text}"
    );
    assert!(text.contains("crmbus_publish_duration_seconds"), "{text}");
    // The publish went through a group-commit round that fsynced its partition.
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    assert!(value("crmbus_log_commit_rounds_total") >= 1.0, "{text}");
    assert!(
        value("crmbus_log_commit_files_synced_total") >= 1.0,
        "{text}"
    );
    assert!(
        text.contains("crmbus_log_commit_round_seconds_count"),
        "{text}"
    );

    let (st, doc) = s.get("/openapi.json").await;
    assert_eq!(st, 200);
    assert!(doc["openapi"].as_str().expect("version").starts_with("3."));
    let paths = doc["paths"].as_object().expect("paths");
    for p in [
        "/v1/topics",
        "/v1/topics/{topic}",
        "/v1/topics/{topic}/events",
        "/v1/events",
        "/v1/topics/{topic}/subscriptions",
        "/v1/subscriptions",
        "/v1/subscriptions/{name}",
        "/v1/subscriptions/{name}/pull",
        "/v1/subscriptions/{name}/ack",
        "/v1/subscriptions/{name}/nack",
        "/v1/subscriptions/{name}/seek",
        "/v1/subscriptions/{name}/dlq",
        "/v1/subscriptions/{name}/dlq/{entry}",
        "/v1/subscriptions/{name}/dlq/redrive",
        "/v1/topics/{topic}/stream",
        "/v1/topics/{topic}/ws",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_and_events_survive_a_restart() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("deals", 2).await;
    let (st, _) = s
        .post(
            "/v1/topics/deals/subscriptions",
            json!({"name": "erp", "filter": {"types": ["deal.won"]}}),
        )
        .await;
    assert_eq!(st, 201);
    s.publish("deals", &event("e-1", "deal.won", "deal-1", json!({})))
        .await;
    s.publish("deals", &event("e-2", "deal.lost", "deal-2", json!({})))
        .await;
    let dir = s.stop().await;

    let s = TestServer::start_in(dir, "embedded", &[]).await;
    let (st, body) = s.get("/v1/subscriptions/erp").await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["config"]["filter"]["types"][0], "deal.won");
    let got = pull(&s, "erp", 10, 5000).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["event"]["id"], "e-1");
    // Duplicate detection survives the restart too.
    let (st, body) = s
        .publish("deals", &event("e-1", "deal.won", "deal-1", json!({})))
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["receipts"][0]["duplicate"], true);
    s.stop().await;
}

/// `crmbus_live_slow_disconnects_total` on /metrics (0 before the first).
async fn slow_disconnects(s: &TestServer) -> f64 {
    let text = s.metrics().await;
    text.lines()
        .filter(|l| l.starts_with("crmbus_live_slow_disconnects_total"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_client_that_stops_reading_is_disconnected_with_a_reason() {
    let s = TestServer::start(
        "memory",
        &[
            ("CRMBUS_SERVER_STREAM_BUFFER", "4"),
            ("CRMBUS_SERVER_SLOW_CLIENT_TIMEOUT_MS", "300"),
        ],
    )
    .await;
    s.create_topic("bulk", 1).await;
    let disconnects_before = slow_disconnects(&s).await;
    let resp = s
        .client
        .get(s.url("/v1/topics/bulk/stream?from=earliest"))
        .send()
        .await
        .expect("stream");
    assert_eq!(resp.status().as_u16(), 200);
    // The client reads nothing while far more than the socket buffers hold is published.
    let blob = "x".repeat(256 * 1024);
    for i in 0..100 {
        let (st, body) = s
            .publish(
                "bulk",
                &event(&format!("b-{i}"), "bulk.row", "k", json!({"blob": blob})),
            )
            .await;
        assert_eq!(st, 201, "{body}");
    }
    // Wait (bounded) until the server has given up on the client, which it counts.
    let limit = std::time::Instant::now() + Duration::from_secs(30);
    while slow_disconnects(&s).await <= disconnects_before {
        assert!(
            std::time::Instant::now() < limit,
            "the server did not disconnect the stalled client within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Now read what was sent: some events, then the reason, then the end of the stream.
    let mut stream = resp.bytes_stream();
    let mut text = Vec::new();
    while let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        text.extend_from_slice(&chunk.expect("chunk"));
    }
    let text = String::from_utf8_lossy(&text);
    let delivered = text.matches("\nid: ").count() + usize::from(text.starts_with("id: "));
    assert!(
        delivered < 100,
        "a stalled client must not be sent everything"
    );
    let tail = &text[text.len().saturating_sub(300)..];
    assert!(tail.contains("event: error"), "{tail}");
    assert!(
        tail.contains("disconnected: the client fell more than 4 events behind"),
        "{tail}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_topic_deletes_its_subscriptions() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("deals", 1).await;
    s.create_topic("leads", 1).await;
    for (topic, name) in [("deals", "erp"), ("leads", "scoring")] {
        let (st, body) = s
            .post(
                &format!("/v1/topics/{topic}/subscriptions"),
                json!({"name": name}),
            )
            .await;
        assert_eq!(st, 201, "{body}");
    }
    let (st, _) = s.delete("/v1/topics/deals").await;
    assert_eq!(st, 204);
    let (st, body) = s.get("/v1/subscriptions/erp").await;
    assert_eq!(st, 404, "{body}");
    let (st, body) = s
        .post("/v1/subscriptions/erp/ack", json!({"ack_ids": ["x"]}))
        .await;
    assert_eq!(st, 404, "{body}");
    let (st, _) = s.get("/v1/subscriptions/scoring").await;
    assert_eq!(st, 200);
    // A new topic and subscription of the same names start afresh.
    s.create_topic("deals", 1).await;
    let (st, body) = s
        .post("/v1/topics/deals/subscriptions", json!({"name": "erp"}))
        .await;
    assert_eq!(st, 201, "{body}");
    let dir = s.stop().await;
    let s = TestServer::start_in(dir, "embedded", &[]).await;
    let (_, body) = s.get("/v1/subscriptions").await;
    assert_eq!(body["subscriptions"].as_array().expect("subs").len(), 2);
    s.stop().await;
}
