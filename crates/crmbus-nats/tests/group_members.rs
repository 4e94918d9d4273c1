//! Acceptance: a consumer killed in the middle of a batch — its unacknowledged events are
//! delivered to another member of the group. Shown twice against the real server: with
//! the delivery engine (group offsets and state on JetStream), and natively with
//! `NatsGroupConsumer` (durable pull consumer, AckWait redelivery, NAK delay, MaxDeliver).

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crmbus::delivery::{handler_fn, Delivery, Engine, HandlerError, SubscribeOptions};
use crmbus::{Event, EventLog, SystemClock, TopicSpec};
use crmbus_nats::{GroupConsumerOptions, NatsGroupConsumer, NatsLog, NatsOptions};
use serde_json::json;

mod common;

fn ev(key: &str, n: u64) -> Event {
    Event::new("order.placed", json!({"order_id": key, "n": n}))
        .subject(key)
        .source("urn:test:group")
}

type Seen = Arc<Mutex<BTreeSet<(u32, u64)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engine_member_killed_mid_batch_its_unacked_events_reach_the_next_member() {
    let cleanup = common::Cleanup::default();
    let prefix = common::unique_prefix("engine-kill");
    cleanup.add(&prefix);
    let opened = crmbus_nats::open(&common::url(), &prefix)
        .await
        .expect("open");
    let (log, state) = (opened.log, opened.state);
    log.create_topic(TopicSpec::new("orders", 3))
        .await
        .expect("create");
    let events: Vec<Event> = (0..300).map(|i| ev(&format!("o-{}", i % 25), i)).collect();
    let receipts = log
        .append(&["orders".to_string()], &events)
        .await
        .expect("append");
    let all: BTreeSet<(u32, u64)> = receipts.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(all.len(), 300);

    // Member 1 acknowledges 150 deliveries, then every further handler call hangs (the
    // process is stuck mid-batch) and the member is killed: its task is aborted.
    // Counting and recording happen under one lock: handlers run on several worker
    // threads, and a separate counter let the 151st call announce the hang before an
    // earlier call had recorded its acknowledgement (seen once in CI: 148 of 150).
    let acked1: Seen = Arc::default();
    let hung = Arc::new(tokio::sync::Notify::new());
    let handler1 = {
        let (acked1, hung) = (Arc::clone(&acked1), Arc::clone(&hung));
        handler_fn(move |d: Delivery| {
            let (acked1, hung) = (Arc::clone(&acked1), Arc::clone(&hung));
            async move {
                let recorded = {
                    let mut acked = acked1.lock().expect("acked");
                    acked.len() < 150 && acked.insert((d.partition, d.offset))
                };
                if recorded {
                    Ok::<(), HandlerError>(())
                } else {
                    hung.notify_one();
                    std::future::pending::<Result<(), HandlerError>>().await
                }
            }
        })
    };
    let opts = SubscribeOptions {
        max_in_flight: 8,
        breaker: None,
        ..SubscribeOptions::default()
    };
    let mut member1 = Engine::open(
        Arc::clone(&log),
        Arc::clone(&state),
        Arc::new(SystemClock),
        "orders",
        "fulfilment",
        handler1,
        opts.clone(),
    )
    .await
    .expect("open member 1");
    let task = tokio::spawn(async move { member1.run_until_idle().await });
    tokio::time::timeout(Duration::from_secs(60), hung.notified())
        .await
        .expect("member 1 never reached the middle of its batch");
    task.abort();
    assert!(
        task.await.is_err_and(|e| e.is_cancelled()),
        "member 1 was not killed"
    );
    let acked1 = acked1.lock().expect("acked").clone();
    assert_eq!(acked1.len(), 150);

    // Member 2 of the same group takes over.
    let delivered2: Seen = Arc::default();
    let handler2 = {
        let delivered2 = Arc::clone(&delivered2);
        handler_fn(move |d: Delivery| {
            let delivered2 = Arc::clone(&delivered2);
            async move {
                delivered2
                    .lock()
                    .expect("delivered")
                    .insert((d.partition, d.offset));
                Ok::<(), HandlerError>(())
            }
        })
    };
    let mut member2 = Engine::open(
        Arc::clone(&log),
        Arc::clone(&state),
        Arc::new(SystemClock),
        "orders",
        "fulfilment",
        handler2,
        opts,
    )
    .await
    .expect("open member 2");
    member2.run_until_idle().await.expect("member 2 runs");
    let delivered2 = delivered2.lock().expect("delivered").clone();
    let unacked: BTreeSet<(u32, u64)> = all.difference(&acked1).copied().collect();
    let missing: Vec<_> = unacked.difference(&delivered2).collect();
    assert!(
        missing.is_empty(),
        "{} events member 1 did not acknowledge never reached member 2: {missing:?}",
        missing.len()
    );
    assert!(delivered2.len() >= 150, "member 2 got {}", delivered2.len());
    // And the group is now caught up on every partition.
    for p in log
        .describe_topic("orders")
        .await
        .expect("describe")
        .partition_info
    {
        assert_eq!(
            log.committed_offset("fulfilment", "orders", p.partition)
                .await
                .expect("offset"),
            Some(p.next_offset)
        );
    }
}

async fn native_log(tag: &str, cleanup: &common::Cleanup) -> NatsLog {
    let prefix = common::unique_prefix(tag);
    cleanup.add(&prefix);
    NatsLog::connect(&common::url(), &prefix, NatsOptions::default())
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_member_dropped_mid_batch_its_unacked_events_are_redelivered_to_another() {
    let cleanup = common::Cleanup::default();
    let log = native_log("native-kill", &cleanup).await;
    log.create_topic(TopicSpec::new("orders", 2))
        .await
        .expect("create");
    let events: Vec<Event> = (0..20).map(|i| ev(&format!("o-{i}"), i)).collect();
    log.append(&["orders".to_string()], &events)
        .await
        .expect("append");
    let opts = GroupConsumerOptions {
        ack_wait: Duration::from_secs(1),
        ..GroupConsumerOptions::default()
    };

    let a = NatsGroupConsumer::join(&log, "orders", "billing", opts.clone())
        .await
        .expect("join a");
    let batch = a.fetch(20).await.expect("fetch a");
    assert_eq!(batch.len(), 20, "member a fetched {}", batch.len());
    let mut unacked = HashSet::new();
    for (i, m) in batch.iter().enumerate() {
        assert_eq!(m.delivery, 1);
        if i < 8 {
            m.ack().await.expect("ack");
        } else {
            unacked.insert((m.event.partition, m.event.offset));
        }
    }
    drop(batch);
    drop(a); // crashed: 12 fetched events never acknowledged

    let b = NatsGroupConsumer::join(&log, "orders", "billing", opts)
        .await
        .expect("join b");
    let got: Arc<Mutex<HashSet<(u32, u64)>>> = Arc::default();
    let mut deliveries = Vec::new();
    for _ in 0..300 {
        for m in b.fetch(20).await.expect("fetch b") {
            deliveries.push(m.delivery);
            got.lock()
                .expect("got")
                .insert((m.event.partition, m.event.offset));
            m.ack().await.expect("ack");
        }
        if got.lock().expect("got").len() >= unacked.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        *got.lock().expect("got"),
        unacked,
        "member b got other events"
    );
    assert!(
        deliveries.iter().all(|d| *d == 2),
        "deliveries {deliveries:?}"
    );
    assert!(
        b.fetch(20).await.expect("fetch").is_empty(),
        "acked events came back"
    );
    b.delete().await.expect("delete group");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_nak_delays_redelivery_and_max_deliver_stops_it() {
    let cleanup = common::Cleanup::default();
    let log = native_log("native-nak", &cleanup).await;
    log.create_topic(TopicSpec::new("invoices", 1))
        .await
        .expect("create");
    log.append(&["invoices".to_string()], &[ev("inv-1", 0)])
        .await
        .expect("append");
    let member = NatsGroupConsumer::join(
        &log,
        "invoices",
        "erp.sync",
        GroupConsumerOptions {
            ack_wait: Duration::from_secs(30),
            max_deliver: 2,
            ..GroupConsumerOptions::default()
        },
    )
    .await
    .expect("join");
    let first = member.fetch(1).await.expect("fetch");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].delivery, 1);
    first[0]
        .nak(Some(Duration::from_millis(300)))
        .await
        .expect("nak");

    // Redelivered once its delay has passed (polling; no timing asserted).
    let mut second = Vec::new();
    for _ in 0..300 {
        second = member.fetch(1).await.expect("fetch");
        if !second.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(second.len(), 1, "the refused event was not redelivered");
    assert_eq!(second[0].delivery, 2);
    assert_eq!(second[0].event.offset, 0);

    // The second refusal reaches MaxDeliver: the server gives up on the event. Fetching is
    // what makes the server look at the refused event again; once it has given up, the
    // event is neither pending nor awaiting an ack. (The MAX_DELIVERIES advisory is not
    // asserted: one CI run on a loaded machine never saw it although delivery stopped.)
    let before = member.backlog().await.expect("backlog");
    assert_eq!(
        before.ack_pending, 1,
        "the refused event awaits an ack: {before:?}"
    );
    second[0].nak(None).await.expect("nak");
    let mut redelivered = 0;
    let mut after = before;
    for _ in 0..120 {
        redelivered += member.fetch(1).await.expect("fetch").len();
        after = member.backlog().await.expect("backlog");
        if after.ack_pending == 0 {
            break;
        }
    }
    assert_eq!(
        (after.pending, after.ack_pending),
        (0, 0),
        "the server did not give up on the event after max_deliver: {after:?}"
    );
    redelivered += member.fetch(1).await.expect("fetch").len();
    assert_eq!(
        redelivered, 0,
        "delivered a third time despite max_deliver 2"
    );
}
