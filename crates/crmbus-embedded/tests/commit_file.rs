//! The commit file (`crmbus_embedded::commit_file`): a group-commit round that writes
//! several files makes them durable with one fsynced record, and the next open writes the
//! records again. Each test cuts the power on a simulated disk that keeps no write that was
//! not fsynced, so an acknowledged event whose bytes only the page cache held is lost
//! unless the commit file brings it back.

use std::path::Path;
use std::sync::Arc;

use crmbus::clock::ManualClock;
use crmbus::{partition_for, Event, EventLog, TopicSpec};
use crmbus_embedded::commit_file::{FILE_NAME, HEADER_LEN};
use crmbus_embedded::storage::{CrashMode, SimStorage};
use crmbus_embedded::{Durability, EmbeddedLog, EmbeddedOptions, Storage};

// Only some of the shared helpers are used here.
#[allow(dead_code)]
mod common;
use common::{deal, ids_by_partition, opts};

const DATA: &str = "/data";

fn options(sim: &SimStorage, clock: &ManualClock, commit_file_bytes: u64) -> EmbeddedOptions {
    EmbeddedOptions {
        storage: Arc::new(sim.mount()),
        commit_file_bytes,
        ..opts(clock, Durability::Fsync)
    }
}

/// Events `from..to`, which spread over the partitions of a topic of four.
fn deals(from: u64, to: u64) -> Vec<Event> {
    (from..to).map(deal).collect()
}

/// The ids of `events` as a topic of `partitions` partitions holds them, in order.
fn by_partition(events: &[Event], partitions: u32) -> std::collections::BTreeMap<u32, Vec<String>> {
    let mut out: std::collections::BTreeMap<u32, Vec<String>> =
        (0..partitions).map(|p| (p, Vec::new())).collect();
    for e in events {
        out.entry(partition_for(e, partitions))
            .or_default()
            .push(e.id.clone());
    }
    out
}

/// A log on a new simulated disk (commit file of `commit_file_bytes`), with topic `deals`
/// of `partitions` partitions.
async fn log_with_deals(
    commit_file_bytes: u64,
    partitions: u32,
) -> (SimStorage, ManualClock, EmbeddedLog) {
    let sim = SimStorage::new();
    let clock = ManualClock::new(1_700_000_000_000_000);
    let log = EmbeddedLog::open(DATA, options(&sim, &clock, commit_file_bytes)).expect("open");
    log.create_topic(TopicSpec::new("deals", partitions))
        .await
        .expect("create");
    (sim, clock, log)
}

#[tokio::test]
async fn a_batch_over_several_partitions_survives_a_power_cut_that_keeps_no_unsynced_write() {
    let (sim, clock, log) = log_with_deals(1 << 20, 4).await;
    let batch = deals(0, 40);
    log.append(&["deals".to_string()], &batch)
        .await
        .expect("append");
    let stats = log.group_commit_stats();
    assert!(
        stats.committed_rounds >= 1,
        "the batch's round wrote several files and fsynced one commit record: {stats:?}"
    );
    sim.crash(CrashMode::KeepNone, 1);
    drop(log);
    let log = EmbeddedLog::open(DATA, options(&sim, &clock, 1 << 20)).expect("reopen");
    assert_eq!(
        ids_by_partition(&log, "deals").await,
        by_partition(&batch, 4),
        "every acknowledged event is back"
    );
}

#[tokio::test]
async fn rounds_past_the_commit_files_capacity_checkpoint_and_lose_nothing() {
    // A few rounds' worth of records: every few rounds one finds it full and checkpoints.
    let small = 16 * 1024;
    let (sim, clock, log) = log_with_deals(small, 4).await;
    let mut all = Vec::new();
    for round in 0..20 {
        let batch = deals(round * 8, round * 8 + 8);
        log.append(&["deals".to_string()], &batch)
            .await
            .expect("append");
        all.extend(batch);
    }
    let stats = log.group_commit_stats();
    assert!(stats.checkpoints >= 2, "{stats:?}");
    assert!(stats.committed_rounds >= 2, "{stats:?}");
    sim.crash(CrashMode::KeepNone, 2);
    drop(log);
    let log = EmbeddedLog::open(DATA, options(&sim, &clock, small)).expect("reopen");
    assert_eq!(ids_by_partition(&log, "deals").await, by_partition(&all, 4));
}

/// Event `n` of the run `run`: every event of every run encodes to the same size, and
/// event `n` goes to the same partition in each.
fn same_size(run: &str, n: u64) -> Event {
    let time = chrono::DateTime::from_timestamp(1_700_000_000, 0)
        .unwrap_or_default()
        .fixed_offset();
    Event::new(
        "deal.won",
        serde_json::json!({"deal_id": format!("deal-{n:03}")}),
    )
    .id(format!("{run}-{n:03}"))
    .subject(format!("deal-{n:03}"))
    .source("urn:crm:deals")
    .time(time)
}

/// A topic deleted and created again under its name reuses its files' paths: records of
/// the old topic must not be written into the new one's files. (The old topic's records
/// are more, and the same size as the new one's, so written again after the new ones they
/// would read as the new topic's next offsets.)
#[tokio::test]
async fn a_topic_created_again_does_not_get_the_old_topics_records() {
    let (sim, clock, log) = log_with_deals(1 << 20, 2).await;
    let topics = ["deals".to_string()];
    let old: Vec<Event> = (0..30).map(|n| same_size("old", n)).collect();
    log.append(&topics, &old).await.expect("append old");
    log.delete_topic("deals").await.expect("delete");
    log.create_topic(TopicSpec::new("deals", 2))
        .await
        .expect("create again");
    let new: Vec<Event> = (0..10).map(|n| same_size("new", n)).collect();
    assert!(by_partition(&new, 2).values().all(|ids| !ids.is_empty()));
    log.append(&topics, &new).await.expect("append new");
    assert!(log.group_commit_stats().committed_rounds >= 2);
    sim.crash(CrashMode::KeepNone, 3);
    drop(log);
    let log = EmbeddedLog::open(DATA, options(&sim, &clock, 1 << 20)).expect("reopen");
    assert_eq!(ids_by_partition(&log, "deals").await, by_partition(&new, 2));
}

#[tokio::test]
async fn a_log_closed_cleanly_leaves_the_commit_file_only_its_header() {
    let (sim, _clock, log) = log_with_deals(1 << 20, 4).await;
    log.append(&["deals".to_string()], &deals(0, 40))
        .await
        .expect("append");
    let path = Path::new(DATA).join(FILE_NAME);
    assert!(sim.file_len(&path).expect("commit file") > HEADER_LEN);
    log.close().await.expect("close");
    drop(log);
    assert_eq!(sim.file_len(&path).expect("commit file"), HEADER_LEN);
}

/// A data directory written before the commit file existed has none: it opens, with its
/// events, and gets one.
#[tokio::test]
async fn a_directory_without_a_commit_file_opens() {
    let sim = SimStorage::new();
    let clock = ManualClock::new(1_700_000_000_000_000);
    let batch = deals(0, 40);
    {
        let log = EmbeddedLog::open(DATA, options(&sim, &clock, 1 << 20)).expect("open");
        log.create_topic(TopicSpec::new("deals", 4))
            .await
            .expect("create");
        log.append(&["deals".to_string()], &batch)
            .await
            .expect("append");
        log.close().await.expect("close");
    }
    let path = Path::new(DATA).join(FILE_NAME);
    let storage = sim.mount();
    storage.remove_file(&path).expect("remove the commit file");
    storage.sync_dir(Path::new(DATA)).expect("sync");
    let log = EmbeddedLog::open(DATA, options(&sim, &clock, 1 << 20)).expect("reopen");
    assert_eq!(
        ids_by_partition(&log, "deals").await,
        by_partition(&batch, 4)
    );
    assert!(storage.exists(&path));
}

/// A commit file of a later format is refused with a message, not misread.
#[tokio::test]
async fn a_commit_file_of_a_later_format_is_refused() {
    let sim = SimStorage::new();
    let clock = ManualClock::new(1_700_000_000_000_000);
    {
        let log = EmbeddedLog::open(DATA, options(&sim, &clock, 1 << 20)).expect("open");
        log.close().await.expect("close");
    }
    let storage = sim.mount();
    let path = Path::new(DATA).join(FILE_NAME);
    let mut header = storage.read(&path).expect("read");
    // The header: "CRMBWAL", the version byte, generation and nonce, then their CRC32C.
    header[7] += 1;
    let crc = crc32c::crc32c(&header[..24]);
    header[24..28].copy_from_slice(&crc.to_le_bytes());
    let f = storage
        .open(&path, crmbus_embedded::storage::OpenMode::Existing)
        .expect("open file");
    f.write_all_at(&header, 0).expect("write");
    f.sync_data().expect("sync");
    drop(f);
    let e = EmbeddedLog::open(DATA, options(&sim, &clock, 1 << 20))
        .err()
        .expect("refused");
    assert!(e.to_string().contains("written by a later version"), "{e}");
}
