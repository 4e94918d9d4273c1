//! Acceptance: a Kafka group member killed in the middle of a batch — its partitions move
//! to the survivor, and every event it had not acknowledged is delivered to the survivor.
//! The member acknowledges out of order (it keeps every fifth event in hand), so what it
//! commits is the contiguous low-water mark: the events it acknowledged below the first
//! one it held are never delivered again, those above it are (at-least-once), and the
//! ones it held all are. It runs in a process of its own (`kafka_group_member`) and is
//! killed with SIGKILL, so it leaves no goodbye to the group: the broker finds it dead when
//! its session times out.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crmbus::{Event, EventLog, TopicSpec};
use crmbus_kafka::{GroupConsumerOptions, KafkaGroupConsumer, KafkaLog};
use crmbus_postgres::PgStateStore;
use serde_json::json;

mod common;

/// Brokers refuse sessions shorter than their `group.min.session.timeout.ms` (6 s by
/// default in Kafka).
const SESSION: Duration = Duration::from_secs(6);

fn ev(key: &str, n: u64) -> Event {
    Event::new("order.placed", json!({"order_id": key, "n": n}))
        .subject(key)
        .source("urn:test:kafka-group")
}

fn pair(words: &[&str]) -> Option<(u32, u64)> {
    Some((words.get(1)?.parse().ok()?, words.get(2)?.parse().ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_killed_mid_batch_gives_its_partitions_and_unacked_events_to_the_survivor() {
    let cleanup = common::Cleanup::default();
    let prefix = common::unique_prefix("group-kill");
    cleanup.add(&prefix);
    let state = PgStateStore::connect(&common::state_url(), &prefix)
        .await
        .expect("state");
    let log = KafkaLog::connect(&common::bootstrap(), state, common::options())
        .await
        .expect("open");
    log.create_topic(TopicSpec::new("orders", 4))
        .await
        .expect("create");
    let events: Vec<Event> = (0..400).map(|i| ev(&format!("o-{}", i % 40), i)).collect();
    let receipts = log
        .append(&["orders".to_string()], &events)
        .await
        .expect("append");
    let all: BTreeSet<(u32, u64)> = receipts.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(all.len(), 400);

    // Member A, alone in the group, gets every partition, acknowledges 60 events and is
    // stuck in the middle of its batch.
    let mut child = Command::new(env!("CARGO_BIN_EXE_kafka_group_member"))
        .args([
            common::bootstrap(),
            common::state_url(),
            prefix.clone(),
            "orders".into(),
            "erp-sync".into(),
            "60".into(),
            SESSION.as_millis().to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the member process");
    let stdout = child.stdout.take().expect("stdout");
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let done = line == "hung";
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    });
    let lines = tokio::time::timeout(Duration::from_secs(120), lines)
        .await
        .expect("member A reported within two minutes")
        .expect("reader");
    assert_eq!(lines.last().map(String::as_str), Some("hung"), "{lines:?}");
    let mut acked_by_a = BTreeSet::new();
    let mut held_by_a = BTreeSet::new();
    let mut parts_of_a = Vec::new();
    for line in &lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first() {
            Some(&"acked") => {
                acked_by_a.insert(pair(&words).expect("acked line"));
            }
            Some(&"holding") => {
                held_by_a.insert(pair(&words).expect("holding line"));
            }
            Some(&"partitions") => {
                parts_of_a = words[1..]
                    .iter()
                    .map(|p| p.parse::<u32>().expect("partition"))
                    .collect();
            }
            _ => {}
        }
    }
    assert_eq!(acked_by_a.len(), 60, "member A acknowledged 60 events");
    assert!(
        !held_by_a.is_empty(),
        "member A was killed with events in hand"
    );
    // Per partition, the first event A held: its commit cannot have passed it.
    let mut first_held: std::collections::BTreeMap<u32, u64> = Default::default();
    for &(p, o) in &held_by_a {
        let f = first_held.entry(p).or_insert(o);
        *f = (*f).min(o);
    }
    let committed_by_a: BTreeSet<(u32, u64)> = acked_by_a
        .iter()
        .copied()
        .filter(|(p, o)| first_held.get(p).is_none_or(|f| o < f))
        .collect();
    assert!(
        committed_by_a.len() < acked_by_a.len(),
        "some of A's acknowledgements lie above an event it held (the case a low-water mark is for)"
    );
    assert_eq!(
        parts_of_a,
        vec![0, 1, 2, 3],
        "member A alone held every partition"
    );

    // Killed: no LeaveGroup, no commit of what it held.
    child.kill().expect("kill member A");
    let _ = child.wait();

    // Member B joins; once the broker gives up on A's session, B holds A's partitions and
    // reads from A's last commits.
    let b = KafkaGroupConsumer::join(
        &log,
        "orders",
        "erp-sync",
        GroupConsumerOptions {
            session_timeout: SESSION,
            ..GroupConsumerOptions::default()
        },
    )
    .await
    .expect("join B");
    let want: BTreeSet<(u32, u64)> = all.difference(&committed_by_a).copied().collect();
    let mut got_by_b = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !want.is_subset(&got_by_b) && Instant::now() < deadline {
        for m in b.fetch(200, Duration::from_secs(2)).await.expect("fetch") {
            got_by_b.insert((m.event.partition, m.event.offset));
            m.ack().await.expect("ack");
        }
    }
    let missing: Vec<_> = want.difference(&got_by_b).take(10).collect();
    assert!(
        missing.is_empty(),
        "B never got {} events above A's commits, such as {missing:?}",
        want.difference(&got_by_b).count()
    );
    assert!(
        held_by_a.is_subset(&got_by_b),
        "the events A held unacknowledged when it died reached B"
    );
    let again: Vec<_> = got_by_b.intersection(&committed_by_a).collect();
    assert!(
        again.is_empty(),
        "events below A's low-water mark were delivered again: {again:?}"
    );
    assert_eq!(
        b.partitions().expect("partitions"),
        parts_of_a,
        "A's partitions moved to B"
    );
    drop(b);
    log.close().await.expect("close");
}
