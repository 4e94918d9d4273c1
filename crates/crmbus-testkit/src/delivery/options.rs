//! Subscription options: filters, ordering, a nack's own delay, where a new group starts.

use super::*;
use crmbus::delivery::{Filter, Op, Ordering, StartAt};

/// Events a filter passes over are not delivered, and are committed all the same.
pub async fn filters_pass_over_events_and_still_commit(make: MakeBackend) {
    let world = World::new(make, 1).await;
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

/// With `Ordering::None` a key's later events go ahead of its failed one; the commit waits for it.
pub async fn ordering_none_does_not_park_a_key_behind_its_failure(make: MakeBackend) {
    let world = World::new(make, 1).await;
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

/// A handler error's `retry_after` delay replaces the backoff.
pub async fn a_nack_may_name_its_delay(make: MakeBackend) {
    let world = World::new(make, 1).await;
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

/// A new group starts at the earliest event, after the latest, or at a time.
pub async fn new_groups_start_at_earliest_latest_or_a_time(make: MakeBackend) {
    let world = World::new(make, 1).await;
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
