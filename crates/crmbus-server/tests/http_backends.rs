//! The HTTP API on the Redis Streams, NATS JetStream and Kafka backends (the real servers
//! that scripts/services.sh starts; Kafka is the tansu broker, with its state in the
//! machine's PostgreSQL): publish, read, pull/ack and DLQ redrive run unchanged. Each test
//! needs its server, so it runs only with its feature: `redis-integration`,
//! `nats-integration`, `kafka-integration` (scripts/test.sh turns them on with
//! --all-features).

#![cfg(any(
    feature = "redis-integration",
    feature = "nats-integration",
    feature = "kafka-integration"
))]

mod common;

use std::time::Duration;

use common::{event, TestServer};
use serde_json::{json, Value};

#[cfg(feature = "redis-integration")]
const REDIS_URL: &str = "redis://127.0.0.1:6379";
#[cfg(feature = "nats-integration")]
const NATS_URL: &str = "nats://127.0.0.1:4222";

fn unique_prefix(kind: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("crmbus-http-{kind}-{}-{nanos}", std::process::id())
}

async fn pull(s: &TestServer, sub: &str, max: u64) -> Vec<Value> {
    let (st, body) = s
        .post(
            &format!("/v1/subscriptions/{sub}/pull"),
            json!({"max_events": max, "wait_ms": 2000}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    body["deliveries"].as_array().expect("deliveries").clone()
}

async fn pull_n(s: &TestServer, sub: &str, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    for _ in 0..20 {
        if got.len() >= n {
            break;
        }
        got.extend(pull(s, sub, (n - got.len()) as u64).await);
    }
    assert_eq!(got.len(), n, "{got:?}");
    got
}

/// A backend that cannot check a subject's version atomically with the append refuses
/// `expectedversion` and per-subject reads with 501, saying so, and writes nothing.
async fn refuses_versions(s: &TestServer) {
    let before = s.event_count("deals").await;
    let mut e = event("v-1", "deal.won", "deal-0", json!({}));
    e["expectedversion"] = json!(1);
    let (st, body) = s.publish("deals", &e).await;
    assert_eq!(st, 501, "{body}");
    assert_eq!(body["code"], "unsupported");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("expectedversion"),
        "{body}"
    );
    assert_eq!(s.event_count("deals").await, before);
    let (st, body) = s.get("/v1/topics/deals/subjects/deal-0/events").await;
    assert_eq!(st, 501, "{body}");
}

async fn core_flow(s: &TestServer) {
    s.create_topic("deals", 2).await;
    for i in 0..3 {
        let (st, body) = s
            .publish(
                "deals",
                &event(
                    &format!("e-{i}"),
                    "deal.won",
                    &format!("deal-{i}"),
                    json!({"n": i}),
                ),
            )
            .await;
        assert_eq!(st, 201, "{body}");
    }
    let (st, body) = s
        .publish(
            "deals",
            &event("e-0", "deal.won", "deal-0", json!({"n": 0})),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["receipts"][0]["duplicate"], true);

    let (st, body) = s.get("/v1/topics/deals/events").await;
    assert_eq!(st, 200, "{body}");
    let mut ids: Vec<&str> = body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event"]["id"].as_str().expect("id"))
        .collect();
    ids.sort();
    assert_eq!(ids, ["e-0", "e-1", "e-2"]);

    let (st, body) = s
        .post(
            "/v1/topics/deals/subscriptions",
            json!({"name": "erp", "retry": {"max_attempts": 1}}),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let got = pull_n(s, "erp", 3).await;
    let (fail, ok): (Vec<&Value>, Vec<&Value>) =
        got.iter().partition(|d| d["event"]["id"] == "e-1");
    let ok_ids: Vec<&str> = ok
        .iter()
        .map(|d| d["ack_id"].as_str().expect("id"))
        .collect();
    let (st, body) = s
        .post("/v1/subscriptions/erp/ack", json!({"ack_ids": ok_ids}))
        .await;
    assert_eq!(st, 200);
    assert_eq!(body["settled"], 2);
    let (st, _) = s
        .post(
            "/v1/subscriptions/erp/nack",
            json!({"ack_ids": [fail[0]["ack_id"]], "error": "ERP down"}),
        )
        .await;
    assert_eq!(st, 200);

    // Polls (the subscription's engine stores the result in the background), for at most
    // 30 s.
    let mut entries = Vec::new();
    for _ in 0..600 {
        let (_, body) = s.get("/v1/subscriptions/erp/dlq").await;
        entries = body["entries"].as_array().expect("entries").clone();
        if !entries.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        entries.len(),
        1,
        "the nacked event did not reach the DLQ within 30 s: {entries:?}"
    );
    assert_eq!(entries[0]["event"]["id"], "e-1");
    let (st, body) = s
        .post("/v1/subscriptions/erp/dlq/redrive", json!({"all": true}))
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["redriven"], 1);
    let again = pull_n(s, "erp", 1).await;
    assert_eq!(again[0]["event"]["id"], "e-1");
    let (st, _) = s
        .post(
            "/v1/subscriptions/erp/ack",
            json!({"ack_ids": [again[0]["ack_id"]]}),
        )
        .await;
    assert_eq!(st, 200);
    let mut lag = u64::MAX;
    for _ in 0..600 {
        let (_, body) = s.get("/v1/subscriptions/erp").await;
        lag = body["status"]["lag"].as_u64().expect("lag");
        if lag == 0 && body["status"]["dlq_size"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        lag, 0,
        "the subscription did not catch up (lag 0, DLQ empty) within 30 s of the ack"
    );
}

#[cfg(feature = "redis-integration")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_on_redis_streams() {
    let prefix = unique_prefix("redis");
    let s = TestServer::start(
        "redis",
        &[
            ("CRMBUS_STORAGE_URL", REDIS_URL),
            ("CRMBUS_STORAGE_PREFIX", &prefix),
        ],
    )
    .await;
    let (_, health) = s.get("/healthz").await;
    assert_eq!(health["backend"], "redis");
    core_flow(&s).await;
    refuses_versions(&s).await;
    s.stop().await;
    crmbus_redis::purge(REDIS_URL, &prefix)
        .await
        .expect("purge");
}

#[cfg(feature = "nats-integration")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_on_nats_jetstream() {
    let prefix = unique_prefix("nats");
    let s = TestServer::start(
        "nats",
        &[
            ("CRMBUS_STORAGE_URL", NATS_URL),
            ("CRMBUS_STORAGE_PREFIX", &prefix),
        ],
    )
    .await;
    let (_, health) = s.get("/healthz").await;
    assert_eq!(health["backend"], "nats");
    core_flow(&s).await;
    refuses_versions(&s).await;
    s.stop().await;
    crmbus_nats::purge(NATS_URL, &prefix)
        .await
        .expect("cleanup");
}

#[cfg(feature = "kafka-integration")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_on_kafka() {
    let bootstrap =
        std::env::var("CRMBUS_KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".to_string());
    let state_url = std::env::var("CRMBUS_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    // Within the 48 characters a Kafka namespace prefix may have.
    let prefix = unique_prefix("kafka");
    let s = TestServer::start(
        "kafka",
        &[
            ("CRMBUS_STORAGE_BOOTSTRAP_SERVERS", &bootstrap),
            ("CRMBUS_STORAGE_STATE_URL", &state_url),
            ("CRMBUS_STORAGE_PREFIX", &prefix),
        ],
    )
    .await;
    let (_, health) = s.get("/healthz").await;
    assert_eq!(health["backend"], "kafka");
    core_flow(&s).await;
    refuses_versions(&s).await;
    s.stop().await;
    crmbus_kafka::purge(&bootstrap, &state_url, &prefix)
        .await
        .expect("cleanup");
}
