//! A subscription running in the background on an EventBus: events published through the
//! bus reach the handler in key order; the DLQ is steered through the handle; unsubscribe
//! persists progress so a new subscription of the group resumes after it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crmbus::delivery::{
    handler_fn, Delivery, DlqFilter, HandlerError, RetryPolicy, SubscribeOptions,
};
use crmbus::{Event, EventBus, MemoryLog};
use serde_json::json;
use tokio::sync::mpsc;

/// Guards against a hang only; no assertion depends on timing.
const HANG_GUARD: Duration = Duration::from_secs(30);

fn lead(id: &str, step: &str) -> Event {
    Event::new(step, json!({"lead_id": id}))
        .subject(id)
        .source("urn:crm")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_subscription_delivers_redrives_and_resumes() {
    let bus = EventBus::builder()
        .log(Arc::new(MemoryLog::new()))
        .auto_create_topics(2)
        .build();
    bus.publish(lead("l-1", "lead.created"), &["leads"])
        .await
        .expect("create topic");
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, String, bool)>();
    let broken = Arc::new(Mutex::new(true));
    let b = Arc::clone(&broken);
    let handler = handler_fn(move |d: Delivery| {
        let tx = tx.clone();
        let b = Arc::clone(&b);
        async move {
            let key = d.event.subject.clone().unwrap_or_default();
            let fail = key == "l-bad" && *b.lock().expect("flag");
            let _ = tx.send((key, d.event.ty.clone(), !fail));
            if fail {
                Err(HandlerError::permanent("invalid phone number"))
            } else {
                Ok(())
            }
        }
    });
    let opts = SubscribeOptions {
        retry: RetryPolicy {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(5),
            ..RetryPolicy::default()
        },
        breaker: None,
        ..SubscribeOptions::default()
    };
    let sub = bus
        .subscribe("leads", "scoring", Arc::clone(&handler), opts.clone())
        .await
        .expect("subscribe");
    for step in ["lead.qualified", "lead.converted"] {
        bus.publish(lead("l-1", step), &["leads"])
            .await
            .expect("publish");
    }
    bus.publish(lead("l-bad", "lead.created"), &["leads"])
        .await
        .expect("publish");
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let got = tokio::time::timeout(HANG_GUARD, rx.recv())
            .await
            .expect("hang guard")
            .expect("channel");
        seen.push(got);
    }
    let l1: Vec<&str> = seen
        .iter()
        .filter(|s| s.0 == "l-1")
        .map(|s| s.1.as_str())
        .collect();
    assert_eq!(l1, ["lead.created", "lead.qualified", "lead.converted"]);
    // The permanent failure is in the DLQ; fix the consumer and redrive through the handle.
    // The handler reported the failure before the engine stored the dead letter: poll for
    // it, bounded by the hang guard.
    let deadline = std::time::Instant::now() + HANG_GUARD;
    let dl = loop {
        let dl = sub.dead_letters(DlqFilter::default()).await.expect("list");
        if !dl.is_empty() {
            break dl;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the permanent failure did not reach the DLQ within {HANG_GUARD:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].last_error, "invalid phone number");
    *broken.lock().expect("flag") = false;
    assert_eq!(
        sub.redrive(None, DlqFilter::default(), "tester")
            .await
            .expect("redrive"),
        1
    );
    let again = tokio::time::timeout(HANG_GUARD, rx.recv())
        .await
        .expect("hang guard")
        .expect("channel");
    assert_eq!((again.0.as_str(), again.2), ("l-bad", true));
    let stats = sub.stats().await.expect("stats");
    assert_eq!(stats.dead_lettered, 1);
    sub.unsubscribe().await.expect("unsubscribe");

    // A new subscription of the same group resumes after what was processed.
    bus.publish(lead("l-2", "lead.created"), &["leads"])
        .await
        .expect("publish");
    let sub = bus
        .subscribe("leads", "scoring", handler, opts)
        .await
        .expect("resubscribe");
    let next = tokio::time::timeout(HANG_GUARD, rx.recv())
        .await
        .expect("hang guard")
        .expect("channel");
    assert_eq!(
        next.0, "l-2",
        "an already processed event was delivered again"
    );
    sub.unsubscribe().await.expect("unsubscribe");
    assert!(rx.try_recv().is_err(), "unexpected extra delivery");
}
