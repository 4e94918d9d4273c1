//! A consumer killed in the middle of a batch: its unacknowledged events are delivered to
//! another member of the group — with the crmbus delivery engine on RedisLog, and with
//! Redis's own consumer groups (XREADGROUP / XACK / XAUTOCLAIM).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crmbus::delivery::{handler_fn, Delivery, Engine, Handler, SubscribeOptions};
use crmbus::delivery::{GroupState, StateKind};
use crmbus::{Event, EventLog, ManualClock, TopicSpec};
use crmbus_redis::RedisLog;
use serde_json::json;
use tokio::sync::Notify;

type Seen = Arc<Mutex<BTreeSet<(u32, u64)>>>;

fn ev(key: &str, n: u64) -> Event {
    Event::new("deal.stage_changed", json!({"deal_id": key, "n": n}))
        .subject(key)
        .source("urn:test:failover")
}

async fn engine(
    log: &RedisLog,
    clock: &ManualClock,
    handler: Arc<dyn Handler>,
) -> Result<Engine, crmbus::LogError> {
    Engine::open(
        Arc::new(log.clone()),
        log.state_store(),
        Arc::new(clock.clone()),
        "deals",
        "erp-sync",
        handler,
        SubscribeOptions {
            max_in_flight: 16,
            breaker: None,
            ..SubscribeOptions::default()
        },
    )
    .await
}

/// Offsets the group has durably finished: below the committed offset, or in a `done`
/// entry's ranges in the state store.
async fn persisted_done(log: &RedisLog, partitions: u32) -> BTreeSet<(u32, u64)> {
    let mut out = BTreeSet::new();
    for p in 0..partitions {
        let committed = log
            .committed_offset("erp-sync", "deals", p)
            .await
            .expect("committed")
            .unwrap_or(0);
        out.extend((0..committed).map(|o| (p, o)));
    }
    let done = log
        .state_store()
        .scan(
            &GroupState::new("deals", "erp-sync").namespace(StateKind::Done),
            "",
        )
        .await
        .expect("scan done");
    // One entry per partition: the ranges finished above the committed offset.
    for (k, v) in done {
        let p: u32 = k.parse().expect("partition key");
        let ranges: Vec<(u64, u64)> = serde_json::from_slice(&v).expect("done ranges");
        for (a, b) in ranges {
            out.extend((a..b).map(|o| (p, o)));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_killed_mid_batch_leaves_its_unacked_events_to_another_member() {
    let prefix = common::unique_prefix("failover-engine");
    let _cleanup = common::Cleanup::new(&prefix);
    let clock = ManualClock::new(1_700_000_000_000_000);
    let log_a = RedisLog::open(&common::url(), &prefix)
        .await
        .expect("open a");
    log_a
        .create_topic(TopicSpec::new("deals", 3))
        .await
        .expect("create");
    let publish = |from: u64, to: u64| {
        let log = log_a.clone();
        async move {
            let mut batch = Vec::new();
            for n in from..to {
                for k in 0..25 {
                    batch.push(ev(&format!("deal-{k}"), n));
                }
            }
            log.append(&["deals".to_string()], &batch)
                .await
                .expect("append");
        }
    };
    publish(0, 6).await;
    // Member A works through a first batch of 150 events (its progress is committed), then
    // through 70 of a second batch of 150, and hangs in the middle of it: every further
    // delivery never returns. It is then killed (its engine dropped, its in-flight
    // handlers aborted, nothing drained or persisted).
    let acked_a: Seen = Arc::default();
    let stalled = Arc::new(Notify::new());
    let killed = Arc::new(AtomicBool::new(false));
    let handler_a = {
        let acked = Arc::clone(&acked_a);
        let stalled = Arc::clone(&stalled);
        let killed = Arc::clone(&killed);
        let count = Arc::new(AtomicUsize::new(0));
        handler_fn(move |d: Delivery| {
            let acked = Arc::clone(&acked);
            let stalled = Arc::clone(&stalled);
            let killed = Arc::clone(&killed);
            let count = Arc::clone(&count);
            async move {
                if count.fetch_add(1, Ordering::SeqCst) >= 220 {
                    stalled.notify_one();
                    std::future::pending::<()>().await;
                }
                if !killed.load(Ordering::SeqCst) {
                    acked.lock().expect("acked").insert((d.partition, d.offset));
                }
                Ok(())
            }
        })
    };
    let mut engine_a = engine(&log_a, &clock, handler_a).await.expect("engine a");
    engine_a.run_until_idle().await.expect("first batch");
    assert_eq!(acked_a.lock().expect("acked").len(), 150);
    publish(6, 12).await;
    tokio::select! {
        r = engine_a.run_until_idle() => panic!("member A finished instead of hanging: {r:?}"),
        _ = stalled.notified() => {}
    }
    let all: BTreeSet<(u32, u64)> = {
        let info = log_a.describe_topic("deals").await.expect("describe");
        info.partition_info
            .iter()
            .flat_map(|p| (p.first_offset..p.next_offset).map(move |o| (p.partition, o)))
            .collect()
    };
    assert_eq!(all.len(), 300);
    killed.store(true, Ordering::SeqCst);
    drop(engine_a);
    drop(log_a);
    let acked_a = acked_a.lock().expect("acked").clone();
    assert!(acked_a.len() >= 200, "A acked only {}", acked_a.len());

    // Member B: another process (its own connection) in the same group.
    let log_b = RedisLog::open(&common::url(), &prefix)
        .await
        .expect("open b");
    let done_before_b = persisted_done(&log_b, 3).await;
    assert!(
        !done_before_b.is_empty(),
        "A's progress was never persisted: the test would prove nothing"
    );
    assert!(
        done_before_b.is_subset(&acked_a),
        "something A never acknowledged was recorded as done"
    );
    let delivered_b: Seen = Arc::default();
    let per_key_b: Arc<Mutex<HashMap<String, Vec<u64>>>> = Arc::default();
    let handler_b = {
        let delivered = Arc::clone(&delivered_b);
        let per_key = Arc::clone(&per_key_b);
        handler_fn(move |d: Delivery| {
            let delivered = Arc::clone(&delivered);
            let per_key = Arc::clone(&per_key);
            async move {
                delivered
                    .lock()
                    .expect("delivered")
                    .insert((d.partition, d.offset));
                let n = d
                    .event
                    .data_json()
                    .and_then(|v| v["n"].as_u64())
                    .unwrap_or(0);
                per_key
                    .lock()
                    .expect("per key")
                    .entry(d.event.subject.clone().unwrap_or_default())
                    .or_default()
                    .push(n);
                Ok(())
            }
        })
    };
    let mut engine_b = engine(&log_b, &clock, handler_b).await.expect("engine b");
    engine_b.run_until_idle().await.expect("run b");
    let delivered_b = delivered_b.lock().expect("delivered").clone();

    let unacked: BTreeSet<_> = all.difference(&acked_a).copied().collect();
    assert!(!unacked.is_empty(), "A was killed after everything");
    let missing: Vec<_> = unacked.difference(&delivered_b).collect();
    assert!(
        missing.is_empty(),
        "events A never acknowledged were not delivered to B: {missing:?}"
    );
    let redone: Vec<_> = delivered_b.intersection(&done_before_b).collect();
    assert!(
        redone.is_empty(),
        "work A had acknowledged and committed was delivered again: {redone:?}"
    );
    // At-least-once: B redelivers at most what A acked after its last persist.
    assert_eq!(
        delivered_b.len(),
        all.len() - done_before_b.len(),
        "B delivered something other than the not-yet-committed events"
    );
    // Per-key order holds for B too.
    for (k, ns) in per_key_b.lock().expect("per key").iter() {
        assert!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "key {k} out of order: {ns:?}"
        );
    }
    // The group has now committed everything.
    let info = log_b.describe_topic("deals").await.expect("describe");
    for p in &info.partition_info {
        assert_eq!(
            log_b
                .committed_offset("erp-sync", "deals", p.partition)
                .await
                .expect("committed"),
            Some(p.next_offset),
            "partition {} not fully committed",
            p.partition
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_consumer_group_hands_a_dead_members_pending_entries_to_another() {
    let prefix = common::unique_prefix("failover-native");
    let _cleanup = common::Cleanup::new(&prefix);
    let log = RedisLog::open(&common::url(), &prefix).await.expect("open");
    log.create_topic(TopicSpec::new("deals", 2))
        .await
        .expect("create");
    let batch: Vec<Event> = (0..40).map(|i| ev(&format!("deal-{}", i % 7), i)).collect();
    log.append(&["deals".to_string()], &batch)
        .await
        .expect("append");
    let all: BTreeSet<(u32, u64)> = {
        let info = log.describe_topic("deals").await.expect("describe");
        info.partition_info
            .iter()
            .flat_map(|p| (p.first_offset..p.next_offset).map(move |o| (p.partition, o)))
            .collect()
    };

    // Member a takes a batch, acknowledges half of it, and dies.
    let a = log
        .group_consumer("deals", "erp", "a")
        .await
        .expect("consumer a");
    let got_a = a.read(8).await.expect("read a");
    assert!(
        !got_a.is_empty() && got_a.len() <= 16,
        "a read {}",
        got_a.len()
    );
    let (acked, unacked): (Vec<_>, Vec<_>) = got_a
        .iter()
        .map(|s| (s.partition, s.offset))
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let acked: BTreeSet<(u32, u64)> = acked.into_iter().map(|(_, x)| x).collect();
    let unacked: BTreeSet<(u32, u64)> = unacked.into_iter().map(|(_, x)| x).collect();
    let acked_list: Vec<(u32, u64)> = acked.iter().copied().collect();
    assert_eq!(a.ack(&acked_list).await.expect("ack"), acked.len() as u64);
    assert_eq!(a.pending().await.expect("pending"), unacked.len() as u64);
    drop(a);

    // Member b, in another connection: a's entries are protected while they are fresh...
    let log_b = RedisLog::open(&common::url(), &prefix)
        .await
        .expect("open b");
    let b = log_b
        .group_consumer("deals", "erp", "b")
        .await
        .expect("consumer b");
    assert!(
        b.claim_idle(Duration::from_secs(3600), 100)
            .await
            .expect("claim")
            .is_empty(),
        "entries claimed before they were idle long enough"
    );
    // ...and once a is known dead (idle over 0 here), b takes exactly the unacked ones.
    let claimed: BTreeSet<(u32, u64)> = b
        .claim_idle(Duration::ZERO, 100)
        .await
        .expect("claim")
        .iter()
        .map(|s| (s.partition, s.offset))
        .collect();
    assert_eq!(
        claimed, unacked,
        "claimed entries differ from a's unacked ones"
    );
    let claimed_events = b
        .claim_idle(Duration::ZERO, 100)
        .await
        .expect("claim again");
    for s in &claimed_events {
        assert_eq!(
            Some(&s.event),
            batch.iter().find(|e| e.id == s.event.id),
            "claimed event differs from what was appended"
        );
    }
    // The rest of the stream comes to b as new entries; nothing is given twice.
    let mut fresh = BTreeSet::new();
    loop {
        let got = b.read(5).await.expect("read b");
        if got.is_empty() {
            break;
        }
        for s in got {
            assert!(fresh.insert((s.partition, s.offset)), "entry read twice");
        }
    }
    assert!(fresh.is_disjoint(&acked) && fresh.is_disjoint(&unacked));
    let union: BTreeSet<_> = acked
        .iter()
        .chain(&unacked)
        .chain(&fresh)
        .copied()
        .collect();
    assert_eq!(union, all, "some entry was never delivered to the group");
    let mut rest: Vec<(u32, u64)> = unacked.iter().chain(&fresh).copied().collect();
    rest.sort();
    assert_eq!(b.ack(&rest).await.expect("ack"), rest.len() as u64);
    assert_eq!(b.pending().await.expect("pending"), 0);
    // The consumer group's position is the crmbus committed offset: the end of each stream.
    let info = log_b.describe_topic("deals").await.expect("describe");
    for p in &info.partition_info {
        assert_eq!(
            log_b
                .committed_offset("erp", "deals", p.partition)
                .await
                .expect("committed"),
            Some(p.next_offset)
        );
    }
}
