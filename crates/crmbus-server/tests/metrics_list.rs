//! Every metric the README documents is on `/metrics` of a fresh server, with help text
//! (issue 22): the README's table is read and compared with what the server exports.

mod common;

use common::{event, TestServer};
use serde_json::json;

/// The metric names of the README's "Metrics" table.
fn documented() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Metrics\n")
        .nth(1)
        .expect("a Metrics section")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn every_documented_metric_is_exported_with_help() {
    let names = documented();
    assert!(names.len() >= 20, "{names:?}");
    let s = TestServer::start("embedded", &[("CRMBUS_PUSH_ALLOWED_TARGETS", "127.0.0.1")]).await;
    // The histograms have no series before their first observation: a publish, and a
    // webhook attempt (to a port nothing listens on).
    s.create_topic("deals", 1).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let (st, body) = s
        .post(
            "/v1/topics/deals/subscriptions",
            json!({"name": "hook", "target": {"kind": "webhook", "url": format!("http://{closed}/x")}}),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    // And an acked delivery (the end-to-end latency).
    let (st, body) = s
        .post("/v1/topics/deals/subscriptions", json!({"name": "pulled"}))
        .await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = s
        .publish("deals", &event("e-1", "deal.noted", "deal-1", json!({})))
        .await;
    assert_eq!(st, 201, "{body}");
    let (st, pulled) = s
        .post(
            "/v1/subscriptions/pulled/pull",
            json!({"max_events": 1, "wait_ms": 5000}),
        )
        .await;
    assert_eq!(st, 200, "{pulled}");
    let ack_id = pulled["deliveries"][0]["ack_id"].clone();
    let (st, body) = s
        .post("/v1/subscriptions/pulled/ack", json!({"ack_ids": [ack_id]}))
        .await;
    assert_eq!(st, 200, "{body}");
    let mut text = String::new();
    for _ in 0..1500 {
        text = s.metrics().await;
        if text.contains("crmbus_push_attempt_duration_seconds")
            && text.lines().any(|l| {
                l.starts_with("crmbus_delivery_latency_seconds_count") && !l.ends_with(" 0")
            })
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for name in &names {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no help text on /metrics"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with(name.as_str()) && !l.starts_with('#')),
            "{name} has no series on /metrics"
        );
    }
    // And nothing exported is undocumented.
    for line in text.lines().filter(|l| l.starts_with("# TYPE crmbus_")) {
        let name = line.split_whitespace().nth(2).unwrap_or_default();
        assert!(
            names.iter().any(|n| n == name),
            "{name} is not in the README"
        );
    }
    s.stop().await;
}
