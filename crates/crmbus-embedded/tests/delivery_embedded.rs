//! The delivery engine on the embedded log and its state store: a retry schedule, acked
//! events and a held dead letter all survive closing and reopening the log (a restart).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crmbus::clock::ManualClock;
use crmbus::delivery::{
    handler_fn, Delivery, Engine, Handler, HandlerError, OnExhausted, RetryPolicy, SubscribeOptions,
};
use crmbus::{Clock, Event, EventLog, TopicSpec};
use crmbus_embedded::{EmbeddedLog, EmbeddedOptions};
use serde_json::json;

fn ev(key: &str, n: u64) -> Event {
    Event::new("invoice.generated", json!({"invoice_id": key, "n": n}))
        .subject(key)
        .source("urn:test")
}

type Calls = Arc<Mutex<Vec<(String, u64, u32)>>>;

fn handler(calls: Calls, fail_key: &'static str) -> Arc<dyn Handler> {
    handler_fn(move |d: Delivery| {
        let calls = Arc::clone(&calls);
        async move {
            let key = d.event.subject.clone().unwrap_or_default();
            let n = d
                .event
                .data_json()
                .and_then(|v| v["n"].as_u64())
                .unwrap_or(0);
            calls
                .lock()
                .expect("calls")
                .push((key.clone(), n, d.attempt));
            if key == fail_key {
                Err(HandlerError::transient("ERP returned 503"))
            } else {
                Ok(())
            }
        }
    })
}

fn open_log(dir: &Path, clock: &ManualClock) -> Arc<EmbeddedLog> {
    let opts = EmbeddedOptions {
        retention_interval: None,
        clock: Arc::new(clock.clone()),
        ..EmbeddedOptions::default()
    };
    Arc::new(EmbeddedLog::open(dir, opts).expect("open log"))
}

async fn engine(log: &Arc<EmbeddedLog>, clock: &ManualClock, h: Arc<dyn Handler>) -> Engine {
    let as_log: Arc<dyn EventLog> = Arc::clone(log) as Arc<dyn EventLog>;
    Engine::open(
        as_log,
        log.state_store(),
        Arc::new(clock.clone()),
        "billing",
        "erp-sync",
        h,
        SubscribeOptions {
            retry: RetryPolicy {
                max_attempts: 4,
                initial_backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(60),
                multiplier: 2.0,
                max_age: None,
                schedule: Vec::new(),
            },
            on_exhausted: OnExhausted::Hold,
            breaker: None,
            ..SubscribeOptions::default()
        },
    )
    .await
    .expect("open engine")
}

fn advance_to_due(engine: &Engine, clock: &ManualClock) {
    let due = engine.next_due_us().expect("a retry is scheduled");
    clock.advance(Duration::from_micros(
        (due - clock.now_micros()).max(0) as u64 + 1,
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_schedule_acks_and_held_dead_letter_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let calls: Calls = Arc::default();
    {
        let log = open_log(dir.path(), &clock);
        log.create_topic(TopicSpec::new("billing", 2))
            .await
            .expect("create");
        let events = vec![
            ev("inv-1", 0),
            ev("inv-2", 0),
            ev("inv-2", 1),
            ev("inv-1", 1),
            ev("inv-3", 0),
        ];
        log.append(&["billing".to_string()], &events)
            .await
            .expect("append");
        let mut e = engine(&log, &clock, handler(Arc::clone(&calls), "inv-1")).await;
        e.run_until_idle().await.expect("run");
        advance_to_due(&e, &clock);
        e.run_until_idle().await.expect("run");
        assert_eq!(
            e.pending_retries().values().next().map(|r| r.attempts),
            Some(2)
        );
        drop(e);
        log.close().await.expect("close");
    }
    let before: Vec<_> = calls.lock().expect("calls").clone();
    assert_eq!(
        before.iter().filter(|c| c.0 != "inv-1").count(),
        3,
        "inv-2 x2 and inv-3 acked"
    );

    // Restart: the schedule continues at attempt 3; acked events are not delivered again.
    let log = open_log(dir.path(), &clock);
    let mut e = engine(&log, &clock, handler(Arc::clone(&calls), "inv-1")).await;
    assert_eq!(
        e.pending_retries().values().next().map(|r| r.attempts),
        Some(2)
    );
    e.run_until_idle().await.expect("run");
    assert_eq!(
        calls.lock().expect("calls").len(),
        before.len(),
        "something was delivered before it was due"
    );
    for _ in 0..2 {
        advance_to_due(&e, &clock);
        e.run_until_idle().await.expect("run");
    }
    let all = calls.lock().expect("calls").clone();
    let inv1: Vec<(u64, u32)> = all
        .iter()
        .filter(|c| c.0 == "inv-1")
        .map(|c| (c.1, c.2))
        .collect();
    assert_eq!(
        inv1,
        [(0, 1), (0, 2), (0, 3), (0, 4)],
        "attempts did not continue from the record"
    );
    assert_eq!(
        all.iter().filter(|c| c.0 != "inv-1").count(),
        3,
        "acked events redelivered after restart"
    );
    let dlq = log
        .state_store()
        .scan("sub/billing/erp-sync/dlq", "")
        .await
        .expect("scan");
    assert_eq!(dlq.len(), 1);
    let dl: crmbus::delivery::DeadLetter = serde_json::from_slice(&dlq[0].1).expect("entry");
    assert!(dl.held && dl.attempts == 4 && dl.last_error == "ERP returned 503");
    assert_eq!(e.stats().parked_keys, 1, "the held key stays parked");
    drop(e);
    log.close().await.expect("close");
    drop(log);

    // After another restart the key is still held: inv-1's second event is not delivered.
    let log = open_log(dir.path(), &clock);
    let mut e = engine(&log, &clock, handler(Arc::clone(&calls), "none")).await;
    clock.advance(Duration::from_secs(3600));
    e.run_until_idle().await.expect("run");
    assert_eq!(
        calls.lock().expect("calls").len(),
        all.len(),
        "a held key was delivered after restart"
    );
}
