//! Dead letters (redrive, discard, filters, audit) and consumer dedupe.

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

/// Redriving a held dead letter delivers it and releases its key; the redrive is audited.
pub async fn held_key_is_released_by_redrive_and_audited(make: MakeBackend) {
    let world = World::new(make, 1).await;
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

/// Discarding a held dead letter moves its key on without delivering it; the discard is audited.
pub async fn discard_moves_a_held_key_on_and_is_audited(make: MakeBackend) {
    let world = World::new(make, 1).await;
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

/// Skipped dead letters, listed and redriven by filter, are delivered in their original order.
pub async fn skipped_dead_letters_redrive_in_their_original_order_by_filter(make: MakeBackend) {
    let world = World::new(make, 1).await;
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

/// Consumer dedupe passes over a duplicate the log stored again, also after a restart.
pub async fn consumer_dedupe_holds_across_a_restart(make: MakeBackend) {
    let world = World::with_dedupe_window(make, 1, Duration::ZERO).await;
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
