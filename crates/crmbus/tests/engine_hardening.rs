//! Delivery engine states it must never fall into (issue 13): a panicking handler, an
//! offset commit that fails between the done markers and the offset, a state write that
//! fails with dead letters in it. MemoryLog and MemoryStateStore, wrapped to fail on cue.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crmbus::delivery::{
    handler_fn, Delivery, Engine, HandlerError, OnExhausted, RetryPolicy, SubscribeOptions,
};
use crmbus::{
    Clock, Event, EventLog, LogError, ManualClock, MemoryLog, MemoryStateStore, Receipt, StateOp,
    StateStore, StoredEvent, TopicInfo, TopicSpec,
};
use serde_json::json;

/// A log whose offset commits fail while `fail_commits` is set.
struct FlakyLog {
    inner: MemoryLog,
    fail_commits: AtomicBool,
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

/// A state store whose batches fail while `fail` is set.
struct FlakyState {
    inner: MemoryStateStore,
    fail: AtomicBool,
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
        });
        log.create_topic(TopicSpec::new("deals", 1))
            .await
            .expect("create");
        World {
            log,
            state: Arc::new(FlakyState {
                inner: MemoryStateStore::new(),
                fail: AtomicBool::new(false),
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
