//! What the web console stands on: its page and assets served from the binary without a
//! key (and with a policy that allows only this origin), `GET /v1/whoami` telling it the
//! caller's scopes, and a subscription's parked keys with the event each waits on and the
//! retry schedule. The console itself is tested in a real browser (tests/browser/).

mod common;

use std::time::Duration;

use common::{event, TestServer};
use serde_json::{json, Value};

async fn subscription(s: &TestServer, name: &str) -> Value {
    let (code, body) = s.get(&format!("/v1/subscriptions/{name}")).await;
    assert_eq!(code, 200, "{body}");
    body
}

/// Polls the subscription until `ok` holds, for at most ten seconds.
async fn wait_for(s: &TestServer, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let body = subscription(s, name).await;
        if ok(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates a subscription on `topic` from `body`.
async fn subscribe(s: &TestServer, topic: &str, body: Value) {
    let (code, made) = s
        .post(&format!("/v1/topics/{topic}/subscriptions"), body)
        .await;
    assert_eq!(code, 201, "{made}");
}

/// Pulls what there is and settles the lot: acks it, or nacks it with `nack_error`.
/// Answers how many deliveries it settled.
async fn settle_all(s: &TestServer, name: &str, nack_error: Option<&str>) -> usize {
    let (code, pulled) = s
        .post(
            &format!("/v1/subscriptions/{name}/pull"),
            json!({"max_events": 100, "wait_ms": 500}),
        )
        .await;
    assert_eq!(code, 200, "{pulled}");
    let ids: Vec<Value> = pulled["deliveries"]
        .as_array()
        .map(|d| d.iter().map(|d| d["ack_id"].clone()).collect())
        .unwrap_or_default();
    if !ids.is_empty() {
        let (verb, body) = match nack_error {
            Some(error) => ("nack", json!({"ack_ids": ids, "error": error})),
            None => ("ack", json!({"ack_ids": ids})),
        };
        let (code, body) = s
            .post(&format!("/v1/subscriptions/{name}/{verb}"), body)
            .await;
        assert_eq!(code, 200, "{body}");
    }
    ids.len()
}

#[tokio::test]
async fn the_console_is_served_without_a_key_with_a_same_origin_policy() {
    let s = TestServer::start("embedded", &[("CRMBUS_AUTH_MODE", "keys")]).await;
    // The API itself needs a key here…
    let (code, _) = s.get("/v1/topics").await;
    assert_eq!(code, 401);
    // …the page and its assets do not (they hold no data).
    for (path, ty) in [
        ("/", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ] {
        let r = s.client.get(s.url(path)).send().await.expect("GET");
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        let content_type = h["content-type"].to_str().unwrap_or("");
        assert!(content_type.starts_with(ty), "{path}: {content_type}");
        let policy = h["content-security-policy"].to_str().unwrap_or("");
        assert!(
            policy.contains("default-src 'self'") && policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        let body = r.text().await.expect("body");
        assert!(!body.is_empty());
    }
    let (code, problem) = s.get("/console/app.js").await;
    assert_eq!(code, 404, "{problem}");
    assert!(problem["detail"].as_str().unwrap_or("").contains("app.js"));
}

#[tokio::test]
async fn whoami_tells_the_scopes_of_the_key_or_that_none_is_needed() {
    let s = TestServer::start("embedded", &[]).await;
    let (code, me) = s.get("/v1/whoami").await;
    assert_eq!(code, 200, "{me}");
    assert_eq!(me["keys_required"], false);
    assert_eq!(me["scopes"], json!(["admin"]));
    assert_eq!(me["actor"], "anonymous");

    // The first key (made without one on loopback) turns keys on.
    let (code, made) = s
        .post(
            "/v1/keys",
            json!({"name": "night-support", "scopes": ["subscribe:leads", "dlq:lead*"]}),
        )
        .await;
    assert_eq!(code, 201, "{made}");
    let key = made["key"].as_str().expect("the key");
    let (code, _) = s.get("/v1/whoami").await;
    assert_eq!(code, 401);
    let (code, me) = s.get_with("/v1/whoami", key).await;
    assert_eq!(code, 200, "{me}");
    assert_eq!(me["keys_required"], true);
    assert_eq!(me["scopes"], json!(["subscribe:leads", "dlq:lead*"]));
    assert_eq!(me["actor"], "night-support");
    assert_eq!(me["key_id"], made["id"]);
    let (code, _) = s.get_with("/v1/whoami", "crmbus_0000_nope").await;
    assert_eq!(code, 401);
}

#[tokio::test]
async fn parked_keys_show_the_event_they_wait_on_and_when_a_retry_is_due() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("leads", 1).await;
    subscribe(&s, "leads", json!({"name": "erp", "retry": {"max_attempts": 5, "initial_backoff_ms": 3600000, "max_backoff_ms": 3600000}})).await;
    subscribe(
        &s,
        "leads",
        json!({"name": "crm-sync", "retry": {"max_attempts": 1}, "on_exhausted": "hold"}),
    )
    .await;
    for (id, subject) in [("e1", "lead-1"), ("e2", "lead-1"), ("e3", "lead-2")] {
        let (code, body) = s
            .publish("leads", &event(id, "lead.updated", subject, json!({})))
            .await;
        assert_eq!(code, 201, "{body}");
    }
    let idle = subscription(&s, "erp").await;
    assert_eq!(idle["status"]["parked"], json!([]));
    assert_eq!(idle["status"]["breaker"], "closed");

    // Both keys' first events fail: each key waits on a retry an hour away, its second
    // event (lead-1's e2) queued behind it.
    let mut nacked = 0;
    while nacked < 2 {
        nacked += settle_all(&s, "erp", Some("ERP timed out")).await;
    }
    let sub = wait_for(&s, "erp", "two keys parked on retries", |b| {
        b["status"]["parked"]
            .as_array()
            .is_some_and(|p| p.len() == 2)
    })
    .await;
    let parked = &sub["status"]["parked"];
    assert_eq!(sub["status"]["parked_keys"], 2);
    assert_eq!(parked[0]["key"], "lead-1");
    assert_eq!(parked[0]["offset"], 0);
    assert_eq!(parked[0]["queued"], 2);
    assert_eq!(parked[1]["key"], "lead-2");
    assert_eq!(parked[1]["offset"], 2);
    for p in parked.as_array().expect("parked") {
        assert_eq!(p["waiting_on"], "retry");
        assert_eq!(p["attempts"], 1);
        assert_eq!(p["last_error"], "ERP timed out");
        // The backoff is at most an hour (with jitter): due within the hour, not yet.
        let due = p["next_attempt_at"].as_str().expect("a due time");
        let due = chrono::DateTime::parse_from_rfc3339(due).expect("RFC 3339");
        let ahead = due.signed_duration_since(chrono::Utc::now());
        assert!(
            ahead > chrono::Duration::zero() && ahead <= chrono::Duration::minutes(61),
            "{p}: due in {ahead}"
        );
    }

    // On a subscription that holds exhausted keys, the key waits on its dead letter.
    let mut nacked = 0;
    while nacked < 2 {
        nacked += settle_all(&s, "crm-sync", Some("rejected")).await;
    }
    let sub = wait_for(&s, "crm-sync", "a key held by its dead letter", |b| {
        b["status"]["parked"]
            .as_array()
            .is_some_and(|p| p.iter().any(|k| k["key"] == "lead-1"))
    })
    .await;
    let held = sub["status"]["parked"]
        .as_array()
        .and_then(|p| p.iter().find(|k| k["key"] == "lead-1"))
        .cloned()
        .expect("lead-1 parked");
    assert_eq!(held["waiting_on"], "dead_letter");
    assert_eq!(held["offset"], 0);
    assert!(held.get("next_attempt_at").is_none(), "{held}");
    assert!(sub["status"]["dlq_size"].as_u64().unwrap_or(0) >= 1);

    // The list, which any key may read, names no parked key.
    let (code, list) = s.get("/v1/subscriptions").await;
    assert_eq!(code, 200, "{list}");
    for sub in list["subscriptions"].as_array().expect("subscriptions") {
        assert_eq!(sub["status"]["parked"], json!([]), "{sub}");
        assert!(
            sub["status"]["parked_keys"].as_u64().unwrap_or(0) >= 1,
            "{sub}"
        );
    }
}

#[tokio::test]
async fn more_parked_keys_than_shown_list_the_first_hundred_by_partition_and_offset() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("many", 3).await;
    subscribe(&s, "many", json!({"name": "slow", "retry": {"max_attempts": 5, "initial_backoff_ms": 3600000, "max_backoff_ms": 3600000}})).await;
    let mut stored = Vec::new();
    for i in 0..150 {
        let (code, r) = s
            .publish(
                "many",
                &event(
                    &format!("m{i}"),
                    "lead.updated",
                    &format!("k{i}"),
                    json!({}),
                ),
            )
            .await;
        assert_eq!(code, 201, "{r}");
        let receipt = &r["receipts"][0];
        stored.push((
            receipt["partition"].as_u64().expect("partition"),
            receipt["offset"].as_u64().expect("offset"),
        ));
    }
    let mut nacked = 0;
    while nacked < 150 {
        nacked += settle_all(&s, "slow", Some("down")).await;
    }
    let sub = wait_for(&s, "slow", "150 keys parked", |b| {
        b["status"]["parked_keys"] == 150
    })
    .await;
    let shown: Vec<(u64, u64)> = sub["status"]["parked"]
        .as_array()
        .expect("parked")
        .iter()
        .map(|k| {
            (
                k["partition"].as_u64().unwrap_or(99),
                k["offset"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    stored.sort();
    assert_eq!(shown, stored[..100].to_vec());
}

/// The value of the series `name{labels}` on `/metrics` (0 when absent).
fn series(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn flow_analytics_count_events_and_bytes_by_type_and_time_deliveries_end_to_end() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("flow", 1).await;
    subscribe(&s, "flow", json!({"name": "dash"})).await;
    for (id, ty) in [
        ("f1", "lead.created"),
        ("f2", "lead.created"),
        ("f3", "deal.won"),
    ] {
        let (code, r) = s.publish("flow", &event(id, ty, id, json!({"n": 1}))).await;
        assert_eq!(code, 201, "{r}");
    }
    // A duplicate is not counted again.
    let (code, _) = s
        .publish("flow", &event("f1", "lead.created", "f1", json!({"n": 1})))
        .await;
    assert_eq!(code, 200);
    // Two topics at once, a duplicate in the first only: counted in the second.
    s.create_topic("flow-copy", 1).await;
    let r = s
        .client
        .post(s.url("/v1/events?topic=flow&topic=flow-copy"))
        .header("content-type", "application/cloudevents-batch+json")
        .body(
            json!([
                event("f3", "deal.won", "f3", json!({"n": 1})),
                event("f4", "deal.lost", "f4", json!({"n": 1}))
            ])
            .to_string(),
        )
        .send()
        .await
        .expect("publish to two topics");
    assert_eq!(r.status().as_u16(), 201);
    let mut acked = 0;
    while acked < 3 {
        acked += settle_all(&s, "dash", None).await;
    }
    // The ack's completion reaches the engine a moment after the answer.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = s.metrics().await;
        if series(
            &text,
            "crmbus_delivery_latency_seconds_count{topic=\"flow\",group=\"dash\"}",
        ) >= 3.0
        {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no latency recorded: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let created = "{topic=\"flow\",type=\"lead.created\"}";
    let won = "{topic=\"flow\",type=\"deal.won\"}";
    assert_eq!(
        series(&text, &format!("crmbus_type_events_total{created}")),
        2.0
    );
    assert_eq!(
        series(&text, &format!("crmbus_type_events_total{won}")),
        1.0
    );
    let count = |labels: &str| series(&text, &format!("crmbus_type_events_total{labels}"));
    assert_eq!(count("{topic=\"flow\",type=\"deal.lost\"}"), 1.0);
    assert_eq!(count("{topic=\"flow-copy\",type=\"deal.won\"}"), 1.0);
    assert_eq!(count("{topic=\"flow-copy\",type=\"deal.lost\"}"), 1.0);
    let bytes = series(&text, &format!("crmbus_type_bytes_total{created}"));
    assert!(bytes > 100.0, "{bytes}");
    let sum = series(
        &text,
        "crmbus_delivery_latency_seconds_sum{topic=\"flow\",group=\"dash\"}",
    );
    assert!(sum > 0.0 && sum < 60.0, "{sum}");
}
