//! The audit log and the rate limits, against a real server: every audited route (taken
//! from the OpenAPI document, so a new one cannot be forgotten) leaves an entry with who,
//! when, what and from where; bursts of refused requests leave one entry per address and
//! minute; retention removes old entries; a key over its request rate and a topic over
//! its event rate get 429 with `Retry-After`.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{event, status_json, TestServer};
use crmbus_server::auth::rules::audited;
use serde_json::{json, Value};

async fn send(
    s: &TestServer,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = s
        .client
        .request(method.parse().expect("method"), s.url(path));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    status_json(req.send().await.expect("request")).await
}

async fn make_key(s: &TestServer, admin: Option<&str>, name: &str, scopes: &[&str]) -> Value {
    let (st, made) = send(
        s,
        "POST",
        "/v1/keys",
        admin,
        Some(json!({"name": name, "scopes": scopes})),
    )
    .await;
    assert_eq!(st, 201, "{made}");
    made
}

/// Every entry of the audit log, page by page (two at a time, to walk the pages).
async fn all_entries(s: &TestServer, admin: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/audit?limit=2&after={a}"),
            None => "/v1/audit?limit=2".to_string(),
        };
        let (st, page) = send(s, "GET", &path, Some(admin), None).await;
        assert_eq!(st, 200, "{page}");
        let entries = page["entries"].as_array().expect("entries").clone();
        assert!(entries.len() <= 2);
        out.extend(entries);
        match page["next_after"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_audited_route_leaves_an_entry_with_who_when_what_and_from_where() {
    let s = TestServer::start("embedded", &[("CRMBUS_PUSH_ALLOWED_TARGETS", "127.0.0.1")]).await;
    // The first key, made while none exists: audited as anonymous.
    let made = make_key(&s, None, "root", &["admin"]).await;
    let admin = made["key"].as_str().expect("key").to_string();
    let admin_id = made["id"].as_str().expect("id").to_string();
    let a = Some(admin.as_str());
    let ok = |st: u16, body: &Value, what: &str| {
        assert!((200..300).contains(&st), "{what}: {st} {body}")
    };

    for topic in ["billing", "doomed"] {
        let (st, b) = send(
            &s,
            "POST",
            "/v1/topics",
            a,
            Some(json!({"name": topic, "partitions": 1})),
        )
        .await;
        ok(st, &b, "create topic");
    }
    let (st, b) = send(
        &s,
        "POST",
        "/v1/topics/billing/subscriptions",
        a,
        Some(json!({"name": "erp", "retry": {"max_attempts": 1}})),
    )
    .await;
    ok(st, &b, "create subscription");
    let (st, b) = send(
        &s,
        "POST",
        "/v1/topics/billing/subscriptions",
        a,
        Some(json!({"name": "hook", "target": {"kind": "webhook", "url": "http://127.0.0.1:9/hook"}})),
    )
    .await;
    ok(st, &b, "create webhook subscription");
    let (st, b) = send(
        &s,
        "PUT",
        "/v1/subscriptions/hook/secret",
        a,
        Some(json!({})),
    )
    .await;
    ok(st, &b, "rotate secret");
    let secret = b.to_string();
    let (st, b) = send(&s, "POST", "/v1/subscriptions/hook/enable", a, None).await;
    ok(st, &b, "enable");
    let (st, b) = send(
        &s,
        "POST",
        "/v1/subscriptions/erp/seek",
        a,
        Some(json!({"to": "earliest"})),
    )
    .await;
    ok(st, &b, "seek");
    // Two dead letters: one redriven, one discarded.
    for (id, subject) in [("inv-1", "invoice/1"), ("inv-2", "invoice/2")] {
        let r = s
            .client
            .post(s.url("/v1/topics/billing/events"))
            .bearer_auth(&admin)
            .header("content-type", "application/cloudevents+json")
            .body(event(id, "invoice.generated", subject, json!({})).to_string())
            .send()
            .await
            .expect("publish");
        assert_eq!(r.status().as_u16(), 201);
    }
    let mut dead = Vec::new();
    for _ in 0..20 {
        let (st, b) = send(
            &s,
            "POST",
            "/v1/subscriptions/erp/pull",
            a,
            Some(json!({"max_events": 10, "wait_ms": 1000})),
        )
        .await;
        assert_eq!(st, 200, "{b}");
        let ids: Vec<Value> = b["deliveries"]
            .as_array()
            .expect("deliveries")
            .iter()
            .map(|d| d["ack_id"].clone())
            .collect();
        if !ids.is_empty() {
            let (st, b) = send(
                &s,
                "POST",
                "/v1/subscriptions/erp/nack",
                a,
                Some(json!({"ack_ids": ids, "error": "ERP down"})),
            )
            .await;
            assert_eq!(st, 200, "{b}");
        }
        let (_, list) = send(&s, "GET", "/v1/subscriptions/erp/dlq", a, None).await;
        dead = list["entries"].as_array().cloned().unwrap_or_default();
        if dead.len() == 2 {
            break;
        }
    }
    assert_eq!(dead.len(), 2, "{dead:?}");
    let first = dead[0]["id"].as_str().expect("entry id").to_string();
    let second = dead[1]["id"].as_str().expect("entry id").to_string();
    let (st, b) = send(
        &s,
        "POST",
        "/v1/subscriptions/erp/dlq/redrive",
        a,
        Some(json!({"entries": [first]})),
    )
    .await;
    ok(st, &b, "redrive");
    let (st, b) = send(
        &s,
        "DELETE",
        &format!("/v1/subscriptions/erp/dlq/{second}"),
        a,
        None,
    )
    .await;
    ok(st, &b, "discard");
    let (st, b) = send(
        &s,
        "POST",
        "/v1/schemas/fixture.noted/versions",
        a,
        Some(json!({"schema": {"type": "object"}})),
    )
    .await;
    ok(st, &b, "register schema");
    let (st, b) = send(
        &s,
        "PUT",
        "/v1/schemas/fixture.noted/compatibility",
        a,
        Some(json!({"mode": "none"})),
    )
    .await;
    ok(st, &b, "compatibility");
    // A stream token is a credential: issuing one is audited (the token is not).
    let (st, b) = send(
        &s,
        "POST",
        "/v1/topics/billing/stream-token",
        a,
        Some(json!({})),
    )
    .await;
    ok(st, &b, "stream token");
    let stream_token = b["token"].as_str().expect("token").to_string();
    let other = make_key(&s, a, "ops-alice", &["subscribe:billing"]).await;
    let other_key = other["key"].as_str().expect("key").to_string();
    let other_id = other["id"].as_str().expect("id").to_string();
    // Not admin: the audit log is refused.
    let (st, _) = send(&s, "GET", "/v1/audit", Some(&other_key), None).await;
    assert_eq!(st, 403);
    let (st, b) = send(&s, "DELETE", &format!("/v1/keys/{other_id}"), a, None).await;
    ok(st, &b, "revoke key");
    let (st, b) = send(&s, "DELETE", "/v1/subscriptions/hook", a, None).await;
    ok(st, &b, "delete subscription");
    let (st, b) = send(&s, "DELETE", "/v1/topics/doomed", a, None).await;
    ok(st, &b, "delete topic");
    // A caller's own name goes beside the key's.
    let r = s
        .client
        .post(s.url("/v1/topics"))
        .bearer_auth(&admin)
        .header("x-crmbus-actor", "alice@example.com")
        .json(&json!({"name": "named", "partitions": 1}))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status().as_u16(), 201);
    // Marked as forwarded by another server: audited all the same, the mark said.
    let r = s
        .client
        .post(s.url("/v1/topics"))
        .bearer_auth(&admin)
        .header("crmbus-forwarded", "member-x")
        .json(&json!({"name": "sneaky", "partitions": 1}))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status().as_u16(), 201);
    // Refused and failed admin requests are not actions done.
    let (st, _) = send(&s, "DELETE", "/v1/topics/nope", a, None).await;
    assert_eq!(st, 404);

    let entries = all_entries(&s, &admin).await;
    let actions: BTreeSet<String> = entries
        .iter()
        .map(|e| e["action"].as_str().expect("action").to_string())
        .collect();
    // Every audited route of the API document is in the log.
    let doc = s.get("/openapi.json").await.1;
    let mut expected = BTreeSet::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("ops").keys() {
            let m = method.to_ascii_uppercase();
            if audited(&m, template) {
                expected.insert(format!("{m} {template}"));
            }
        }
    }
    assert!(expected.len() >= 13, "{expected:?}");
    let missing: Vec<&String> = expected.difference(&actions).collect();
    assert!(missing.is_empty(), "not audited: {missing:?}");
    // And nothing else: publishes, pulls, nacks and reads are not admin actions.
    let extra: Vec<&String> = actions.difference(&expected).collect();
    assert!(extra.is_empty(), "audited but should not be: {extra:?}");

    let find = |action: &str, path: &str| -> Value {
        entries
            .iter()
            .find(|e| e["action"] == action && e["path"] == path)
            .unwrap_or_else(|| panic!("no {action} {path} in {entries:#?}"))
            .clone()
    };
    let bootstrap = find("POST /v1/keys", "/v1/keys");
    assert_eq!(bootstrap["actor"], "anonymous", "{bootstrap}");
    assert!(bootstrap.get("key_id").is_none(), "{bootstrap}");
    let created = find("POST /v1/topics", "/v1/topics");
    assert_eq!(created["actor"], "root");
    assert_eq!(created["key_id"], admin_id.as_str());
    assert_eq!(created["status"], 201);
    assert_eq!(created["from"], "127.0.0.1");
    assert!(chrono::DateTime::parse_from_rfc3339(created["at"].as_str().expect("at")).is_ok());
    let named = entries
        .iter()
        .find(|e| e["actor"] == "root (alice@example.com)")
        .expect("the caller's name beside the key's");
    assert_eq!(named["action"], "POST /v1/topics");
    let discard = find(
        "DELETE /v1/subscriptions/{name}/dlq/{entry}",
        &format!("/v1/subscriptions/erp/dlq/{second}"),
    );
    assert_eq!(discard["status"], 204);
    assert_eq!(
        find("DELETE /v1/keys/{id}", &format!("/v1/keys/{other_id}"))["actor"],
        "root"
    );
    let sneaky = entries
        .iter()
        .find(|e| {
            e["action"] == "POST /v1/topics"
                && e["detail"].as_str().unwrap_or("").contains("member-x")
        })
        .expect("the forwarded-marked create is audited");
    assert_eq!(sneaky["actor"], "root");
    // Failed requests are not there.
    assert!(!entries.iter().any(|e| e["path"] == "/v1/topics/nope"));
    // Oldest first, ids increasing.
    let ids: Vec<&str> = entries
        .iter()
        .map(|e| e["id"].as_str().expect("id"))
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted);
    // No secret is ever in the log: neither a key nor a webhook secret.
    let text = serde_json::to_string(&entries).expect("json");
    let admin_secret = admin.splitn(3, '_').nth(2).expect("secret");
    assert!(!text.contains(admin_secret));
    assert!(!text.contains(other_key.splitn(3, '_').nth(2).expect("secret")));
    assert!(!secret.is_empty() && !text.contains("whsec_"), "{text}");
    assert!(!text.contains(&stream_token), "{text}");
    // A bad page size is a 400 naming it.
    let (st, p) = send(&s, "GET", "/v1/audit?limit=0", a, None).await;
    assert_eq!(st, 400, "{p}");
    assert_eq!(common::error_fields(&p), ["limit"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_refused_requests_is_one_entry_per_address_and_minute() {
    let s = TestServer::start("embedded", &[("CRMBUS_AUDIT_AUTH_FAILURE_BURST", "3")]).await;
    let admin = make_key(&s, None, "root", &["admin"]).await["key"]
        .as_str()
        .expect("key")
        .to_string();
    let reader = make_key(&s, Some(&admin), "reader", &["subscribe:deals"]).await["key"]
        .as_str()
        .expect("key")
        .to_string();
    // Two refusals: below the burst, no entry. The second is marked as forwarded by
    // another server (a header anyone can send): it counts all the same.
    let (st, _) = send(&s, "GET", "/v1/topics", Some("crmbus_0123_nope"), None).await;
    assert_eq!(st, 401);
    let r = s
        .client
        .get(s.url("/v1/topics"))
        .header("crmbus-forwarded", "member-x")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 401);
    let before = all_entries(&s, &admin).await;
    assert!(!before.iter().any(|e| e["action"] == "auth.failures"));
    // The third (a 403 counts too) makes the entry; the next ones in the minute do not.
    let (st, _) = send(
        &s,
        "POST",
        "/v1/topics",
        Some(&reader),
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(st, 403);
    for _ in 0..5 {
        let (st, _) = send(&s, "DELETE", "/v1/topics/deals", None, None).await;
        assert_eq!(st, 401);
    }
    let entries = all_entries(&s, &admin).await;
    let bursts: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "auth.failures")
        .collect();
    assert_eq!(bursts.len(), 1, "{entries:#?}");
    let b = bursts[0];
    assert_eq!(b["from"], "127.0.0.1");
    assert_eq!(b["status"], 403);
    assert_eq!(b["path"], "/v1/topics");
    let detail = b["detail"].as_str().expect("detail");
    assert!(detail.contains("3 requests"), "{detail}");
    assert!(!detail.contains(&reader), "{detail}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_older_than_the_retention_are_removed() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = crmbus::ManualClock::starting_now();
    let config = common::config(
        dir.path(),
        "embedded",
        &[("CRMBUS_AUDIT_RETENTION_DAYS", "2")],
    );
    let server = crmbus_server::Server::start_with_clock(config, Arc::new(clock.clone()))
        .await
        .expect("server");
    let s = TestServer::attach(server, dir);
    s.create_topic("old", 1).await;
    clock.advance(Duration::from_secs(86_400));
    s.create_topic("newer", 1).await;
    let paths = |entries: Vec<Value>| -> Vec<String> {
        entries
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e["action"].as_str().unwrap_or(""),
                    e["path"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    let (st, page) = s.get("/v1/audit").await;
    assert_eq!(st, 200, "{page}");
    assert_eq!(
        paths(page["entries"].as_array().expect("entries").clone()).len(),
        2
    );
    // Two days and a bit after the first: it is gone, the second stays.
    clock.advance(Duration::from_secs(86_400 + 60));
    let (_, page) = s.get("/v1/audit").await;
    let entries = page["entries"].as_array().expect("entries").clone();
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0]["action"], "POST /v1/topics");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_gets_429_with_retry_after_and_others_go_on() {
    // One request per 100 s after a burst of 3: the 4th within the test is over it.
    let s = TestServer::start(
        "embedded",
        &[
            ("CRMBUS_LIMITS_KEY_REQUESTS_PER_SECOND", "0.01"),
            ("CRMBUS_LIMITS_KEY_BURST", "3"),
        ],
    )
    .await;
    // The bootstrap needs no key, so no key's rate counts it.
    let admin = make_key(&s, None, "root", &["admin"]).await["key"]
        .as_str()
        .expect("key")
        .to_string();
    let a = Some(admin.as_str());
    let other = make_key(&s, a, "other", &["subscribe:*"]).await["key"]
        .as_str()
        .expect("key")
        .to_string();
    // The admin key made one request (the second key); two more pass.
    for _ in 0..2 {
        let (st, b) = send(&s, "GET", "/v1/topics", a, None).await;
        assert_eq!(st, 200, "{b}");
    }
    let r = s
        .client
        .get(s.url("/v1/topics"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 429);
    let wait: u64 = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=100).contains(&wait), "{wait}");
    let (_, problem) = status_json(r).await;
    assert_eq!(problem["code"], "rate_limited");
    assert!(problem["detail"]
        .as_str()
        .unwrap_or("")
        .contains("key_requests_per_second"));
    // Another key has its own bucket; open routes are not counted.
    let (st, _) = send(&s, "GET", "/v1/topics", Some(&other), None).await;
    assert_eq!(st, 200);
    let (st, _) = send(&s, "GET", "/healthz", None, None).await;
    assert_eq!(st, 200);
    let metrics = s
        .client
        .get(s.url("/metrics"))
        .bearer_auth(&other)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("crmbus_throttled_requests_total{limit=\"key\"} 1")),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_over_its_event_rate_gets_429_and_a_batch_over_its_burst_413() {
    let s = TestServer::start(
        "embedded",
        &[
            ("CRMBUS_LIMITS_TOPIC_EVENTS_PER_SECOND", "0.01"),
            ("CRMBUS_LIMITS_TOPIC_BURST", "5"),
        ],
    )
    .await;
    s.create_topic("deals", 1).await;
    s.create_topic("tasks", 1).await;
    let batch = |n: usize, prefix: &str| -> String {
        Value::Array(
            (0..n)
                .map(|i| {
                    event(
                        &format!("{prefix}-{i}"),
                        "deal.won",
                        &format!("deal/{i}"),
                        json!({}),
                    )
                })
                .collect(),
        )
        .to_string()
    };
    let post = |topic: &str, body: String| {
        s.client
            .post(s.url(&format!("/v1/topics/{topic}/events")))
            .header("content-type", "application/cloudevents-batch+json")
            .body(body)
            .send()
    };
    let (st, p) = status_json(post("deals", batch(6, "big")).await.expect("post")).await;
    assert_eq!(st, 413, "{p}");
    assert!(
        p["detail"].as_str().unwrap_or("").contains("topic_burst"),
        "{p}"
    );
    let (st, p) = status_json(post("deals", batch(3, "a")).await.expect("post")).await;
    assert_eq!(st, 201, "{p}");
    let r = post("deals", batch(3, "b")).await.expect("post");
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().contains_key("retry-after"));
    // Nothing of a refused batch was stored.
    assert_eq!(s.event_count("deals").await, 3);
    // Another topic has its own bucket.
    let (st, p) = status_json(post("tasks", batch(5, "t")).await.expect("post")).await;
    assert_eq!(st, 201, "{p}");
    let metrics = s.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("crmbus_throttled_requests_total{limit=\"topic\"} 1")),
        "{metrics}"
    );
    s.stop().await;
}
