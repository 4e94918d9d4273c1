//! Delivery engine states it must never fall into (issue 13): a panicking handler, an
//! offset commit that fails between the done markers and the offset, a state write that
//! fails with dead letters in it. MemoryLog and MemoryStateStore, wrapped to fail on cue.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crmbus::delivery::{
    handler_fn, seek_group, Delivery, Engine, GroupState, HandlerError, OnExhausted, RetryPolicy,
    SeekTo, StateKind, SubscribeOptions,
};
use crmbus::{
    Clock, Event, EventLog, LogError, ManualClock, MemoryLog, MemoryStateStore, Receipt, StateOp,
    StateStore, StoredEvent, TopicInfo, TopicSpec,
};
use serde_json::json;

/// A log whose offset commits fail while `fail_commits` is set, and whose reads fail with
/// [`LogError::Corrupt`] at `unreadable` when the range asked for covers it (the whole
/// batch, as a backend that decodes a batch at once may do).
struct FlakyLog {
    inner: MemoryLog,
    fail_commits: AtomicBool,
    unreadable: Mutex<Option<u64>>,
    /// Offsets `[a, b)` retention removed: a read from one of them is served from `b`.
    removed: Mutex<Option<(u64, u64)>>,
    /// The number of partitions of each [`EventLog::commit_offsets`] call.
    offset_batches: Mutex<Vec<usize>>,
}

#[async_trait]
impl EventLog for FlakyLog {
    fn backend_name(&self) -> &'static str {
        "flaky-memory"
    }
    async fn create_topic(&self, spec: TopicSpec) -> Result<TopicInfo, LogError> {
        self.inner.create_topic(spec).await
    }
    async fn delete_topic(&self, name: &str) -> Result<(), LogError> {
        self.inner.delete_topic(name).await
    }
    async fn list_topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        self.inner.list_topics().await
    }
    async fn describe_topic(&self, name: &str) -> Result<TopicInfo, LogError> {
        self.inner.describe_topic(name).await
    }
    async fn append(&self, topics: &[String], events: &[Event]) -> Result<Vec<Receipt>, LogError> {
        self.inner.append(topics, events).await
    }
    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, LogError> {
        let bad = *self.unreadable.lock().expect("unreadable");
        if let Some(bad) = bad {
            let next = self.inner.describe_topic(topic).await?.partition_info[partition as usize]
                .next_offset;
            if from <= bad && bad < from.saturating_add(max as u64) && bad < next {
                return Err(LogError::Corrupt {
                    topic: topic.to_string(),
                    partition,
                    offset: bad,
                    detail: "record does not decode: expected value at line 1 column 1".into(),
                });
            }
        }
        let removed = *self.removed.lock().expect("removed");
        let from = match removed {
            Some((a, b)) if (a..b).contains(&from) => b,
            _ => from,
        };
        self.inner.read(topic, partition, from, max).await
    }
    async fn offset_for_time(
        &self,
        topic: &str,
        partition: u32,
        time: DateTime<Utc>,
    ) -> Result<u64, LogError> {
        self.inner.offset_for_time(topic, partition, time).await
    }
    async fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), LogError> {
        if self.fail_commits.load(Ordering::SeqCst) {
            return Err(LogError::Unavailable("offset commits fail (test)".into()));
        }
        self.inner
            .commit_offset(group, topic, partition, offset)
            .await
    }
    async fn commit_offsets(
        &self,
        group: &str,
        topic: &str,
        offsets: &[(u32, u64)],
    ) -> Result<(), LogError> {
        self.offset_batches
            .lock()
            .expect("offset batches")
            .push(offsets.len());
        for &(partition, offset) in offsets {
            self.commit_offset(group, topic, partition, offset).await?;
        }
        Ok(())
    }
    async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError> {
        self.inner.committed_offset(group, topic, partition).await
    }
    async fn enforce_retention(&self) -> Result<u64, LogError> {
        self.inner.enforce_retention().await
    }
    async fn close(&self) -> Result<(), LogError> {
        self.inner.close().await
    }
}

/// A state store whose batches fail while `fail` is set; it counts scans per namespace.
struct FlakyState {
    inner: MemoryStateStore,
    fail: AtomicBool,
    scans: Mutex<Vec<String>>,
}

#[async_trait]
impl StateStore for FlakyState {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, LogError> {
        self.inner.get(namespace, key).await
    }
    async fn scan(
        &self,
        namespace: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, LogError> {
        self.scans
            .lock()
            .expect("scans")
            .push(namespace.to_string());
        self.inner.scan(namespace, prefix).await
    }
    async fn apply(&self, ops: Vec<StateOp>) -> Result<(), LogError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(LogError::Unavailable("state writes fail (test)".into()));
        }
        self.inner.apply(ops).await
    }
}

struct World {
    log: Arc<FlakyLog>,
    state: Arc<FlakyState>,
    clock: ManualClock,
}

impl World {
    async fn new() -> World {
        let log = Arc::new(FlakyLog {
            inner: MemoryLog::new(),
            fail_commits: AtomicBool::new(false),
            unreadable: Mutex::new(None),
            removed: Mutex::new(None),
            offset_batches: Mutex::new(Vec::new()),
        });
        log.create_topic(TopicSpec::new("deals", 1))
            .await
            .expect("create");
        World {
            log,
            state: Arc::new(FlakyState {
                inner: MemoryStateStore::new(),
                fail: AtomicBool::new(false),
                scans: Mutex::new(Vec::new()),
            }),
            clock: ManualClock::new(1_700_000_000_000_000),
        }
    }

    async fn engine(
        &self,
        handler: Arc<dyn crmbus::delivery::Handler>,
        opts: SubscribeOptions,
    ) -> Engine {
        Engine::open(
            self.log.clone(),
            self.state.clone(),
            Arc::new(self.clock.clone()),
            "deals",
            "erp",
            handler,
            opts,
        )
        .await
        .expect("open engine")
    }

    async fn publish(&self, keyed: &[(&str, u64)]) {
        let events: Vec<Event> = keyed
            .iter()
            .map(|(k, n)| {
                Event::new("deal.updated", json!({ "n": n }))
                    .subject(*k)
                    .source("urn:test")
            })
            .collect();
        self.log
            .append(&["deals".to_string()], &events)
            .await
            .expect("append");
    }

    /// Runs until idle, then jumps the clock to each due retry, `rounds` times at most.
    async fn run(&self, engine: &mut Engine, rounds: usize) -> Result<(), LogError> {
        for _ in 0..rounds {
            engine.run_until_idle().await?;
            match engine.next_due_us() {
                Some(due) => {
                    let now = self.clock.now_micros();
                    self.clock
                        .advance(Duration::from_micros((due - now).max(0) as u64 + 1));
                }
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// Entries of one kind of the group's state.
    async fn stored(&self, kind: StateKind) -> Vec<(String, Vec<u8>)> {
        self.state
            .inner
            .scan(&GroupState::new("deals", "erp").namespace(kind), "")
            .await
            .expect("scan")
    }

    async fn committed(&self) -> Option<u64> {
        self.log
            .committed_offset("erp", "deals", 0)
            .await
            .expect("committed")
    }
}

fn quick_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        multiplier: 2.0,
        max_age: None,
        schedule: Vec::new(),
    }
}

fn n_of(d: &Delivery) -> u64 {
    d.event
        .data_json()
        .and_then(|v| v["n"].as_u64())
        .unwrap_or(u64::MAX)
}

type Seen = Arc<Mutex<Vec<(String, u64, u32)>>>;

/// Item 2: a handler that panics on its first attempt of deal-1/0 fails that attempt like a
/// transient error; the key goes on in order and the offset is committed past it.
#[tokio::test]
async fn a_panicking_handler_fails_its_attempt_instead_of_wedging_its_key() {
    let w = World::new().await;
    w.publish(&[("deal-1", 0), ("deal-1", 1), ("deal-2", 2)])
        .await;
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    let handler = handler_fn(move |d: Delivery| {
        let log = Arc::clone(&log);
        async move {
            let n = n_of(&d);
            log.lock().expect("seen").push((
                d.event.subject.clone().unwrap_or_default(),
                n,
                d.attempt,
            ));
            if n == 0 && d.attempt == 1 {
                panic!("the ERP client blew up on deal-1");
            }
            Ok::<(), HandlerError>(())
        }
    });
    let opts = SubscribeOptions {
        retry: quick_retry(3),
        ..SubscribeOptions::default()
    };
    let mut engine = w.engine(handler, opts).await;
    w.run(&mut engine, 20).await.expect("run");
    let seen = seen.lock().expect("seen").clone();
    let deal_1: Vec<(u64, u32)> = seen
        .iter()
        .filter(|(k, _, _)| k == "deal-1")
        .map(|(_, n, a)| (*n, *a))
        .collect();
    assert_eq!(
        deal_1,
        vec![(0, 1), (0, 2), (1, 1)],
        "deal-1 is retried after the panic, then goes on in order"
    );
    assert_eq!(w.committed().await, Some(3), "the commit passes the panic");
}

/// Item 1: done markers of events acknowledged past a pending one are deleted only after
/// the offset that passes them is committed. With the commit failing, a restart must not
/// deliver them again.
#[tokio::test]
async fn a_failed_offset_commit_does_not_forget_what_was_acknowledged() {
    let w = World::new().await;
    w.publish(&[
        ("deal-1", 0),
        ("deal-2", 1),
        ("deal-2", 2),
        ("deal-3", 3),
        ("deal-3", 4),
    ])
    .await;
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    let handler = handler_fn(move |d: Delivery| {
        let log = Arc::clone(&log);
        async move {
            let n = n_of(&d);
            log.lock().expect("seen").push((
                d.event.subject.clone().unwrap_or_default(),
                n,
                d.attempt,
            ));
            if n == 0 && d.attempt == 1 {
                return Err(HandlerError::transient("ERP busy"));
            }
            Ok(())
        }
    });
    let opts = SubscribeOptions {
        retry: quick_retry(3),
        ..SubscribeOptions::default()
    };
    let mut engine = w.engine(Arc::clone(&handler), opts.clone()).await;
    // Everything but event 0 is acknowledged; 0 waits for its retry.
    engine.run_until_idle().await.expect("first pass");
    assert_eq!(seen.lock().expect("seen").len(), 5);
    // The retry of 0 succeeds, but the commit that would pass 1..=4 fails.
    w.log.fail_commits.store(true, Ordering::SeqCst);
    let failed = w.run(&mut engine, 5).await;
    assert!(failed.is_err(), "the commit failed: {failed:?}");
    drop(engine);
    // Restart with commits working again.
    w.log.fail_commits.store(false, Ordering::SeqCst);
    let before = seen.lock().expect("seen").len();
    let mut engine = w.engine(handler, opts).await;
    w.run(&mut engine, 5).await.expect("run after restart");
    let again: Vec<u64> = seen.lock().expect("seen")[before..]
        .iter()
        .map(|(_, n, _)| *n)
        .collect();
    assert_eq!(
        again,
        Vec::<u64>::new(),
        "acknowledged events delivered again after the restart"
    );
    assert_eq!(w.committed().await, Some(5));
}

/// Item 5: a state write that fails keeps its operations: the dead letter it carried is
/// written by the next persist, not lost.
#[tokio::test]
async fn a_failed_state_write_keeps_its_dead_letters() {
    let w = World::new().await;
    w.publish(&[("deal-1", 0), ("deal-2", 1)]).await;
    let handler = handler_fn(|d: Delivery| async move {
        if n_of(&d) == 0 {
            return Err(HandlerError::permanent("rejected by the ERP"));
        }
        Ok(())
    });
    let opts = SubscribeOptions {
        retry: quick_retry(1),
        on_exhausted: OnExhausted::Skip,
        ..SubscribeOptions::default()
    };
    let mut engine = w.engine(handler, opts).await;
    w.state.fail.store(true, Ordering::SeqCst);
    let failed = engine.run_until_idle().await;
    assert!(failed.is_err(), "the state write failed: {failed:?}");
    w.state.fail.store(false, Ordering::SeqCst);
    w.run(&mut engine, 5).await.expect("run");
    let dlq = engine
        .dead_letters(&Default::default())
        .await
        .expect("dead letters");
    let offsets: Vec<u64> = dlq.iter().map(|d| d.offset).collect();
    assert_eq!(
        offsets,
        vec![0],
        "the dead letter survived the failed write"
    );
    assert_eq!(w.committed().await, Some(2));
}

/// A handler that records (subject, n, attempt) and fails the deliveries `fail` says to.
fn recording(
    seen: &Seen,
    fail: impl Fn(u64, u32) -> Option<HandlerError> + Send + Sync + 'static,
) -> Arc<dyn crmbus::delivery::Handler> {
    let log = Arc::clone(seen);
    let fail = Arc::new(fail);
    handler_fn(move |d: Delivery| {
        let log = Arc::clone(&log);
        let fail = Arc::clone(&fail);
        async move {
            let n = n_of(&d);
            log.lock().expect("seen").push((
                d.event.subject.clone().unwrap_or_default(),
                n,
                d.attempt,
            ));
            match fail(n, d.attempt) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
    })
}

fn ns(seen: &Seen) -> Vec<u64> {
    seen.lock()
        .expect("seen")
        .iter()
        .map(|(_, n, _)| *n)
        .collect()
}

/// Item 3: a record the log cannot serve (here the read of any range covering offset 2
/// fails, as a backend that decodes a whole batch at once does) does not cost the events
/// before it, is dead-lettered with the reason, and the commit passes it.
#[tokio::test]
async fn an_unreadable_record_is_dead_lettered_and_the_events_around_it_are_delivered() {
    let w = World::new().await;
    w.publish(&[
        ("deal-1", 0),
        ("deal-2", 1),
        ("deal-3", 2),
        ("deal-4", 3),
        ("deal-5", 4),
    ])
    .await;
    *w.log.unreadable.lock().expect("unreadable") = Some(2);
    let seen: Seen = Arc::default();
    let mut engine = w
        .engine(recording(&seen, |_, _| None), SubscribeOptions::default())
        .await;
    w.run(&mut engine, 5).await.expect("run");
    let mut got = ns(&seen);
    got.sort_unstable();
    assert_eq!(got, vec![0, 1, 3, 4], "every readable event is delivered");
    assert_eq!(
        w.committed().await,
        Some(5),
        "the commit passes the unreadable record"
    );
    let dlq = engine
        .dead_letters(&Default::default())
        .await
        .expect("dead letters");
    assert_eq!(
        dlq.len(),
        1,
        "the unreadable record is dead-lettered: {dlq:?}"
    );
    assert_eq!((dlq[0].partition, dlq[0].offset), (0, 2));
    assert!(
        dlq[0].last_error.contains("does not decode"),
        "the reason is kept: {}",
        dlq[0].last_error
    );
    assert!(!dlq[0].held);
}

/// Item 4 (dedupe): consumer dedupe entries expire while the engine runs, in memory and
/// in the state store, not only when it opens.
#[tokio::test]
async fn consumer_dedupe_entries_are_pruned_while_running() {
    let w = World::new().await;
    let seen: Seen = Arc::default();
    let opts = SubscribeOptions {
        dedupe_ttl: Some(Duration::from_secs(10)),
        ..SubscribeOptions::default()
    };
    let mut engine = w.engine(recording(&seen, |_, _| None), opts).await;
    for round in 0..5u64 {
        let batch: Vec<(String, u64)> = (0..100)
            .map(|i| (format!("deal-{i}"), round * 100 + i))
            .collect();
        let keyed: Vec<(&str, u64)> = batch.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        w.publish(&keyed).await;
        engine.run_until_idle().await.expect("run");
        w.clock.advance(Duration::from_secs(6));
    }
    assert_eq!(seen.lock().expect("seen").len(), 500);
    // Rounds 0..=2 are more than 10 s old; round 3 is 12 s old only after the next step.
    engine.run_until_idle().await.expect("run");
    let s = engine.stats();
    assert!(
        s.dedupe_entries <= 200,
        "expired dedupe entries are dropped from memory: {}",
        s.dedupe_entries
    );
    let stored = w.stored(StateKind::Dedupe).await.len();
    assert!(stored <= 200, "and from the state store: {stored}");
}

/// Item 4 (done set): while a key is held, the events of other keys acknowledged past it
/// are kept as ranges, so the done set and its stored form stay small.
#[tokio::test]
async fn the_done_set_stays_small_while_a_key_is_held() {
    let w = World::new().await;
    let mut keyed: Vec<(String, u64)> = vec![("deal-held".to_string(), 0)];
    keyed.extend((1..=1000).map(|n| (format!("deal-{}", n % 50), n)));
    let refs: Vec<(&str, u64)> = keyed.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    w.publish(&refs).await;
    let seen: Seen = Arc::default();
    let handler = recording(&seen, |n, _| {
        (n == 0).then(|| HandlerError::permanent("rejected by the ERP"))
    });
    let opts = SubscribeOptions {
        retry: quick_retry(1),
        on_exhausted: OnExhausted::Hold,
        ..SubscribeOptions::default()
    };
    let mut engine = w.engine(Arc::clone(&handler), opts.clone()).await;
    w.run(&mut engine, 5).await.expect("run");
    assert_eq!(seen.lock().expect("seen").len(), 1001);
    assert_eq!(
        w.committed().await,
        Some(0),
        "the held event keeps the commit"
    );
    let s = engine.stats();
    assert!(s.done_entries <= 2, "done entries: {}", s.done_entries);
    let stored = w.stored(StateKind::Done).await.len();
    assert!(stored <= 2, "stored done entries: {stored}");
    // A restart still knows what was done: nothing is delivered again.
    drop(engine);
    let before = seen.lock().expect("seen").len();
    let mut engine = w.engine(handler, opts).await;
    w.run(&mut engine, 5).await.expect("run after restart");
    assert_eq!(seen.lock().expect("seen").len(), before);
    // Discarding the held entry lets the commit pass everything.
    assert!(engine.discard("0-0", "ops").await.expect("discard"));
    w.run(&mut engine, 5).await.expect("run");
    assert_eq!(w.committed().await, Some(1001));
    assert_eq!(w.stored(StateKind::Done).await.len(), 0);
}

/// Item 4 (DLQ size): metrics do not scan the DLQ; the count stays right across dead
/// letters, redrives, discards and a restart.
#[tokio::test]
async fn the_dlq_size_is_counted_not_scanned() {
    let w = World::new().await;
    w.publish(&[("deal-1", 0), ("deal-2", 1), ("deal-3", 2), ("deal-4", 3)])
        .await;
    let seen: Seen = Arc::default();
    let fail_all = Arc::new(AtomicBool::new(true));
    let f = Arc::clone(&fail_all);
    let handler = recording(&seen, move |_, _| {
        f.load(Ordering::SeqCst)
            .then(|| HandlerError::permanent("rejected"))
    });
    let opts = SubscribeOptions {
        retry: quick_retry(1),
        on_exhausted: OnExhausted::Skip,
        ..SubscribeOptions::default()
    };
    let mut engine = w.engine(Arc::clone(&handler), opts.clone()).await;
    w.run(&mut engine, 5).await.expect("run");
    let dlq_ns = GroupState::new("deals", "erp").namespace(StateKind::DeadLetter);
    w.state.scans.lock().expect("scans").clear();
    engine.export_metrics().await.expect("metrics");
    assert!(
        !w.state.scans.lock().expect("scans").contains(&dlq_ns),
        "export_metrics scanned the DLQ"
    );
    let count = |e: &Engine| e.stats().dlq_entries;
    assert_eq!(count(&engine), 4);
    assert!(engine.discard("0-0", "ops").await.expect("discard"));
    assert_eq!(count(&engine), 3);
    // A redrive that fails again keeps its entry; one that succeeds removes it.
    engine
        .redrive(Some(&["0-1".to_string()]), &Default::default(), "ops")
        .await
        .expect("redrive");
    w.run(&mut engine, 5).await.expect("run");
    assert_eq!(count(&engine), 3);
    fail_all.store(false, Ordering::SeqCst);
    engine
        .redrive(Some(&["0-1".to_string()]), &Default::default(), "ops")
        .await
        .expect("redrive");
    w.run(&mut engine, 5).await.expect("run");
    assert_eq!(count(&engine), 2);
    let listed = engine.dead_letters(&Default::default()).await.expect("dlq");
    assert_eq!(listed.len(), 2);
    drop(engine);
    let engine = w.engine(handler, opts).await;
    assert_eq!(count(&engine), 2, "recounted at open");
}

/// Opts for the hold tests: one attempt, then hold.
fn hold_once() -> SubscribeOptions {
    SubscribeOptions {
        retry: quick_retry(1),
        on_exhausted: OnExhausted::Hold,
        ..SubscribeOptions::default()
    }
}

/// Item 6: a held entry whose offset the group no longer has queued (it sought past it)
/// is delivered by a redrive, not deleted unseen.
#[tokio::test]
async fn redriving_a_held_entry_the_group_sought_past_delivers_it() {
    let w = World::new().await;
    w.publish(&[("deal-1", 0), ("deal-2", 1)]).await;
    let seen: Seen = Arc::default();
    let fail = Arc::new(AtomicBool::new(true));
    let f = Arc::clone(&fail);
    let handler = recording(&seen, move |n, _| {
        (n == 0 && f.load(Ordering::SeqCst)).then(|| HandlerError::permanent("rejected"))
    });
    let mut engine = w.engine(Arc::clone(&handler), hold_once()).await;
    w.run(&mut engine, 5).await.expect("run");
    assert_eq!(w.committed().await, Some(0));
    drop(engine);
    seek_group(
        w.log.as_ref(),
        &w.state.inner,
        "deals",
        "erp",
        &SeekTo::Latest,
    )
    .await
    .expect("seek");
    let mut engine = w.engine(handler, hold_once()).await;
    w.run(&mut engine, 5).await.expect("run");
    fail.store(false, Ordering::SeqCst);
    seen.lock().expect("seen").clear();
    let n = engine
        .redrive(Some(&["0-0".to_string()]), &Default::default(), "ops")
        .await
        .expect("redrive");
    assert_eq!(n, 1);
    w.run(&mut engine, 5).await.expect("run");
    assert_eq!(ns(&seen), vec![0], "the redriven event is delivered");
    let dlq = engine.dead_letters(&Default::default()).await.expect("dlq");
    assert!(
        dlq.is_empty(),
        "and its entry removed once delivered: {dlq:?}"
    );
    assert_eq!(w.committed().await, Some(2));
}

/// Item 6: discarding a held entry that is not at its key's head (an earlier event of the
/// key is waiting for a retry) discards it: the key never delivers it.
#[tokio::test]
async fn discarding_a_held_entry_behind_its_keys_head_skips_it() {
    let w = World::new().await;
    w.publish(&[("deal-1", 0), ("deal-1", 1), ("deal-1", 2)])
        .await;
    let seen: Seen = Arc::default();
    // Round 1: 0 is fine, 1 is held.
    let phase = Arc::new(std::sync::atomic::AtomicU32::new(1));
    let ph = Arc::clone(&phase);
    let handler = recording(&seen, move |n, attempt| match ph.load(Ordering::SeqCst) {
        1 if n == 1 => Some(HandlerError::permanent("rejected")),
        // Round 2: 0 fails once (transient), waiting for its retry.
        2 if n == 0 && attempt == 1 => Some(HandlerError::transient("ERP busy")),
        _ => None,
    });
    let opts = SubscribeOptions {
        retry: quick_retry(3),
        on_exhausted: OnExhausted::Hold,
        ..SubscribeOptions::default()
    };
    let mut engine = w.engine(Arc::clone(&handler), opts.clone()).await;
    w.run(&mut engine, 5).await.expect("run");
    assert_eq!(w.committed().await, Some(1), "1 is held");
    drop(engine);
    seek_group(
        w.log.as_ref(),
        &w.state.inner,
        "deals",
        "erp",
        &SeekTo::Earliest,
    )
    .await
    .expect("seek");
    phase.store(2, Ordering::SeqCst);
    let mut engine = w.engine(handler, opts).await;
    engine.run_until_idle().await.expect("run");
    seen.lock().expect("seen").clear();
    // deal-1's queue: 0 (waiting for its retry), 1 (held), 2.
    assert!(engine.discard("0-1", "ops").await.expect("discard"));
    w.run(&mut engine, 5).await.expect("run");
    assert_eq!(
        ns(&seen),
        vec![0, 2],
        "the discarded event is not delivered"
    );
    assert_eq!(w.committed().await, Some(3));
}

/// Item 9: a stored group offset past the end of the log (the log lost its tail, or the
/// topic was made again) is clamped to the end at open, so new events are delivered.
#[tokio::test]
async fn a_group_offset_past_the_log_end_is_clamped() {
    let w = World::new().await;
    w.publish(&[("deal-1", 0), ("deal-2", 1)]).await;
    w.log
        .commit_offset("erp", "deals", 0, 100)
        .await
        .expect("commit");
    let seen: Seen = Arc::default();
    let mut engine = w
        .engine(recording(&seen, |_, _| None), SubscribeOptions::default())
        .await;
    assert_eq!(w.committed().await, Some(2), "clamped to the end");
    w.publish(&[("deal-3", 2), ("deal-4", 3)]).await;
    w.run(&mut engine, 5).await.expect("run");
    assert_eq!(
        ns(&seen),
        vec![2, 3],
        "events appended after the clamp are delivered"
    );
    assert_eq!(w.committed().await, Some(4));
}

/// Item 9: a retry delay a handler (or a pull client's nack) asks for is capped, not
/// truncated into the past: a huge delay still parks the key.
#[tokio::test]
async fn a_huge_retry_after_is_capped_not_truncated() {
    let w = World::new().await;
    w.publish(&[("deal-1", 0)]).await;
    let seen: Seen = Arc::default();
    let handler = recording(&seen, |_, attempt| {
        (attempt == 1)
            .then(|| HandlerError::transient("come back much later").retry_after(Duration::MAX))
    });
    let opts = SubscribeOptions {
        retry: quick_retry(3),
        ..SubscribeOptions::default()
    };
    let mut engine = w.engine(handler, opts).await;
    engine.run_until_idle().await.expect("run");
    let now = w.clock.now_micros();
    let due = engine.next_due_us().expect("a retry is scheduled");
    assert!(
        due > now,
        "the retry is in the future: due {due}, now {now}"
    );
    assert!(
        due - now <= crmbus::delivery::MAX_RETRY_DELAY.as_micros() as i64,
        "and capped"
    );
    assert_eq!(seen.lock().expect("seen").len(), 1);
}

/// Retention removing offsets the group has not read yet, while it still has events
/// buffered (a key waiting for its retry), leaves a gap in what the log serves: those
/// offsets can never be delivered, so they count as done, or the commit would wait for
/// them for ever.
#[tokio::test]
async fn offsets_removed_by_retention_behind_buffered_events_do_not_stall_the_commit() {
    let w = World::new().await;
    let keyed: Vec<(String, u64)> = (0..20).map(|n| (format!("deal-{n}"), n)).collect();
    let keyed: Vec<(&str, u64)> = keyed.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    w.publish(&keyed).await;
    *w.log.removed.lock().expect("removed") = Some((5, 8));
    let seen: Seen = Arc::default();
    // deal-0 fails once: it stays buffered, waiting for its retry, while the engine reads
    // on past offset 5 into the removed range.
    let handler = recording(&seen, |n, attempt| {
        (n == 0 && attempt == 1).then(|| HandlerError::transient("ERP timeout"))
    });
    let opts = SubscribeOptions {
        retry: quick_retry(3),
        read_ahead: 5,
        ..SubscribeOptions::default()
    };
    let mut engine = w.engine(handler, opts).await;
    w.run(&mut engine, 20).await.expect("run");
    let mut got = ns(&seen);
    got.sort_unstable();
    got.dedup();
    let expected: Vec<u64> = (0..20).filter(|n| !(5..8).contains(n)).collect();
    assert_eq!(
        got, expected,
        "every event the log still serves is delivered"
    );
    assert_eq!(
        w.committed().await,
        Some(20),
        "the commit passes the removed offsets"
    );
}

/// The offsets of every partition whose low-water mark moved are committed in one call
/// (on the embedded log one transaction and one sync), not one call per partition.
#[tokio::test]
async fn an_engine_commits_the_offsets_of_its_partitions_together() {
    let w = World::new().await;
    w.log
        .create_topic(TopicSpec::new("wide", 4))
        .await
        .expect("create");
    let events: Vec<Event> = (0..40)
        .map(|n| {
            Event::new("deal.updated", json!({ "n": n }))
                .subject(format!("deal-{n}"))
                .source("urn:test")
        })
        .collect();
    w.log
        .append(&["wide".to_string()], &events)
        .await
        .expect("append");
    let handler = handler_fn(|_d: Delivery| async { Ok(()) });
    let mut engine = Engine::open(
        w.log.clone(),
        w.state.clone(),
        Arc::new(w.clock.clone()),
        "wide",
        "erp",
        handler,
        SubscribeOptions::default(),
    )
    .await
    .expect("open engine");
    engine.run_until_idle().await.expect("run");
    let mut total = 0;
    for p in 0..4 {
        let committed = w
            .log
            .committed_offset("erp", "wide", p)
            .await
            .expect("committed")
            .unwrap_or(0);
        assert!(committed > 0, "partition {p} got none of the 40 events");
        total += committed;
    }
    assert_eq!(total, 40);
    // Fewer than 64 deliveries: one persist at the end, one commit of all four.
    assert_eq!(
        *w.log.offset_batches.lock().expect("offset batches"),
        vec![4]
    );
}
