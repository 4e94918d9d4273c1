//! The backend conformance suite: one check per semantic of the [`EventLog`] contract, run
//! against any backend through a [`LogFactory`].
//!
//! A backend crate runs it either as one test with [`run`], or as one `#[tokio::test]` per
//! case with the [`conformance_tests!`](crate::conformance_tests) macro:
//!
//! ```text
//! crmbus::conformance_tests!(my_backend::TestFactory::new());
//! ```

use crate::sync::LockExt;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use crate::error::LogError;
use crate::event::Event;
use crate::log::{EventLog, Retention, StoredEvent, TopicSpec};
use crate::partition::partition_for;

/// Opens backends for the suite.
#[async_trait]
pub trait LogFactory: Send + Sync {
    /// Opens the backend storage called `name`. The suite gives every case a name of its
    /// own; opening the same name again (after [`EventLog::close`]) must open the same
    /// storage, as a process restart would.
    async fn open(&self, name: &str) -> Result<Arc<dyn EventLog>, LogError>;
}

macro_rules! cases {
    ($($case:ident => $doc:literal),* $(,)?) => {
        /// One semantic of the contract, checked by [`run_case`].
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Case {
            $(#[doc = $doc] $case,)*
        }

        impl Case {
            /// Every case, in the order [`run`] runs them.
            pub const ALL: &'static [Case] = &[$(Case::$case,)*];

            /// The case's name.
            pub fn name(self) -> &'static str {
                match self {
                    $(Case::$case => stringify!($case),)*
                }
            }
        }

        async fn dispatch(f: &dyn LogFactory, case: Case, name: &str) -> Result<(), String> {
            match case {
                $(Case::$case => $case(f, name).await,)*
            }
        }
    };
}

cases! {
    topic_lifecycle => "Create, describe, list, delete topics; the errors for bad or missing ones.",
    append_read_order => "Appended events read back in order with contiguous offsets.",
    key_partition_stability => "An event goes to partition_for(subject or id); one key, one partition, in order.",
    multi_topic_append => "One call appends to several topics; a missing topic writes nothing.",
    read_from_time => "offset_for_time finds the first event at or after a time.",
    group_commit_resume => "Committed group offsets survive a reopen and can move.",
    two_groups_independent => "Two groups on one topic keep separate offsets.",
    producer_dedupe => "Same topic + source + id appends once and returns the first receipt.",
    retention => "Size retention removes the oldest events only.",
    large_batch => "A batch of 10,000 events appends and reads back whole.",
    concurrent_appenders => "Concurrent appenders get unique offsets and keep their own order.",
    reopen_keeps_everything => "Topics, events and offsets survive close and reopen; appends continue.",
}

static RUN_ID: AtomicU64 = AtomicU64::new(0);

fn unique_name(case: Case) -> String {
    let n = RUN_ID.fetch_add(1, Ordering::Relaxed);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{}-{}-{}", case.name(), std::process::id(), stamp, n)
}

/// Runs one case against a fresh backend from `factory`.
pub async fn run_case(factory: &dyn LogFactory, case: Case) -> Result<(), String> {
    let name = unique_name(case);
    dispatch(factory, case, &name)
        .await
        .map_err(|e| format!("conformance case {} failed: {e}", case.name()))
}

/// Runs every case; returns the failures as (case, message). Empty means the backend conforms.
pub async fn run(factory: &dyn LogFactory) -> Vec<(Case, String)> {
    let mut failures = Vec::new();
    for &case in Case::ALL {
        if let Err(e) = run_case(factory, case).await {
            failures.push((case, e));
        }
    }
    failures
}

/// Generates one `#[tokio::test]` per conformance case. The argument is an expression
/// producing a [`LogFactory`]; it is evaluated once per test.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@cases $factory;
            topic_lifecycle, append_read_order, key_partition_stability, multi_topic_append,
            read_from_time, group_commit_resume, two_groups_independent, producer_dedupe,
            retention, large_batch, concurrent_appenders, reopen_keeps_everything);
    };
    (@cases $factory:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let factory = $factory;
                if let Err(e) = $crate::conformance::run_case(
                    &factory,
                    $crate::conformance::Case::$case,
                ).await {
                    panic!("{e}");
                }
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------
// helpers

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn err(e: LogError) -> String {
    format!("{e} ({})", e.code())
}

trait Check<T> {
    fn check(self, what: &str) -> Result<T, String>;
}

impl<T> Check<T> for Result<T, LogError> {
    fn check(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {}", err(e)))
    }
}

fn ev(ty: &str, subject: &str, n: u64) -> Event {
    Event::new(
        ty,
        json!({ "deal_id": subject, "n": n, "amount": "1250.00", "currency": "EUR" }),
    )
    .subject(subject)
    .source("urn:crmbus:conformance")
    .extension("userid", "u-1")
}

fn topics(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn read_all(
    log: &dyn EventLog,
    topic: &str,
    partition: u32,
) -> Result<Vec<StoredEvent>, String> {
    let mut out: Vec<StoredEvent> = Vec::new();
    let mut from = 0;
    loop {
        let batch = log.read(topic, partition, from, 1000).await.check("read")?;
        let Some(last) = batch.last() else {
            return Ok(out);
        };
        from = last.offset + 1;
        out.extend(batch);
    }
}

fn contiguous(events: &[StoredEvent]) -> bool {
    events.windows(2).all(|w| w[1].offset == w[0].offset + 1)
}

async fn reopen(
    f: &dyn LogFactory,
    name: &str,
    log: Arc<dyn EventLog>,
) -> Result<Arc<dyn EventLog>, String> {
    log.close().await.check("close")?;
    drop(log);
    f.open(name).await.check("reopen")
}

// ---------------------------------------------------------------------------------------
// the cases

async fn topic_lifecycle(f: &dyn LogFactory, name: &str) -> Result<(), String> {
    let log = f.open(name).await.check("open")?;
    let info = log
        .create_topic(TopicSpec::new("deals", 3))
        .await
        .check("create")?;
    ensure!(
        info.partitions == 3 && info.partition_info.len() == 3,
        "bad info {info:?}"
    );
    ensure!(info.event_count() == 0, "new topic not empty");
    match log.create_topic(TopicSpec::new("deals", 3)).await {
        Err(LogError::TopicExists(t)) => ensure!(t == "deals", "wrong topic in error {t}"),
        other => {
            return Err(format!(
                "second create: expected TopicExists, got {other:?}"
            ))
        }
    }
    for bad in ["", "has space", "a/b", ".."] {
        match log.create_topic(TopicSpec::new(bad, 1)).await {
            Err(LogError::InvalidArgument(_)) => {}
            other => {
                return Err(format!(
                    "name {bad:?}: expected InvalidArgument, got {other:?}"
                ))
            }
        }
    }
    match log.create_topic(TopicSpec::new("zero", 0)).await {
        Err(LogError::InvalidArgument(_)) => {}
        other => {
            return Err(format!(
                "0 partitions: expected InvalidArgument, got {other:?}"
            ))
        }
    }
    let mut accounts = TopicSpec::new("accounts", 1);
    accounts.require_schemas = true;
    let created = log.create_topic(accounts).await.check("create accounts")?;
    ensure!(created.require_schemas, "create lost require_schemas");
    let listed: Vec<(String, bool)> = log
        .list_topics()
        .await
        .check("list")?
        .into_iter()
        .map(|t| (t.name, t.require_schemas))
        .collect();
    ensure!(
        listed == [("accounts".to_string(), true), ("deals".to_string(), false)],
        "list gave {listed:?} (name, require_schemas)"
    );
    ensure!(
        log.describe_topic("accounts")
            .await
            .check("describe accounts")?
            .require_schemas,
        "describe lost require_schemas"
    );
    match log.describe_topic("nope").await {
        Err(LogError::TopicNotFound(_)) => {}
        other => {
            return Err(format!(
                "describe missing: expected TopicNotFound, got {other:?}"
            ))
        }
    }
    match log.read("deals", 3, 0, 10).await {
        Err(LogError::PartitionNotFound { partition: 3, .. }) => {}
        other => {
            return Err(format!(
                "read partition 3: expected PartitionNotFound, got {other:?}"
            ))
        }
    }
    log.append(&topics(&["deals"]), &[ev("deal.won", "deal-1", 0)])
        .await
        .check("append")?;
    log.delete_topic("deals").await.check("delete")?;
    match log.delete_topic("deals").await {
        Err(LogError::TopicNotFound(_)) => {}
        other => {
            return Err(format!(
                "second delete: expected TopicNotFound, got {other:?}"
            ))
        }
    }
    match log
        .append(&topics(&["deals"]), &[ev("deal.won", "deal-1", 0)])
        .await
    {
        Err(LogError::TopicNotFound(_)) => {}
        other => {
            return Err(format!(
                "append to deleted: expected TopicNotFound, got {other:?}"
            ))
        }
    }
    let again = log
        .create_topic(TopicSpec::new("deals", 2))
        .await
        .check("recreate")?;
    ensure!(
        again.event_count() == 0 && again.partitions == 2,
        "recreated topic kept data: {again:?}"
    );
    log.close().await.check("close")
}

async fn append_read_order(f: &dyn LogFactory, name: &str) -> Result<(), String> {
    let log = f.open(name).await.check("open")?;
    log.create_topic(TopicSpec::new("deals", 1))
        .await
        .check("create")?;
    let mut sent = Vec::new();
    for b in 0..3u64 {
        let batch: Vec<Event> = (0..10)
            .map(|i| ev("deal.updated", &format!("deal-{i}"), b * 10 + i))
            .collect();
        let receipts = log
            .append(&topics(&["deals"]), &batch)
            .await
            .check("append")?;
        ensure!(
            receipts.len() == 10,
            "{} receipts for 10 events",
            receipts.len()
        );
        for (i, r) in receipts.iter().enumerate() {
            ensure!(
                r.offset == b * 10 + i as u64,
                "receipt {i} of batch {b} has offset {}",
                r.offset
            );
            ensure!(
                r.id == batch[i].id && r.topic == "deals" && !r.duplicate,
                "bad receipt {r:?}"
            );
        }
        sent.extend(batch);
    }
    let got = read_all(log.as_ref(), "deals", 0).await?;
    ensure!(got.len() == 30, "read {} of 30", got.len());
    for (i, s) in got.iter().enumerate() {
        ensure!(s.offset == i as u64, "event {i} at offset {}", s.offset);
        ensure!(
            s.event == sent[i],
            "event at {i} differs:\n got {:?}\nwant {:?}",
            s.event,
            sent[i]
        );
        ensure!(s.partition == 0, "partition {}", s.partition);
    }
    ensure!(
        got.windows(2).all(|w| w[0].timestamp <= w[1].timestamp),
        "timestamps go backwards"
    );
    let mid = log.read("deals", 0, 12, 5).await.check("read mid")?;
    ensure!(
        mid.len() == 5 && mid[0].offset == 12 && mid[4].offset == 16,
        "read(12, 5) gave {:?}",
        mid.iter().map(|s| s.offset).collect::<Vec<_>>()
    );
    ensure!(
        log.read("deals", 0, 30, 5)
            .await
            .check("read end")?
            .is_empty(),
        "read past end not empty"
    );
    ensure!(
        log.read("deals", 0, 1000, 5)
            .await
            .check("read far")?
            .is_empty(),
        "read far past end not empty"
    );
    let info = log.describe_topic("deals").await.check("describe")?;
    ensure!(
        info.partition_info[0].first_offset == 0 && info.partition_info[0].next_offset == 30,
        "info {info:?}"
    );
    log.close().await.check("close")
}

async fn key_partition_stability(f: &dyn LogFactory, name: &str) -> Result<(), String> {
    let log = f.open(name).await.check("open")?;
    log.create_topic(TopicSpec::new("leads", 8))
        .await
        .check("create")?;
    let mut batch = Vec::new();
    for round in 0..4u64 {
        for k in 0..50 {
            batch.push(ev("lead.updated", &format!("lead-{k}"), round));
        }
    }
    let unkeyed: Vec<Event> = (0..20)
        .map(|i| {
            let mut e = ev("lead.created", "x", i);
            e.subject = None;
            e
        })
        .collect();
    batch.extend(unkeyed);
    let receipts = log
        .append(&topics(&["leads"]), &batch)
        .await
        .check("append")?;
    let mut used = HashSet::new();
    for (r, e) in receipts.iter().zip(&batch) {
        let want = partition_for(e, 8);
        ensure!(
            r.partition == want,
            "event {} went to {} but partition_for says {want}",
            e.id,
            r.partition
        );
        used.insert(r.partition);
    }
    ensure!(used.len() > 4, "50 keys used only partitions {used:?}");
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for p in 0..8 {
        for s in read_all(log.as_ref(), "leads", p).await? {
            if let Some(subject) = &s.event.subject {
                ensure!(
                    partition_for(&s.event, 8) == p,
                    "{subject} read from partition {p}"
                );
                let n = s
                    .event
                    .data_json()
                    .and_then(|d| d["n"].as_u64())
                    .unwrap_or(u64::MAX);
                per_key.entry(subject.clone()).or_default().push(n);
            }
        }
    }
    ensure!(per_key.len() == 50, "{} keys read back", per_key.len());
    for (k, ns) in per_key {
        ensure!(ns == [0, 1, 2, 3], "key {k} read in order {ns:?}");
    }
    log.close().await.check("close")
}

async fn multi_topic_append(f: &dyn LogFactory, name: &str) -> Result<(), String> {
    let log = f.open(name).await.check("open")?;
    log.create_topic(TopicSpec::new("deals", 2))
        .await
        .check("create")?;
    log.create_topic(TopicSpec::new("notifications", 3))
        .await
        .check("create")?;
    let batch: Vec<Event> = (0..6)
        .map(|i| ev("deal.won", &format!("deal-{i}"), i))
        .collect();
    let receipts = log
        .append(&topics(&["deals", "notifications"]), &batch)
        .await
        .check("append")?;
    ensure!(
        receipts.len() == 12,
        "{} receipts for 6 events x 2 topics",
        receipts.len()
    );
    for (i, r) in receipts.iter().enumerate() {
        let (topic, n, e) = if i < 6 {
            ("deals", 2, &batch[i])
        } else {
            ("notifications", 3, &batch[i - 6])
        };
        ensure!(
            r.topic == topic && r.id == e.id,
            "receipt {i} is {r:?}, want topic {topic} id {}",
            e.id
        );
        ensure!(
            r.partition == partition_for(e, n),
            "receipt {i} partition {}",
            r.partition
        );
        let got = log
            .read(topic, r.partition, r.offset, 1)
            .await
            .check("read")?;
        ensure!(
            got.len() == 1 && got[0].event == *e,
            "event of receipt {i} not readable"
        );
    }
    // A missing topic anywhere in the list fails the whole call and writes nothing.
    let before = log
        .describe_topic("deals")
        .await
        .check("describe")?
        .event_count();
    match log
        .append(
            &topics(&["deals", "missing"]),
            &[ev("deal.won", "deal-9", 9)],
        )
        .await
    {
        Err(LogError::TopicNotFound(t)) => ensure!(t == "missing", "error names {t}"),
        other => {
            return Err(format!(
                "append with a missing topic: expected TopicNotFound, got {other:?}"
            ))
        }
    }
    let after = log
        .describe_topic("deals")
        .await
        .check("describe")?
        .event_count();
    ensure!(
        before == after,
        "failed multi-topic append wrote {} events",
        after - before
    );
    match log.append(&[], &[ev("deal.won", "deal-9", 9)]).await {
        Err(LogError::InvalidArgument(_)) => {}
        other => {
            return Err(format!(
                "append to no topic: expected InvalidArgument, got {other:?}"
            ))
        }
    }
    log.close().await.check("close")
}

/// Waits until the wall clock reaches `t` (at most ten seconds: the stamps this waits past
/// are the backend's own, moments old, unless its clock is off).
async fn wait_for_clock(t: chrono::DateTime<chrono::Utc>) -> Result<(), String> {
    let limit = std::time::Instant::now() + Duration::from_secs(10);
    while chrono::Utc::now() < t {
        if std::time::Instant::now() > limit {
            return Err(format!(
                "the clock did not reach {t} in 10 s (now {}): a backend stamps events in the future",
                chrono::Utc::now()
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

async fn read_from_time(f: &dyn LogFactory, name: &str) -> Result<(), String> {
    let log = f.open(name).await.check("open")?;
    log.create_topic(TopicSpec::new("deals", 1))
        .await
        .check("create")?;
    let before_all = chrono::Utc::now() - chrono::Duration::seconds(5);
    let first: Vec<Event> = (0..5).map(|i| ev("deal.created", "deal-1", i)).collect();
    log.append(&topics(&["deals"]), &first)
        .await
        .check("append 1")?;
    // Backends stamp with millisecond or finer clocks: the cut is a millisecond boundary
    // after the first batch's newest stamp, and the second batch is appended only once
    // the clock has passed the millisecond after the cut.
    let stamped = log.read("deals", 0, 0, 100).await.check("read 1")?;
    let newest = stamped
        .iter()
        .map(|s| s.timestamp)
        .max()
        .ok_or("the first batch reads back empty")?;
    let cut_ms = newest.timestamp_millis() + 2;
    let cut = chrono::DateTime::from_timestamp_millis(cut_ms).ok_or("cut out of range")?;
    wait_for_clock(cut + chrono::Duration::milliseconds(1)).await?;
    let second: Vec<Event> = (5..9).map(|i| ev("deal.updated", "deal-1", i)).collect();
    log.append(&topics(&["deals"]), &second)
        .await
        .check("append 2")?;
    let at = log
        .offset_for_time("deals", 0, cut)
        .await
        .check("offset_for_time")?;
    ensure!(at == 5, "offset_for_time(cut) = {at}, want 5");
    let got = log.read("deals", 0, at, 100).await.check("read")?;
    ensure!(
        got.len() == 4 && got[0].event == second[0],
        "read from time gave {} events",
        got.len()
    );
    ensure!(
        got.iter().all(|s| s.timestamp >= cut),
        "an event before the cut was returned"
    );
    let zero = log
        .offset_for_time("deals", 0, before_all)
        .await
        .check("offset_for_time early")?;
    ensure!(zero == 0, "offset_for_time(before all) = {zero}");
    let future = chrono::Utc::now() + chrono::Duration::hours(1);
    let end = log
        .offset_for_time("deals", 0, future)
        .await
        .check("offset_for_time future")?;
    ensure!(
        end == 9,
        "offset_for_time(future) = {end}, want next offset 9"
    );
    log.close().await.check("close")
}

async fn group_commit_resume(f: &dyn LogFactory, name: &str) -> Result<(), String> {
    let log = f.open(name).await.check("open")?;
    log.create_topic(TopicSpec::new("deals", 2))
        .await
        .check("create")?;
    let batch: Vec<Event> = (0..20)
        .map(|i| ev("deal.won", &format!("deal-{i}"), i))
        .collect();
    log.append(&topics(&["deals"]), &batch)
        .await
        .check("append")?;
    ensure!(
        log.committed_offset("crm-sync", "deals", 0)
            .await
            .check("fetch")?
            .is_none(),
        "offset before any commit"
    );
    log.commit_offset("crm-sync", "deals", 0, 3)
        .await
        .check("commit")?;
    log.commit_offset("crm-sync", "deals", 1, 7)
        .await
        .check("commit")?;
    let log = reopen(f, name, log).await?;
    ensure!(
        log.committed_offset("crm-sync", "deals", 0)
            .await
            .check("fetch")?
            == Some(3),
        "p0 offset lost"
    );
    ensure!(
        log.committed_offset("crm-sync", "deals", 1)
            .await
            .check("fetch")?
            == Some(7),
        "p1 offset lost"
    );
    // Resume: read from the committed offset gives the rest.
    let rest = log.read("deals", 0, 3, 1000).await.check("read")?;
    ensure!(
        rest.first().map(|s| s.offset) == Some(3),
        "resume did not start at 3"
    );
    log.commit_offset("crm-sync", "deals", 0, 5)
        .await
        .check("commit")?;
    ensure!(
        log.committed_offset("crm-sync", "deals", 0)
            .await
            .check("fetch")?
            == Some(5),
        "commit did not move"
    );
    // Seek backwards is allowed (replay).
    log.commit_offset("crm-sync", "deals", 0, 1)
        .await
        .check("commit")?;
    ensure!(
        log.committed_offset("crm-sync", "deals", 0)
            .await
            .check("fetch")?
            == Some(1),
        "seek back failed"
    );
    match log.commit_offset("crm-sync", "missing", 0, 1).await {
        Err(LogError::TopicNotFound(_)) => {}
        other => {
            return Err(format!(
                "commit on missing topic: expected TopicNotFound, got {other:?}"
            ))
        }
    }
    log.close().await.check("close")
}

async fn two_groups_independent(f: &dyn LogFactory, name: &str) -> Result<(), String> {
    let log = f.open(name).await.check("open")?;
    log.create_topic(TopicSpec::new("deals", 1))
        .await
        .check("create")?;
    log.commit_offset("notifier", "deals", 0, 10)
        .await
        .check("commit")?;
    log.commit_offset("dashboard", "deals", 0, 2)
        .await
        .check("commit")?;
    ensure!(
        log.committed_offset("notifier", "deals", 0)
            .await
            .check("fetch")?
            == Some(10),
        "notifier"
    );
    ensure!(
        log.committed_offset("dashboard", "deals", 0)
            .await
            .check("fetch")?
            == Some(2),
        "dashboard"
    );
    ensure!(
        log.committed_offset("erp", "deals", 0)
            .await
            .check("fetch")?
            .is_none(),
        "erp has an offset"
    );
    log.commit_offset("dashboard", "deals", 0, 4)
        .await
        .check("commit")?;
    ensure!(
        log.committed_offset("notifier", "deals", 0)
            .await
            .check("fetch")?
            == Some(10),
        "notifier moved with dashboard"
    );
    log.close().await.check("close")
}

async fn producer_dedupe(f: &dyn LogFactory, name: &str) -> Result<(), String> {
    let log = f.open(name).await.check("open")?;
    log.create_topic(TopicSpec::new("deals", 4))
        .await
        .check("create")?;
    log.create_topic(TopicSpec::new("audit", 1))
        .await
        .check("create")?;
    let e = ev("deal.won", "deal-42", 1);
    let first = log
        .append(&topics(&["deals"]), std::slice::from_ref(&e))
        .await
        .check("append")?;
    let again = log
        .append(&topics(&["deals"]), std::slice::from_ref(&e))
        .await
        .check("append again")?;
    ensure!(!first[0].duplicate, "first append marked duplicate");
    ensure!(again[0].duplicate, "second append not marked duplicate");
    ensure!(
        again[0].partition == first[0].partition
            && again[0].offset == first[0].offset
            && again[0].id == e.id,
        "duplicate receipt {:?} differs from first {:?}",
        again[0],
        first[0]
    );
    let count = log
        .describe_topic("deals")
        .await
        .check("describe")?
        .event_count();
    ensure!(count == 1, "{count} events stored after a duplicate");
    // Same id from another source is another event.
    let other = e.clone().source("urn:crmbus:other");
    let r = log
        .append(&topics(&["deals"]), &[other])
        .await
        .check("append other source")?;
    ensure!(!r[0].duplicate, "same id, other source was deduped");
    // Duplicates inside one batch, and the same event in a topic it is new to.
    let fresh = ev("deal.won", "deal-43", 2);
    let r = log
        .append(
            &topics(&["deals", "audit"]),
            &[fresh.clone(), e.clone(), fresh.clone()],
        )
        .await
        .check("append batch")?;
    ensure!(r.len() == 6, "{} receipts", r.len());
    ensure!(
        !r[0].duplicate && r[1].duplicate && r[2].duplicate,
        "deals receipts {:?}",
        &r[..3]
    );
    ensure!(
        r[2].offset == r[0].offset && r[2].partition == r[0].partition,
        "in-batch duplicate got its own offset"
    );
    ensure!(
        !r[3].duplicate && !r[4].duplicate && r[5].duplicate,
        "audit receipts {:?}",
        &r[3..]
    );
    ensure!(
        log.describe_topic("deals")
            .await
            .check("describe")?
            .event_count()
            == 3,
        "deals count"
    );
    ensure!(
        log.describe_topic("audit")
            .await
            .check("describe")?
            .event_count()
            == 2,
        "audit count"
    );
    // The window survives a restart.
    let log = reopen(f, name, log).await?;
    let after = log
        .append(&topics(&["deals"]), std::slice::from_ref(&e))
        .await
        .check("append after reopen")?;
    ensure!(
        after[0].duplicate && after[0].offset == first[0].offset,
        "dedupe lost on reopen: {:?}",
        after[0]
    );
    ensure!(
        log.describe_topic("deals")
            .await
            .check("describe")?
            .event_count()
            == 3,
        "count after reopen"
    );
    log.close().await.check("close")
}

async fn retention(f: &dyn LogFactory, name: &str) -> Result<(), String> {
    let log = f.open(name).await.check("open")?;
    let spec = TopicSpec::new("deals", 1).with_retention(Retention {
        max_age: None,
        max_bytes: Some(32 * 1024),
    });
    log.create_topic(spec).await.check("create")?;
    let mut last = None;
    for b in 0..20u64 {
        let batch: Vec<Event> = (0..50)
            .map(|i| ev("deal.updated", &format!("deal-{i}"), b * 50 + i))
            .collect();
        last = batch.last().cloned();
        log.append(&topics(&["deals"]), &batch)
            .await
            .check("append")?;
    }
    let removed = log.enforce_retention().await.check("enforce")?;
    let info = log.describe_topic("deals").await.check("describe")?;
    let p = &info.partition_info[0];
    ensure!(
        p.next_offset == 1000,
        "next offset {} after retention",
        p.next_offset
    );
    ensure!(
        p.first_offset > 0,
        "nothing removed from ~300 KiB with a 32 KiB limit"
    );
    // Nothing but this call removed anything, so it removed exactly the events before the
    // first kept offset.
    ensure!(
        removed == p.first_offset,
        "enforce_retention reported {removed} removed, but the first kept offset is {}",
        p.first_offset
    );
    let again = log.enforce_retention().await.check("enforce again")?;
    let info = log.describe_topic("deals").await.check("describe")?;
    let p = &info.partition_info[0];
    ensure!(
        again == 0 && p.first_offset == removed,
        "a second enforce_retention with nothing new removed {again} more (first kept offset {})",
        p.first_offset
    );
    let got = read_all(log.as_ref(), "deals", 0).await?;
    ensure!(
        got.first().map(|s| s.offset) == Some(p.first_offset),
        "read from 0 did not start at the first kept offset"
    );
    ensure!(
        contiguous(&got) && got.len() as u64 == 1000 - p.first_offset,
        "kept events not a contiguous suffix"
    );
    ensure!(
        got.last().map(|s| &s.event) == last.as_ref(),
        "newest event was removed"
    );
    log.close().await.check("close")
}

async fn large_batch(f: &dyn LogFactory, name: &str) -> Result<(), String> {
    let log = f.open(name).await.check("open")?;
    log.create_topic(TopicSpec::new("bulk", 2))
        .await
        .check("create")?;
    let pad = "x".repeat(200);
    let batch: Vec<Event> = (0..10_000u64)
        .map(|i| {
            Event::new(
                "contact.updated",
                json!({"contact_id": format!("c-{i}"), "n": i, "pad": pad}),
            )
            .subject(format!("contact-{}", i % 97))
            .source("urn:crmbus:conformance")
        })
        .collect();
    let receipts = log
        .append(&topics(&["bulk"]), &batch)
        .await
        .check("append")?;
    ensure!(receipts.len() == 10_000, "{} receipts", receipts.len());
    let mut total = 0;
    for p in 0..2 {
        let got = read_all(log.as_ref(), "bulk", p).await?;
        ensure!(contiguous(&got), "partition {p} not contiguous");
        let ns: Vec<u64> = got
            .iter()
            .filter_map(|s| s.event.data_json().and_then(|d| d["n"].as_u64()))
            .collect();
        ensure!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "partition {p} out of batch order"
        );
        total += got.len();
    }
    ensure!(total == 10_000, "read back {total} of 10000");
    log.close().await.check("close")
}

async fn concurrent_appenders(f: &dyn LogFactory, name: &str) -> Result<(), String> {
    let log = f.open(name).await.check("open")?;
    log.create_topic(TopicSpec::new("tasks", 3))
        .await
        .check("create")?;
    let mut handles = Vec::new();
    for w in 0..8u64 {
        let log = Arc::clone(&log);
        handles.push(tokio::spawn(async move {
            let mut receipts = Vec::new();
            for b in 0..40u64 {
                let batch: Vec<Event> = (0..5)
                    .map(|i| ev("task.assigned", &format!("task-{w}"), b * 5 + i))
                    .collect();
                receipts.extend(log.append(&["tasks".to_string()], &batch).await?);
            }
            Ok::<_, LogError>(receipts)
        }));
    }
    let mut seen = HashSet::new();
    let mut n = 0;
    for h in handles {
        let receipts = h
            .await
            .map_err(|e| format!("appender panicked: {e}"))?
            .check("append")?;
        for r in receipts {
            ensure!(
                seen.insert((r.partition, r.offset)),
                "offset {}/{} given twice",
                r.partition,
                r.offset
            );
            n += 1;
        }
    }
    ensure!(n == 8 * 40 * 5, "{n} receipts");
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut total = 0;
    for p in 0..3 {
        let got = read_all(log.as_ref(), "tasks", p).await?;
        ensure!(
            contiguous(&got) && got.first().map(|s| s.offset).unwrap_or(0) == 0,
            "partition {p} has gaps"
        );
        total += got.len();
        for s in got {
            let n = s
                .event
                .data_json()
                .and_then(|d| d["n"].as_u64())
                .unwrap_or(u64::MAX);
            per_key
                .entry(s.event.subject.clone().unwrap_or_default())
                .or_default()
                .push(n);
        }
    }
    ensure!(total == 1600, "read {total} of 1600");
    for (k, ns) in per_key {
        ensure!(ns == (0..200).collect::<Vec<_>>(), "key {k} out of order");
    }
    log.close().await.check("close")
}

async fn reopen_keeps_everything(f: &dyn LogFactory, name: &str) -> Result<(), String> {
    let log = f.open(name).await.check("open")?;
    let spec = TopicSpec::new("deals", 3).with_retention(Retention {
        max_age: Some(Duration::from_secs(86_400)),
        max_bytes: Some(1 << 30),
    });
    log.create_topic(spec.clone()).await.check("create")?;
    log.create_topic(TopicSpec::new("leads", 1))
        .await
        .check("create")?;
    let batch: Vec<Event> = (0..300)
        .map(|i| ev("deal.stage_changed", &format!("deal-{}", i % 17), i))
        .collect();
    log.append(&topics(&["deals", "leads"]), &batch)
        .await
        .check("append")?;
    log.commit_offset("g", "deals", 2, 4)
        .await
        .check("commit")?;
    let mut before = Vec::new();
    for p in 0..3 {
        before.push(read_all(log.as_ref(), "deals", p).await?);
    }
    let infos = log.list_topics().await.check("list")?;
    let log = reopen(f, name, log).await?;
    ensure!(
        log.list_topics().await.check("list")? == infos,
        "topics differ after reopen"
    );
    for p in 0..3u32 {
        let after = read_all(log.as_ref(), "deals", p).await?;
        ensure!(
            after == before[p as usize],
            "partition {p} differs after reopen"
        );
    }
    ensure!(
        read_all(log.as_ref(), "leads", 0).await?.len() == 300,
        "leads lost events"
    );
    ensure!(
        log.committed_offset("g", "deals", 2).await.check("fetch")? == Some(4),
        "offset lost"
    );
    let e = ev("deal.won", "deal-1", 1000);
    let p = partition_for(&e, 3);
    let r = log
        .append(&topics(&["deals"]), std::slice::from_ref(&e))
        .await
        .check("append after reopen")?;
    ensure!(
        r[0].offset == before[p as usize].len() as u64,
        "append after reopen got offset {} in partition {p}",
        r[0].offset
    );
    log.close().await.check("close")
}

/// A [`LogFactory`] for [`crate::MemoryLog`]: one in-memory log per name, kept for the life of
/// the factory so that "reopen" finds the same data.
#[derive(Default, Clone)]
pub struct MemoryFactory {
    logs: Arc<std::sync::Mutex<BTreeMap<String, crate::MemoryLog>>>,
}

#[async_trait]
impl LogFactory for MemoryFactory {
    async fn open(&self, name: &str) -> Result<Arc<dyn EventLog>, LogError> {
        let mut logs = self.logs.locked();
        let log = logs.entry(name.to_string()).or_default().clone();
        Ok(Arc::new(log))
    }
}

#[cfg(test)]
mod memory_conformance {
    crate::conformance_tests!(crate::conformance::MemoryFactory::default());
}
