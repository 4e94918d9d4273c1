//! Appends that span partitions or topics are all-or-nothing across a crash, by rollback:
//! the journal holds where each part of such an append went, and an append a crash left
//! in only some of its partitions is cut out of them on open, together with what was
//! written after it (which the crash kept from being acknowledged). The states a crash can
//! leave are built here on disk: the parts in some partitions, the intent in the journal
//! with no done mark.
//!
//! (Journals of the previous format, whose intents carry the events and are completed
//! instead, are tested in `batch_journal.rs`.)

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crmbus::clock::ManualClock;
use crmbus::{partition_for, Event, EventLog, TopicSpec};
use crmbus_embedded::batch_journal::{pending_intents, Part, FILE_NAME};
use crmbus_embedded::storage::{CrashMode, SimStorage};
use crmbus_embedded::{Durability, EmbeddedLog, EmbeddedOptions};
use serde_json::json;

mod common;
use common::{append_to_journal, deal, ids_by_partition, opts, two_topics_with_an_event_in_one};

async fn next_offsets(log: &EmbeddedLog, topic: &str) -> Vec<u64> {
    log.describe_topic(topic)
        .await
        .expect("describe")
        .partition_info
        .iter()
        .map(|p| p.next_offset)
        .collect()
}

/// The parts `batch` gets in a topic of `partitions` partitions whose next offsets are
/// `from`, as an append of it would stage them.
fn parts_of(topic: &str, partitions: u32, from: &[u64], batch: &[Event]) -> Vec<Part> {
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    for e in batch {
        *counts.entry(partition_for(e, partitions)).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(partition, count)| Part {
            topic: topic.into(),
            partition,
            first: from[partition as usize],
            count,
        })
        .collect()
}

/// Writes to the journal in `dir` the intent of an append whose part in partition `p` of
/// `deals` (of two) is `count` records from `first`, and whose part in the other partition
/// is its first record: that part is not on disk, so open rolls the append back.
fn journal_intent_in_two_partitions(dir: &std::path::Path, p: u32, first: u64, count: u64) {
    let parts = vec![
        Part {
            topic: "deals".into(),
            partition: p,
            first,
            count,
        },
        Part {
            topic: "deals".into(),
            partition: 1 - p,
            first: 0,
            count: 1,
        },
    ];
    append_to_journal(
        dir,
        &crmbus_embedded::batch_journal::encode_spans(1_000_000, &parts),
    );
}

/// Event `n` of `subject`, padded so that a segment holds few.
fn padded(n: u64, subject: &str) -> Event {
    Event::new("deal.won", json!({"n": n, "pad": "x".repeat(200)}))
        .id(format!("evt-{n}"))
        .subject(subject)
        .source("urn:crm:deals")
}

/// Options whose segments roll once they hold `records` [`padded`] events.
fn rolling_every(clock: &ManualClock, records: u64) -> EmbeddedOptions {
    // The frame: its event, 33 bytes of header and a one-byte version.
    let record_len = padded(0, "a").to_json_vec().len() as u64 + 34;
    EmbeddedOptions {
        segment_bytes: record_len * (2 * records - 1) / 2,
        ..opts(clock, Durability::Fsync)
    }
}

fn pending_in(dir: &std::path::Path) -> usize {
    let bytes = std::fs::read(dir.join(FILE_NAME)).expect("journal");
    pending_intents(&bytes).expect("read journal").len()
}

#[tokio::test]
async fn a_batch_left_in_some_partitions_is_rolled_back_with_what_followed_it() {
    for durability in [Durability::Fsync, Durability::Os] {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new(1_700_000_000_000_000);
        let batch: Vec<Event> = (0..12).map(deal).collect();
        let first_partition = partition_for(&batch[0], 4);
        let here: Vec<Event> = batch
            .iter()
            .filter(|e| partition_for(e, 4) == first_partition)
            .cloned()
            .collect();
        assert!(here.len() < batch.len(), "the batch must span partitions");
        // An event of another append that the same round wrote after the part.
        let after = (200..300)
            .map(deal)
            .find(|e| partition_for(e, 4) == first_partition)
            .expect("an event for the partition");
        let (before, from);
        {
            let log = EmbeddedLog::open(dir.path(), opts(&clock, durability)).expect("open");
            log.create_topic(TopicSpec::new("deals", 4))
                .await
                .expect("create");
            for e in (100..104).map(deal) {
                log.append(&["deals".to_string()], std::slice::from_ref(&e))
                    .await
                    .expect("append");
            }
            before = ids_by_partition(&log, "deals").await;
            from = next_offsets(&log, "deals").await;
            // What the crash left: the batch's part in one partition, and what followed.
            log.append(&["deals".to_string()], &here)
                .await
                .expect("append part");
            log.append(&["deals".to_string()], std::slice::from_ref(&after))
                .await
                .expect("append after");
        }
        // ...and the batch's intent, durable in the journal, with no done mark.
        let parts = parts_of("deals", 4, &from, &batch);
        assert!(parts.len() > 1);
        append_to_journal(
            dir.path(),
            &crmbus_embedded::batch_journal::encode_spans(1_000_000, &parts),
        );

        let log = EmbeddedLog::open(dir.path(), opts(&clock, durability)).expect("reopen");
        assert_eq!(
            ids_by_partition(&log, "deals").await,
            before,
            "{durability:?}: the part and what followed it are gone, the rest is untouched"
        );
        assert_eq!(next_offsets(&log, "deals").await, from, "{durability:?}");
        assert_eq!(
            pending_in(dir.path()),
            0,
            "{durability:?}: the journal is settled"
        );

        // The producer's retry stores the batch (nothing of it counts as a duplicate), at
        // the offsets the rolled-back records had.
        let receipts = log
            .append(&["deals".to_string()], &batch)
            .await
            .expect("retry");
        assert!(receipts.iter().all(|r| !r.duplicate), "{durability:?}");
        for part in &parts {
            let first = receipts
                .iter()
                .filter(|r| r.partition == part.partition)
                .map(|r| r.offset)
                .min();
            assert_eq!(first, Some(part.first), "{durability:?}");
        }
        let stored = ids_by_partition(&log, "deals").await;
        drop(log);
        let log = EmbeddedLog::open(dir.path(), opts(&clock, durability)).expect("reopen");
        assert_eq!(
            ids_by_partition(&log, "deals").await,
            stored,
            "{durability:?}: opening again changes nothing"
        );
    }
}

#[tokio::test]
async fn a_publish_to_two_topics_left_in_one_is_rolled_back_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let e = two_topics_with_an_event_in_one(dir.path(), &clock).await;
    let p = partition_for(&e, 2);
    let parts = vec![
        Part {
            topic: "crm".into(),
            partition: p,
            first: 0,
            count: 1,
        },
        Part {
            topic: "erp".into(),
            partition: p,
            first: 0,
            count: 1,
        },
    ];
    append_to_journal(
        dir.path(),
        &crmbus_embedded::batch_journal::encode_spans(1_000_000, &parts),
    );
    let log = EmbeddedLog::open(dir.path(), opts(&clock, Durability::Fsync)).expect("reopen");
    for t in ["crm", "erp"] {
        let ids: Vec<String> = ids_by_partition(&log, t)
            .await
            .into_values()
            .flatten()
            .collect();
        assert!(ids.is_empty(), "topic {t}: {ids:?}");
    }
}

#[tokio::test]
async fn a_whole_batch_without_a_done_mark_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let batch: Vec<Event> = (0..12).map(deal).collect();
    let stored;
    {
        let log = EmbeddedLog::open(dir.path(), opts(&clock, Durability::Fsync)).expect("open");
        log.create_topic(TopicSpec::new("deals", 4))
            .await
            .expect("create");
        // Every part stored, by appends of one partition each (no intent of their own).
        let from = next_offsets(&log, "deals").await;
        for p in 0..4 {
            let part: Vec<Event> = batch
                .iter()
                .filter(|e| partition_for(e, 4) == p)
                .cloned()
                .collect();
            if !part.is_empty() {
                log.append(&["deals".to_string()], &part)
                    .await
                    .expect("append part");
            }
        }
        stored = ids_by_partition(&log, "deals").await;
        append_to_journal(
            dir.path(),
            &crmbus_embedded::batch_journal::encode_spans(
                1_000_000,
                &parts_of("deals", 4, &from, &batch),
            ),
        );
    }
    let log = EmbeddedLog::open(dir.path(), opts(&clock, Durability::Fsync)).expect("reopen");
    assert_eq!(ids_by_partition(&log, "deals").await, stored);
    assert_eq!(
        stored.values().map(Vec::len).sum::<usize>(),
        batch.len(),
        "the whole batch is there"
    );
}

/// The part sits in a segment that was sealed after it, in the same round, and a record
/// went to the next segment: the cut removes the next segment and cuts the sealed one,
/// which takes appends again.
#[tokio::test]
async fn a_rollback_cuts_across_a_segment_roll() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    // Events of one subject go to one partition; a second subject to another.
    let subject_event = padded;
    let other_subject = (0..100)
        .map(|k| format!("deal-{k}"))
        .find(|s| {
            partition_for(&subject_event(0, s), 2) != partition_for(&subject_event(0, "a"), 2)
        })
        .expect("a subject in the other partition");
    let p = partition_for(&subject_event(0, "a"), 2);
    let options = || rolling_every(&clock, 2);
    let pdir = dir.path().join("topics").join("deals").join(p.to_string());
    {
        let log = EmbeddedLog::open(dir.path(), options()).expect("open");
        log.create_topic(TopicSpec::new("deals", 2))
            .await
            .expect("create");
        log.append(&["deals".to_string()], &[subject_event(0, "a")])
            .await
            .expect("append");
        // The part: two records into the first segment, which is then full...
        log.append(
            &["deals".to_string()],
            &[subject_event(1, "a"), subject_event(2, "a")],
        )
        .await
        .expect("append part");
        // ...so the next record rolls it (sealing it) and goes to a new segment.
        log.append(&["deals".to_string()], &[subject_event(3, "a")])
            .await
            .expect("append after");
    }
    let logs = |dir: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".log") || n.ends_with(".idx"))
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        logs(&pdir),
        vec![
            "00000000000000000000.idx",
            "00000000000000000000.log",
            "00000000000000000003.log"
        ],
        "the first segment was sealed and the last record went to the next one"
    );
    journal_intent_in_two_partitions(dir.path(), p, 1, 2);
    let log = EmbeddedLog::open(dir.path(), options()).expect("reopen");
    assert_eq!(
        logs(&pdir),
        vec!["00000000000000000000.log"],
        "the next segment is gone and the cut one has no index left to trust"
    );
    assert_eq!(
        ids_by_partition(&log, "deals").await[&p],
        vec!["evt-0".to_string()]
    );
    // The cut segment takes appends again, and the log opens the same afterwards.
    let receipts = log
        .append(
            &["deals".to_string()],
            &[subject_event(4, "a"), subject_event(5, &other_subject)],
        )
        .await
        .expect("append");
    assert_eq!(
        receipts
            .iter()
            .map(|r| (r.partition, r.offset))
            .collect::<Vec<_>>(),
        vec![(p, 1), (1 - p, 0)]
    );
    let stored = ids_by_partition(&log, "deals").await;
    drop(log);
    let log = EmbeddedLog::open(dir.path(), options()).expect("reopen");
    assert_eq!(ids_by_partition(&log, "deals").await, stored);
    assert_eq!(stored[&p], vec!["evt-0".to_string(), "evt-4".to_string()]);
}

/// A publish to two topics that fails in the second after it was staged in the first
/// takes back what it staged: nothing of it is ever served, its offset is given to the
/// next append, and a retry is not taken for a duplicate.
#[tokio::test]
async fn a_publish_that_fails_after_staging_part_of_it_takes_that_part_back() {
    for durability in [Durability::Fsync, Durability::Os] {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new(1_700_000_000_000_000);
        let options = || EmbeddedOptions {
            // Every append to a partition that holds records rolls to a new segment.
            segment_bytes: 1,
            ..opts(&clock, durability)
        };
        let topics = ["a".to_string(), "b".to_string()];
        let log = EmbeddedLog::open(dir.path(), options()).expect("open");
        for t in &topics {
            log.create_topic(TopicSpec::new(t.as_str(), 1))
                .await
                .expect("create");
            log.append(std::slice::from_ref(t), &[deal(u64::from(t.as_bytes()[0]))])
                .await
                .expect("append");
        }
        // The next append to `b` must roll to segment 1, whose file is in the way; `a`,
        // staged first, rolls fine.
        let blocker = dir.path().join("topics/b/0").join(format!("{:020}.log", 1));
        std::fs::write(&blocker, b"").expect("block the roll");
        let failed = log.append(&topics, &[deal(1)]).await;
        assert!(
            failed.is_err(),
            "{durability:?}: the publish fails: {failed:?}"
        );
        std::fs::remove_file(&blocker).expect("unblock");

        // The next append to `a` gets the offset the failed publish had staged there.
        let next = log
            .append(&topics[..1], &[deal(2)])
            .await
            .expect("append to a");
        assert_eq!(
            (next[0].offset, next[0].duplicate),
            (1, false),
            "{durability:?}"
        );
        let a = || async { ids_by_partition(&log, "a").await[&0].clone() };
        assert_eq!(a().await, vec!["evt-97", "evt-2"], "{durability:?}");
        // The retry succeeds and is stored, not answered as a duplicate.
        let retry = log.append(&topics, &[deal(1)]).await.expect("retry");
        assert!(
            retry.iter().all(|r| !r.duplicate),
            "{durability:?}: {retry:?}"
        );
        assert_eq!(
            a().await,
            vec!["evt-97", "evt-2", "evt-1"],
            "{durability:?}"
        );
        let stored = (a().await, ids_by_partition(&log, "b").await);
        drop(log);
        let log = EmbeddedLog::open(dir.path(), options()).expect("reopen");
        assert_eq!(
            (
                ids_by_partition(&log, "a").await[&0].clone(),
                ids_by_partition(&log, "b").await
            ),
            stored,
            "{durability:?}"
        );
    }
}

/// A round whose write or fsync fails in one partition (or whose commit file record fails
/// to be durable) makes nothing of the round readable in the others: the batch is not
/// acknowledged and the next open rolls it back, so serving its part meanwhile would hand
/// consumers events that then disappear.
#[tokio::test]
async fn a_round_that_fails_in_one_partition_serves_nothing_of_it_in_another() {
    use crmbus_embedded::storage::{Fault, FaultOp};
    use crmbus_embedded::SimStorage;
    let default_commit_file = EmbeddedOptions::default().commit_file_bytes;
    // (commit file size, the failing operation, the file it fails on): a round over two
    // partitions writes its data and fsyncs one commit file record, or (without a commit
    // file) fsyncs each partition's segment.
    let cases = [
        (default_commit_file, FaultOp::Write, "deals/1/"),
        (default_commit_file, FaultOp::Sync, "commit.wal"),
        (0, FaultOp::Sync, "deals/1/"),
    ];
    for (commit_file_bytes, op, target) in cases {
        let case = format!("commit file {commit_file_bytes} bytes, {op:?} fails on {target}");
        let sim = SimStorage::new();
        let clock = ManualClock::new(1_700_000_000_000_000);
        let data = std::path::Path::new("/data");
        let options = || EmbeddedOptions {
            storage: Arc::new(sim.mount()),
            commit_file_bytes,
            ..opts(&clock, Durability::Fsync)
        };
        let log = EmbeddedLog::open(data, options()).expect("open");
        log.create_topic(TopicSpec::new("deals", 2))
            .await
            .expect("create");
        let batch: Vec<Event> = (0..8).map(deal).collect();
        assert!(batch.iter().any(|e| partition_for(e, 2) == 0));
        assert!(batch.iter().any(|e| partition_for(e, 2) == 1));
        sim.inject(Fault::eio(op, target));
        let failed = log.append(&["deals".to_string()], &batch).await;
        assert!(failed.is_err(), "{case}: the batch fails: {failed:?}");
        let info = log.describe_topic("deals").await.expect("describe");
        assert_eq!(
            info.partition_info
                .iter()
                .map(|p| p.next_offset)
                .collect::<Vec<_>>(),
            vec![0, 0],
            "{case}: no offset of the failed round is served"
        );
        assert!(
            log.read("deals", 0, 0, 100).await.expect("read").is_empty(),
            "{case}"
        );
    }
}

/// A disk on which `earlier` was appended to `deals` (4 partitions) one event at a time,
/// then the power was cut at operation `at` of the append of `batch`, keeping what `mode`
/// says of what was not fsynced: the disk, whether the batch was acknowledged, and the ids
/// each partition held before it. `None` when the append ran to its end before the cut.
async fn cut_during_a_batch(
    make_opts: &dyn Fn(&SimStorage) -> EmbeddedOptions,
    earlier: &[Event],
    batch: &[Event],
    at: u64,
    mode: CrashMode,
) -> Option<(SimStorage, bool, BTreeMap<u32, Vec<String>>)> {
    let sim = SimStorage::new();
    let log = EmbeddedLog::open(Path::new(SIM_DATA), make_opts(&sim)).expect("open");
    log.create_topic(TopicSpec::new("deals", 4))
        .await
        .expect("create");
    for e in earlier {
        log.append(&["deals".to_string()], std::slice::from_ref(e))
            .await
            .expect("append");
    }
    let before = ids_by_partition(&log, "deals").await;
    sim.crash_at_op(sim.ops() + at, mode, at);
    let acked = log.append(&["deals".to_string()], batch).await.is_ok();
    if sim.crash_pending() {
        // The append's round ran to its end before the cut: every operation of it has
        // had its cut.
        assert!(acked && at > 0, "{mode:?}");
        return None;
    }
    Some((sim, acked, before))
}

/// Checks what `log`, opened on `sim` after a cut during the append of `batch`, serves:
/// the batch whole or absent, whole if it was `acked`, and when absent the partitions as
/// they were `before` it. Then cuts the power again, with nothing written since the open,
/// and checks that the next open serves the same (what recovery served was durable before
/// it was served). Returns whether the batch was absent.
async fn check_recovered(
    log: EmbeddedLog,
    sim: &SimStorage,
    make_opts: &dyn Fn(&SimStorage) -> EmbeddedOptions,
    batch: &[Event],
    before: &BTreeMap<u32, Vec<String>>,
    acked: bool,
    context: &str,
) -> bool {
    let after = ids_by_partition(&log, "deals").await;
    let stored: usize = after
        .values()
        .flatten()
        .filter(|id| batch.iter().any(|e| &e.id == *id))
        .count();
    assert!(
        stored == 0 || stored == batch.len(),
        "{context}: {stored} of {} stored",
        batch.len()
    );
    if acked {
        assert_eq!(stored, batch.len(), "{context}");
    }
    if stored == 0 {
        assert_eq!(&after, before, "{context}: what came before is untouched");
    }
    sim.crash(CrashMode::KeepNone, 0);
    drop(log);
    let log = EmbeddedLog::open(Path::new(SIM_DATA), make_opts(sim)).expect("open again");
    assert_eq!(
        ids_by_partition(&log, "deals").await,
        after,
        "{context}: a power cut after recovery changed what it served"
    );
    stored == 0
}

/// Where the power-cut tests keep the log on the simulated disk.
const SIM_DATA: &str = "/data";

/// Segment files (`.log`) on the simulated disk, in every topic.
fn log_files(sim: &SimStorage) -> usize {
    sim.files_under(&Path::new(SIM_DATA).join("topics"))
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "log"))
        .count()
}

/// The group commit writes a batch's intent beside its data (on a storage that takes one
/// operation at a time, as the simulated disk does: the data first, then the journal). A
/// power cut at each storage operation of the round, keeping all, none or a torn part of
/// what was not fsynced, leaves the batch whole or absent, and whole if it was
/// acknowledged. The cuts between the data's fsyncs and the journal's write leave parts on
/// disk whose intent is not: recovery finds them by the intent their first record names.
/// What recovery leaves is durable before the log serves it: a second power cut right
/// after the open changes nothing (a rollback cut, or the removal of a segment file, that
/// was not fsynced would bring the cut part back, its intent by then forgotten).
#[tokio::test]
async fn a_power_cut_at_any_operation_of_a_batch_leaves_it_whole_or_absent() {
    let clock = ManualClock::new(1_700_000_000_000_000);
    let batch: Vec<Event> = (0..12).map(deal).collect();
    let earlier: Vec<Event> = (100..104).map(deal).collect();
    // Segments of the default size, and segments full with one record (so each part in a
    // partition that holds an earlier event starts a new segment, and a rollback removes
    // whole segment files).
    let one_record = deal(100).to_json_vec().len() as u64;
    let (mut cuts, mut absent, mut removed_segments) = (0, 0, 0);
    for segment_bytes in [EmbeddedOptions::default().segment_bytes, one_record] {
        let sim_opts = |sim: &SimStorage| EmbeddedOptions {
            storage: Arc::new(sim.mount()),
            segment_bytes,
            ..opts(&clock, Durability::Fsync)
        };
        for mode in [CrashMode::KeepAll, CrashMode::KeepNone, CrashMode::TornTail] {
            for at in 0.. {
                let Some((sim, acked, before)) =
                    cut_during_a_batch(&sim_opts, &earlier, &batch, at, mode).await
                else {
                    break;
                };
                cuts += 1;
                let files_before = log_files(&sim);
                let log = EmbeddedLog::open(Path::new(SIM_DATA), sim_opts(&sim)).expect("reopen");
                if log_files(&sim) < files_before {
                    removed_segments += 1;
                }
                let context = format!(
                    "segments of {segment_bytes} bytes, {mode:?}, cut at operation {at}, acknowledged: {acked}"
                );
                if check_recovered(log, &sim, &sim_opts, &batch, &before, acked, &context).await {
                    absent += 1;
                }
            }
        }
    }
    assert!(cuts > 40, "{cuts} cuts");
    assert!(
        removed_segments > 0,
        "no rollback removed a segment file: the small segments do not roll"
    );
    assert!(
        absent > 0 && absent < cuts,
        "{absent} of {cuts} cuts left the batch absent"
    );
}

/// A rollback cut inside a sealed segment (which takes appends again) keeps what is left
/// of it as durable: damage in its acknowledged records is counted as damage, and the
/// records after it stay. (The journal's recovery point can be older than the records, as
/// when a crash took the journal write that carried the newer one: the cut itself tells
/// where the durable records end.)
#[tokio::test]
async fn a_rollback_cut_does_not_take_damage_before_it_for_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let subject_event = |n: u64| padded(n, "a");
    let p = partition_for(&subject_event(0), 2);
    let options = || rolling_every(&clock, 4);
    let pdir = dir.path().join("topics").join("deals").join(p.to_string());
    {
        let log = EmbeddedLog::open(dir.path(), options()).expect("open");
        log.create_topic(TopicSpec::new("deals", 2))
            .await
            .expect("create");
        // Three acknowledged records, then the part: its first record fills the segment,
        // its second rolls it (sealing it) and goes to the next one.
        for n in 0..5 {
            log.append(&["deals".to_string()], &[subject_event(n)])
                .await
                .expect("append");
        }
    }
    let first = pdir.join("00000000000000000000.log");
    assert!(pdir.join("00000000000000000004.log").exists());
    // Damage in the sealed segment's second record, acknowledged long ago.
    let mut bytes = std::fs::read(&first).expect("read");
    let crmbus_embedded::record::Parsed::Record(_, _, len) = crmbus_embedded::record::parse(&bytes)
    else {
        panic!("the first record reads");
    };
    bytes[len + len / 2] ^= 0x10;
    std::fs::write(&first, &bytes).expect("write");
    // The journal holds the part's intent, and no recovery point for the partition.
    std::fs::remove_file(dir.path().join(FILE_NAME)).expect("remove journal");
    journal_intent_in_two_partitions(dir.path(), p, 3, 2);
    let log = EmbeddedLog::open(dir.path(), options()).expect("reopen");
    assert!(
        !pdir.join("00000000000000000004.log").exists(),
        "the part is cut"
    );
    assert_eq!(next_offsets(&log, "deals").await[p as usize], 3);
    let after = log.read("deals", p, 2, 10).await.expect("read");
    assert_eq!(
        after
            .iter()
            .map(|s| s.event.id.as_str())
            .collect::<Vec<_>>(),
        vec!["evt-2"],
        "the record after the damage stays"
    );
    assert!(
        log.read("deals", p, 1, 10).await.is_err(),
        "the damaged record is reported, never served"
    );
}

/// A damaged frame in the middle of the journal (bit rot in a frame written and fsynced
/// long before the crash) loses that frame only: the intents, done marks and recovery
/// points after it are read on, so the acknowledged batches whose intents come after it
/// are not taken for batches whose intent the crash took.
#[tokio::test]
async fn damage_in_the_middle_of_the_journal_does_not_cut_acknowledged_batches() {
    use crmbus_embedded::storage::{SimStorage, Storage};
    let clock = ManualClock::new(1_700_000_000_000_000);
    let sim = SimStorage::new();
    let data = std::path::PathBuf::from("/data");
    let sim_opts = |sim: &SimStorage| EmbeddedOptions {
        storage: Arc::new(sim.mount()),
        ..opts(&clock, Durability::Fsync)
    };
    let batches: Vec<Vec<Event>> = (0..3)
        .map(|k| (k * 12..k * 12 + 12).map(deal).collect())
        .collect();
    {
        let log = EmbeddedLog::open(&data, sim_opts(&sim)).expect("open");
        log.create_topic(TopicSpec::new("deals", 4))
            .await
            .expect("create");
        for batch in &batches {
            log.append(&["deals".to_string()], batch)
                .await
                .expect("append");
        }
        // The process dies: no clean close, what it wrote stays.
        sim.kill_process();
    }
    // Bit rot in the first batch's intent, which frames of the later batches follow.
    let journal = data.join(FILE_NAME);
    let bytes = sim.read(&journal).expect("read journal");
    let mut at = 0usize;
    let first_intent = loop {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        assert!(len >= 9, "an intent frame before the end");
        if bytes[at + 8] == 5 {
            break at;
        }
        at += 8 + len;
    };
    sim.flip_bit(&journal, first_intent as u64 + 12, 3)
        .expect("flip");

    let log = EmbeddedLog::open(&data, sim_opts(&sim)).expect("reopen");
    let stored: Vec<String> = ids_by_partition(&log, "deals")
        .await
        .into_values()
        .flatten()
        .collect();
    for e in batches.iter().flatten() {
        assert!(stored.contains(&e.id), "{} is still stored", e.id);
    }
    assert_eq!(stored.len(), 36);
}

/// A power cut while open recovers from an earlier cut, at operations spread over the
/// recovery (its rollback cuts, segment removals, fsyncs and journal rewrite), keeping
/// none, a random part or a torn tail of what the recovery had not fsynced, loses nothing:
/// the open after it still finds a batch the first cut caught whole or absent, whole if it
/// was acknowledged, what came before it untouched, and a further cut right after that open
/// changes nothing it served. The first cut comes at every operation of the batch's
/// append, on segments that roll with every record (so rollbacks remove segment files),
/// and some recovery cuts must fall between the removals of one rollback.
#[tokio::test]
async fn a_power_cut_during_recovery_leaves_the_batch_whole_or_absent() {
    let clock = ManualClock::new(1_700_000_000_000_000);
    let batch: Vec<Event> = (0..12).map(deal).collect();
    let earlier: Vec<Event> = (100..104).map(deal).collect();
    let one_record = deal(100).to_json_vec().len() as u64;
    let sim_opts = |sim: &SimStorage| EmbeddedOptions {
        storage: Arc::new(sim.mount()),
        segment_bytes: one_record,
        ..opts(&clock, Durability::Fsync)
    };
    let recovery_modes = [
        CrashMode::KeepNone,
        CrashMode::RandomPages,
        CrashMode::TornTail,
    ];
    let (mut recoveries_cut, mut absent, mut split_rollbacks) = (0, 0, 0);
    for mode in [CrashMode::KeepAll, CrashMode::KeepNone, CrashMode::TornTail] {
        for at in 0.. {
            let Some((sim, acked, before)) =
                cut_during_a_batch(&sim_opts, &earlier, &batch, at, mode).await
            else {
                break;
            };
            // How many operations the open takes (recovery included), and how many segment
            // files it leaves, on a copy of this disk.
            let (open_ops, files_recovered) = {
                let copy = sim.fork();
                let ops = copy.ops();
                drop(EmbeddedLog::open(Path::new(SIM_DATA), sim_opts(&copy)).expect("reopen"));
                (copy.ops() - ops, log_files(&copy))
            };
            let files_cut = log_files(&sim);
            // Each first cut cuts its recovery at an evenly spread share of the open's
            // operations, starting further along with each first cut (where the first cut
            // kept written data, recovery reads far more, so those take fewer).
            let share = match mode {
                CrashMode::KeepNone => 8,
                _ => 3,
            };
            let stride = (open_ops / share).max(1);
            for cut in (at % stride..open_ops).step_by(stride as usize) {
                let disk = sim.fork();
                let how = recovery_modes[(cut % 3) as usize];
                disk.crash_at_op(disk.ops() + cut, how, cut);
                drop(EmbeddedLog::open(Path::new(SIM_DATA), sim_opts(&disk)));
                assert!(
                    !disk.crash_pending(),
                    "the open took fewer operations than on the copy of the same disk"
                );
                recoveries_cut += 1;
                let files = log_files(&disk);
                if files < files_cut && files > files_recovered {
                    split_rollbacks += 1;
                }
                let log =
                    EmbeddedLog::open(Path::new(SIM_DATA), sim_opts(&disk)).expect("open after");
                let context = format!(
                    "{mode:?}, batch cut at operation {at}, recovery cut ({how:?}) at operation \
                     {cut} of {open_ops}, acknowledged: {acked}"
                );
                if check_recovered(log, &disk, &sim_opts, &batch, &before, acked, &context).await {
                    absent += 1;
                }
            }
        }
    }
    eprintln!(
        "{recoveries_cut} recoveries cut: {split_rollbacks} between the segment removals of a \
         rollback, {absent} leaving the batch absent"
    );
    assert!(recoveries_cut > 100, "{recoveries_cut} recoveries cut");
    assert!(
        split_rollbacks > 0,
        "no recovery cut fell between the segment removals of a rollback"
    );
    assert!(
        absent > 0 && absent < recoveries_cut,
        "{absent} of {recoveries_cut} cut recoveries left the batch absent"
    );
}
