//! Deleting a subscription removes every kind of state its group kept (retry schedule,
//! done markers, dead letters, consumer dedupe and the DLQ audit log), checked in the
//! embedded state store itself after the server has stopped.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{event, TestServer};
use crmbus_embedded::{EmbeddedLog, EmbeddedOptions};
use serde_json::json;

/// Every state namespace of group `group` on `topic`, as the engine names them.
const KINDS: [&str; 5] = ["retry", "done", "dlq", "dedupe", "audit"];

/// How many keys each kind of state of `topic`/`group` holds in the data directory.
async fn state_counts(data: &Path, topic: &str, group: &str) -> Vec<(&'static str, usize)> {
    let log = EmbeddedLog::open(data, EmbeddedOptions::default()).expect("open the log");
    let state = log.state_store();
    let mut out = Vec::new();
    for kind in KINDS {
        let ns = format!("sub/{topic}/{group}/{kind}");
        out.push((kind, state.scan(&ns, "").await.expect("scan").len()));
    }
    crmbus::EventLog::close(&log).await.expect("close");
    out
}

/// Polls `check` until it holds, for at most ten seconds.
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_subscription_leaves_no_state_of_any_kind_behind() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("billing", 1).await;
    let (st, body) = s
        .post(
            "/v1/topics/billing/subscriptions",
            json!({"name": "erp", "retry": {"max_attempts": 1}}),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    for id in ["inv-1", "inv-2"] {
        s.publish("billing", &event(id, "invoice.generated", id, json!({})))
            .await;
    }
    // inv-1 is acked (done marker, dedupe), inv-2 fails into the DLQ and is discarded
    // (audit record).
    let mut acked = 0;
    let mut nacked = 0;
    while acked + nacked < 2 {
        let (st, body) = s
            .post(
                "/v1/subscriptions/erp/pull",
                json!({"max_events": 1, "wait_ms": 5000}),
            )
            .await;
        assert_eq!(st, 200, "{body}");
        for d in body["deliveries"].as_array().expect("deliveries") {
            let ack_id = d["ack_id"].as_str().expect("ack id");
            if d["event"]["id"] == "inv-1" {
                let (st, _) = s
                    .post("/v1/subscriptions/erp/ack", json!({"ack_ids": [ack_id]}))
                    .await;
                assert_eq!(st, 200);
                acked += 1;
            } else {
                let (st, _) = s
                    .post(
                        "/v1/subscriptions/erp/nack",
                        json!({"ack_ids": [ack_id], "error": "ERP returned 500"}),
                    )
                    .await;
                assert_eq!(st, 200);
                nacked += 1;
            }
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let entry = loop {
        let (_, body) = s.get("/v1/subscriptions/erp/dlq").await;
        if let Some(e) = body["entries"].as_array().and_then(|e| e.first()) {
            break e["id"].as_str().expect("id").to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until inv-2 is dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (st, _) = s
        .delete(&format!("/v1/subscriptions/erp/dlq/{entry}"))
        .await;
    assert_eq!(st, 204);
    wait_until("the DLQ is empty", || async {
        let (_, body) = s.get("/v1/subscriptions/erp/dlq").await;
        body["entries"].as_array().is_some_and(|e| e.is_empty())
    })
    .await;
    let dir = s.stop().await;
    let data = dir.path().join("data");
    let before = state_counts(&data, "billing", "erp").await;
    let audit = before.iter().find(|(k, _)| *k == "audit").map(|(_, n)| *n);
    assert!(
        audit.unwrap_or(0) >= 1,
        "the discard was audited before the delete: {before:?}"
    );

    let s = TestServer::start_in(dir, "embedded", &[]).await;
    let (st, body) = s.delete("/v1/subscriptions/erp").await;
    assert_eq!(st, 204, "{body}");
    let dir = s.stop().await;
    let after = state_counts(&dir.path().join("data"), "billing", "erp").await;
    assert!(
        after.iter().all(|(_, n)| *n == 0),
        "state left behind by the deleted subscription: {after:?}"
    );
}
