//! Behaviour of the embedded log beyond the shared contract: age retention and segment
//! rolling driven by a manual clock, index files rebuilt when missing, the dedupe window
//! expiring, the directory lock, the `os` durability level, offsets of several partitions
//! committed all or nothing, and stored JSON data read back as its text.

use std::sync::Arc;
use std::time::Duration;

use crmbus::clock::ManualClock;
use crmbus::{Event, EventLog, LogError, Retention, TopicSpec};
use crmbus_embedded::{Durability, EmbeddedLog, EmbeddedOptions};
use serde_json::json;

fn opts(clock: &ManualClock) -> EmbeddedOptions {
    EmbeddedOptions {
        segment_bytes: 4 * 1024,
        index_interval_bytes: 512,
        retention_interval: None,
        clock: Arc::new(clock.clone()),
        ..EmbeddedOptions::default()
    }
}

fn ev(n: u64) -> Event {
    Event::new(
        "lead.created",
        json!({ "lead_id": format!("lead-{n}"), "n": n, "name": "Ada Lovelace" }),
    )
    .subject(format!("lead-{}", n % 5))
    .source("urn:crmbus:test")
}

fn topics() -> Vec<String> {
    vec!["leads".to_string()]
}

fn segment_files(dir: &std::path::Path, ext: &str) -> Vec<std::path::PathBuf> {
    let pdir = dir.join("topics/leads/0");
    let mut v: Vec<_> = std::fs::read_dir(pdir)
        .expect("partition dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

async fn read_all(log: &EmbeddedLog) -> Vec<crmbus::StoredEvent> {
    let mut out: Vec<crmbus::StoredEvent> = Vec::new();
    let mut from = 0;
    loop {
        let b = log.read("leads", 0, from, 100).await.expect("read");
        let Some(last) = b.last() else { return out };
        from = last.offset + 1;
        out.extend(b);
    }
}

#[tokio::test]
async fn age_retention_deletes_whole_old_segments_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let log = EmbeddedLog::open(dir.path(), opts(&clock)).expect("open");
    let spec = TopicSpec::new("leads", 1).with_retention(Retention {
        max_age: Some(Duration::from_secs(3600)),
        max_bytes: None,
    });
    log.create_topic(spec).await.expect("create");
    for n in 0..100 {
        log.append(&topics(), &[ev(n)]).await.expect("append");
    }
    clock.advance(Duration::from_secs(2 * 3600));
    for n in 100..110 {
        log.append(&topics(), &[ev(n)]).await.expect("append");
    }
    let removed = log.enforce_retention().await.expect("retention");
    let info = log.describe_topic("leads").await.expect("describe");
    let first = info.partition_info[0].first_offset;
    assert_eq!(
        removed, first,
        "removed count must match the new first offset"
    );
    assert!(first >= 90, "old segments were kept: first offset {first}");
    assert!(
        first <= 100,
        "a segment holding new events was deleted: first offset {first}"
    );
    let kept = read_all(&log).await;
    assert_eq!(kept.last().map(|s| s.offset), Some(109));
    // Everything expires once the newest event is old too: the topic is empty, offsets go on.
    clock.advance(Duration::from_secs(2 * 3600));
    log.enforce_retention().await.expect("retention");
    let info = log.describe_topic("leads").await.expect("describe");
    assert_eq!(info.partition_info[0].first_offset, 110);
    assert_eq!(info.partition_info[0].next_offset, 110);
    let r = log
        .append(&topics(), &[ev(500)])
        .await
        .expect("append after full expiry");
    assert_eq!(r[0].offset, 110);
}

#[tokio::test]
async fn segments_roll_by_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let o = EmbeddedOptions {
        segment_bytes: 1 << 30,
        segment_max_age: Duration::from_secs(60),
        ..opts(&clock)
    };
    let log = EmbeddedLog::open(dir.path(), o).expect("open");
    log.create_topic(TopicSpec::new("leads", 1))
        .await
        .expect("create");
    log.append(&topics(), &[ev(0), ev(5)])
        .await
        .expect("append");
    assert_eq!(segment_files(dir.path(), "log").len(), 1);
    clock.advance(Duration::from_secs(61));
    log.append(&topics(), &[ev(10)]).await.expect("append");
    assert_eq!(
        segment_files(dir.path(), "log").len(),
        2,
        "an old segment did not roll"
    );
    assert_eq!(read_all(&log).await.len(), 3);
}

#[tokio::test]
async fn missing_and_damaged_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let before;
    let mut mid_time = None;
    {
        let log = EmbeddedLog::open(dir.path(), opts(&clock)).expect("open");
        log.create_topic(TopicSpec::new("leads", 1))
            .await
            .expect("create");
        for n in 0..200 {
            if n == 120 {
                mid_time = Some(clock.now());
            }
            log.append(&topics(), &[ev(n)]).await.expect("append");
            clock.advance(Duration::from_millis(10));
        }
        before = read_all(&log).await;
        log.close().await.expect("close");
    }
    let idx = segment_files(dir.path(), "idx");
    assert!(
        idx.len() >= 3,
        "expected sealed segments with index files, got {}",
        idx.len()
    );
    std::fs::remove_file(&idx[0]).expect("remove idx");
    std::fs::write(&idx[1], b"garbage").expect("damage idx");
    let log = EmbeddedLog::open(dir.path(), opts(&clock)).expect("reopen");
    assert_eq!(read_all(&log).await, before);
    let mid_time = mid_time.expect("time of event 120");
    let at = log
        .offset_for_time("leads", 0, mid_time)
        .await
        .expect("offset_for_time");
    assert_eq!(at, 120);
    for off in [0u64, 37, 119, 199] {
        let got = log.read("leads", 0, off, 1).await.expect("read");
        assert_eq!(got[0].offset, off);
    }
    assert_eq!(log.corrupt_records(), 0);
    assert!(
        segment_files(dir.path(), "idx").len() >= idx.len(),
        "index files were not rewritten"
    );
}

trait Now {
    fn now(&self) -> chrono::DateTime<chrono::Utc>;
}

impl Now for ManualClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        use crmbus::Clock;
        chrono::DateTime::from_timestamp_micros(self.now_micros()).expect("valid time")
    }
}

#[tokio::test]
async fn dedupe_window_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let o = EmbeddedOptions {
        dedupe_window: Duration::from_secs(60),
        ..opts(&clock)
    };
    let log = EmbeddedLog::open(dir.path(), o.clone()).expect("open");
    log.create_topic(TopicSpec::new("leads", 1))
        .await
        .expect("create");
    let e = ev(1);
    let first = log
        .append(&topics(), std::slice::from_ref(&e))
        .await
        .expect("append");
    clock.advance(Duration::from_secs(30));
    assert!(
        log.append(&topics(), std::slice::from_ref(&e))
            .await
            .expect("append")[0]
            .duplicate
    );
    clock.advance(Duration::from_secs(31));
    let later = log
        .append(&topics(), std::slice::from_ref(&e))
        .await
        .expect("append");
    assert!(!later[0].duplicate, "dedupe outlived its window");
    assert_ne!(later[0].offset, first[0].offset);
    // After a reopen the rebuilt window holds only the recent append.
    log.close().await.expect("close");
    drop(log);
    let log = EmbeddedLog::open(dir.path(), o).expect("reopen");
    let again = log
        .append(&topics(), std::slice::from_ref(&e))
        .await
        .expect("append");
    assert!(again[0].duplicate);
    assert_eq!(again[0].offset, later[0].offset);
}

#[tokio::test]
async fn directory_is_locked_while_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let log = EmbeddedLog::open(dir.path(), opts(&clock)).expect("open");
    match EmbeddedLog::open(dir.path(), opts(&clock)) {
        Err(LogError::Unavailable(msg)) => assert!(msg.contains("in use"), "{msg}"),
        Err(e) => panic!("second open: unexpected error {e}"),
        Ok(_) => panic!("second open of the same directory succeeded"),
    }
    drop(log);
    EmbeddedLog::open(dir.path(), opts(&clock)).expect("open after the first closed");
}

#[tokio::test]
async fn os_durability_serves_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let o = EmbeddedOptions {
        durability: Durability::Os,
        ..opts(&clock)
    };
    {
        let log = EmbeddedLog::open(dir.path(), o.clone()).expect("open");
        log.create_topic(TopicSpec::new("leads", 1))
            .await
            .expect("create");
        let batch: Vec<Event> = (0..50).map(ev).collect();
        log.append(&topics(), &batch).await.expect("append");
        assert_eq!(read_all(&log).await.len(), 50);
        assert_eq!(
            log.group_commit_stats(),
            crmbus_embedded::GroupCommitStats::default(),
            "os durability must not fsync appends"
        );
    }
    let log = EmbeddedLog::open(dir.path(), o).expect("reopen");
    assert_eq!(read_all(&log).await.len(), 50);
}

#[tokio::test]
async fn closed_log_refuses_writes_and_oversized_events_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let log = EmbeddedLog::open(dir.path(), opts(&clock)).expect("open");
    log.create_topic(TopicSpec::new("leads", 1))
        .await
        .expect("create");
    let huge = Event::new(
        "lead.created",
        json!({ "blob": "x".repeat(17 * 1024 * 1024) }),
    )
    .source("urn:t");
    match log.append(&topics(), &[ev(1), huge]).await {
        Err(LogError::InvalidArgument(msg)) => assert!(msg.contains("limit"), "{msg}"),
        other => panic!("oversized event: {other:?}"),
    }
    assert_eq!(
        log.describe_topic("leads")
            .await
            .expect("describe")
            .event_count(),
        0,
        "a rejected batch wrote events"
    );
    log.close().await.expect("close");
    match log.append(&topics(), &[ev(1)]).await {
        Err(LogError::Unavailable(_)) => {}
        other => panic!("append after close: {other:?}"),
    }
}

#[tokio::test]
async fn state_store_keeps_the_contract_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let log = EmbeddedLog::open(dir.path(), opts(&clock)).expect("open");
    let store = log.state_store();
    let path = dir.path().to_path_buf();
    let o = opts(&clock);
    let holder = std::sync::Mutex::new(Some(log));
    crmbus_testkit::state_store::check_state_store(store, |s| {
        // Close everything over the directory, then open it again.
        drop(s);
        if let Some(log) = holder.lock().expect("lock").take() {
            drop(log);
        }
        async move {
            let log = EmbeddedLog::open(&path, o)?;
            let store = log.state_store();
            // The store keeps the log's inner state alive after `log` is dropped here.
            drop(log);
            Ok(store)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn offsets_of_several_partitions_are_committed_all_or_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let log = EmbeddedLog::open(dir.path(), opts(&clock)).expect("open");
    log.create_topic(TopicSpec::new("leads", 3))
        .await
        .expect("create");
    log.commit_offsets("sync", "leads", &[(0, 4), (2, 9)])
        .await
        .expect("commit");
    let committed = |p| {
        let log = &log;
        async move {
            log.committed_offset("sync", "leads", p)
                .await
                .expect("fetch")
        }
    };
    assert_eq!(committed(0).await, Some(4));
    assert_eq!(committed(1).await, None);
    assert_eq!(committed(2).await, Some(9));
    // One partition that does not exist: none of them moves.
    let refused = log.commit_offsets("sync", "leads", &[(0, 7), (5, 1)]).await;
    assert!(
        matches!(refused, Err(LogError::PartitionNotFound { .. })),
        "{refused:?}"
    );
    assert_eq!(committed(0).await, Some(4));
    let refused = log.commit_offsets("", "leads", &[(0, 7)]).await;
    assert!(
        matches!(refused, Err(LogError::InvalidArgument(_))),
        "{refused:?}"
    );
    assert_eq!(committed(0).await, Some(4));
    // They survive a reopen.
    drop(log);
    let log = EmbeddedLog::open(dir.path(), opts(&clock)).expect("reopen");
    assert_eq!(
        log.committed_offset("sync", "leads", 2)
            .await
            .expect("fetch"),
        Some(9)
    );
}

#[tokio::test]
async fn stored_json_data_is_read_back_as_its_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let log = EmbeddedLog::open(dir.path(), opts(&clock)).expect("open");
    log.create_topic(TopicSpec::new("leads", 1))
        .await
        .expect("create");
    let sent = ev(7);
    log.append(&topics(), std::slice::from_ref(&sent))
        .await
        .expect("append");
    let back = read_all(&log).await;
    let [stored] = back.as_slice() else {
        panic!("one event, got {}", back.len())
    };
    let Some(crmbus::EventData::JsonText(text)) = &stored.event.data else {
        panic!("data is not kept as text: {:?}", stored.event.data)
    };
    assert_eq!(
        text.as_str(),
        r#"{"lead_id":"lead-7","n":7,"name":"Ada Lovelace"}"#
    );
    assert_eq!(stored.event.data_json(), sent.data_json());
    assert_eq!(stored.event, sent);
    // The record's bytes are the event written again.
    let json = stored.stored_json.as_ref().expect("the stored JSON");
    assert_eq!(json.as_ref(), stored.event.to_json_vec().as_slice());
}

/// A read copies the records' JSON into shared blocks of a few KiB, several records to a
/// block, and each event's `data` text is a slice of its record's JSON, not a copy of its
/// own; no block is larger than 8 KiB, so an event held alone keeps little else alive.
#[tokio::test]
async fn a_read_shares_small_blocks_among_its_records_and_their_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let log = EmbeddedLog::open(dir.path(), opts(&clock)).expect("open");
    log.create_topic(TopicSpec::new("leads", 1))
        .await
        .expect("create");
    let sent: Vec<Event> = (0..300).map(ev).collect();
    log.append(&topics(), &sent).await.expect("append");
    let back = log.read("leads", 0, 0, 300).await.expect("read");
    assert_eq!(back.len(), 300);
    // Runs of records whose JSON lies end to end in memory: one block each.
    let mut runs: Vec<usize> = Vec::new();
    let mut end_of_last = 0usize;
    for (stored, sent) in back.iter().zip(&sent) {
        assert_eq!(&stored.event, sent);
        let json = stored.stored_json.as_ref().expect("the stored JSON");
        assert_eq!(json.as_ref(), stored.event.to_json_vec().as_slice());
        let at = json.as_ptr() as usize;
        let Some(crmbus::EventData::JsonText(text)) = &stored.event.data else {
            panic!("data is not kept as text: {:?}", stored.event.data)
        };
        let data_at = text.as_str().as_ptr() as usize;
        assert!(
            (at..at + json.len()).contains(&data_at),
            "the data text is a copy, not a slice of the record's JSON"
        );
        match runs.last_mut() {
            Some(run) if at == end_of_last => *run += json.len(),
            _ => runs.push(json.len()),
        }
        end_of_last = at + json.len();
    }
    let total: usize = runs.iter().sum();
    assert!(
        runs.len() < back.len() / 10,
        "records share blocks: {} blocks for {} records",
        runs.len(),
        back.len()
    );
    assert!(
        runs.iter().all(|&run| run <= 8 * 1024),
        "no block holds more than 8 KiB of records: {runs:?}"
    );
    assert!(total > 4 * 8 * 1024, "the records fill several blocks");

    // A record of more than half a block gets a block of its own: nothing else shares it.
    let big = Event::new("lead.created", json!({ "notes": "x".repeat(6000) }))
        .subject("lead-big")
        .source("urn:crmbus:test");
    let around = [ev(1000), big.clone(), ev(1001)];
    log.append(&topics(), &around).await.expect("append");
    let back = log.read("leads", 0, 300, 3).await.expect("read");
    let spans: Vec<(usize, usize)> = back
        .iter()
        .map(|s| {
            let json = s.stored_json.as_ref().expect("the stored JSON");
            (json.as_ptr() as usize, json.len())
        })
        .collect();
    assert_eq!(back[1].event, big);
    assert_ne!(
        spans[0].0 + spans[0].1,
        spans[1].0,
        "the large record shares a block"
    );
    assert_ne!(
        spans[1].0 + spans[1].1,
        spans[2].0,
        "the large record shares a block"
    );
}

/// An append on a multi-threaded runtime that finds no group-commit round running runs
/// one itself; on the current-thread runtime the group-commit thread runs every round.
#[test]
fn an_append_alone_runs_its_own_group_commit_round_where_it_may_block() {
    let clock = ManualClock::new(1_700_000_000_000_000);
    for multi in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = if multi {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        }
        .expect("runtime");
        let log = EmbeddedLog::open(dir.path(), opts(&clock)).expect("open");
        runtime.block_on(async {
            log.create_topic(TopicSpec::new("leads", 1))
                .await
                .expect("create");
            let before = log.group_commit_stats();
            for n in 0..20 {
                log.append(&topics(), &[ev(n)]).await.expect("append");
            }
            let after = log.group_commit_stats();
            assert_eq!(after.rounds - before.rounds, 20, "one round per append");
            let led = after.rounds_led - before.rounds_led;
            if multi {
                // All but a round the thread took on a spurious wake-up.
                assert!(led >= 18, "appends led {led} of 20 rounds");
            } else {
                assert_eq!(led, 0, "the current-thread runtime must lead no round");
            }
            assert_eq!(read_all(&log).await.len(), 20);
        });
        drop(log);
        let log = EmbeddedLog::open(dir.path(), opts(&clock)).expect("reopen");
        runtime.block_on(async { assert_eq!(read_all(&log).await.len(), 20) });
    }
}

/// Many appenders at once on a multi-threaded runtime, some leading rounds and some
/// handing theirs to the group-commit thread, to one and to two topics: every append is
/// acknowledged, once, and everything acknowledged is there after a reopen.
#[test]
fn concurrent_appends_lead_or_hand_over_and_none_is_lost() {
    let clock = ManualClock::new(1_700_000_000_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let log = Arc::new(EmbeddedLog::open(dir.path(), opts(&clock)).expect("open"));
    let (tasks, per_task) = (16u64, 40u64);
    runtime.block_on(async {
        for t in ["leads", "deals"] {
            log.create_topic(TopicSpec::new(t, 4))
                .await
                .expect("create");
        }
        let mut handles = Vec::new();
        for task in 0..tasks {
            let log = Arc::clone(&log);
            handles.push(tokio::spawn(async move {
                for i in 0..per_task {
                    let n = task * 1_000 + i;
                    let event = Event::new("lead.created", json!({ "n": n }))
                        .source("urn:t")
                        .subject(format!("k{}", n % 7));
                    let to: Vec<String> = if i % 3 == 0 {
                        vec!["leads".into(), "deals".into()]
                    } else {
                        vec!["leads".into()]
                    };
                    log.append(&to, &[event]).await.expect("append");
                }
            }));
        }
        for h in handles {
            h.await.expect("appender");
        }
    });
    let stats = log.group_commit_stats();
    assert!(stats.rounds_led > 0, "no append led a round: {stats:?}");
    // An append that finds a round running hands its ticket on without a blocking
    // section: entering one costs the worker a hand-over of its tasks to another thread.
    assert_eq!(
        stats.blocking_sections, stats.rounds_led,
        "blocking sections entered that ran no round: {stats:?}"
    );
    let count = |log: &EmbeddedLog, topic: &'static str| {
        runtime.block_on(async {
            log.describe_topic(topic)
                .await
                .expect("describe")
                .event_count()
        })
    };
    let spanning = tasks * per_task.div_ceil(3);
    assert_eq!(count(&log, "leads"), tasks * per_task);
    assert_eq!(count(&log, "deals"), spanning);
    drop(log);
    let log = EmbeddedLog::open(dir.path(), opts(&clock)).expect("reopen");
    assert_eq!(count(&log, "leads"), tasks * per_task);
    assert_eq!(count(&log, "deals"), spanning);
}

/// An append polled on a current-thread runtime while a multi-threaded runtime's handle is
/// entered looks as if it may lead, but tokio refuses a blocking section there: the
/// group-commit thread makes it durable instead of the append panicking.
#[test]
fn an_append_that_may_not_block_after_all_hands_its_round_to_the_thread() {
    let clock = ManualClock::new(1_700_000_000_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let log = EmbeddedLog::open(dir.path(), opts(&clock)).expect("open");
    current.block_on(async {
        log.create_topic(TopicSpec::new("leads", 1))
            .await
            .expect("create");
        let before = log.group_commit_stats();
        {
            let _entered = multi.handle().enter();
            log.append(&topics(), &[ev(1)]).await.expect("append");
        }
        let after = log.group_commit_stats();
        assert_eq!(after.rounds_led, before.rounds_led, "no round was led");
        assert_eq!(after.rounds, before.rounds + 1);
        assert_eq!(read_all(&log).await.len(), 1);
    });
}

/// A log closed cleanly leaves the batch journal only its live frames: what is no longer
/// needed is compacted away, the zeros written ahead (a megabyte at a time) are cut off,
/// and the log opens again with its events.
#[tokio::test]
async fn closing_cuts_the_zeros_ahead_of_the_batch_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let journal = dir.path().join(crmbus_embedded::batch_journal::FILE_NAME);
    {
        let log = EmbeddedLog::open(dir.path(), opts(&clock)).expect("open");
        log.create_topic(TopicSpec::new("leads", 4))
            .await
            .expect("create");
        // Events of several subjects reach several partitions: a journalled append; and
        // appends one at a time, each round of which leaves recovery points behind.
        let batch: Vec<Event> = (0..20).map(ev).collect();
        log.append(&topics(), &batch).await.expect("append");
        for n in 100..400 {
            log.append(&topics(), &[ev(n)]).await.expect("append");
        }
        let open_len = std::fs::metadata(&journal).expect("journal").len();
        assert!(open_len >= 64 * 1024, "zeros written ahead: {open_len}");
        log.close().await.expect("close");
    }
    let closed_len = std::fs::metadata(&journal).expect("journal").len();
    assert!(
        (1..4096).contains(&closed_len),
        "the closed journal should hold only its frames: {closed_len} bytes"
    );
    let log = EmbeddedLog::open(dir.path(), opts(&clock)).expect("reopen");
    let count = |info: crmbus::TopicInfo| info.event_count();
    assert_eq!(
        count(log.describe_topic("leads").await.expect("describe")),
        320
    );
    log.append(&topics(), &[ev(20), ev(21)])
        .await
        .expect("append after reopen");
    assert_eq!(
        count(log.describe_topic("leads").await.expect("describe")),
        322
    );
}
