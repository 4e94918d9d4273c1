//! A clean stop is not a failed delivery (issue 22): restarting a server, with events of a
//! pull subscription queued and leased but never answered, must not spend their attempts.
//! Ten restarts with `max_attempts: 1`: nothing is dead-lettered, and every event is then
//! delivered as attempt 1 and acked. On the embedded log always; on Redis and NATS with
//! their integration features (scripts/test.sh turns them on).

mod common;

use common::{event, TestServer};
use serde_json::{json, Value};

const EVENTS: usize = 6;
const RESTARTS: usize = 10;

async fn pull(s: &TestServer, max: usize, wait_ms: u64) -> Vec<Value> {
    let (st, body) = s
        .post(
            "/v1/subscriptions/orders/pull",
            json!({"max_events": max, "wait_ms": wait_ms}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    body["deliveries"].as_array().expect("deliveries").clone()
}

async fn dead_letters(s: &TestServer) -> Vec<Value> {
    let (st, body) = s.get("/v1/subscriptions/orders/dlq").await;
    assert_eq!(st, 200, "{body}");
    body["entries"].as_array().expect("entries").clone()
}

/// Runs the restarts on `backend` (with `extra` configuration); `fresh` is the first
/// server's data directory (the embedded log keeps its data there across restarts).
async fn restarts_spend_no_attempts(backend: &str, extra: &[(&str, &str)]) {
    let mut server = TestServer::start(backend, extra).await;
    server.create_topic("orders", 2).await;
    for i in 0..EVENTS {
        let (st, body) = server
            .publish(
                "orders",
                &event(
                    &format!("o-{i}"),
                    "order.placed",
                    &format!("order-{i}"),
                    json!({"n": i}),
                ),
            )
            .await;
        assert_eq!(st, 201, "{body}");
    }
    let (st, body) = server
        .post(
            "/v1/topics/orders/subscriptions",
            json!({"name": "orders", "retry": {"max_attempts": 1}, "ack_timeout_ms": 600000}),
        )
        .await;
    assert_eq!(st, 201, "{body}");

    for round in 0..RESTARTS {
        // Some deliveries leased (pulled, never answered), the rest queued for pullers.
        let leased = pull(&server, 2, 5_000).await;
        assert!(!leased.is_empty(), "round {round}: nothing to pull");
        for d in &leased {
            assert_eq!(d["attempt"], 1, "round {round}: {d}");
        }
        let dir = server.stop().await;
        server = TestServer::start_in(dir, backend, extra).await;
        let dead = dead_letters(&server).await;
        assert!(
            dead.is_empty(),
            "after restart {}: a clean stop dead-lettered {dead:?}",
            round + 1
        );
    }

    // Every event is delivered as its first attempt, and acked.
    let mut got: Vec<Value> = Vec::new();
    for _ in 0..50 {
        if got.len() >= EVENTS {
            break;
        }
        got.extend(pull(&server, EVENTS, 2_000).await);
    }
    assert_eq!(got.len(), EVENTS, "{got:?}");
    let mut ids: Vec<String> = got
        .iter()
        .map(|d| {
            assert_eq!(d["attempt"], 1, "{d}");
            d["event"]["id"].as_str().expect("id").to_string()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), EVENTS, "each event once: {ids:?}");
    let ack_ids: Vec<&str> = got.iter().filter_map(|d| d["ack_id"].as_str()).collect();
    let (st, body) = server
        .post("/v1/subscriptions/orders/ack", json!({"ack_ids": ack_ids}))
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["settled"], EVENTS, "{body}");
    assert!(dead_letters(&server).await.is_empty());
    server.stop().await;
}

#[cfg(any(feature = "redis-integration", feature = "nats-integration"))]
fn unique_prefix(kind: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("crmbus-restart-{kind}-{}-{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_spend_no_attempts_on_the_embedded_log() {
    restarts_spend_no_attempts("embedded", &[]).await;
}

#[cfg(feature = "redis-integration")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_spend_no_attempts_on_redis() {
    let prefix = unique_prefix("redis");
    restarts_spend_no_attempts(
        "redis",
        &[
            ("CRMBUS_STORAGE_URL", "redis://127.0.0.1:6379"),
            ("CRMBUS_STORAGE_PREFIX", &prefix),
        ],
    )
    .await;
    crmbus_redis::purge("redis://127.0.0.1:6379", &prefix)
        .await
        .expect("purge");
}

#[cfg(feature = "nats-integration")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_spend_no_attempts_on_nats() {
    let prefix = unique_prefix("nats");
    restarts_spend_no_attempts(
        "nats",
        &[
            ("CRMBUS_STORAGE_URL", "nats://127.0.0.1:4222"),
            ("CRMBUS_STORAGE_PREFIX", &prefix),
        ],
    )
    .await;
    crmbus_nats::purge("nats://127.0.0.1:4222", &prefix)
        .await
        .expect("purge");
}
