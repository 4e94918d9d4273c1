//! One subscription never holds up another, and one pull never waits behind another
//! (issue 13, item 8: head-of-line blocking in the server).
//!
//! A subscription is made to hang by a state store that stops, at a gate, every scan of
//! that group's dead letters; the test waits until the scan is at the gate, so it knows
//! the hang has begun, and only then checks the other subscription. A hang the fix did
//! not remove would block for ever: the bounded waits below turn it into a failure.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use crmbus::delivery::DlqFilter;
use crmbus::{EventBus, LogError, MemoryLog, MemoryStateStore, StateOp, StateStore, TopicSpec};
use crmbus_server::api::CreateSubscriptionRequest;
use crmbus_server::pull::PullQueue;
use crmbus_server::subscriptions::Subscriptions;
use serde_json::json;
use tokio::sync::Notify;

/// How long a call that must not wait may take before the test calls it blocked.
const BLOCKED: Duration = Duration::from_secs(30);

/// A memory state store whose scans of `gated` stop at a gate while it is closed.
struct GatedState {
    inner: MemoryStateStore,
    gated: String,
    closed: AtomicBool,
    at_gate: Notify,
    open: Notify,
}

#[async_trait]
impl StateStore for GatedState {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, LogError> {
        self.inner.get(namespace, key).await
    }
    async fn scan(
        &self,
        namespace: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, LogError> {
        if namespace == self.gated {
            let opened = self.open.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if self.closed.load(Ordering::SeqCst) {
                self.at_gate.notify_one();
                opened.await;
            }
        }
        self.inner.scan(namespace, prefix).await
    }
    async fn apply(&self, ops: Vec<StateOp>) -> Result<(), LogError> {
        self.inner.apply(ops).await
    }
}

fn request(name: &str) -> CreateSubscriptionRequest {
    serde_json::from_value(json!({"name": name})).expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_stuck_in_its_state_store_does_not_hold_up_another() {
    let state = Arc::new(GatedState {
        inner: MemoryStateStore::new(),
        gated: "sub/orders/stuck/dlq".to_string(),
        closed: AtomicBool::new(false),
        at_gate: Notify::new(),
        open: Notify::new(),
    });
    let bus = EventBus::builder()
        .log(Arc::new(MemoryLog::new()))
        .state(Arc::clone(&state) as Arc<dyn StateStore>)
        .build();
    bus.log()
        .create_topic(TopicSpec::new("orders", 2))
        .await
        .expect("topic");
    let (push, _gone) = crmbus_server::push::Push::new(
        &crmbus_server::config::PushSection::default(),
        Arc::new(crmbus::SystemClock),
    )
    .expect("push");
    let subs = Arc::new(Subscriptions::new(bus, None, Arc::new(push)));
    subs.create("orders", request("stuck"))
        .await
        .expect("create stuck");
    subs.create("orders", request("healthy"))
        .await
        .expect("create healthy");

    // The stuck subscription's dead-letter listing stops at the gate.
    let at_gate = state.at_gate.notified();
    state.closed.store(true, Ordering::SeqCst);
    let listing = tokio::spawn({
        let subs = Arc::clone(&subs);
        async move { subs.dead_letters("stuck", DlqFilter::default()).await }
    });
    tokio::time::timeout(BLOCKED, at_gate)
        .await
        .expect("the listing never reached the gate");

    // Meanwhile every call on the other subscription answers.
    let view = tokio::time::timeout(BLOCKED, subs.get("healthy"))
        .await
        .expect("get waited behind the stuck subscription")
        .expect("get");
    assert_eq!(view.name, "healthy");
    tokio::time::timeout(BLOCKED, subs.queue("healthy"))
        .await
        .expect("queue waited behind the stuck subscription")
        .expect("queue");
    let dlq = tokio::time::timeout(BLOCKED, subs.dead_letters("healthy", DlqFilter::default()))
        .await
        .expect("dead letters waited behind the stuck subscription")
        .expect("dead letters");
    assert!(dlq.is_empty());
    assert!(
        !listing.is_finished(),
        "the stuck listing finished early: the test proved nothing"
    );

    // Opening the gate lets the stuck one finish too.
    state.closed.store(false, Ordering::SeqCst);
    state.open.notify_waiters();
    let stuck = tokio::time::timeout(BLOCKED, listing)
        .await
        .expect("the listing never finished")
        .expect("join")
        .expect("dead letters");
    assert!(stuck.is_empty());
    subs.stop_all().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_pull_that_does_not_wait_never_waits_behind_a_long_poll() {
    let queue = PullQueue::new(8, Duration::from_secs(30));
    // A long poll on an empty queue; on this single-threaded runtime one yield runs it
    // up to its wait.
    let long = tokio::spawn({
        let queue = Arc::clone(&queue);
        async move { queue.pull(1, Duration::from_secs(120)).await }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!long.is_finished(), "the long poll did not wait");
    let now = tokio::time::timeout(BLOCKED, queue.pull(10, Duration::ZERO))
        .await
        .expect("a pull with no wait waited behind the long poll");
    assert!(now.is_empty());
    assert!(!long.is_finished());
    long.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_long_polls_share_the_deliveries_and_lose_none() {
    use crmbus::delivery::Delivery;
    use crmbus::Event;

    let queue = PullQueue::new(64, Duration::from_secs(30));
    let pullers: Vec<_> = (0..4)
        .map(|_| {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let batch = queue.pull(3, Duration::from_secs(2)).await;
                    if batch.is_empty() {
                        return got;
                    }
                    let ids: Vec<String> = batch.iter().map(|l| l.ack_id.clone()).collect();
                    assert!(queue.ack(&ids).unknown.is_empty(), "an ack id was unknown");
                    got.extend(batch.into_iter().map(|l| l.delivery.offset));
                }
            })
        })
        .collect();
    let handler = queue.handler();
    let handled: Vec<_> = (0..40u64)
        .map(|offset| {
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                let event = Event::new("task.assigned", json!({"n": offset})).subject("k");
                handler
                    .handle(Delivery {
                        topic: "tasks".into(),
                        group: "workers".into(),
                        partition: 0,
                        offset,
                        attempt: 1,
                        event: event.into(),
                        stored_json: None,
                    })
                    .await
            })
        })
        .collect();
    for h in handled {
        tokio::time::timeout(BLOCKED, h)
            .await
            .expect("a delivery was never pulled")
            .expect("join")
            .expect("acked");
    }
    let mut seen: Vec<u64> = Vec::new();
    for p in pullers {
        seen.extend(p.await.expect("puller"));
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..40).collect::<Vec<u64>>());
}
