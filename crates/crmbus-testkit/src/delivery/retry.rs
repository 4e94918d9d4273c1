//! Retries, consumer restarts, exhaustion and the circuit breaker.

use super::*;

/// A key whose event keeps failing waits for its retry alone: a thousand other keys are delivered meanwhile.
pub async fn one_poisoned_key_does_not_hold_back_a_thousand_healthy_ones(make: MakeBackend) {
    let world = World::new(make, 4).await;
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

/// A consumer restarted in the middle of retries resumes the stored attempts and schedule, and
/// does not deliver acknowledged events again.
pub async fn restart_continues_the_retry_schedule_and_does_not_redeliver_acked_events(
    make: MakeBackend,
) {
    let world = World::new(make, 1).await;
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

/// After `max_attempts` an event is dead-lettered: `Skip` moves its key on, `Hold` parks the key.
pub async fn exhaustion_dead_letters_and_hold_parks_the_key(make: MakeBackend) {
    for mode in [OnExhausted::Skip, OnExhausted::Hold] {
        let world = World::new(make, 1).await;
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

/// A permanent error dead-letters at once; an open breaker delivers nothing and spends no
/// attempt until its probe.
pub async fn permanent_errors_skip_retries_and_open_breaker_spends_no_attempts(make: MakeBackend) {
    let world = World::new(make, 1).await;
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
