//! Crash tests at the HTTP level, on the real `crmbus serve` binary.
//!
//! `sigkill_loses_no_acknowledged_publish`: every cycle starts `crmbus serve` on the same
//! data directory, checks everything published so far, retries the publishes whose outcome
//! the previous cycle could not know (the same requests, so the producer dedupe must
//! absorb those that were stored), runs concurrent publishers (single events and small
//! batches, every event with an id of its own) and kills the server with SIGKILL after a
//! random delay. The check after each restart, over the whole accumulated topic:
//!
//! - every acknowledged event (a 201 or 200 receipt) is stored exactly once, at the
//!   partition and offset of its receipt;
//! - an event whose request got no answer (connection reset, refused, 5xx) is stored at
//!   most once, and a batch is stored whole or not at all, across partitions too;
//! - offsets of every partition are contiguous from 0, and nothing else is stored;
//! - one publisher's acknowledged events go forward in each partition, in request order.
//!
//! `sigterm_answers_requests_in_flight_and_exits_cleanly`: a few rounds of publishers
//! interrupted by SIGTERM instead; the server must exit with status 0, requests in flight
//! get their answers, and everything acknowledged is there after the restart.
//!
//! `CRMBUS_HTTP_CRASH_CYCLES` sets the number of SIGKILL cycles (default 20);
//! `CRMBUS_HTTP_CRASH_SEED` replays the random choices of a failed run (the seed is
//! printed at the start; the timing of a real server cannot be replayed exactly).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crmbus::partition::partition_for_key;
use crmbus_client::api::{CreateTopicRequest, ReadQuery, StoredView};
use crmbus_client::{Client, Encoded};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{json, Value};

const TOPIC: &str = "deals";
const PARTITIONS: u32 = 4;
const PUBLISHERS: usize = 8;
const SOURCE: &str = "urn:crmbus:test:http-crash";
/// Generous limits that only keep a broken run from hanging forever.
const START_LIMIT: Duration = Duration::from_secs(120);
const REQUEST_LIMIT: Duration = Duration::from_secs(120);
const EXIT_LIMIT: Duration = Duration::from_secs(120);
/// A publisher stops by itself after this long, should its server never go away.
const PUBLISH_LIMIT: Duration = Duration::from_secs(60);

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got '{v}'")),
        Err(_) => default,
    }
}

fn seed() -> u64 {
    let seed = env_number("CRMBUS_HTTP_CRASH_SEED", rand::random());
    eprintln!("seed {seed} (CRMBUS_HTTP_CRASH_SEED={seed} reuses it)");
    seed
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

// ---------------------------------------------------------------------------------------
// The server process.

/// A running `crmbus serve`, its address, and everything it wrote to stderr.
struct ServerProc {
    child: Child,
    url: String,
    stderr: Arc<Mutex<String>>,
}

impl ServerProc {
    /// Starts `crmbus serve` on `data` and waits for the line that says where it listens.
    fn start(data: &Path) -> ServerProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crmbus"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start crmbus serve");
        let pipe = child.stderr.take().expect("server stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let log = Arc::clone(&stderr);
        let reader = thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(format!("http://{addr}"));
                }
                let mut log = log.lock().expect("stderr log");
                log.push_str(&line);
                log.push('\n');
            }
        });
        match rx.recv_timeout(START_LIMIT) {
            Ok(url) => ServerProc { child, url, stderr },
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                // The server is gone, so its stderr ends: wait for all of it.
                let _ = reader.join();
                panic!(
                    "crmbus serve did not say where it listens ({e}); stderr:\n{}",
                    stderr.lock().expect("stderr log")
                );
            }
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr log").clone()
    }

    /// SIGKILL, and checks that the kill is what ended the server.
    fn kill(&mut self, what: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{what}: the server exited by itself ({status}); stderr:\n{}",
                self.stderr()
            );
        }
        self.child.kill().expect("SIGKILL the server");
        let status = self.child.wait().expect("wait for the server");
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "{what}: the server ended with {status}, not by SIGKILL; stderr:\n{}",
            self.stderr()
        );
    }

    /// SIGTERM: the graceful stop.
    fn terminate(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) with a pid this test started and has not reaped yet.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM the server");
    }

    /// Waits for the server to exit by itself.
    fn wait(&mut self, what: &str) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                return status;
            }
            if started.elapsed() > EXIT_LIMIT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{what}: the server did not exit within {EXIT_LIMIT:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Publishing.

/// One publish request, kept so that it can be sent again unchanged.
#[derive(Debug, Clone)]
struct Sent {
    /// `c<cycle>-p<publisher>-r<request>`.
    key: String,
    ids: Vec<String>,
    subjects: Vec<String>,
    batch: bool,
    body: Vec<u8>,
}

/// What a receipt said about one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Receipt {
    partition: u32,
    offset: u64,
    duplicate: bool,
}

/// How a request ended.
#[derive(Debug)]
enum Outcome {
    /// A 2xx with one receipt per event, in order.
    Acked {
        receipts: Vec<Receipt>,
        /// When the request was sent and when its answer was read.
        sent: Instant,
        at: Instant,
    },
    /// No answer, or a 5xx: the events may or may not be stored.
    Unknown(String),
    /// A 4xx: the request itself is wrong (a bug of this test or of the server).
    Rejected(u16, String),
}

fn event(id: &str, subject: &str, n: u64) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": SOURCE,
        "type": "deal.stage_changed",
        "subject": subject,
        "datacontenttype": "application/json",
        "data": {
            "deal_id": subject,
            "old_stage": "proposal",
            "new_stage": if n.is_multiple_of(2) { "negotiation" } else { "closed_won" },
            "changed_by": format!("user-{}", n % 17),
        }
    })
}

fn make_request(key: String, rng: &mut StdRng) -> Sent {
    let batch = rng.random_bool(0.5);
    let n = if batch { rng.random_range(2..=10) } else { 1 };
    let mut ids = Vec::new();
    let mut subjects = Vec::new();
    let mut events = Vec::new();
    for i in 0..n {
        let id = format!("{key}-e{i}");
        let subject = format!("deal-{}", rng.random_range(0..64u32));
        events.push(event(&id, &subject, i));
        ids.push(id);
        subjects.push(subject);
    }
    let body = if batch {
        serde_json::to_vec(&events)
    } else {
        serde_json::to_vec(&events[0])
    }
    .expect("serialize");
    Sent {
        key,
        ids,
        subjects,
        batch,
        body,
    }
}

async fn send(client: &Client, req: &Sent) -> Outcome {
    let sent = Instant::now();
    let body = Encoded {
        content_type: if req.batch {
            "application/cloudevents-batch+json"
        } else {
            "application/cloudevents+json"
        },
        body: req.body.clone().into(),
    };
    let answer = match client.publish_encoded(&[TOPIC], &body).await {
        Ok(answer) => answer,
        // A refusal other than a 5xx means the request itself is wrong.
        Err(e) => match e.status() {
            Some(status) if status < 500 => return Outcome::Rejected(status, e.to_string()),
            _ => return Outcome::Unknown(format!("{e:?}")),
        },
    };
    let at = Instant::now();
    assert_eq!(
        answer.receipts.len(),
        req.ids.len(),
        "request {}: one receipt per event: {answer:?}",
        req.key
    );
    let receipts = answer
        .receipts
        .iter()
        .zip(&req.ids)
        .map(|(r, id)| {
            assert_eq!(&r.id, id, "request {}: receipt order", req.key);
            assert_eq!(r.topic, TOPIC, "request {}", req.key);
            Receipt {
                partition: r.partition,
                offset: r.offset,
                duplicate: r.duplicate,
            }
        })
        .collect();
    Outcome::Acked { receipts, sent, at }
}

/// Publishes as fast as the server answers until a request goes unanswered (the server is
/// gone) or the time limit passes. Returns every request in order with its outcome.
async fn publisher(client: Client, prefix: String, seed: u64) -> Vec<(Sent, Outcome)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut done = Vec::new();
    for r in 0.. {
        if started.elapsed() > PUBLISH_LIMIT {
            break;
        }
        let req = make_request(format!("{prefix}-r{r}"), &mut rng);
        let outcome = send(&client, &req).await;
        let stop = !matches!(outcome, Outcome::Acked { .. });
        done.push((req, outcome));
        if stop {
            break;
        }
    }
    done
}

fn client(url: &str) -> Client {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_LIMIT)
        .build()
        .expect("HTTP client");
    Client::with_http(url, http).expect("server URL")
}

/// Starts `PUBLISHERS` publishers of cycle `cycle` against `url`.
fn start_publishers(
    rt: &tokio::runtime::Runtime,
    url: &str,
    cycle: usize,
    seed: u64,
) -> Vec<tokio::task::JoinHandle<Vec<(Sent, Outcome)>>> {
    let client = client(url);
    (0..PUBLISHERS)
        .map(|p| {
            rt.spawn(publisher(
                client.clone(),
                format!("c{cycle}-p{p}"),
                seed ^ ((cycle as u64) << 32) ^ p as u64,
            ))
        })
        .collect()
}

fn join_publishers(
    rt: &tokio::runtime::Runtime,
    handles: Vec<tokio::task::JoinHandle<Vec<(Sent, Outcome)>>>,
) -> Vec<Vec<(Sent, Outcome)>> {
    rt.block_on(async {
        let mut all = Vec::new();
        for h in handles {
            all.push(h.await.expect("publisher task"));
        }
        all
    })
}

async fn create_topic(url: &str) {
    client(url)
        .create_topic(&CreateTopicRequest {
            name: TOPIC.to_string(),
            partitions: Some(PARTITIONS),
            retention: None,
            require_schemas: false,
        })
        .await
        .expect("create topic");
}

// ---------------------------------------------------------------------------------------
// What the test knows, and the checks.

/// Every request sent so far and what is known of it.
#[derive(Default)]
struct Ledger {
    requests: Vec<Sent>,
    /// Event id → (request index, position in the request).
    by_id: HashMap<String, (usize, usize)>,
    /// Acknowledged event id → where its receipt put it.
    acked: HashMap<String, (u32, u64)>,
    /// Requests whose outcome is unknown and not yet retried.
    pending: Vec<usize>,
    /// Requests that got no answer, over the whole run.
    unknown_total: usize,
}

impl Ledger {
    fn add(&mut self, req: Sent) -> usize {
        let i = self.requests.len();
        for (j, id) in req.ids.iter().enumerate() {
            assert!(
                self.by_id.insert(id.clone(), (i, j)).is_none(),
                "the test made id {id} twice"
            );
        }
        self.requests.push(req);
        i
    }

    fn ack(&mut self, i: usize, receipts: &[Receipt], what: &str) {
        for (id, r) in self.requests[i].ids.iter().zip(receipts) {
            if let Some(prev) = self.acked.insert(id.clone(), (r.partition, r.offset)) {
                assert_eq!(
                    prev,
                    (r.partition, r.offset),
                    "{what}: event {id} acknowledged twice at different places"
                );
            }
        }
    }

    /// Records one cycle's publishers. Fresh ids must never be receipted as duplicates,
    /// and each publisher's acknowledgements go forward in every partition.
    fn record(&mut self, results: Vec<Vec<(Sent, Outcome)>>, what: &str) -> RoundStats {
        let mut stats = RoundStats::default();
        for (p, list) in results.into_iter().enumerate() {
            let mut last: HashMap<u32, u64> = HashMap::new();
            for (req, outcome) in list {
                let key = req.key.clone();
                let i = self.add(req);
                match outcome {
                    Outcome::Acked { receipts, sent, at } => {
                        for r in &receipts {
                            assert!(
                                !r.duplicate,
                                "{what}: request {key}: fresh event receipted as a duplicate"
                            );
                            if let Some(prev) = last.insert(r.partition, r.offset) {
                                assert!(
                                    prev < r.offset,
                                    "{what}: publisher {p}: request {key} acknowledged at offset {} of partition {} after offset {prev}",
                                    r.offset, r.partition
                                );
                            }
                        }
                        stats.acked_events += receipts.len();
                        stats.answered.push((sent, at));
                        self.ack(i, &receipts, what);
                    }
                    Outcome::Unknown(why) => {
                        stats.unknown.push(why);
                        self.pending.push(i);
                        self.unknown_total += 1;
                    }
                    Outcome::Rejected(status, text) => {
                        panic!("{what}: request {key} rejected with {status}: {text}")
                    }
                }
            }
        }
        stats
    }

    /// Requests of unknown outcome (no answer) whose events are stored nevertheless: the
    /// server processed them and then dropped the answer.
    fn processed_but_unanswered(&self, stored: &HashMap<String, (u32, u64)>) -> Vec<String> {
        self.pending
            .iter()
            .map(|&i| &self.requests[i])
            .filter(|req| req.ids.iter().any(|id| stored.contains_key(id)))
            .map(|req| req.key.clone())
            .collect()
    }

    /// Sends every request of unknown outcome again. Where the first attempt was stored
    /// (`stored` says so), the producer dedupe must answer with the first receipts.
    async fn retry_pending(&mut self, url: &str, stored: &HashMap<String, (u32, u64)>, what: &str) {
        let client = client(url);
        for i in std::mem::take(&mut self.pending) {
            let req = self.requests[i].clone();
            let outcome = send(&client, &req).await;
            let Outcome::Acked { receipts, .. } = outcome else {
                panic!(
                    "{what}: retry of request {} failed: {outcome:?}; server up",
                    req.key
                );
            };
            for (id, r) in req.ids.iter().zip(&receipts) {
                match stored.get(id) {
                    Some(&at) => assert_eq!(
                        (r.partition, r.offset, r.duplicate),
                        (at.0, at.1, true),
                        "{what}: retry of stored event {id} must return its first receipt"
                    ),
                    None => assert!(
                        !r.duplicate,
                        "{what}: retry of event {id}, which is not stored, was receipted as a duplicate"
                    ),
                }
            }
            self.ack(i, &receipts, what);
        }
    }
}

#[derive(Default)]
struct RoundStats {
    acked_events: usize,
    /// (sent, answer read) of each acknowledged request.
    answered: Vec<(Instant, Instant)>,
    unknown: Vec<String>,
}

/// Reads one partition from offset 0 to its end.
async fn read_partition(client: &Client, p: u32) -> Vec<StoredView> {
    let mut events = Vec::new();
    let mut from = 0u64;
    loop {
        let query = ReadQuery {
            partition: Some(p),
            from: Some(from),
            from_time: None,
            limit: Some(1000),
        };
        let read = client
            .read(TOPIC, &query)
            .await
            .unwrap_or_else(|e| panic!("read partition {p} from {from}: {e}"));
        let Some(last) = read.events.last() else {
            return events;
        };
        from = last.offset + 1;
        events.extend(read.events);
    }
}

/// Reads the whole topic and checks it against the ledger. Returns where each stored
/// event is.
async fn verify(url: &str, ledger: &Ledger, what: &str) -> Verified {
    let client = client(url);
    let mut stored: HashMap<String, (u32, u64)> = HashMap::new();
    for p in 0..PARTITIONS {
        let events = read_partition(&client, p).await;
        for (i, e) in events.iter().enumerate() {
            let offset = e.offset;
            assert_eq!(
                offset, i as u64,
                "{what}: partition {p}: offsets are not contiguous from 0"
            );
            assert_eq!(e.partition, p, "{what}: partition {p} offset {offset}");
            let ev = &e.event;
            let id = ev["id"].as_str().expect("event id");
            let Some(&(r, j)) = ledger.by_id.get(id) else {
                panic!("{what}: partition {p} offset {offset} holds {id}, which was never sent")
            };
            assert_eq!(ev["source"], SOURCE, "{what}: event {id}");
            assert_eq!(
                ev["subject"],
                ledger.requests[r].subjects[j].as_str(),
                "{what}: event {id}"
            );
            assert_eq!(
                ev["data"]["deal_id"], ev["subject"],
                "{what}: event {id} data"
            );
            if let Some(prev) = stored.insert(id.to_string(), (p, offset)) {
                panic!("{what}: event {id} is stored twice: at {prev:?} and at ({p}, {offset})");
            }
        }
    }
    let mut missing = BTreeMap::new();
    for (id, &at) in &ledger.acked {
        match stored.get(id) {
            Some(&found) if found == at => {}
            found => {
                missing.insert(id.clone(), (at, found));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{what}: {} acknowledged events are not where their receipts put them \
         (id: (receipt, found)), first ones: {:?}",
        missing.len(),
        missing.iter().take(20).collect::<Vec<_>>()
    );
    // A request's events are stored all or none — in each partition (contiguous and in
    // order) and across partitions (the embedded log's batch journal completes a batch a
    // crash left in some partitions only, when the server starts again).
    for req in &ledger.requests {
        let mut groups: BTreeMap<u32, Vec<&String>> = BTreeMap::new();
        for (id, subject) in req.ids.iter().zip(&req.subjects) {
            groups
                .entry(partition_for_key(subject, PARTITIONS))
                .or_default()
                .push(id);
        }
        for (p, ids) in &groups {
            let found: Vec<(u32, u64)> = ids
                .iter()
                .filter_map(|id| stored.get(*id).copied())
                .collect();
            if found.is_empty() {
                continue;
            }
            assert_eq!(
                found.len(),
                ids.len(),
                "{what}: only {} of the {} events of request {} in partition {p} are stored",
                found.len(),
                ids.len(),
                req.key
            );
            for (k, &(fp, fo)) in found.iter().enumerate() {
                assert_eq!(
                    fp, *p,
                    "{what}: an event of request {} is in the wrong partition",
                    req.key
                );
                assert_eq!(
                    fo,
                    found[0].1 + k as u64,
                    "{what}: the events of request {} in partition {p} are not contiguous and in order: {found:?}",
                    req.key
                );
            }
        }
        let present = req.ids.iter().filter(|id| stored.contains_key(*id)).count();
        assert!(
            present == 0 || present == req.ids.len(),
            "{what}: only {present} of the {} events of batch {} are stored",
            req.ids.len(),
            req.key
        );
    }
    Verified { stored }
}

/// What [`verify`] found: where each stored event is.
struct Verified {
    stored: HashMap<String, (u32, u64)>,
}

// ---------------------------------------------------------------------------------------
// The tests.

#[test]
fn sigkill_loses_no_acknowledged_publish() {
    let seed = seed();
    let cycles = env_number("CRMBUS_HTTP_CRASH_CYCLES", 20) as usize;
    let mut rng = StdRng::seed_from_u64(seed);
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut ledger = Ledger::default();
    // Events acknowledged by a server that was then killed (and checked after restart).
    let mut acked_before_kill = 0;
    for cycle in 0..cycles {
        let what = format!("seed {seed}, cycle {cycle}");
        let mut server = ServerProc::start(&data);
        let stored = if cycle == 0 {
            rt.block_on(create_topic(&server.url));
            0
        } else {
            let v = rt.block_on(verify(&server.url, &ledger, &what));
            rt.block_on(ledger.retry_pending(&server.url, &v.stored, &what));
            v.stored.len()
        };
        let delay = Duration::from_millis(rng.random_range(50..400));
        let publishers = start_publishers(&rt, &server.url, cycle, seed);
        // The random moment of the kill is what this test varies (seeded), not a wait for
        // something to happen.
        thread::sleep(delay);
        server.kill(&what);
        let stats = ledger.record(join_publishers(&rt, publishers), &what);
        acked_before_kill += stats.acked_events;
        eprintln!(
            "cycle {cycle}: {stored} stored at start; killed after {delay:?}: {} events acknowledged, {} requests unanswered",
            stats.acked_events,
            stats.unknown.len()
        );
    }
    // The last crash, checked and its unknowns resolved; then a clean stop.
    let what = format!("seed {seed}, after the last cycle");
    let mut server = ServerProc::start(&data);
    let v = rt.block_on(verify(&server.url, &ledger, &what));
    rt.block_on(ledger.retry_pending(&server.url, &v.stored, &what));
    let v = rt.block_on(verify(&server.url, &ledger, &what));
    assert_eq!(
        v.stored.len(),
        ledger.acked.len(),
        "{what}: everything is acknowledged now"
    );
    server.terminate();
    let status = server.wait(&what);
    assert!(
        status.success(),
        "{what}: exit {status}; stderr:\n{}",
        server.stderr()
    );
    eprintln!(
        "{cycles} SIGKILL cycles: {acked_before_kill} events acknowledged before a kill, {} in total, \
         {} requests of unknown outcome retried",
        ledger.acked.len(),
        ledger.unknown_total
    );
    // Without these the checks above would have had nothing to check: every acknowledged
    // event (checked after each restart) and every request the kill cut off.
    assert!(
        acked_before_kill > 0,
        "seed {seed}: no publish was acknowledged before a SIGKILL in {cycles} cycles"
    );
    assert!(
        ledger.unknown_total > 0,
        "seed {seed}: no SIGKILL in {cycles} cycles cut off a request in flight"
    );
}

#[test]
fn sigterm_answers_requests_in_flight_and_exits_cleanly() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut ledger = Ledger::default();
    let mut in_flight_at_signal = 0;
    for round in 0..3 {
        let what = format!("seed {seed}, SIGTERM round {round}");
        let mut server = ServerProc::start(&data);
        if round == 0 {
            rt.block_on(create_topic(&server.url));
        } else {
            let v = rt.block_on(verify(&server.url, &ledger, &what));
            assert_every_processed_request_answered(&ledger, &v.stored, &what);
            rt.block_on(ledger.retry_pending(&server.url, &v.stored, &what));
        }
        let publishers = start_publishers(&rt, &server.url, round, seed);
        // The random moment of the signal is what this test varies (seeded), not a wait
        // for something to happen.
        thread::sleep(Duration::from_millis(rng.random_range(100..300)));
        let signalled = Instant::now();
        server.terminate();
        let status = server.wait(&what);
        let stats = ledger.record(join_publishers(&rt, publishers), &what);
        let log = server.stderr();
        assert!(status.success(), "{what}: exit {status}; stderr:\n{log}");
        assert!(
            log.contains("crmbus: stopped") && !log.contains("cut off"),
            "{what}: the stop was not clean; stderr:\n{log}"
        );
        // Nothing may be answered with a server error or a cut-off body on the way down;
        // what got no answer at all must not have been processed (checked after the
        // restart, when the log can be read).
        for why in &stats.unknown {
            assert!(
                !why.starts_with("status ") && !why.contains("body cut off"),
                "{what}: a request got {why}"
            );
        }
        // Requests sent before the signal and answered after it: in flight at the signal.
        let after = stats
            .answered
            .iter()
            .filter(|&&(sent, at)| sent < signalled && at > signalled)
            .count();
        in_flight_at_signal += after;
        eprintln!(
            "{what}: {} events acknowledged ({after} requests in flight at SIGTERM answered), {} requests unanswered",
            stats.acked_events,
            stats.unknown.len()
        );
    }
    let what = format!("seed {seed}, after the SIGTERM rounds");
    let mut server = ServerProc::start(&data);
    let v = rt.block_on(verify(&server.url, &ledger, &what));
    assert_every_processed_request_answered(&ledger, &v.stored, &what);
    rt.block_on(ledger.retry_pending(&server.url, &v.stored, &what));
    rt.block_on(verify(&server.url, &ledger, &what));
    server.terminate();
    let status = server.wait(&what);
    assert!(status.success(), "{what}: exit {status}");
    assert!(!ledger.acked.is_empty(), "{what}: nothing was acknowledged");
    // Eight publishers were busy at each SIGTERM, so requests were in flight then; that
    // they were answered (and not processed and dropped) is checked above.
    assert!(
        in_flight_at_signal > 0,
        "{what}: no request was in flight at a SIGTERM, so the graceful stop was not tested"
    );
}

/// The graceful stop's guarantee, seen from the client: a request the server processed
/// (its events are in the log) got its answer. Requests without an answer are those the
/// server never took (connection refused or closed before it read them), so none of their
/// events may be stored. Every acknowledged event being stored is checked by `verify`.
fn assert_every_processed_request_answered(
    ledger: &Ledger,
    stored: &HashMap<String, (u32, u64)>,
    what: &str,
) {
    let dropped = ledger.processed_but_unanswered(stored);
    assert!(
        dropped.is_empty(),
        "{what}: {} requests were processed (their events are stored) but got no answer at the \
         SIGTERM: {dropped:?}",
        dropped.len()
    );
}
