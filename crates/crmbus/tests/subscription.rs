//! A subscription running in the background on an EventBus: events published through the
//! bus reach the handler in key order; the DLQ is steered through the handle; unsubscribe
//! persists progress so a new subscription of the group resumes after it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crmbus::delivery::{
    handler_fn, Delivery, DlqFilter, Handler, HandlerError, Ordering, Outcome, RetryPolicy,
    SubscribeOptions, POLL_INTERVAL,
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

/// A step that takes every answer in at once is left with nothing in flight, and with
/// reads started ahead into the room the answers made: the subscription must take those
/// events in as soon as they are read, not at its next poll. On paused time (which moves
/// only when every task waits), waiting for the poll shows as a jump of
/// [`POLL_INTERVAL`]: each step would wait one, and none may.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_step_that_took_every_answer_in_goes_on_with_its_read_ahead_at_once() {
    const EVENTS: usize = 64;
    let bus = EventBus::builder()
        .log(Arc::new(MemoryLog::new()))
        .auto_create_topics(1)
        .build();
    let batch: Vec<Event> = (0..EVENTS)
        .map(|i| lead(&format!("l-{i}"), "lead.created"))
        .collect();
    bus.publish_batch(batch, &["leads"]).await.expect("publish");
    let seen = Arc::new(Mutex::new(Vec::new()));
    // Answers every delivery as it is handed over: a step takes all its answers in.
    let handler = Arc::new(AnswersAtOnce {
        seen: Arc::clone(&seen),
    });
    let opts = SubscribeOptions {
        read_ahead: 8,
        max_in_flight: 8,
        ordering: Ordering::None,
        ..SubscribeOptions::default()
    };
    let started = tokio::time::Instant::now();
    let sub = bus
        .subscribe("leads", "scoring", handler, opts)
        .await
        .expect("subscribe");
    // Paused time moves a millisecond at a time while this waits and the subscription has
    // nothing to do.
    while seen.lock().expect("seen").len() < EVENTS {
        assert!(
            started.elapsed() < HANG_GUARD,
            "delivered {} of {EVENTS}",
            seen.lock().expect("seen").len()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let waited = started.elapsed();
    assert!(
        waited < POLL_INTERVAL,
        "the subscription waited {waited:?} for {EVENTS} events read {} at a time: it \
         waited for its poll instead of its reads ahead",
        8
    );
    let mut offsets = seen.lock().expect("seen").clone();
    offsets.sort_unstable();
    assert_eq!(offsets, (0..EVENTS as u64).collect::<Vec<_>>());
    sub.unsubscribe().await.expect("unsubscribe");
}

/// A handler that takes deliveries handed over and acks them there and then.
struct AnswersAtOnce {
    seen: Arc<Mutex<Vec<u64>>>,
}

#[async_trait::async_trait]
impl Handler for AnswersAtOnce {
    async fn handle(&self, _: Delivery) -> Result<(), HandlerError> {
        Err(HandlerError::permanent("deliveries are handed over"))
    }

    fn hands_over(&self) -> bool {
        true
    }

    fn hand_over(&self, deliveries: Vec<(Delivery, Outcome)>) {
        let mut answers = Vec::with_capacity(deliveries.len());
        for (d, outcome) in deliveries {
            self.seen.lock().expect("seen").push(d.offset);
            answers.push((outcome, Ok(())));
        }
        assert!(Outcome::settle_all(answers).into_iter().all(|taken| taken));
    }
}
