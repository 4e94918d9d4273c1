//! The permission matrix: every route of the OpenAPI document (so a new route cannot be
//! left out) × {no key, revoked key, expired key, wrong scope, wrong topic, right scope},
//! against a real server whose keys exist, with the status each must get. Also: the
//! bootstrap (the first key made on a keyless loopback server), 401/403 problem
//! documents that say what is needed, and the key name as the audit actor.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{event, TestServer};
use crmbus_server::auth::rules::{rule_for, Access, Rule};
use serde_json::{json, Value};

/// The concrete path of a route template in this test's fixture.
fn concrete(method: &str, template: &str, doomed_key: &str) -> String {
    if template == "/v1/events" {
        return "/v1/events?topic=deals".into();
    }
    // The deletes of a topic and of a subscription name resources of their own.
    let deleting = method == "DELETE" && !template.contains("/dlq/");
    template
        .replace("{topic}", if deleting { "doomed" } else { "deals" })
        .replace("{name}", if deleting { "doomed-sub" } else { "deals-sub" })
        .replace("{entry}", "0-0")
        .replace("{type}", "fixture.noted")
        .replace("{version}", "1")
        .replace("{id}", doomed_key)
}

struct Keys {
    admin: String,
    revoked: String,
    expired: String,
    /// Every scope but admin, on every topic.
    no_admin: String,
    publish_deals: String,
    subscribe_deals: String,
    dlq_deals: String,
    publish_other: String,
    subscribe_other: String,
    dlq_other: String,
}

async fn make_key(s: &TestServer, admin: Option<&str>, name: &str, body: Value) -> Value {
    let mut req = s
        .client
        .post(s.url("/v1/keys"))
        .json(&merge(json!({"name": name}), body));
    if let Some(k) = admin {
        req = req.bearer_auth(k);
    }
    let (st, made) = common::status_json(req.send().await.expect("POST /v1/keys")).await;
    assert_eq!(st, 201, "{made}");
    made
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Value::Object(a), Value::Object(b)) = (&mut a, b) {
        a.extend(b);
    }
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_kind_of_key_as_its_rule_says() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = crmbus::ManualClock::starting_now();
    let config = common::config(dir.path(), "embedded", &[]);
    let server = crmbus_server::Server::start_with_clock(config, Arc::new(clock.clone()))
        .await
        .expect("server");
    let s = TestServer::attach(server, dir);
    // The fixture, made while no key exists (the server is open).
    s.create_topic("deals", 1).await;
    s.create_topic("doomed", 1).await;
    for (topic, sub) in [("deals", "deals-sub"), ("doomed", "doomed-sub")] {
        let (st, b) = s
            .post(
                &format!("/v1/topics/{topic}/subscriptions"),
                json!({"name": sub}),
            )
            .await;
        assert_eq!(st, 201, "{b}");
    }
    // The bootstrap: the first key is made without one.
    let admin = make_key(&s, None, "root", json!({"scopes": ["admin"]})).await["key"]
        .as_str()
        .expect("key")
        .to_string();
    // From now on a key is needed: the second needs the first.
    let (st, problem) = s
        .post("/v1/keys", json!({"name": "x", "scopes": ["admin"]}))
        .await;
    assert_eq!(st, 401, "{problem}");
    let key = |v: Value| v["key"].as_str().expect("key").to_string();
    let a = Some(admin.as_str());
    let expiry = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let keys = Keys {
        admin: admin.clone(),
        revoked: key(make_key(&s, a, "revoked", json!({"scopes": ["admin"]})).await),
        expired: key(make_key(
            &s,
            a,
            "expiring",
            json!({"scopes": ["admin"], "expires_at": expiry}),
        )
        .await),
        no_admin: key(make_key(
            &s,
            a,
            "no-admin",
            json!({"scopes": ["publish:*", "subscribe:*", "dlq:*"]}),
        )
        .await),
        publish_deals: key(make_key(&s, a, "p", json!({"scopes": ["publish:deals"]})).await),
        subscribe_deals: key(make_key(&s, a, "s", json!({"scopes": ["subscribe:deal*"]})).await),
        dlq_deals: key(make_key(&s, a, "d", json!({"scopes": ["dlq:deals"]})).await),
        publish_other: key(make_key(&s, a, "po", json!({"scopes": ["publish:other*"]})).await),
        subscribe_other: key(make_key(&s, a, "so", json!({"scopes": ["subscribe:other"]})).await),
        dlq_other: key(make_key(&s, a, "do", json!({"scopes": ["dlq:other"]})).await),
    };
    let doomed = make_key(&s, a, "doomed", json!({"scopes": ["subscribe:x"]})).await;
    let doomed_id = doomed["id"].as_str().expect("id").to_string();
    let revoked_id = keys.revoked.split('_').nth(1).expect("id").to_string();
    let r = s
        .client
        .delete(s.url(&format!("/v1/keys/{revoked_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status().as_u16(), 204);
    clock.advance(Duration::from_secs(2 * 3600));
    // The admin key's id with another key's secret.
    let admin_id = admin.split('_').nth(1).expect("id");
    let other_secret = keys.no_admin.splitn(3, '_').nth(2).expect("secret");
    let forged = format!("crmbus_{admin_id}_{other_secret}");

    let doc = s.get("/openapi.json").await.1;
    let mut checked = 0;
    let mut right_scope = Vec::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("ops").keys() {
            let m = method.to_ascii_uppercase();
            let rule = rule_for(&m, template).unwrap_or_else(|| panic!("{m} {template}: no rule"));
            let path = concrete(&m, template, &doomed_id);
            let send = |k: Option<&str>| {
                let mut req = s
                    .client
                    .request(m.parse().expect("method"), s.url(&path))
                    .header("content-type", "application/json")
                    .body("{}");
                if let Some(k) = k {
                    req = req.bearer_auth(k);
                }
                async move { req.send().await.expect("request").status().as_u16() }
            };
            let what = format!("{m} {path}");
            if rule == Rule::Open {
                for k in [None, Some(keys.revoked.as_str())] {
                    let st = send(k).await;
                    assert!(st != 401 && st != 403, "{what} is open, got {st}");
                }
                checked += 1;
                continue;
            }
            assert_eq!(send(None).await, 401, "{what} without a key");
            assert_eq!(
                send(Some(&keys.revoked)).await,
                401,
                "{what} with a revoked key"
            );
            assert_eq!(
                send(Some(&keys.expired)).await,
                401,
                "{what} with an expired key"
            );
            assert_eq!(
                send(Some("crmbus_forged")).await,
                401,
                "{what} with a malformed key"
            );
            assert_eq!(
                send(Some(&forged)).await,
                401,
                "{what} with a forged secret"
            );
            let (wrong_scope, wrong_topic, right) = match rule {
                Rule::Admin => (Some(&keys.no_admin), None, &keys.admin),
                Rule::AnyKey => (None, None, &keys.dlq_other),
                Rule::Topic(Access::Publish) | Rule::QueryTopics => (
                    Some(&keys.subscribe_deals),
                    Some(&keys.publish_other),
                    &keys.publish_deals,
                ),
                Rule::Topic(Access::Subscribe) | Rule::Subscription(Access::Subscribe) => (
                    Some(&keys.publish_deals),
                    Some(&keys.subscribe_other),
                    &keys.subscribe_deals,
                ),
                Rule::Topic(Access::Dlq) | Rule::Subscription(Access::Dlq) => (
                    Some(&keys.subscribe_deals),
                    Some(&keys.dlq_other),
                    &keys.dlq_deals,
                ),
                Rule::Subscription(Access::Publish) | Rule::Open => {
                    panic!("{what}: no route has this rule")
                }
            };
            if let Some(k) = wrong_scope {
                assert_eq!(send(Some(k)).await, 403, "{what} with the wrong scope");
            }
            if let Some(k) = wrong_topic {
                assert_eq!(send(Some(k)).await, 403, "{what} with the wrong topic");
            }
            right_scope.push((what, m.clone(), path.clone(), right.clone()));
            checked += 1;
        }
    }
    // The right scope last (a delete removes what it names).
    let mut deletes_last = right_scope;
    deletes_last.sort_by_key(|(_, m, _, _)| m == "DELETE");
    for (what, m, path, key) in deletes_last {
        let mut req = s
            .client
            .request(m.parse().expect("method"), s.url(&path))
            .header("content-type", "application/json")
            .bearer_auth(&key)
            .body("{}");
        if path.ends_with("/events") && m == "POST" {
            req = req
                .header("content-type", "application/cloudevents+json")
                .body(event("e-1", "deal.won", "deal/1", json!({})).to_string());
        }
        let st = req.send().await.expect("request").status().as_u16();
        assert!(
            st != 401 && st != 403,
            "{what} with the right scope got {st}"
        );
    }
    assert!(checked >= 36, "{checked} routes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_what_is_needed_and_keys_name_the_actor() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("deals", 1).await;
    let (st, _) = s
        .post(
            "/v1/topics/deals/subscriptions",
            json!({"name": "erp", "retry": {"max_attempts": 1}}),
        )
        .await;
    assert_eq!(st, 201);
    let admin = make_key(&s, None, "ops-alice", json!({"scopes": ["admin"]})).await;
    let admin = admin["key"].as_str().expect("key");
    let reader = make_key(
        &s,
        Some(admin),
        "reader",
        json!({"scopes": ["subscribe:deals"]}),
    )
    .await;
    let reader_key = reader["key"].as_str().expect("key");
    // No secret in listings.
    let listed = s
        .client
        .get(s.url("/v1/keys"))
        .bearer_auth(admin)
        .send()
        .await
        .expect("list");
    let listed = listed.text().await.expect("text");
    assert!(
        !listed.contains(admin) && !listed.contains(reader_key),
        "{listed}"
    );
    assert!(listed.contains("\"reader\""), "{listed}");

    let r = s.client.get(s.url("/v1/topics")).send().await.expect("get");
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        r.headers()["www-authenticate"].to_str().ok(),
        Some("Bearer realm=\"crmbus\"")
    );
    let (_, problem) = common::status_json(r).await;
    assert_eq!(problem["code"], "unauthorized");
    assert!(
        problem["detail"].as_str().unwrap_or("").contains("Bearer"),
        "{problem}"
    );

    let r = s
        .client
        .post(s.url("/v1/topics/deals/events"))
        .bearer_auth(reader_key)
        .header("content-type", "application/cloudevents+json")
        .body(event("e-1", "deal.won", "deal/1", json!({})).to_string())
        .send()
        .await
        .expect("publish");
    let (st, problem) = common::status_json(r).await;
    assert_eq!(st, 403, "{problem}");
    assert_eq!(problem["code"], "forbidden");
    let detail = problem["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("publish:deals") && detail.contains("reader"),
        "{detail}"
    );

    // The key names who redrove: audited as the key, with the name the caller gave.
    let r = s
        .client
        .post(s.url("/v1/topics/deals/events"))
        .bearer_auth(admin)
        .header("content-type", "application/cloudevents+json")
        .body(event("e-2", "deal.won", "deal/2", json!({})).to_string())
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status().as_u16(), 201);
    let pulled = s
        .client
        .post(s.url("/v1/subscriptions/erp/pull"))
        .bearer_auth(admin)
        .json(&json!({"wait_ms": 5000}))
        .send()
        .await
        .expect("pull");
    let (_, pulled) = common::status_json(pulled).await;
    let ack_id = pulled["deliveries"][0]["ack_id"].as_str().expect("ack id");
    let r = s
        .client
        .post(s.url("/v1/subscriptions/erp/nack"))
        .bearer_auth(admin)
        .json(&json!({"ack_ids": [ack_id], "error": "no"}))
        .send()
        .await
        .expect("nack");
    assert_eq!(r.status().as_u16(), 200);
    for _ in 0..1500 {
        let (_, dlq) = s.get_with("/v1/subscriptions/erp/dlq", admin).await;
        if dlq["entries"].get(0).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = s
        .client
        .post(s.url("/v1/subscriptions/erp/dlq/redrive"))
        .bearer_auth(admin)
        .header("x-crmbus-actor", "alice@acme")
        .json(&json!({"all": true}))
        .send()
        .await
        .expect("redrive");
    assert_eq!(r.status().as_u16(), 200);
    let (_, audit) = s.get_with("/v1/subscriptions/erp/audit", admin).await;
    assert_eq!(
        audit["entries"][0]["who"], "ops-alice (alice@acme)",
        "{audit}"
    );
}

#[tokio::test]
async fn off_loopback_a_server_needs_a_key_or_mode_none_and_mode_keys_needs_one_always() {
    let dir = tempfile::tempdir().expect("dir");
    // Refused before it binds, so nothing listens off loopback even for a moment.
    let config = common::config(
        dir.path(),
        "embedded",
        &[("CRMBUS_SERVER_LISTEN", "0.0.0.0:0")],
    );
    let err = match crmbus_server::Server::start(config).await {
        Ok(_) => panic!("a keyless server started off loopback"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("off loopback") && err.contains("mode = \"none\""),
        "{err}"
    );

    // `keys`: a key is needed even before one exists (the health checks stay open).
    let s = TestServer::start("embedded", &[("CRMBUS_AUTH_MODE", "keys")]).await;
    let (st, problem) = s.get("/v1/topics").await;
    assert_eq!(st, 401, "{problem}");
    let (st, _) = s
        .post("/v1/keys", json!({"name": "root", "scopes": ["admin"]}))
        .await;
    assert_eq!(st, 401);
    let (st, _) = s.get("/healthz").await;
    assert_eq!(st, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_key_is_made_once_and_head_of_an_open_route_needs_none() {
    let s = TestServer::start("embedded", &[]).await;
    let head = |s: &TestServer| {
        let r = s.client.head(s.url("/healthz")).send();
        async move { r.await.expect("HEAD").status().as_u16() }
    };
    assert_eq!(head(&s).await, 200);
    // Two first keys asked for at once: one is made.
    let ask = |name: &str| {
        s.client
            .post(s.url("/v1/keys"))
            .json(&json!({"name": name, "scopes": ["admin"]}))
            .send()
    };
    let (a, b) = tokio::join!(ask("first"), ask("second"));
    let mut statuses = [
        a.expect("a").status().as_u16(),
        b.expect("b").status().as_u16(),
    ];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 401]);
    let (st, _) = s.get("/v1/keys").await;
    assert_eq!(st, 401, "keys are needed now");
    assert_eq!(head(&s).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_last_key_keeps_every_route_closed() {
    let s = TestServer::start("embedded", &[]).await;
    let made = make_key(&s, None, "only", json!({"scopes": ["admin"]})).await;
    let key = made["key"].as_str().expect("key");
    let id = made["id"].as_str().expect("id");
    let r = s
        .client
        .delete(s.url(&format!("/v1/keys/{id}")))
        .bearer_auth(key)
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status().as_u16(), 204);
    // Past the server's one-second memory of whether keys exist.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (st, _) = s.get("/v1/topics").await;
    assert_eq!(st, 401, "no working key, and still closed");
    let (st, _) = s
        .post("/v1/keys", json!({"name": "again", "scopes": ["admin"]}))
        .await;
    assert_eq!(st, 401, "no second bootstrap");
}
