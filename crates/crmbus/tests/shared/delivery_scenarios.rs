//! Delivery engine scenarios, shared by the backends: this file is included by
//! `crmbus/tests/delivery.rs` (MemoryLog + MemoryStateStore) and by
//! `crmbus-embedded/tests/delivery_scenarios.rs` (the embedded log and its state store).
//! The including file provides `backend(partitions, dedupe_window)`. Time is driven by a
//! ManualClock: no sleeps, assertions on state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crmbus::delivery::{
    handler_fn, BreakerPolicy, Delivery, Engine, HandlerError, OnExhausted, RetryPolicy,
    SubscribeOptions,
};
use crmbus::{Clock, Event, EventLog, ManualClock, StateStore, TopicSpec};
use proptest::prelude::*;
use serde_json::json;

type Calls = Arc<Mutex<Vec<(String, u64, u32, bool)>>>;

fn ev(key: &str, n: u64) -> Event {
    Event::new("deal.updated", json!({"deal_id": key, "n": n}))
        .subject(key)
        .source("urn:test")
}

fn n_of(d: &Delivery) -> u64 {
    d.event
        .data_json()
        .and_then(|v| v["n"].as_u64())
        .unwrap_or(u64::MAX)
}

/// What a backend gives the scenarios: a log, its state store, and whatever must live as
/// long as they do (a temporary directory).
pub struct Backend {
    pub log: Arc<dyn EventLog>,
    pub state: Arc<dyn StateStore>,
    pub keep: Box<dyn std::any::Any + Send + Sync>,
}

struct World {
    log: Arc<dyn EventLog>,
    state: Arc<dyn StateStore>,
    clock: ManualClock,
    _keep: Box<dyn std::any::Any + Send + Sync>,
}

impl World {
    async fn new(partitions: u32) -> World {
        Self::with_dedupe_window(partitions, Duration::from_secs(120)).await
    }

    async fn with_dedupe_window(partitions: u32, window: Duration) -> World {
        let b = super::backend(window);
        b.log
            .create_topic(TopicSpec::new("deals", partitions))
            .await
            .expect("create");
        World {
            log: b.log,
            state: b.state,
            clock: ManualClock::new(1_700_000_000_000_000),
            _keep: b.keep,
        }
    }

    async fn engine(
        &self,
        handler: Arc<dyn crmbus::delivery::Handler>,
        opts: SubscribeOptions,
    ) -> Engine {
        Engine::open(
            Arc::clone(&self.log),
            Arc::clone(&self.state),
            Arc::new(self.clock.clone()),
            "deals",
            "crm-sync",
            handler,
            opts,
        )
        .await
        .expect("open engine")
    }

    async fn publish(&self, events: Vec<Event>) {
        self.log
            .append(&["deals".to_string()], &events)
            .await
            .expect("append");
    }

    /// Runs until nothing is left: after each idle point, jumps the clock to the next due retry.
    async fn run_to_end(&self, engine: &mut Engine, max_rounds: usize) {
        for _ in 0..max_rounds {
            engine.run_until_idle().await.expect("run");
            match engine.next_due_us() {
                Some(due) => {
                    let now = self.clock.now_micros();
                    self.clock
                        .advance(Duration::from_micros((due - now).max(0) as u64 + 1));
                }
                None => return,
            }
        }
        panic!("engine did not finish in {max_rounds} rounds");
    }
}

fn quick_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(5),
        multiplier: 2.0,
        max_age: None,
    }
}

fn recording_handler(
    calls: Calls,
    fail: impl Fn(&Delivery) -> Option<HandlerError> + Send + Sync + 'static,
) -> Arc<dyn crmbus::delivery::Handler> {
    let fail = Arc::new(fail);
    handler_fn(move |d: Delivery| {
        let calls = Arc::clone(&calls);
        let fail = Arc::clone(&fail);
        async move {
            let key = d.event.subject.clone().unwrap_or_default();
            // Yield so deliveries of different keys interleave.
            tokio::task::yield_now().await;
            let outcome = fail(&d);
            calls
                .lock()
                .expect("calls")
                .push((key, n_of(&d), d.attempt, outcome.is_none()));
            match outcome {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
    })
}

fn successes_per_key(calls: &Calls) -> HashMap<String, Vec<u64>> {
    let mut out: HashMap<String, Vec<u64>> = HashMap::new();
    for (k, n, _, ok) in calls.lock().expect("calls").iter() {
        if *ok {
            out.entry(k.clone()).or_default().push(*n);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// For every key the successful handler calls follow log order and no event is skipped,
    /// whatever fails and however deliveries interleave.
    #[test]
    fn per_key_order_holds_under_random_failures(
        keys in 1usize..12,
        per_key in 1u64..15,
        fail_percent in 0u64..70,
        seed in any::<u64>(),
        max_in_flight in 1usize..16,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(async move {
            let world = World::new(3).await;
            let mut batch = Vec::new();
            for n in 0..per_key {
                for k in 0..keys {
                    batch.push(ev(&format!("deal-{k}"), n));
                }
            }
            world.publish(batch).await;
            let calls: Calls = Arc::default();
            let handler = recording_handler(Arc::clone(&calls), move |d| {
                let h = (d.offset ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(d.attempt).wrapping_mul(0xD6E8_FEB8_6659_FD93);
                (h % 100 < fail_percent && d.attempt < 6).then(|| HandlerError::transient("flaky"))
            });
            let opts = SubscribeOptions { retry: quick_retry(50), max_in_flight, breaker: None, ..SubscribeOptions::default() };
            let mut engine = world.engine(handler, opts).await;
            world.run_to_end(&mut engine, 10_000).await;
            let per = successes_per_key(&calls);
            prop_assert_eq!(per.len(), keys);
            for (k, ns) in per {
                prop_assert_eq!(ns, (0..per_key).collect::<Vec<_>>(), "key {}", k);
            }
            let stats = engine.stats();
            prop_assert_eq!(stats.acked, keys as u64 * per_key);
            prop_assert_eq!(stats.dead_lettered, 0);
            let committed: u64 = stats.committed.iter().sum();
            prop_assert_eq!(committed, keys as u64 * per_key, "everything committed");
            Ok(())
        })?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_poisoned_key_does_not_hold_back_a_thousand_healthy_ones() {
    let world = World::new(4).await;
    let mut batch = vec![ev("deal-poison", 0)];
    for k in 0..1000 {
        batch.push(ev(&format!("deal-{k}"), 0));
        batch.push(ev(&format!("deal-{k}"), 1));
    }
    batch.push(ev("deal-poison", 1));
    world.publish(batch).await;
    let calls: Calls = Arc::default();
    let handler = recording_handler(Arc::clone(&calls), |d| {
        (d.event.subject.as_deref() == Some("deal-poison"))
            .then(|| HandlerError::transient("crm down for this deal"))
    });
    let opts = SubscribeOptions {
        retry: quick_retry(10),
        max_in_flight: 32,
        breaker: None,
        ..SubscribeOptions::default()
    };
    let mut engine = world.engine(handler, opts).await;
    engine.run_until_idle().await.expect("run");
    let per = successes_per_key(&calls);
    assert_eq!(per.len(), 1000, "every healthy key delivered");
    assert!(per.values().all(|ns| ns == &[0, 1]));
    let stats = engine.stats();
    assert_eq!(stats.acked, 2000);
    assert_eq!(stats.parked_keys, 1, "only the poisoned key is parked");
    let retries = engine.pending_retries();
    assert_eq!(retries.len(), 1);
    let rec = retries.values().next().expect("retry record");
    assert_eq!((rec.key.as_str(), rec.attempts), ("deal-poison", 1));
    // The poisoned key's second event waits behind its first.
    let poisoned_calls: Vec<u64> = calls
        .lock()
        .expect("calls")
        .iter()
        .filter(|c| c.0 == "deal-poison")
        .map(|c| c.1)
        .collect();
    assert_eq!(poisoned_calls, [0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_continues_the_retry_schedule_and_does_not_redeliver_acked_events() {
    let world = World::new(1).await;
    world
        .publish(vec![
            ev("deal-a", 0),
            ev("deal-b", 0),
            ev("deal-b", 1),
            ev("deal-a", 1),
        ])
        .await;
    let calls: Calls = Arc::default();
    let failing = Arc::new(Mutex::new(true));
    let f = Arc::clone(&failing);
    let handler = recording_handler(Arc::clone(&calls), move |d| {
        (d.event.subject.as_deref() == Some("deal-a") && *f.lock().expect("flag"))
            .then(|| HandlerError::transient("timeout"))
    });
    let opts = SubscribeOptions {
        retry: quick_retry(10),
        breaker: None,
        ..SubscribeOptions::default()
    };
    let mut engine = world.engine(Arc::clone(&handler), opts.clone()).await;
    engine.run_until_idle().await.expect("run");
    // Two more failed attempts.
    for _ in 0..2 {
        let due = engine.next_due_us().expect("a retry is due");
        world.clock.advance(Duration::from_micros(
            (due - world.clock.now_micros()).max(0) as u64 + 1,
        ));
        engine.run_until_idle().await.expect("run");
    }
    assert_eq!(
        engine.pending_retries().values().next().map(|r| r.attempts),
        Some(3)
    );
    drop(engine);

    // "Restart": a new engine over the same log and state.
    *failing.lock().expect("flag") = false;
    let mut engine = world.engine(handler, opts).await;
    let recovered = engine.pending_retries();
    assert_eq!(
        recovered.values().next().map(|r| r.attempts),
        Some(3),
        "attempts restarted from scratch"
    );
    engine.run_until_idle().await.expect("run before due");
    let a_calls = |calls: &Calls| {
        calls
            .lock()
            .expect("calls")
            .iter()
            .filter(|c| c.0 == "deal-a")
            .count()
    };
    assert_eq!(a_calls(&calls), 3, "a retry ran before its due time");
    let due = engine.next_due_us().expect("schedule kept");
    world.clock.advance(Duration::from_micros(
        (due - world.clock.now_micros()).max(0) as u64 + 1,
    ));
    world.run_to_end(&mut engine, 100).await;
    let all = calls.lock().expect("calls").clone();
    let a: Vec<(u64, u32, bool)> = all
        .iter()
        .filter(|c| c.0 == "deal-a")
        .map(|c| (c.1, c.2, c.3))
        .collect();
    assert_eq!(
        a,
        [
            (0, 1, false),
            (0, 2, false),
            (0, 3, false),
            (0, 4, true),
            (1, 1, true)
        ]
    );
    let b: Vec<u64> = all
        .iter()
        .filter(|c| c.0 == "deal-b")
        .map(|c| c.1)
        .collect();
    assert_eq!(
        b,
        [0, 1],
        "acked events of another key were delivered again after the restart"
    );
    assert_eq!(engine.stats().committed, [4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_dead_letters_and_hold_parks_the_key() {
    for mode in [OnExhausted::Skip, OnExhausted::Hold] {
        let world = World::new(1).await;
        world
            .publish(vec![ev("deal-x", 0), ev("deal-x", 1), ev("deal-y", 0)])
            .await;
        let calls: Calls = Arc::default();
        let handler = recording_handler(Arc::clone(&calls), |d| {
            (d.event.subject.as_deref() == Some("deal-x") && n_of(d) == 0)
                .then(|| HandlerError::transient("422 from ERP"))
        });
        let opts = SubscribeOptions {
            retry: quick_retry(3),
            on_exhausted: mode,
            breaker: None,
            ..SubscribeOptions::default()
        };
        let mut engine = world.engine(handler, opts).await;
        world.run_to_end(&mut engine, 100).await;
        let entries = world
            .state
            .scan("sub/deals/crm-sync/dlq", "")
            .await
            .expect("scan");
        assert_eq!(entries.len(), 1, "{mode:?}");
        let dl: crmbus::delivery::DeadLetter =
            serde_json::from_slice(&entries[0].1).expect("entry");
        assert_eq!(
            (dl.attempts, dl.last_error.as_str(), dl.offset, dl.held),
            (3, "422 from ERP", 0, mode == OnExhausted::Hold)
        );
        assert_eq!(dl.event.subject.as_deref(), Some("deal-x"));
        let per = successes_per_key(&calls);
        assert_eq!(
            per.get("deal-y").map(Vec::as_slice),
            Some(&[0u64][..]),
            "other keys flow"
        );
        match mode {
            OnExhausted::Skip => {
                assert_eq!(
                    per.get("deal-x").map(Vec::as_slice),
                    Some(&[1u64][..]),
                    "skip moves the key on"
                );
                assert_eq!(engine.stats().committed, [3]);
            }
            OnExhausted::Hold => {
                assert_eq!(per.get("deal-x"), None, "hold keeps the key parked");
                assert_eq!(engine.stats().parked_keys, 1);
                assert_eq!(engine.stats().committed, [0]);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_skip_retries_and_open_breaker_spends_no_attempts() {
    let world = World::new(1).await;
    world
        .publish((0..6).map(|n| ev(&format!("deal-{n}"), 0)).collect())
        .await;
    let calls: Calls = Arc::default();
    let handler = recording_handler(Arc::clone(&calls), |d| {
        Some(if d.event.subject.as_deref() == Some("deal-0") {
            HandlerError::permanent("bad data")
        } else {
            HandlerError::transient("down")
        })
    });
    let breaker = BreakerPolicy {
        consecutive_failures: 3,
        failure_rate: 1.1,
        min_requests: 1000,
        window: Duration::from_secs(60),
        open_for: Duration::from_secs(30),
    };
    let opts = SubscribeOptions {
        retry: quick_retry(10),
        max_in_flight: 1,
        breaker: Some(breaker),
        ..SubscribeOptions::default()
    };
    let mut engine = world.engine(handler, opts).await;
    engine.run_until_idle().await.expect("run");
    let s = engine.stats();
    assert_eq!(
        s.dead_lettered, 1,
        "the permanent failure went straight to the DLQ"
    );
    assert_eq!(
        s.delivered, 3,
        "the breaker opened after 3 failures in a row"
    );
    // Retries fall due, but the breaker is open: nothing is delivered, no attempt spent.
    world.clock.advance(Duration::from_secs(10));
    engine.run_until_idle().await.expect("run");
    assert_eq!(engine.stats().delivered, 3);
    // After the cool-down one probe goes; it fails, so the breaker opens again.
    world.clock.advance(Duration::from_secs(21));
    engine.run_until_idle().await.expect("run");
    assert_eq!(engine.stats().delivered, 4);
}

mod dlq_and_dedupe {
    use super::*;
    use crmbus::delivery::DlqFilter;

    fn flip_handler(
        calls: Calls,
        failing: Arc<Mutex<bool>>,
        bad_key: &'static str,
    ) -> Arc<dyn crmbus::delivery::Handler> {
        recording_handler(calls, move |d| {
            (d.event.subject.as_deref() == Some(bad_key) && *failing.lock().expect("flag"))
                .then(|| HandlerError::transient("contact locked in CRM"))
        })
    }

    fn opts(mode: OnExhausted) -> SubscribeOptions {
        SubscribeOptions {
            retry: quick_retry(2),
            on_exhausted: mode,
            breaker: None,
            ..SubscribeOptions::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn held_key_is_released_by_redrive_and_audited() {
        let world = World::new(1).await;
        world
            .publish(vec![ev("c-1", 0), ev("c-1", 1), ev("c-2", 0)])
            .await;
        let calls: Calls = Arc::default();
        let failing = Arc::new(Mutex::new(true));
        let mut engine = world
            .engine(
                flip_handler(Arc::clone(&calls), Arc::clone(&failing), "c-1"),
                opts(OnExhausted::Hold),
            )
            .await;
        world.run_to_end(&mut engine, 50).await;
        let dl = engine
            .dead_letters(&DlqFilter::default())
            .await
            .expect("list");
        assert_eq!(dl.len(), 1);
        assert!(dl[0].held);
        *failing.lock().expect("flag") = false;
        let n = engine
            .redrive(Some(&[dl[0].id.clone()]), &DlqFilter::default(), "ops@acme")
            .await
            .expect("redrive");
        assert_eq!(n, 1);
        world.run_to_end(&mut engine, 50).await;
        let c1: Vec<(u64, u32, bool)> = calls
            .lock()
            .expect("calls")
            .iter()
            .filter(|c| c.0 == "c-1")
            .map(|c| (c.1, c.2, c.3))
            .collect();
        assert_eq!(
            c1,
            [(0, 1, false), (0, 2, false), (0, 1, true), (1, 1, true)]
        );
        assert!(engine
            .dead_letters(&DlqFilter::default())
            .await
            .expect("list")
            .is_empty());
        assert_eq!(engine.stats().committed, [3]);
        let audit = engine.audit_log().await.expect("audit");
        assert_eq!(audit.len(), 1);
        assert_eq!(
            (
                audit[0].who.as_str(),
                audit[0].action.as_str(),
                audit[0].entry.as_str()
            ),
            ("ops@acme", "redrive", "0-0")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn discard_moves_a_held_key_on_and_is_audited() {
        let world = World::new(1).await;
        world.publish(vec![ev("c-1", 0), ev("c-1", 1)]).await;
        let calls: Calls = Arc::default();
        let failing = Arc::new(Mutex::new(true));
        let mut engine = world
            .engine(
                flip_handler(Arc::clone(&calls), Arc::clone(&failing), "c-1"),
                opts(OnExhausted::Hold),
            )
            .await;
        world.run_to_end(&mut engine, 50).await;
        *failing.lock().expect("flag") = false;
        assert!(engine.discard("0-0", "ana").await.expect("discard"));
        assert!(
            !engine.discard("0-0", "ana").await.expect("second discard"),
            "discarded twice"
        );
        world.run_to_end(&mut engine, 50).await;
        let c1: Vec<(u64, bool)> = calls
            .lock()
            .expect("calls")
            .iter()
            .filter(|c| c.0 == "c-1")
            .map(|c| (c.1, c.3))
            .collect();
        assert_eq!(
            c1,
            [(0, false), (0, false), (1, true)],
            "the discarded event must not be delivered again"
        );
        assert_eq!(engine.stats().committed, [2]);
        let audit = engine.audit_log().await.expect("audit");
        assert_eq!(
            audit.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(),
            ["discard"]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn skipped_dead_letters_redrive_in_their_original_order_by_filter() {
        let world = World::new(1).await;
        world
            .publish(vec![ev("c-1", 0), ev("c-1", 1), ev("c-1", 2), ev("c-2", 0)])
            .await;
        let calls: Calls = Arc::default();
        let failing = Arc::new(Mutex::new(true));
        let mut engine = world
            .engine(
                flip_handler(Arc::clone(&calls), Arc::clone(&failing), "c-1"),
                opts(OnExhausted::Skip),
            )
            .await;
        world.run_to_end(&mut engine, 100).await;
        let all = engine
            .dead_letters(&DlqFilter::default())
            .await
            .expect("list");
        assert_eq!(all.len(), 3);
        let by_error = DlqFilter {
            error: Some("locked".into()),
            ..DlqFilter::default()
        };
        assert_eq!(engine.dead_letters(&by_error).await.expect("list").len(), 3);
        let none = DlqFilter {
            ty: Some("invoice.*".into()),
            ..DlqFilter::default()
        };
        assert!(engine.dead_letters(&none).await.expect("list").is_empty());
        *failing.lock().expect("flag") = false;
        calls.lock().expect("calls").clear();
        let sel = DlqFilter {
            ty: Some("deal.*".into()),
            ..DlqFilter::default()
        };
        assert_eq!(engine.redrive(None, &sel, "ops").await.expect("redrive"), 3);
        world.run_to_end(&mut engine, 100).await;
        let c1: Vec<u64> = calls
            .lock()
            .expect("calls")
            .iter()
            .filter(|c| c.0 == "c-1" && c.3)
            .map(|c| c.1)
            .collect();
        assert_eq!(
            c1,
            [0, 1, 2],
            "redriven events of a key must keep their order"
        );
        assert!(
            engine
                .dead_letters(&DlqFilter::default())
                .await
                .expect("list")
                .is_empty(),
            "DLQ must drain"
        );
        assert_eq!(engine.audit_log().await.expect("audit").len(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn consumer_dedupe_holds_across_a_restart() {
        let world = World::with_dedupe_window(1, Duration::ZERO).await;
        let first = ev("d-1", 0).id("evt-1");
        // Three appends: the log's own dedupe window is zero, so the twin is stored again.
        world.publish(vec![first.clone()]).await;
        world.publish(vec![ev("d-2", 0)]).await;
        world.publish(vec![first.clone()]).await;
        let calls: Calls = Arc::default();
        let o = SubscribeOptions {
            dedupe_ttl: Some(Duration::from_secs(3600)),
            breaker: None,
            ..SubscribeOptions::default()
        };
        let mut engine = world
            .engine(recording_handler(Arc::clone(&calls), |_| None), o.clone())
            .await;
        engine.run_until_idle().await.expect("run");
        assert_eq!(
            calls.lock().expect("calls").len(),
            2,
            "the redelivered duplicate was handled"
        );
        assert_eq!(engine.stats().deduped, 1);
        drop(engine);
        world.publish(vec![first.clone()]).await;
        let mut engine = world
            .engine(recording_handler(Arc::clone(&calls), |_| None), o)
            .await;
        engine.run_until_idle().await.expect("run");
        assert_eq!(
            calls.lock().expect("calls").len(),
            2,
            "dedupe forgot across the restart"
        );
        assert_eq!(engine.stats().committed, [4]);
    }
}

mod options {
    use super::*;
    use crmbus::delivery::{Filter, Op, Ordering, StartAt};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn filters_pass_over_events_and_still_commit() {
        let world = World::new(1).await;
        let big = Event::new("deal.won", json!({"deal_id": "d-1", "amount": "25000.00"}))
            .subject("d-1")
            .source("urn:t");
        let small = Event::new("deal.won", json!({"deal_id": "d-2", "amount": "90.00"}))
            .subject("d-2")
            .source("urn:t");
        let lead = Event::new("lead.created", json!({"lead_id": "l-1"}))
            .subject("l-1")
            .source("urn:t");
        world.publish(vec![big, small, lead]).await;
        let calls: Calls = Arc::default();
        let filter = Filter::types(["deal.*"]).with("data.amount", Op::Gte(10_000.0));
        let opts = SubscribeOptions {
            filter,
            breaker: None,
            ..SubscribeOptions::default()
        };
        let mut engine = world
            .engine(recording_handler(Arc::clone(&calls), |_| None), opts)
            .await;
        engine.run_until_idle().await.expect("run");
        let keys: Vec<String> = calls
            .lock()
            .expect("calls")
            .iter()
            .map(|c| c.0.clone())
            .collect();
        assert_eq!(keys, ["d-1"]);
        assert_eq!(engine.stats().filtered, 2);
        assert_eq!(
            engine.stats().committed,
            [3],
            "passed-over events must be committed too"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ordering_none_does_not_park_a_key_behind_its_failure() {
        let world = World::new(1).await;
        world
            .publish(vec![ev("k", 0), ev("k", 1), ev("k", 2)])
            .await;
        let calls: Calls = Arc::default();
        let handler = recording_handler(Arc::clone(&calls), |d| {
            (n_of(d) == 0).then(|| HandlerError::transient("first fails"))
        });
        let opts = SubscribeOptions {
            ordering: Ordering::None,
            retry: quick_retry(5),
            breaker: None,
            ..SubscribeOptions::default()
        };
        let mut engine = world.engine(handler, opts).await;
        engine.run_until_idle().await.expect("run");
        let ok: Vec<u64> = calls
            .lock()
            .expect("calls")
            .iter()
            .filter(|c| c.3)
            .map(|c| c.1)
            .collect();
        let mut sorted = ok.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            [1, 2],
            "with ordering none the same key's later events go ahead"
        );
        assert_eq!(
            engine.stats().committed,
            [0],
            "the low-water mark waits for the failed event"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_nack_may_name_its_delay() {
        let world = World::new(1).await;
        world.publish(vec![ev("k", 0)]).await;
        let calls: Calls = Arc::default();
        let handler = recording_handler(Arc::clone(&calls), |d| {
            (d.attempt == 1).then(|| {
                HandlerError::transient("429 from mail API").retry_after(Duration::from_secs(90))
            })
        });
        let opts = SubscribeOptions {
            retry: quick_retry(5),
            breaker: None,
            ..SubscribeOptions::default()
        };
        let mut engine = world.engine(handler, opts).await;
        let t0 = world.clock.now_micros();
        engine.run_until_idle().await.expect("run");
        assert_eq!(
            engine.next_due_us(),
            Some(t0 + 90_000_000),
            "Retry-After was not honoured"
        );
        world.clock.advance(Duration::from_secs(89));
        engine.run_until_idle().await.expect("run");
        assert_eq!(
            calls.lock().expect("calls").len(),
            1,
            "retried before the named delay"
        );
        world.clock.advance(Duration::from_secs(2));
        engine.run_until_idle().await.expect("run");
        assert_eq!(calls.lock().expect("calls").len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn new_groups_start_at_earliest_latest_or_a_time() {
        let world = World::new(1).await;
        world.publish(vec![ev("a", 0), ev("a", 1)]).await;
        let mut counts = Vec::new();
        for (group, start) in [
            ("g-earliest", StartAt::Earliest),
            ("g-latest", StartAt::Latest),
            ("g-future", StartAt::Time(i64::MAX / 2)),
        ] {
            let calls: Calls = Arc::default();
            let opts = SubscribeOptions {
                start,
                breaker: None,
                ..SubscribeOptions::default()
            };
            let mut engine = Engine::open(
                Arc::clone(&world.log),
                Arc::clone(&world.state),
                Arc::new(world.clock.clone()),
                "deals",
                group,
                recording_handler(Arc::clone(&calls), |_| None),
                opts,
            )
            .await
            .expect("open");
            engine.run_until_idle().await.expect("run");
            counts.push(calls.lock().expect("calls").len());
        }
        assert_eq!(counts, [2, 0, 0]);
        // A later event reaches the "latest" group.
        world.publish(vec![ev("a", 2)]).await;
        let calls: Calls = Arc::default();
        let mut engine = Engine::open(
            Arc::clone(&world.log),
            Arc::clone(&world.state),
            Arc::new(world.clock.clone()),
            "deals",
            "g-latest",
            recording_handler(Arc::clone(&calls), |_| None),
            SubscribeOptions::default(),
        )
        .await
        .expect("open");
        engine.run_until_idle().await.expect("run");
        let got: Vec<u64> = calls.lock().expect("calls").iter().map(|c| c.1).collect();
        assert_eq!(got, [2]);
    }
}
