//! Push targets against real receivers on 127.0.0.1: webhooks (signed per Standard
//! Webhooks and checked by the independent `standardwebhooks` package from PyPI, which
//! scripts/services.sh installs into .venv), their retries, Retry-After, 410, the SSRF
//! guard and per-key order; and the Redis Pub/Sub mirror against the machine's Redis.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::{event, TestServer};
use serde_json::{json, Value};

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn event(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// How a receiver answers the `n`th request (0-based) it gets: status and headers.
type Answer = dyn Fn(usize, &Received) -> (u16, Vec<(&'static str, String)>) + Send + Sync;

#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    answer: Arc<Mutex<Arc<Answer>>>,
    addr: SocketAddr,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let rec = Received {
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.to_vec(),
    };
    let n = {
        let mut got = r.got.lock().expect("lock");
        got.push(rec.clone());
        got.len() - 1
    };
    let answer = Arc::clone(&r.answer.lock().expect("lock"));
    let (status, extra) = answer(n, &rec);
    let mut resp = format!("receiver says {status}").into_response();
    *resp.status_mut() = StatusCode::from_u16(status).expect("status");
    for (k, v) in extra {
        resp.headers_mut()
            .insert(k, v.parse().expect("header value"));
    }
    resp
}

impl Receiver {
    /// A receiver on 127.0.0.1 answering with `answer`.
    async fn start(
        answer: impl Fn(usize, &Received) -> (u16, Vec<(&'static str, String)>) + Send + Sync + 'static,
    ) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let r = Receiver {
            got: Arc::new(Mutex::new(Vec::new())),
            answer: Arc::new(Mutex::new(Arc::new(answer))),
            addr,
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(r.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        r
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    fn answer_with(
        &self,
        answer: impl Fn(usize, &Received) -> (u16, Vec<(&'static str, String)>) + Send + Sync + 'static,
    ) {
        *self.answer.lock().expect("lock") = Arc::new(answer);
    }

    /// Waits until it got at least `n` requests (fails after 30 s).
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        wait_until(&format!("{n} requests"), || {
            let got = self.got();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

/// Polls `f` every 20 ms until it gives a value; fails after 30 s naming `what`.
async fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..1500 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gave up waiting for {what}");
}

/// GETs `path` every 20 ms until `ok` holds of the answer; fails after 30 s naming `what`.
async fn poll(s: &TestServer, path: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..1500 {
        let (_, v) = s.get(path).await;
        if ok(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gave up waiting for {what}");
}

/// A server whose webhooks may reach 127.0.0.1 (and only that private address).
async fn server_allowing_loopback() -> TestServer {
    TestServer::start("embedded", &[("CRMBUS_PUSH_ALLOWED_TARGETS", "127.0.0.1")]).await
}

async fn create_webhook(s: &TestServer, topic: &str, name: &str, extra: Value) -> Value {
    let mut body = json!({"name": name, "target": {"kind": "webhook"}});
    merge(&mut body, extra);
    let (status, view) = s
        .post(&format!("/v1/topics/{topic}/subscriptions"), body)
        .await;
    assert_eq!(status, 201, "{view}");
    view
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// Verifies each request's signature with the `standardwebhooks` package (Python), which
/// raises unless one of the header's signatures matches `secret`.
fn verify_with_standardwebhooks(secret: &str, requests: &[Received]) {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/python");
    assert!(
        std::path::Path::new(python).exists(),
        "{python} is missing: run scripts/services.sh (it installs standardwebhooks)"
    );
    let cases: Vec<Value> = requests
        .iter()
        .map(|r| {
            json!({
                "body": String::from_utf8_lossy(&r.body),
                "headers": {
                    "webhook-id": r.headers.get("webhook-id"),
                    "webhook-timestamp": r.headers.get("webhook-timestamp"),
                    "webhook-signature": r.headers.get("webhook-signature"),
                },
            })
        })
        .collect();
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
secret, cases = sys.argv[1], json.loads(sys.stdin.read())
wh = Webhook(secret)
for c in cases:
    wh.verify(c["body"], c["headers"])
bad = dict(cases[0]["headers"])
bad["webhook-signature"] = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
try:
    wh.verify(cases[0]["body"], bad)
except Exception:
    print("verified", len(cases))
    sys.exit(0)
print("a forged signature was accepted")
sys.exit(1)
"#;
    let mut child = std::process::Command::new(python)
        .args(["-c", script, secret])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(serde_json::to_string(&cases).expect("json").as_bytes())
            .expect("write");
    }
    let out = child.wait_with_output().expect("python ran");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "standardwebhooks refused: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.trim(), format!("verified {}", requests.len()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_failing_twice_gets_the_same_signed_event_three_times_and_acks_once() {
    let s = server_allowing_loopback().await;
    s.create_topic("deals", 2).await;
    let receiver = Receiver::start(|n, _| (if n < 2 { 500 } else { 204 }, vec![])).await;
    let view = create_webhook(
        &s,
        "deals",
        "erp-sync",
        json!({"target": {"url": receiver.url(), "headers": {"x-api-key": "k-1"}},
               "retry": {"schedule_ms": [0]}}),
    )
    .await;
    // The create answers with the generated secret, once; every other answer masks it.
    let secret = view["config"]["target"]["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 20,
        "{secret}"
    );
    let (_, shown) = s.get("/v1/subscriptions/erp-sync").await;
    assert_eq!(shown["config"]["target"]["secret"], "whsec_********");
    assert_eq!(shown["config"]["target"]["url"], receiver.url());
    assert!(!shown.to_string().contains(&secret));

    let (st, _) = s
        .publish(
            "deals",
            &event("deal-7", "deal.won", "deal/7", json!({"amount": 1200})),
        )
        .await;
    assert_eq!(st, 201);
    let got = receiver.wait_for(3).await;
    let view = poll(&s, "/v1/subscriptions/erp-sync", "the ack", |v| {
        v["status"]["acked"] == 1
    })
    .await;
    let status = &view["status"];
    assert_eq!(status["dlq_size"], 0);
    assert_eq!(status["retried"], 2);
    let got_now = receiver.got();
    assert_eq!(got_now.len(), 3, "acked once: no fourth request");
    for r in &got {
        assert_eq!(r.headers["webhook-id"], "deal-7");
        assert_eq!(r.headers["content-type"], "application/cloudevents+json");
        assert_eq!(r.headers["x-api-key"], "k-1");
        assert!(r.headers["webhook-timestamp"].parse::<i64>().is_ok());
        assert_eq!(r.event()["id"], "deal-7");
        assert_eq!(r.event()["data"]["amount"], 1200);
    }
    verify_with_standardwebhooks(&secret, &got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_shows_the_last_answers_of_the_receiver() {
    let s = server_allowing_loopback().await;
    s.create_topic("quotes", 1).await;
    let receiver = Receiver::start(|n, _| (if n == 0 { 502 } else { 500 }, vec![])).await;
    create_webhook(
        &s,
        "quotes",
        "pricing",
        json!({"target": {"url": receiver.url()},
               "retry": {"schedule_ms": [0], "max_attempts": 3}}),
    )
    .await;
    s.publish("quotes", &event("q-1", "quote.sent", "quote/1", json!({})))
        .await;
    let dlq = poll(&s, "/v1/subscriptions/pricing/dlq", "a dead letter", |v| {
        v["entries"].get(0).is_some()
    })
    .await;
    let entry = &dlq["entries"][0];
    assert_eq!(entry["attempts"], 3);
    let recent: Vec<&str> = entry["recent_errors"]
        .as_array()
        .expect("recent errors")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(recent.len(), 3, "{entry}");
    assert!(recent[0].contains("502 Bad Gateway"), "{}", recent[0]);
    for e in &recent[1..] {
        assert!(e.contains("500 Internal Server Error"), "{e}");
    }
    for e in &recent {
        assert!(e.contains(" ms: receiver says 50"), "{e}");
    }
    assert_eq!(entry["last_error"], recent[2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_cancels_attempts_in_flight_instead_of_waiting_for_their_timeout() {
    let s = server_allowing_loopback().await;
    s.create_topic("orders", 1).await;
    // A receiver that takes every request and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (arrived, mut arrivals) = tokio::sync::mpsc::unbounded_channel::<()>();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let arrived = arrived.clone();
            async move {
                let _ = arrived.send(());
                std::future::pending::<()>().await;
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    create_webhook(
        &s,
        "orders",
        "slow-partner",
        json!({"target": {"url": format!("http://{addr}/hook"), "timeout_ms": 300000}}),
    )
    .await;
    s.publish(
        "orders",
        &event("o-1", "order.placed", "order/1", json!({})),
    )
    .await;
    tokio::time::timeout(Duration::from_secs(30), arrivals.recv())
        .await
        .expect("the attempt reached the receiver");
    // The attempt would run five minutes: the delete (which stops the engine) must not
    // wait for it.
    let (st, body) = tokio::time::timeout(
        Duration::from_secs(30),
        s.delete("/v1/subscriptions/slow-partner"),
    )
    .await
    .expect("the delete waited for the attempt in flight");
    assert_eq!(st, 204, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_and_the_old_one_both_sign_during_the_overlap() {
    let s = server_allowing_loopback().await;
    s.create_topic("leads", 1).await;
    let receiver = Receiver::start(|_, _| (200, vec![])).await;
    let view = create_webhook(
        &s,
        "leads",
        "crm-notify",
        json!({"target": {"url": receiver.url()}}),
    )
    .await;
    let old = view["config"]["target"]["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    let r = s
        .client
        .put(s.url("/v1/subscriptions/crm-notify/secret"))
        .header("x-crmbus-actor", "ops@acme")
        .json(&json!({"overlap_ms": 3_600_000}))
        .send()
        .await
        .expect("rotate");
    let (st, rotated) = common::status_json(r).await;
    assert_eq!(st, 200, "{rotated}");
    let new = rotated["config"]["target"]["secret"]
        .as_str()
        .expect("new")
        .to_string();
    assert_ne!(new, old);
    assert_eq!(
        rotated["config"]["target"]["previous_secrets"][0]["secret"],
        "whsec_********"
    );
    s.publish(
        "leads",
        &event("lead-1", "lead.converted", "lead/1", json!({})),
    )
    .await;
    let got = receiver.wait_for(1).await;
    let sigs = &got[0].headers["webhook-signature"];
    assert_eq!(sigs.split(' ').count(), 2, "{sigs}");
    verify_with_standardwebhooks(&new, &got);
    verify_with_standardwebhooks(&old, &got);
    let (_, audit) = s.get("/v1/subscriptions/crm-notify/audit").await;
    let entry = &audit["entries"][0];
    assert_eq!(entry["action"], "rotate_secret");
    assert_eq!(entry["who"], "ops@acme");
    // A pull subscription has no secret to rotate.
    s.post("/v1/topics/leads/subscriptions", json!({"name": "puller"}))
        .await;
    let r = s
        .client
        .put(s.url("/v1/subscriptions/puller/secret"))
        .json(&json!({}))
        .send()
        .await
        .expect("rotate");
    let (st, problem) = common::status_json(r).await;
    assert_eq!(st, 404, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or("")
            .contains("no webhook target"),
        "{problem}"
    );
    // And a webhook subscription is not pulled.
    let (st, problem) = s.post("/v1/subscriptions/crm-notify/pull", json!({})).await;
    assert_eq!(st, 400, "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_obeyed_on_the_servers_clock() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = crmbus::ManualClock::starting_now();
    let config = common::config(
        dir.path(),
        "embedded",
        &[("CRMBUS_PUSH_ALLOWED_TARGETS", "127.0.0.1")],
    );
    let server = crmbus_server::Server::start_with_clock(config, Arc::new(clock.clone()))
        .await
        .expect("server");
    let s = TestServer::attach(server, dir);
    s.create_topic("invoices", 1).await;
    let receiver = Receiver::start(|n, _| {
        if n == 0 {
            (503, vec![("retry-after", "120".to_string())])
        } else {
            (200, vec![])
        }
    })
    .await;
    // The default schedule would retry after 5 s: Retry-After says 120 s.
    create_webhook(
        &s,
        "invoices",
        "billing",
        json!({"target": {"url": receiver.url()}}),
    )
    .await;
    s.publish(
        "invoices",
        &event("inv-1", "invoice.generated", "invoice/1", json!({})),
    )
    .await;
    receiver.wait_for(1).await;
    // The engine has read the 503 and scheduled the retry on its clock before the clock
    // moves (the receiver's count alone does not say so: a loaded machine may read the
    // answer after the clock moved, and the retry would be due 120 s after that).
    poll(
        &s,
        "/v1/subscriptions/billing",
        "the retry scheduled",
        |v| v["status"]["retried"] == 1,
    )
    .await;
    // Past the schedule's 5 s, short of the 120 s asked for: no retry. The engine looks
    // at its clock every 100 ms; a second is ten looks.
    clock.advance(Duration::from_secs(60));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.got().len(), 1, "retried before Retry-After");
    clock.advance(Duration::from_secs(61));
    let got = receiver.wait_for(2).await;
    assert_eq!(got[1].headers["webhook-id"], "inv-1");
    let sent_at: Vec<i64> = got
        .iter()
        .map(|r| r.headers["webhook-timestamp"].parse().expect("seconds"))
        .collect();
    assert!(sent_at[1] - sent_at[0] >= 120, "{sent_at:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_subscription_visibly_and_audited_and_enable_resumes() {
    let s = server_allowing_loopback().await;
    s.create_topic("tasks", 1).await;
    let receiver = Receiver::start(|_, _| (410, vec![])).await;
    create_webhook(
        &s,
        "tasks",
        "old-partner",
        json!({"target": {"url": receiver.url()}}),
    )
    .await;
    for i in 0..3 {
        s.publish(
            "tasks",
            &event(
                &format!("t-{i}"),
                "task.assigned",
                "task/1",
                json!({"n": i}),
            ),
        )
        .await;
    }
    let view = poll(
        &s,
        "/v1/subscriptions/old-partner",
        "the target disabled",
        |v| v["config"]["target"]["disabled"].is_object(),
    )
    .await;
    let reason = view["config"]["target"]["disabled"]["reason"]
        .as_str()
        .expect("reason");
    assert!(reason.contains("410"), "{reason}");
    assert_eq!(view["status"]["dlq_size"], 0, "nothing dead-lettered");
    assert_eq!(receiver.got().len(), 1, "nothing sent after the 410");
    let (_, audit) = s.get("/v1/subscriptions/old-partner/audit").await;
    let entry = &audit["entries"][0];
    assert_eq!(entry["action"], "disable");
    assert_eq!(entry["who"], "crmbus");
    assert_eq!(entry["event_id"], "t-0");

    // Kept across a restart.
    let dir = s.stop().await;
    let s = TestServer::start_in(
        dir,
        "embedded",
        &[("CRMBUS_PUSH_ALLOWED_TARGETS", "127.0.0.1")],
    )
    .await;
    let (_, v) = s.get("/v1/subscriptions/old-partner").await;
    assert!(v["config"]["target"]["disabled"].is_object(), "{v}");

    receiver.answer_with(|_, _| (200, vec![]));
    let (st, v) = s
        .post("/v1/subscriptions/old-partner/enable", json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    assert!(v["config"]["target"]["disabled"].is_null(), "{v}");
    let got = receiver.wait_for(4).await;
    let ids: Vec<Value> = got.iter().map(|r| r.event()["id"].clone()).collect();
    assert_eq!(
        ids,
        [json!("t-0"), json!("t-0"), json!("t-1"), json!("t-2")]
    );
    let (_, audit) = s.get("/v1/subscriptions/old-partner/audit").await;
    assert_eq!(audit["entries"][1]["action"], "enable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_targets_are_refused_at_creation_and_names_resolving_to_them_at_send_time() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("deals", 1).await;
    let receiver = Receiver::start(|_, _| (200, vec![])).await;
    let (st, problem) = s
        .post(
            "/v1/topics/deals/subscriptions",
            json!({"name": "direct", "target": {"kind": "webhook", "url": receiver.url()}}),
        )
        .await;
    assert_eq!(st, 400, "{problem}");
    let detail =
        problem["detail"].as_str().unwrap_or_default().to_string() + &problem["errors"].to_string();
    assert!(detail.contains("loopback"), "{problem}");
    assert!(detail.contains("allowed_targets"), "{problem}");

    let by_name = format!("http://localhost:{}/hook", receiver.addr.port());
    create_webhook(
        &s,
        "deals",
        "by-name",
        json!({"target": {"url": by_name}, "retry": {"schedule_ms": [0], "max_attempts": 2}}),
    )
    .await;
    s.publish("deals", &event("d-1", "deal.won", "deal/1", json!({})))
        .await;
    let dlq = poll(&s, "/v1/subscriptions/by-name/dlq", "a dead letter", |v| {
        v["entries"].get(0).is_some()
    })
    .await;
    let entry = &dlq["entries"][0];
    let error = entry["last_error"].as_str().expect("error");
    assert!(error.contains("refused"), "{error}");
    assert!(error.contains("localhost resolves to"), "{error}");
    // Refused at each attempt (a DNS answer may change back), then dead-lettered.
    assert_eq!(entry["attempts"], 2, "{entry}");
    assert!(receiver.got().is_empty(), "nothing reached the receiver");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_key_holds_only_itself_back_and_every_key_keeps_its_order() {
    let s = server_allowing_loopback().await;
    s.create_topic("accounts", 1).await;
    // Every delivery of account/bad fails; the others succeed.
    let receiver = Receiver::start(|_, r| {
        let ev: Value = serde_json::from_slice(&r.body).unwrap_or_default();
        if ev["subject"] == "account/bad" {
            (500, vec![])
        } else {
            (200, vec![])
        }
    })
    .await;
    create_webhook(
        &s,
        "accounts",
        "erp",
        json!({"target": {"url": receiver.url()},
               "retry": {"schedule_ms": [50], "max_attempts": 1000}}),
    )
    .await;
    let keys = ["account/a", "account/bad", "account/b", "account/c"];
    for i in 0..5 {
        for k in keys {
            s.publish(
                "accounts",
                &event(&format!("{k}#{i}"), "account.updated", k, json!({"seq": i})),
            )
            .await;
        }
    }
    let got = wait_until("every healthy key's events", || {
        let got = receiver.got();
        let healthy = got
            .iter()
            .filter(|r| r.event()["subject"] != "account/bad")
            .count();
        (healthy >= 15).then_some(got)
    })
    .await;
    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    for r in &got {
        let ev = r.event();
        seen.entry(ev["subject"].as_str().unwrap_or("").to_string())
            .or_default()
            .push(ev["data"]["seq"].as_i64().unwrap_or(-1));
    }
    for k in ["account/a", "account/b", "account/c"] {
        assert_eq!(seen[k], [0, 1, 2, 3, 4], "{k} in order, each once");
    }
    let bad = &seen["account/bad"];
    assert!(!bad.is_empty());
    assert!(
        bad.iter().all(|seq| *seq == 0),
        "the failing key waits on its first event: {bad:?}"
    );
}

#[cfg(feature = "redis-integration")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_pubsub_listener_gets_every_event_in_order_per_key() {
    use futures_util::StreamExt;
    // The machine's Redis is on 127.0.0.1: the guard must be told it may be reached.
    let s = server_allowing_loopback().await;
    let topic = format!("deals-{}", uuid::Uuid::now_v7().simple());
    s.create_topic(&topic, 3).await;
    let client = redis::Client::open("redis://127.0.0.1:6379").expect("redis");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    let channel = format!("crm:events:{topic}");
    pubsub.subscribe(&channel).await.expect("subscribe");
    let (st, view) = s
        .post(
            &format!("/v1/topics/{topic}/subscriptions"),
            json!({"name": "legacy-listeners",
                   "target": {"kind": "redis_pubsub", "url": "redis://127.0.0.1:6379"}}),
        )
        .await;
    assert_eq!(st, 201, "{view}");
    assert_eq!(view["config"]["target"]["kind"], "redis_pubsub");
    let keys = ["deal/1", "deal/2", "deal/3", "deal/4"];
    for i in 0..10 {
        for k in keys {
            let (st, _) = s
                .publish(
                    &topic,
                    &event(&format!("{k}#{i}"), "deal.updated", k, json!({"seq": i})),
                )
                .await;
            assert_eq!(st, 201);
        }
    }
    let mut messages = pubsub.on_message();
    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    for _ in 0..40 {
        let msg = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .expect("a message within 30 s")
            .expect("stream open");
        assert_eq!(msg.get_channel_name(), channel);
        let payload: Vec<u8> = msg.get_payload().expect("payload");
        let ev: Value = serde_json::from_slice(&payload).expect("a structured CloudEvent");
        assert_eq!(ev["specversion"], "1.0");
        seen.entry(ev["subject"].as_str().unwrap_or("").to_string())
            .or_default()
            .push(ev["data"]["seq"].as_i64().unwrap_or(-1));
    }
    for k in keys {
        assert_eq!(seen[k], (0..10).collect::<Vec<i64>>(), "{k}");
    }
}

/// Runs openssl with `args`, failing with what it printed.
fn openssl(args: &[&std::ffi::OsStr]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl (scripts/services.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a certificate it signed for 127.0.0.1 and localhost, made by the openssl
/// command: (CA certificate, certificate, key) PEM files.
fn test_ca_and_certificate(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let p = |name: &str| dir.join(name);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let os = |s: &[&str]| -> Vec<std::ffi::OsString> { s.iter().map(|a| a.into()).collect() };
    let mut ca = os(&["req", "-x509", "-days", "2", "-subj", "/CN=crmbus test CA"]);
    ca.extend(os(&ec));
    ca.extend([
        "-keyout".into(),
        p("ca.key").into(),
        "-out".into(),
        p("ca.pem").into(),
    ]);
    openssl(&ca.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
    let mut csr = os(&["req", "-subj", "/CN=localhost"]);
    csr.extend(os(&ec));
    csr.extend([
        "-keyout".into(),
        p("key.pem").into(),
        "-out".into(),
        p("leaf.csr").into(),
    ]);
    openssl(&csr.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
    std::fs::write(
        p("leaf.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext file");
    let mut sign = os(&["x509", "-req", "-days", "2", "-CAcreateserial"]);
    sign.extend([
        "-in".into(),
        p("leaf.csr").into(),
        "-CA".into(),
        p("ca.pem").into(),
        "-CAkey".into(),
        p("ca.key").into(),
        "-extfile".into(),
        p("leaf.ext").into(),
        "-out".into(),
        p("cert.pem").into(),
    ]);
    openssl(&sign.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
    (p("ca.pem"), p("cert.pem"), p("key.pem"))
}

/// An HTTPS receiver with the certificate at `cert`: answers every request 200 and sends
/// each request's head and body on the channel.
async fn https_receiver(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
) {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("cert file")
        .collect::<Result<_, _>>()
        .expect("certs");
    let key = PrivateKeyDer::from_pem_file(key).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                // One HTTP/1.1 request: the head, then Content-Length bytes of body.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tx.send((head, buf[head_end..head_end + length].to_vec()));
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_webhook_is_verified_against_the_configured_ca() {
    let certs = tempfile::tempdir().expect("dir");
    let (ca, cert, key) = test_ca_and_certificate(certs.path());
    let (addr, mut requests) = https_receiver(&cert, &key).await;
    let url = format!("https://localhost:{}/hook", addr.port());

    // Trusting the receiver's CA: delivered over TLS and acknowledged.
    let ca_text = ca.display().to_string();
    let s = TestServer::start(
        "embedded",
        &[
            ("CRMBUS_PUSH_ALLOWED_TARGETS", "127.0.0.1, ::1"),
            ("CRMBUS_PUSH_CA_FILE", ca_text.as_str()),
        ],
    )
    .await;
    s.create_topic("deals", 1).await;
    create_webhook(&s, "deals", "tls-hook", json!({"target": {"url": url}})).await;
    s.publish("deals", &event("d-tls", "deal.won", "deal/1", json!({})))
        .await;
    let Ok(Some((head, body))) =
        tokio::time::timeout(Duration::from_secs(30), requests.recv()).await
    else {
        let (_, dlq) = s.get("/v1/subscriptions/tls-hook").await;
        panic!("no request within 30 s: {dlq}");
    };
    assert!(head.contains("webhook-id: d-tls"), "{head}");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("json")["id"],
        "d-tls"
    );
    poll(&s, "/v1/subscriptions/tls-hook", "the ack", |v| {
        v["status"]["acked"] == 1
    })
    .await;

    // Without it: the certificate is refused, nothing is delivered.
    let plain = TestServer::start(
        "embedded",
        &[("CRMBUS_PUSH_ALLOWED_TARGETS", "127.0.0.1, ::1")],
    )
    .await;
    plain.create_topic("deals", 1).await;
    create_webhook(
        &plain,
        "deals",
        "tls-hook",
        json!({"target": {"url": url}, "retry": {"max_attempts": 1}}),
    )
    .await;
    plain
        .publish(
            "deals",
            &event("d-untrusted", "deal.won", "deal/1", json!({})),
        )
        .await;
    let dlq = poll(
        &plain,
        "/v1/subscriptions/tls-hook/dlq",
        "a dead letter",
        |v| v["entries"].get(0).is_some(),
    )
    .await;
    let error = dlq["entries"][0]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("certificate"), "{error}");
    assert!(requests.try_recv().is_err(), "nothing was delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transformation_shapes_the_signed_webhook_body_and_the_dlq_keeps_the_event() {
    let s = server_allowing_loopback().await;
    s.create_topic("won", 1).await;
    // The ERP takes w-1's shaped body and refuses w-2's (a 422: retried on the policy,
    // which allows one attempt here, so it is dead-lettered).
    let receiver = Receiver::start(|_, r| {
        let ok = r.headers.get("webhook-id").is_some_and(|id| id == "w-1");
        (if ok { 200 } else { 422 }, vec![])
    })
    .await;
    let view = create_webhook(
        &s,
        "won",
        "erp-orders",
        json!({"target": {"url": receiver.url()},
               "retry": {"max_attempts": 1},
               "transform": {"order": {"ref": "{{ $.data.deal_id }}", "total": "{{ $.data.amount }}"},
                             "note": "won by {{ $.data.owner }} ({{ $.subject }})"}}),
    )
    .await;
    let secret = view["config"]["target"]["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    for (id, deal, amount) in [("w-1", "deal-1", 1200), ("w-2", "deal-2", 99)] {
        let data = json!({"deal_id": deal, "amount": amount, "owner": "sam"});
        let (st, _) = s.publish("won", &event(id, "deal.won", deal, data)).await;
        assert_eq!(st, 201);
    }
    let got = receiver.wait_for(2).await;
    let first = got
        .iter()
        .find(|r| r.headers["webhook-id"] == "w-1")
        .expect("w-1 was sent");
    assert_eq!(first.headers["content-type"], "application/json");
    assert_eq!(
        first.event(),
        json!({"order": {"ref": "deal-1", "total": 1200}, "note": "won by sam (deal-1)"})
    );
    verify_with_standardwebhooks(&secret, &got);
    // The refused one is dead-lettered as the event itself, not the shaped body.
    let dlq = poll(
        &s,
        "/v1/subscriptions/erp-orders/dlq",
        "the dead letter",
        |v| v["entries"].as_array().is_some_and(|e| e.len() == 1),
    )
    .await;
    let entry = &dlq["entries"][0];
    assert_eq!(entry["event"]["id"], "w-2");
    assert_eq!(entry["event"]["type"], "deal.won");
    assert_eq!(entry["event"]["data"]["deal_id"], "deal-2");
    // The definition shows the template as given.
    let (_, shown) = s.get("/v1/subscriptions/erp-orders").await;
    assert_eq!(
        shown["config"]["transform"]["order"]["ref"],
        "{{ $.data.deal_id }}"
    );
}
