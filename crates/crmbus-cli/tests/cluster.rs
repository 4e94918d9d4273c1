//! Three `crmbus serve` processes over one Redis, and over one NATS JetStream, act as one
//! bus (features `redis-integration` and `nats-integration`; the machine's servers,
//! `CRMBUS_REDIS_URL` and `CRMBUS_NATS_URL`, under a namespace of the run's own, removed at
//! the end).
//!
//! - a subscription created on one server is pulled from another;
//! - 10,000 events published through all three and pulled round-robin from all three (each
//!   batch acked at another server than the one that handed it out) arrive exactly once,
//!   in order per key;
//! - a server killed with SIGKILL: its partitions move to the others and everything is
//!   delivered; a server paused with SIGSTOP past its lease: the others take its partitions
//!   over, and once resumed it can neither hand out nor settle what it held.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::Serve;
use serde_json::{json, Value};

/// The shared backend the servers of a test run on.
#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Redis,
    #[cfg_attr(not(feature = "nats-integration"), allow(dead_code))]
    Nats,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Redis => "redis",
            Backend::Nats => "nats",
        }
    }

    fn url(self) -> String {
        match self {
            Backend::Redis => std::env::var("CRMBUS_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
            Backend::Nats => {
                std::env::var("CRMBUS_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
            }
        }
    }
}

/// The namespace of this run on its backend, removed when dropped.
struct Prefix(String, Backend);

impl Prefix {
    fn new(backend: Backend, case: &str) -> Prefix {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() % 1_000_000_000_000)
            .unwrap_or(0);
        Prefix(
            format!("t-cl-{case}-{}-{nanos}", std::process::id()),
            backend,
        )
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        let (prefix, backend) = (self.0.clone(), self.1);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            match backend {
                Backend::Redis => {
                    let _ = rt.block_on(crmbus_redis::purge(&backend.url(), &prefix));
                }
                Backend::Nats => {
                    #[cfg(feature = "nats-integration")]
                    let _ = rt.block_on(crmbus_nats::purge(&backend.url(), &prefix));
                }
            }
        })
        .join();
    }
}

fn server(prefix: &Prefix) -> Serve {
    Serve::start_with(&[
        ("CRMBUS_STORAGE_BACKEND", prefix.1.name()),
        ("CRMBUS_STORAGE_URL", &prefix.1.url()),
        ("CRMBUS_STORAGE_PREFIX", &prefix.0),
        ("CRMBUS_CLUSTER_LEASE_TTL_MS", "3000"),
    ])
}

/// Each scenario on Redis, and on NATS with its feature.
macro_rules! on_each_backend {
    ($scenario:ident, $redis:ident, $nats:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $redis() {
            $scenario(Backend::Redis).await;
        }

        #[cfg(feature = "nats-integration")]
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $nats() {
            $scenario(Backend::Nats).await;
        }
    };
}

on_each_backend!(
    three_servers_deliver_each_event_once_per_group_in_key_order,
    redis_three_servers_deliver_each_event_once_per_group_in_key_order,
    nats_three_servers_deliver_each_event_once_per_group_in_key_order
);
on_each_backend!(
    a_killed_server_and_a_paused_one_lose_nothing_and_are_fenced,
    redis_a_killed_server_and_a_paused_one_lose_nothing_and_are_fenced,
    nats_a_killed_server_and_a_paused_one_lose_nothing_and_are_fenced
);
on_each_backend!(
    a_rolling_restart_under_load_loses_nothing,
    redis_a_rolling_restart_under_load_loses_nothing,
    nats_a_rolling_restart_under_load_loses_nothing
);

struct Http(reqwest::Client);

impl Http {
    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
    async fn get(&self, base: &str, path: &str) -> (u16, Value) {
        self.send(self.0.get(format!("{base}{path}"))).await
    }
    async fn post(&self, base: &str, path: &str, body: Value) -> (u16, Value) {
        self.send(self.0.post(format!("{base}{path}")).json(&body))
            .await
    }
    async fn publish(&self, base: &str, topic: &str, events: &[Value]) {
        let resp = self
            .0
            .post(format!("{base}/v1/topics/{topic}/events"))
            .header("content-type", "application/cloudevents-batch+json")
            .body(serde_json::to_vec(events).expect("json"))
            .send()
            .await
            .expect("publish");
        assert!(resp.status().is_success(), "publish: {}", resp.status());
    }
}

fn events(from: usize, n: usize, keys: usize) -> Vec<Value> {
    (from..from + n)
        .map(|i| {
            json!({
                "specversion": "1.0", "id": format!("e-{i}"), "source": "/cluster-test",
                "type": "deal.updated", "subject": format!("deal-{}", i % keys),
                "data": {"deal_id": format!("deal-{}", i % keys), "seq": i}
            })
        })
        .collect()
}

/// Waits until every partition of `sub` is owned by one of `owners` (and, when `spread`,
/// by every one of them); returns the cluster view.
async fn wait_owned(
    http: &Http,
    base: &str,
    sub: &str,
    partitions: usize,
    owners: &[String],
    spread: bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, view) = http.get(base, "/v1/cluster").await;
        let parts: Vec<&Value> = view["partitions"]
            .as_array()
            .map(|a| a.iter().filter(|p| p["subscription"] == sub).collect())
            .unwrap_or_default();
        let by: HashSet<String> = parts
            .iter()
            .filter_map(|p| p["owner"].as_str().map(String::from))
            .collect();
        let ok = parts.len() == partitions
            && by.iter().all(|o| owners.contains(o))
            && (!spread || by.len() == owners.len());
        if ok {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "partitions never settled on {owners:?}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every partition of `sub` is owned by the member the assignment names
/// among `members` (no rebalance under way).
async fn wait_assigned(http: &Http, base: &str, sub: &str, partitions: u32, members: &[String]) {
    let ids: Vec<&str> = members.iter().map(String::as_str).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, view) = http.get(base, "/v1/cluster").await;
        let owners: HashMap<u64, String> = view["partitions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|p| p["subscription"] == sub)
                    .filter_map(|p| {
                        Some((p["partition"].as_u64()?, p["owner"].as_str()?.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let settled = (0..partitions).all(|p| {
            owners.get(&u64::from(p)).map(String::as_str) == crmbus::cluster::owner_of(&ids, sub, p)
        });
        if settled {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "partitions never settled on {members:?}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The partitions of `sub` that `member` owns in a cluster view.
fn owned_by(view: &Value, sub: &str, member: &str) -> Vec<u64> {
    view["partitions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|p| p["subscription"] == sub && p["owner"] == member)
                .filter_map(|p| p["partition"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

/// Three servers on one namespace, with the topic `deals` (6 partitions) and the
/// subscription `subscription` created through the first. Fields drop in order: the
/// servers stop before the namespace is removed.
struct Trio {
    servers: Vec<Serve>,
    bases: Vec<String>,
    ids: Vec<String>,
    http: Http,
    prefix: Prefix,
}

async fn trio(backend: Backend, case: &str, subscription: Value) -> Trio {
    let prefix = Prefix::new(backend, case);
    let servers = vec![server(&prefix), server(&prefix), server(&prefix)];
    let bases: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let http = Http(reqwest::Client::new());
    let mut ids = Vec::new();
    for b in &bases {
        ids.push(member_id(&http, b).await);
    }
    let topic = json!({"name": "deals", "partitions": 6});
    let (status, body) = http.post(&bases[0], "/v1/topics", topic).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = http
        .post(&bases[0], "/v1/topics/deals/subscriptions", subscription)
        .await;
    assert_eq!(status, 201, "{body}");
    Trio {
        servers,
        bases,
        ids,
        http,
        prefix,
    }
}

async fn member_id(http: &Http, base: &str) -> String {
    let (_, view) = http.get(base, "/v1/cluster").await;
    view["member"].as_str().expect("member id").to_string()
}

/// What a consumer saw: each event id's deliveries, and the order of seqs per key.
#[derive(Default)]
struct Seen {
    count: HashMap<String, usize>,
    last_seq: HashMap<String, i64>,
    out_of_order: Vec<String>,
    /// Events whose ack settled nothing (their delivery was interrupted by a rebalance
    /// between the pull and the ack): they come again.
    unsettled: HashSet<String>,
    /// The highest attempt each event was delivered with.
    max_attempt: HashMap<String, u64>,
}

impl Seen {
    fn take(&mut self, d: &Value) {
        let id = d["event"]["id"].as_str().unwrap_or_default().to_string();
        let key = d["event"]["subject"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let seq = d["event"]["data"]["seq"].as_i64().unwrap_or(-1);
        let attempt = d["attempt"].as_u64().unwrap_or(0);
        let a = self.max_attempt.entry(id.clone()).or_insert(0);
        *a = (*a).max(attempt);
        let first = !self.count.contains_key(&id);
        *self.count.entry(id.clone()).or_insert(0) += 1;
        if first {
            if let Some(prev) = self.last_seq.get(&key) {
                if *prev > seq {
                    self.out_of_order.push(format!("{key}: {seq} after {prev}"));
                }
            }
            self.last_seq.insert(key, seq);
        }
    }
    fn distinct(&self) -> usize {
        self.count.len()
    }
    fn duplicates(&self) -> usize {
        self.count.values().map(|c| c - 1).sum()
    }
}

/// Pulls round-robin from `bases` until `want` distinct events arrived, acking each batch
/// at the next server (so acks are forwarded to the server that handed them out).
async fn consume(http: &Http, bases: &[String], sub: &str, want: usize, seen: &mut Seen) {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut i = 0usize;
    while seen.distinct() < want {
        assert!(
            Instant::now() < deadline,
            "only {} of {want} events arrived",
            seen.distinct()
        );
        let base = &bases[i % bases.len()];
        let (status, body) = http
            .post(
                base,
                &format!("/v1/subscriptions/{sub}/pull"),
                json!({"max_events": 200, "wait_ms": 100}),
            )
            .await;
        assert_eq!(status, 200, "pull at {base}: {body}");
        let deliveries = body["deliveries"].as_array().cloned().unwrap_or_default();
        if !deliveries.is_empty() {
            for d in &deliveries {
                seen.take(d);
            }
            let ids: Vec<Value> = deliveries.iter().map(|d| d["ack_id"].clone()).collect();
            let acker = &bases[(i + 1) % bases.len()];
            let (status, body) = http
                .post(
                    acker,
                    &format!("/v1/subscriptions/{sub}/ack"),
                    json!({"ack_ids": ids}),
                )
                .await;
            assert_eq!(status, 200, "ack at {acker}: {body}");
            let unknown: HashSet<&str> = body["unknown"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for d in &deliveries {
                if d["ack_id"].as_str().is_some_and(|a| unknown.contains(a)) {
                    seen.unsettled
                        .insert(d["event"]["id"].as_str().unwrap_or_default().to_string());
                }
            }
        }
        i += 1;
    }
}

async fn three_servers_deliver_each_event_once_per_group_in_key_order(backend: Backend) {
    let Trio {
        prefix: _prefix,
        servers,
        bases,
        ids,
        http,
    } = trio(
        backend,
        "once",
        json!({"name": "erp", "ack_timeout_ms": 30000}),
    )
    .await;
    // Created on the first server, known to the third within its next rounds.
    let created = Instant::now();
    loop {
        let (status, _) = http.get(&bases[2], "/v1/subscriptions/erp").await;
        if status == 200 {
            break;
        }
        assert!(
            created.elapsed() < Duration::from_secs(3),
            "the third server never saw the subscription"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "subscription visible on another server after {:?}",
        created.elapsed()
    );
    // A schema registered on the first server is enforced by the third within its next
    // rounds.
    let schema =
        json!({"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}});
    let (status, body) = http
        .post(
            &bases[0],
            "/v1/schemas/cluster.checked/versions",
            json!({"schema": schema}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    http.post(
        &bases[0],
        "/v1/topics",
        json!({"name": "checks", "partitions": 1}),
    )
    .await;
    let registered = Instant::now();
    let bad = json!([{"specversion": "1.0", "id": "bad-1", "source": "/cluster-test",
        "type": "cluster.checked", "data": {"n": "not a number"}}]);
    loop {
        let resp = http
            .0
            .post(format!("{}/v1/topics/checks/events", bases[2]))
            .header("content-type", "application/cloudevents-batch+json")
            .body(serde_json::to_vec(&bad).expect("json"))
            .send()
            .await
            .expect("publish");
        if resp.status().as_u16() == 400 {
            let body: Value = resp.json().await.expect("problem");
            assert_eq!(body["code"], "schema_violation", "{body}");
            break;
        }
        // Accepted before the schema reached it (into a topic nobody consumes here).
        assert!(
            registered.elapsed() < Duration::from_secs(3),
            "the third server never enforced the schema"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "schema enforced on another server after {:?}",
        registered.elapsed()
    );
    let view = wait_owned(&http, &bases[0], "erp", 6, &ids, true).await;
    assert_eq!(view["members"].as_array().map(Vec::len), Some(3), "{view}");

    // 10,000 events through all three servers, 300 keys.
    for (n, chunk) in (0..100).enumerate() {
        let batch = events(chunk * 100, 100, 300);
        http.publish(&bases[n % 3], "deals", &batch).await;
    }
    let mut seen = Seen::default();
    consume(&http, &bases, "erp", 10_000, &mut seen).await;
    assert_eq!(seen.distinct(), 10_000);
    assert_eq!(
        seen.duplicates(),
        0,
        "events delivered twice with nothing failing"
    );
    assert!(
        seen.unsettled.is_empty(),
        "acks that settled nothing: {:?}",
        seen.unsettled
    );
    assert!(
        seen.out_of_order.is_empty(),
        "per-key order broken: {:?}",
        &seen.out_of_order[..seen.out_of_order.len().min(5)]
    );
    // Nothing more comes, from any server.
    for b in &bases {
        let (_, body) = http
            .post(
                b,
                "/v1/subscriptions/erp/pull",
                json!({"max_events": 10, "wait_ms": 300}),
            )
            .await;
        assert_eq!(
            body["deliveries"].as_array().map(Vec::len),
            Some(0),
            "{b}: {body}"
        );
    }
    // The CLI shows the cluster.
    let out = servers[1].ok(&["cluster", "status"]);
    assert!(
        out.contains("(this server)") && out.contains("erp"),
        "{out}"
    );
}

async fn a_killed_server_and_a_paused_one_lose_nothing_and_are_fenced(backend: Backend) {
    let Trio {
        prefix: _prefix,
        mut servers,
        bases,
        ids,
        http,
    } = trio(
        backend,
        "failover",
        json!({"name": "erp", "ack_timeout_ms": 60000}),
    )
    .await;
    wait_owned(&http, &bases[0], "erp", 6, &ids, true).await;
    for chunk in 0..30 {
        http.publish(&bases[chunk % 3], "deals", &events(chunk * 100, 100, 90))
            .await;
    }
    let mut seen = Seen::default();
    consume(&http, &bases, "erp", 1000, &mut seen).await;

    // The third server hands deliveries out, then is paused past its lease.
    let (_, held) = http
        .post(
            &bases[2],
            "/v1/subscriptions/erp/pull",
            json!({"max_events": 50, "wait_ms": 2000}),
        )
        .await;
    let held: Vec<Value> = held["deliveries"].as_array().cloned().unwrap_or_default();
    assert!(!held.is_empty(), "the third server had nothing to hand out");
    let held_ids: HashSet<String> = held
        .iter()
        .filter_map(|d| d["event"]["id"].as_str().map(String::from))
        .collect();
    // Acks are stored within the engine's persist interval (about 200 ms): past it, no
    // acked event may come again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let paused = servers[2].child.id() as i32;
    // SAFETY: signalling a child process this test started.
    unsafe { libc::kill(paused, libc::SIGSTOP) };
    let alive = [ids[0].clone(), ids[1].clone()];
    wait_owned(&http, &bases[0], "erp", 6, &alive, true).await;
    // The others deliver what it held (as a redelivery) and everything else.
    let live = [bases[0].clone(), bases[1].clone()];
    consume(&http, &live, "erp", 2000, &mut seen).await;
    // Resumed: what it handed out before the pause cannot be settled there any more, and
    // it hands out nothing of the partitions it lost.
    // SAFETY: as above.
    unsafe { libc::kill(paused, libc::SIGCONT) };
    let acks: Vec<Value> = held.iter().map(|d| d["ack_id"].clone()).collect();
    let (status, body) = http
        .post(
            &bases[2],
            "/v1/subscriptions/erp/ack",
            json!({"ack_ids": acks}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["settled"], 0,
        "a paused server settled deliveries it no longer owns: {body}"
    );
    let (_, body) = http
        .post(
            &bases[2],
            "/v1/subscriptions/erp/pull",
            json!({"max_events": 100, "wait_ms": 0}),
        )
        .await;
    assert_eq!(
        body["deliveries"].as_array().map(Vec::len),
        Some(0),
        "the resumed server handed out: {body}"
    );

    // Once the resumed server has its partitions back, the first server hands deliveries
    // out, then is killed: its partitions move to the
    // others, and what it handed out comes again as the next attempt.
    wait_assigned(&http, &bases[1], "erp", 6, &ids).await;
    let (_, handed) = http
        .post(
            &bases[0],
            "/v1/subscriptions/erp/pull",
            json!({"max_events": 50, "wait_ms": 2000}),
        )
        .await;
    let handed: Vec<Value> = handed["deliveries"].as_array().cloned().unwrap_or_default();
    let handed_ids: HashSet<String> = handed
        .iter()
        .filter_map(|d| d["event"]["id"].as_str().map(String::from))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, before) = http.get(&bases[1], "/v1/cluster").await;
    let its: Vec<u64> = owned_by(&before, "erp", &ids[0]);
    assert!(!its.is_empty(), "the first server owned nothing: {before}");
    let _ = servers[0].child.kill();
    let _ = servers[0].child.wait();
    let killed = Instant::now();
    // Each partition it owned is taken by another server.
    loop {
        let (_, view) = http.get(&bases[1], "/v1/cluster").await;
        let moved = its.iter().all(|p| {
            view["partitions"].as_array().is_some_and(|a| {
                a.iter().any(|x| {
                    x["subscription"] == "erp"
                        && x["partition"].as_u64() == Some(*p)
                        && x["owner"].as_str().is_some_and(|o| o != ids[0])
                })
            })
        });
        if moved {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "its partitions never moved: {view}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "{}: the killed server's partitions {its:?} were taken over {:?} after SIGKILL (lease TTL 3 s)",
        backend.name(),
        killed.elapsed()
    );
    let rest = [ids[1].clone(), ids[2].clone()];
    wait_owned(&http, &bases[1], "erp", 6, &rest, false).await;
    for chunk in 30..40 {
        http.publish(
            &bases[1 + chunk % 2],
            "deals",
            &events(chunk * 100, 100, 90),
        )
        .await;
    }
    let rest_bases = [bases[1].clone(), bases[2].clone()];
    consume(&http, &rest_bases, "erp", 4000, &mut seen).await;
    assert_eq!(seen.distinct(), 4000);
    assert!(
        seen.out_of_order.is_empty(),
        "per-key order broken: {:?}",
        &seen.out_of_order[..seen.out_of_order.len().min(5)]
    );
    // Duplicates only of what was in flight: the deliveries the paused server held, and
    // what the killed one had handed out and not yet seen acked (none: acks were
    // synchronous), so at most the held ones.
    let dup_ids: Vec<&String> = seen
        .count
        .iter()
        .filter(|(id, c)| {
            **c > 1
                && !held_ids.contains(*id)
                && !handed_ids.contains(*id)
                && !seen.unsettled.contains(*id)
        })
        .map(|(id, _)| id)
        .collect();
    assert!(
        dup_ids.is_empty(),
        "redelivered beyond what was in flight: {dup_ids:?}"
    );
    // Every event the paused and the killed server held came again from another server,
    // as a further attempt.
    for id in held_ids.iter().chain(&handed_ids) {
        assert!(
            seen.count.get(id).is_some_and(|c| *c >= 1),
            "{id} never came again"
        );
        assert!(
            seen.max_attempt.get(id).is_some_and(|a| *a >= 2),
            "{id} came again as attempt {:?}, not as a further attempt (held by the paused server: {}, handed out by the killed one: {})",
            seen.max_attempt.get(id),
            held_ids.contains(id),
            handed_ids.contains(id)
        );
    }
    assert!(
        !handed_ids.is_empty(),
        "the killed server had nothing to hand out"
    );
    drop(servers);
}

/// Publishes `events` through the first of `bases` that takes them (a stopping server
/// refuses; the same ids through another are absorbed by dedupe if the first had them).
async fn publish_somewhere(http: &Http, bases: &[String], start: usize, events: &[Value]) {
    for k in 0..bases.len() * 20 {
        let base = &bases[(start + k) % bases.len()];
        let sent = http
            .0
            .post(format!("{base}/v1/topics/deals/events"))
            .header("content-type", "application/cloudevents-batch+json")
            .body(serde_json::to_vec(events).expect("json"))
            .send()
            .await;
        if sent.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no server took a publish");
}

/// One pull and ack round at `base`, acked at `acker`; a server that is stopping may
/// refuse either (what was pulled and not settled comes again).
async fn pull_round(http: &Http, base: &str, acker: &str, seen: &mut Seen) {
    let pulled = http
        .0
        .post(format!("{base}/v1/subscriptions/erp/pull"))
        .json(&json!({"max_events": 100, "wait_ms": 50}))
        .send()
        .await;
    let Ok(resp) = pulled else { return };
    if !resp.status().is_success() {
        return;
    }
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let deliveries = body["deliveries"].as_array().cloned().unwrap_or_default();
    if deliveries.is_empty() {
        return;
    }
    for d in &deliveries {
        seen.take(d);
    }
    let ids: Vec<Value> = deliveries.iter().map(|d| d["ack_id"].clone()).collect();
    let acked = http
        .0
        .post(format!("{acker}/v1/subscriptions/erp/ack"))
        .json(&json!({"ack_ids": ids}))
        .send()
        .await;
    let unknown: HashSet<String> = match acked {
        Ok(r) if r.status().is_success() => {
            let body: Value = r.json().await.unwrap_or(Value::Null);
            body["unknown"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        }
        _ => deliveries
            .iter()
            .filter_map(|d| d["ack_id"].as_str().map(String::from))
            .collect(),
    };
    for d in &deliveries {
        if d["ack_id"].as_str().is_some_and(|a| unknown.contains(a)) {
            seen.unsettled
                .insert(d["event"]["id"].as_str().unwrap_or_default().to_string());
        }
    }
}

async fn a_rolling_restart_under_load_loses_nothing(backend: Backend) {
    let Trio {
        prefix,
        mut servers,
        http,
        ..
    } = trio(
        backend,
        "rolling",
        json!({"name": "erp", "ack_timeout_ms": 60000}),
    )
    .await;
    let bases = |s: &[Serve]| -> Vec<String> { s.iter().map(|x| x.url.clone()).collect() };
    let mut seen = Seen::default();
    let mut published = 0usize;
    let mut step = 0usize;
    // Each server in turn is stopped gracefully (SIGTERM) and a new one started in its
    // place, while events are published and pulled through whichever servers are up.
    for restart in 0..3 {
        for _ in 0..10 {
            let live = bases(&servers);
            publish_somewhere(&http, &live, step, &events(published, 50, 60)).await;
            published += 50;
            pull_round(
                &http,
                &live[step % live.len()],
                &live[(step + 1) % live.len()],
                &mut seen,
            )
            .await;
            step += 1;
        }
        let old = servers.remove(restart);
        let pid = old.child.id() as i32;
        // SAFETY: signalling a child process this test started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        // Load goes on through the other two while it stops.
        for _ in 0..5 {
            let live = bases(&servers);
            publish_somewhere(&http, &live, step, &events(published, 50, 60)).await;
            published += 50;
            pull_round(
                &http,
                &live[step % live.len()],
                &live[(step + 1) % live.len()],
                &mut seen,
            )
            .await;
            step += 1;
        }
        let mut old = old;
        let _ = old.child.wait();
        servers.insert(restart, server(&prefix));
    }
    // Drain through the restarted cluster.
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.distinct() < published {
        assert!(
            Instant::now() < deadline,
            "only {} of {published} events arrived",
            seen.distinct()
        );
        let live = bases(&servers);
        pull_round(
            &http,
            &live[step % live.len()],
            &live[(step + 1) % live.len()],
            &mut seen,
        )
        .await;
        step += 1;
    }
    for i in 0..published {
        assert!(seen.count.contains_key(&format!("e-{i}")), "e-{i} was lost");
    }
    assert!(
        seen.out_of_order.is_empty(),
        "per-key order broken: {:?}",
        &seen.out_of_order[..seen.out_of_order.len().min(5)]
    );
    let beyond: Vec<&String> = seen
        .count
        .iter()
        .filter(|(id, c)| **c > 1 && !seen.unsettled.contains(*id))
        .map(|(id, _)| id)
        .collect();
    assert!(
        beyond.is_empty(),
        "duplicated beyond what was in flight: {beyond:?}"
    );
    eprintln!(
        "rolling restart: {published} events, {} delivered twice (all in flight at a stop)",
        seen.duplicates()
    );
}

on_each_backend!(
    dead_letters_and_seek_act_on_every_server,
    redis_dead_letters_and_seek_act_on_every_server,
    nats_dead_letters_and_seek_act_on_every_server
);

/// Pulls round-robin from `bases` until `want` distinct events arrived, answering each
/// batch at the next server with `action` ("ack" or "nack").
async fn settle_all(http: &Http, bases: &[String], action: &str, want: usize) -> HashSet<String> {
    let mut got = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0usize;
    while got.len() < want {
        assert!(
            Instant::now() < deadline,
            "only {} of {want} events arrived",
            got.len()
        );
        let base = &bases[i % bases.len()];
        let (_, body) = http
            .post(
                base,
                "/v1/subscriptions/erp/pull",
                json!({"max_events": 100, "wait_ms": 100}),
            )
            .await;
        let deliveries = body["deliveries"].as_array().cloned().unwrap_or_default();
        if !deliveries.is_empty() {
            let ids: Vec<Value> = deliveries.iter().map(|d| d["ack_id"].clone()).collect();
            let other = &bases[(i + 1) % bases.len()];
            let (status, answer) = http
                .post(
                    other,
                    &format!("/v1/subscriptions/erp/{action}"),
                    json!({"ack_ids": ids}),
                )
                .await;
            assert_eq!(status, 200, "{answer}");
            for d in &deliveries {
                got.insert(d["event"]["id"].as_str().unwrap_or_default().to_string());
            }
        }
        i += 1;
    }
    got
}

async fn dead_letters_and_seek_act_on_every_server(backend: Backend) {
    let Trio {
        prefix: _prefix,
        servers: _servers,
        bases,
        ids,
        http,
    } = trio(
        backend,
        "dlq",
        json!({"name": "erp", "retry": {"max_attempts": 1}}),
    )
    .await;
    wait_assigned(&http, &bases[0], "erp", 6, &ids).await;
    http.publish(&bases[1], "deals", &events(0, 60, 60)).await;
    // Every event fails once: 60 dead letters, spread over the three servers' partitions.
    settle_all(&http, &bases, "nack", 60).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = http.get(&bases[2], "/v1/subscriptions/erp/dlq").await;
        if body["entries"].as_array().map(Vec::len) == Some(60) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dead letters never reached 60: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One discard at a server that may not own the entry's partition.
    let (_, body) = http.get(&bases[0], "/v1/subscriptions/erp/dlq").await;
    let entries = body["entries"].as_array().cloned().unwrap_or_default();
    let gone = entries[0]["id"].as_str().expect("entry id").to_string();
    let resp = http
        .0
        .delete(format!("{}/v1/subscriptions/erp/dlq/{gone}", bases[0]))
        .send()
        .await
        .expect("discard");
    assert_eq!(resp.status().as_u16(), 204, "discard through any server");
    // A redrive of all at one server redrives on every server.
    let (status, body) = http
        .post(
            &bases[1],
            "/v1/subscriptions/erp/dlq/redrive",
            json!({"all": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["redriven"], 59, "{body}");
    let again = settle_all(&http, &bases, "ack", 59).await;
    assert_eq!(again.len(), 59);
    let (_, audit) = http.get(&bases[2], "/v1/subscriptions/erp/audit").await;
    assert_eq!(
        audit["entries"].as_array().map(Vec::len),
        Some(60),
        "one discard and 59 redrives audited: {audit}"
    );
    // A seek at one server replays on every server: all 60 come again, once each.
    let (status, body) = http
        .post(
            &bases[2],
            "/v1/subscriptions/erp/seek",
            json!({"to": "earliest"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let replayed = settle_all(&http, &bases, "ack", 60).await;
    assert_eq!(replayed.len(), 60);
    for b in &bases {
        let (_, body) = http
            .post(
                b,
                "/v1/subscriptions/erp/pull",
                json!({"max_events": 10, "wait_ms": 300}),
            )
            .await;
        assert_eq!(
            body["deliveries"].as_array().map(Vec::len),
            Some(0),
            "{b}: {body}"
        );
    }
}

/// A server listening on every interface cannot tell the others where to reach it: it
/// refuses to start without `cluster.advertise_url`, naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_listen_address_needs_an_advertise_url() {
    let prefix = Prefix::new(Backend::Redis, "advertise");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("CRMBUS_STORAGE_BACKEND", "redis")
        .env("CRMBUS_STORAGE_URL", Backend::Redis.url())
        .env("CRMBUS_STORAGE_PREFIX", &prefix.0)
        // Off loopback a server also needs API keys: this test is about the address.
        .env("CRMBUS_AUTH_MODE", "none")
        .output()
        .expect("run crmbus serve");
    assert!(
        !out.status.success(),
        "a wildcard listen address started a cluster member"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cluster.advertise_url"), "{err}");
}
