//! A late ack — one that comes after its lease expired and the delivery was handed out
//! again — is reported as stale, not settled, and does not settle the newer attempt
//! (issue 13, item 9). Pulled deliveries carry their attempt, which a sink can fence
//! side effects with.

mod common;

use common::{event, TestServer};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_after_the_lease_expired_is_reported_stale() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("tasks", 1).await;
    let (st, body) = s
        .post(
            "/v1/topics/tasks/subscriptions",
            json!({"name": "workers", "ack_timeout_ms": 100, "retry": {"initial_backoff_ms": 1, "max_backoff_ms": 1}}),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    s.publish("tasks", &event("t-1", "task.assigned", "task-1", json!({})))
        .await;

    let pull = || async {
        let (st, body) = s
            .post(
                "/v1/subscriptions/workers/pull",
                json!({"max_events": 1, "wait_ms": 30000}),
            )
            .await;
        assert_eq!(st, 200, "{body}");
        let d = body["deliveries"][0].clone();
        assert!(d.is_object(), "nothing was delivered within 30 s: {body}");
        d
    };
    let first = pull().await;
    assert_eq!(first["attempt"], 1);
    // Not acked: the lease runs out and the event comes again as attempt 2.
    let second = pull().await;
    assert_eq!(second["event"]["id"], "t-1");
    assert_eq!(second["attempt"], 2);

    let (st, body) = s
        .post(
            "/v1/subscriptions/workers/ack",
            json!({"ack_ids": [first["ack_id"], "never-leased"]}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["settled"], 0, "{body}");
    assert_eq!(
        body["unknown"],
        json!([first["ack_id"], "never-leased"]),
        "{body}"
    );
    assert_eq!(body["stale"], json!([first["ack_id"]]), "{body}");

    // The late ack settled nothing: attempt 2's lease is still the live one.
    let (_, view) = s.get("/v1/subscriptions/workers").await;
    assert_eq!(view["status"]["leased"], 1, "{view}");
    let (st, body) = s
        .post(
            "/v1/subscriptions/workers/nack",
            json!({"ack_ids": [first["ack_id"]]}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["stale"], json!([first["ack_id"]]), "{body}");
    let (st, body) = s
        .post(
            "/v1/subscriptions/workers/ack",
            json!({"ack_ids": [second["ack_id"]]}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["settled"], 1, "{body}");
    assert_eq!(body["stale"], json!([]), "{body}");
    s.stop().await;
}
