//! Defects of the embedded log found by reading it (issue 11), each pinned by a test that
//! failed before its fix. These use the real file system; the power-loss cases live in
//! `power_loss.rs`, on the simulated disk.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crmbus::clock::ManualClock;
use crmbus::{EventLog, LogError, Retention, TopicSpec};
use crmbus_embedded::handles::HandleCache;
use crmbus_embedded::partition::{CorruptCounter, NewRecord, Partition, RawRecord};
use crmbus_embedded::{EmbeddedLog, EmbeddedOptions};
use crmbus_testkit::embedded::{block_on, event, read_all, segment_files};

/// Opens partition 0 of topic `t` in `dir` on its own (no recovery point).
fn open_partition(dir: &std::path::Path, opts: &EmbeddedOptions) -> Arc<Partition> {
    Arc::new(
        Partition::open(
            "t",
            0,
            dir,
            opts,
            Arc::new(CorruptCounter::default()),
            HandleCache::new(16),
            None,
        )
        .expect("open partition"),
    )
}

fn small_segments() -> EmbeddedOptions {
    EmbeddedOptions {
        segment_bytes: 8 * 1024,
        retention_interval: None,
        ..Default::default()
    }
}

/// Defect 1: a sealed segment whose index is missing and whose last record is damaged
/// was scanned as if its end were a torn tail: it was cut, every later segment was
/// unlinked, and the next append reused offsets already acknowledged. Damage in a sealed
/// segment must be a corrupt range instead; nothing after it may be lost.
#[test]
fn damage_at_the_end_of_a_sealed_segment_loses_nothing_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let total = 200usize;
    block_on(async {
        let log = EmbeddedLog::open(dir.path(), small_segments()).expect("open");
        log.create_topic(TopicSpec::new("deals", 1))
            .await
            .expect("create");
        for n in 0..total {
            let r = log
                .append(
                    &["deals".to_string()],
                    &[event(&format!("e-{n}"), "deal-1", n)],
                )
                .await
                .expect("append");
            assert_eq!(r[0].offset, n as u64);
        }
        log.close().await.expect("close");
    });
    let segments = segment_files(dir.path(), "deals", 0);
    assert!(segments.len() >= 3, "{} segments", segments.len());
    let (_, first) = &segments[0];
    let second_base = segments[1].0;
    // The index goes (a power cut can lose it: it was renamed into place unsynced) and one
    // bit of the segment's last record flips.
    std::fs::remove_file(first.with_extension("idx")).expect("remove index");
    let mut bytes = std::fs::read(first).expect("read segment");
    let last = bytes.len() - 2;
    bytes[last] ^= 0x04;
    std::fs::write(first, &bytes).expect("write segment");

    block_on(async {
        let log = EmbeddedLog::open(dir.path(), small_segments()).expect("reopen");
        let info = log.describe_topic("deals").await.expect("describe");
        assert_eq!(
            info.partition_info[0].next_offset, total as u64,
            "the partition still ends where it ended"
        );
        let damaged = &info.partition_info[0].corrupt;
        assert!(
            damaged
                .iter()
                .any(|r| r.first < second_base && second_base - 1 < r.first + r.count),
            "the topic's description names the damaged offsets: {damaged:?}"
        );
        let after = read_all(&log, "deals", 0, second_base)
            .await
            .expect("read after the damage");
        assert_eq!(
            after.len() as u64,
            total as u64 - second_base,
            "every record after the damaged segment is still served"
        );
        // The damaged record is never served: reading it fails as corrupt.
        match log.read("deals", 0, second_base - 1, 10).await {
            Err(LogError::Corrupt { offset, .. }) => assert_eq!(offset, second_base - 1),
            other => panic!("expected a corrupt-record error, got {other:?}"),
        }
        assert!(log.corrupt_records() >= 1);
        let r = log
            .append(&["deals".to_string()], &[event("after", "deal-1", 0)])
            .await
            .expect("append after reopen");
        assert_eq!(
            r[0].offset, total as u64,
            "no acknowledged offset is reused"
        );
    });
}

/// Defect 3: retention could delete a segment that had just rolled while writes to it
/// were still staged; the flusher then wrote them into the deleted file and the
/// acknowledged records were gone.
#[test]
fn retention_never_deletes_a_segment_with_staged_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000));
    let json = |n: u64| {
        crmbus::Event::new("deal.won", serde_json::json!({ "pad": "x".repeat(400) }))
            .id(format!("r-{n}"))
            .source("urn:test")
            .to_json_vec()
    };
    // Room for one record and a half: the second record still goes to the first segment,
    // the third rolls.
    let opts = EmbeddedOptions {
        segment_bytes: json(0).len() as u64 * 3 / 2 + 50,
        retention_interval: None,
        clock: clock.clone(),
        ..Default::default()
    };
    let p = open_partition(&dir.path().join("p"), &opts);
    // One record written to the first segment, one more staged into it (still under the
    // roll size), then a third that rolls to a new segment.
    let a = p
        .append(&[NewRecord::plain(&json(0), 0)], &opts)
        .expect("append 0");
    p.flush_staged(&opts).expect("flush 0");
    p.mark_durable(a.sync.next_offset);
    let body = json(1);
    p.append(&[NewRecord::plain(&body, 1)], &opts)
        .expect("append 1 (staged)");
    p.append(&[NewRecord::plain(&json(2), 2)], &opts)
        .expect("append 2 (rolls)");
    // Everything in the first segment is now old.
    clock.advance(Duration::from_secs(3600));
    let retention = Retention {
        max_age: Some(Duration::from_secs(60)),
        max_bytes: None,
    };
    p.enforce_retention(&retention, &opts).expect("retention");
    assert_eq!(
        p.first_offset(),
        0,
        "the first segment is kept until it is sealed"
    );
    let (_, next) = p.flush_staged(&opts).expect("flush the rest");
    p.mark_durable(next);
    match p.read_raw(1).expect("read record 1") {
        RawRecord::Json(j) => assert_eq!(j, body, "record 1 is stored"),
        RawRecord::Missing => panic!("record 1 was written into a deleted segment"),
        RawRecord::InFlight => panic!("record 1 is still in flight after the flush"),
    }
}

/// A partition on a simulated disk with a group commit, for the power-cut cases below.
struct SimPartition {
    sim: crmbus_embedded::SimStorage,
    opts: EmbeddedOptions,
    partition: Arc<Partition>,
    commit: crmbus_embedded::syncer::GroupCommit,
}

const SIM_DIR: &str = "/data/p";

fn sim_partition(sim: &crmbus_embedded::SimStorage, segment_bytes: u64) -> SimPartition {
    sim_partition_with_clock(sim, segment_bytes, EmbeddedOptions::default().clock)
}

fn sim_partition_with_clock(
    sim: &crmbus_embedded::SimStorage,
    segment_bytes: u64,
    clock: Arc<dyn crmbus::clock::Clock>,
) -> SimPartition {
    let opts = EmbeddedOptions {
        segment_bytes,
        retention_interval: None,
        storage: Arc::new(sim.mount()),
        clock,
        ..Default::default()
    };
    let partition = open_partition(std::path::Path::new(SIM_DIR), &opts);
    let (journal, _) = crmbus_embedded::batch_journal::BatchJournal::open_compacting_at(
        Arc::clone(&opts.storage),
        std::path::Path::new("/data"),
        1 << 20,
    )
    .expect("journal");
    let (commit_file, _) = crmbus_embedded::commit_file::CommitFile::recover(
        &opts.storage,
        std::path::Path::new("/data"),
        opts.commit_file_bytes,
    )
    .expect("commit file");
    let commit =
        crmbus_embedded::syncer::GroupCommit::start(opts.clone(), Arc::new(journal), commit_file)
            .expect("group commit");
    // The partition's own directory entry is its topic's job (create_topic fsyncs it).
    use crmbus_embedded::Storage;
    for d in ["/", "/data"] {
        sim.sync_dir(std::path::Path::new(d)).expect("sync dir");
    }
    SimPartition {
        sim: sim.clone(),
        opts,
        partition,
        commit,
    }
}

impl SimPartition {
    fn json(n: u64) -> Vec<u8> {
        let time = chrono::DateTime::from_timestamp(1_700_000_000, 0)
            .unwrap_or_default()
            .fixed_offset();
        event(&format!("r-{n}"), "k", n as usize)
            .time(time)
            .to_json_vec()
    }

    /// Stages record `n` and returns what must be synced for it.
    fn stage(&self, n: u64) -> crmbus_embedded::syncer::SyncItem {
        self.partition
            .append(&[NewRecord::plain(&Self::json(n), n)], &self.opts)
            .expect("append")
            .sync
    }

    /// Hands `items` to the group commit and waits until they are acknowledged.
    fn commit(&self, items: Vec<crmbus_embedded::syncer::SyncItem>) {
        let ticket = self.commit.submit(items);
        block_on(self.commit.wait(ticket)).expect("durable");
    }

    /// Cuts the power (nothing unsynced survives) and reopens the partition.
    fn crash_and_reopen(self) -> Arc<Partition> {
        self.sim
            .crash(crmbus_embedded::storage::CrashMode::KeepNone, 0);
        drop(self.commit);
        let sim = self.sim;
        sim_partition(&sim, self.opts.segment_bytes).partition
    }
}

/// Defect 4: only the append that rolled to a new segment carried the directory fsync
/// that makes the segment's name durable. An append staged after it into the new segment
/// could be acknowledged by an earlier round that fsynced the data but not the directory,
/// and a power cut then took the whole segment away.
#[test]
fn a_record_in_a_new_segment_is_acknowledged_only_once_its_name_is_durable() {
    let sim = crmbus_embedded::SimStorage::new();
    let one = SimPartition::json(0).len() as u64 + 33;
    let p = sim_partition(&sim, one);
    let first = p.stage(0);
    p.commit(vec![first]);
    // Record 1 rolls to a new segment; record 2 goes into it; the round that runs for
    // record 2 alone is the one that acknowledges both.
    let _rolling = p.stage(1);
    let later = p.stage(2);
    p.commit(vec![later]);
    let reopened = p.crash_and_reopen();
    for n in 0..3 {
        match reopened.read_raw(n).expect("read") {
            RawRecord::Json(j) => assert_eq!(j, SimPartition::json(n), "record {n}"),
            _ => panic!("acknowledged record {n} was lost by the power cut"),
        }
    }
}

/// Defect 6: a sealed segment's index was renamed into place without an fsync of itself
/// or of the directory, before the segment's data was durable; a power cut lost it (and
/// the segment was rescanned on every open). The index is now written after the data is
/// durable, fsynced, and its name fsynced.
#[test]
fn a_sealed_segment_keeps_its_index_across_a_power_cut() {
    let sim = crmbus_embedded::SimStorage::new();
    let one = SimPartition::json(0).len() as u64 + 33;
    let p = sim_partition(&sim, one);
    let first = p.stage(0);
    p.commit(vec![first]);
    let rolling = p.stage(1);
    p.commit(vec![rolling]);
    // Looked at right after the cut, before an open could write it again.
    sim.crash(crmbus_embedded::storage::CrashMode::KeepNone, 0);
    let idx = std::path::Path::new(SIM_DIR).join("00000000000000000000.idx");
    let len = sim
        .file_len(&idx)
        .expect("the index of the sealed segment survives");
    assert!(
        len > 52,
        "the index holds its header and entries ({len} bytes)"
    );
    let reopened = p.crash_and_reopen();
    assert!(matches!(
        reopened.read_raw(1).expect("read"),
        RawRecord::Json(_)
    ));
}

/// Defect 7: an append spanning topics that failed before anything was staged left its
/// journal intent outstanding, so the next open stored a publish that had been answered
/// with an error.
#[test]
fn a_multi_topic_publish_that_failed_is_not_stored_by_the_next_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = || EmbeddedOptions {
        segment_bytes: 1,
        retention_interval: None,
        ..Default::default()
    };
    let topics = ["a".to_string(), "b".to_string()];
    let blocker = dir.path().join("topics/a/0").join(format!("{:020}.log", 1));
    block_on(async {
        let log = EmbeddedLog::open(dir.path(), opts()).expect("open");
        for t in &topics {
            log.create_topic(TopicSpec::new(t.as_str(), 1))
                .await
                .expect("create");
        }
        log.append(&topics[..1], &[event("first", "k", 0)])
            .await
            .expect("append to a");
        // The next append to `a` must roll to segment 1, whose file is in the way.
        std::fs::write(&blocker, b"").expect("block the roll");
        let failed = log.append(&topics, &[event("second", "k", 1)]).await;
        assert!(failed.is_err(), "the publish fails: {failed:?}");
        log.close().await.expect("close");
    });
    std::fs::remove_file(&blocker).expect("unblock");
    block_on(async {
        let log = EmbeddedLog::open(dir.path(), opts()).expect("reopen");
        let a: Vec<String> = read_all(&log, "a", 0, 0)
            .await
            .expect("read a")
            .into_iter()
            .map(|e| e.event.id)
            .collect();
        let b = read_all(&log, "b", 0, 0).await.expect("read b");
        assert_eq!(
            a,
            vec!["first".to_string()],
            "a holds only what was acknowledged"
        );
        assert!(b.is_empty(), "b holds the failed publish: {b:?}");
    });
}

/// Defect 8 (a): right after a roll, while a flush was writing the old segment's last
/// records, the dedupe check read them as missing (it took the new segment's start as the
/// end of what was written), so a retry in that moment was stored twice.
#[test]
fn a_record_being_written_around_a_roll_reads_as_in_flight() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = SimPartition::json;
    let opts = EmbeddedOptions {
        segment_bytes: json(0).len() as u64 * 3 / 2 + 50,
        retention_interval: None,
        ..Default::default()
    };
    let p = open_partition(&dir.path().join("p"), &opts);
    p.append(&[NewRecord::plain(&json(0), 0)], &opts)
        .expect("append 0");
    p.flush_staged(&opts).expect("flush 0");
    p.append(&[NewRecord::plain(&json(1), 1)], &opts)
        .expect("append 1");
    p.append(&[NewRecord::plain(&json(2), 2)], &opts)
        .expect("append 2 (rolls)");
    // A flush has taken records 1 and 2 and not written them yet.
    let taken = p.take_staged();
    assert!(
        matches!(p.read_raw(1).expect("read 1"), RawRecord::InFlight),
        "record 1 is being written, not missing"
    );
    p.write_taken(taken, &opts).expect("write");
    assert!(matches!(p.read_raw(1).expect("read 1"), RawRecord::Json(j) if j == json(1)));
}

/// Defect 8 (b): a retry whose original record is damaged failed for ever (the dedupe check
/// returned the corruption error). The original is never served, so the retry is stored.
#[test]
fn a_retry_whose_original_is_damaged_is_stored_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = event("damaged-original", "k", 0);
    block_on(async {
        let log = EmbeddedLog::open(dir.path(), small_segments()).expect("open");
        log.create_topic(TopicSpec::new("t", 1))
            .await
            .expect("create");
        let topic = ["t".to_string()];
        let first = log
            .append(&topic, std::slice::from_ref(&e))
            .await
            .expect("append");
        assert_eq!(first[0].offset, 0);
        let (_, seg) = segment_files(dir.path(), "t", 0).remove(0);
        let mut bytes = std::fs::read(&seg).expect("read segment");
        // The record's last bytes (the file may go on with zeros written ahead).
        let crmbus_embedded::record::Parsed::Record(_, _, len) =
            crmbus_embedded::record::parse(&bytes)
        else {
            panic!("the segment does not start with the record");
        };
        let at = len - 5;
        bytes[at] ^= 0x01;
        std::fs::write(&seg, &bytes).expect("damage the record");
        let retry = log
            .append(&topic, std::slice::from_ref(&e))
            .await
            .expect("the retry is stored");
        assert!(!retry[0].duplicate);
        assert_eq!(retry[0].offset, 1);
        let again = log.read("t", 0, 1, 10).await.expect("read the retry");
        assert_eq!(again[0].event.id, e.id);
    });
}

/// Segment files of `dir` this process holds open, from `/proc/self/fd`.
fn open_files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir) && target.extension().is_some_and(|x| x == "log"))
        .count()
}

/// Defect 5: every segment of every partition stayed open, so a long retention reached
/// the process's descriptor limit. Sealed segments are now opened on demand, at most
/// `max_open_segments` (default 512) at a time besides the active ones.
#[test]
fn sealed_segments_do_not_hold_a_descriptor_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = || EmbeddedOptions {
        segment_bytes: 1,
        retention_interval: None,
        ..Default::default()
    };
    let total = 600usize;
    block_on(async {
        let log = EmbeddedLog::open(dir.path(), opts()).expect("open");
        log.create_topic(TopicSpec::new("t", 1))
            .await
            .expect("create");
        let topic = ["t".to_string()];
        for n in 0..total {
            log.append(&topic, &[event(&format!("e-{n}"), "k", n)])
                .await
                .expect("append");
        }
        let read = read_all(&log, "t", 0, 0).await.expect("read all");
        assert_eq!(read.len(), total);
        let open = open_files_under(dir.path());
        assert!(
            open <= 513,
            "{open} segment files open for {total} segments"
        );
        log.close().await.expect("close");
    });
    assert!(segment_files(dir.path(), "t", 0).len() >= total);
    block_on(async {
        let log = EmbeddedLog::open(dir.path(), opts()).expect("reopen");
        let open = open_files_under(dir.path());
        assert!(open <= 513, "{open} segment files open after a reopen");
        let read = read_all(&log, "t", 0, 0).await.expect("read all");
        assert_eq!(read.len(), total);
    });
}

/// Defect 9: a full disk failed the group commit's write and stopped the log until a
/// restart. Space is now reserved when an append is staged: the append that does not fit
/// fails with `StorageFull` (HTTP 507) before any offset is given out, nothing
/// acknowledged is lost, and appends succeed again once space is freed, without a restart.
#[test]
fn a_full_disk_fails_the_append_that_does_not_fit_and_recovers_when_space_is_freed() {
    let sim = crmbus_embedded::SimStorage::new();
    let data = std::path::Path::new("/data");
    let opts = || EmbeddedOptions {
        segment_bytes: 64 * 1024,
        batch_journal_compact_bytes: 64 * 1024,
        retention_interval: None,
        storage: Arc::new(sim.mount()),
        ..Default::default()
    };
    let topic = ["t".to_string()];
    let mut acked = Vec::new();
    block_on(async {
        let log = EmbeddedLog::open(data, opts()).expect("open");
        log.create_topic(TopicSpec::new("t", 2))
            .await
            .expect("create");
        sim.set_capacity(Some(sim.used_bytes() + 600 * 1024));
        let mut full = None;
        for n in 0..100_000usize {
            // Single events and batches across both partitions (through the journal).
            let events: Vec<crmbus::Event> = (0..1 + n % 5)
                .map(|k| event(&format!("e-{n}-{k}"), &format!("deal-{k}"), n))
                .collect();
            match log.append(&topic, &events).await {
                Ok(receipts) => acked.extend(receipts),
                Err(e) => {
                    full = Some(e);
                    break;
                }
            }
        }
        match full {
            Some(LogError::StorageFull(_)) => {}
            other => panic!("expected the disk to fill up with StorageFull, got {other:?}"),
        }
        assert!(acked.len() > 100, "{} events fitted", acked.len());
        // Still full: still refused, and the log is not poisoned.
        assert!(matches!(
            log.append(&topic, &[event("still-full", "deal-0", 0)])
                .await,
            Err(LogError::StorageFull(_))
        ));
        // Space is freed: the same log takes appends again.
        sim.set_capacity(None);
        let after = log
            .append(
                &topic,
                &[event("after", "deal-0", 0), event("after-2", "deal-3", 0)],
            )
            .await
            .expect("append once space is freed");
        acked.extend(after);
        for r in &acked {
            let got = log
                .read("t", r.partition, r.offset, 1)
                .await
                .expect("read an acknowledged event");
            assert_eq!(got[0].event.id, r.id);
        }
    });
    // And everything acknowledged survives a power cut.
    sim.crash(crmbus_embedded::storage::CrashMode::KeepNone, 7);
    block_on(async {
        let log = EmbeddedLog::open(data, opts()).expect("reopen");
        for r in &acked {
            let got = log.read("t", r.partition, r.offset, 1).await.expect("read");
            assert_eq!(got[0].event.id, r.id, "acknowledged {} survives", r.id);
        }
    });
}

/// Ten events acknowledged one at a time into one partition, then a clean stop and a
/// reopen (which records the partition's recovery point); returns the active segment.
fn ten_acknowledged(dir: &std::path::Path) -> std::path::PathBuf {
    let opts = || EmbeddedOptions {
        retention_interval: None,
        ..Default::default()
    };
    block_on(async {
        let log = EmbeddedLog::open(dir, opts()).expect("open");
        log.create_topic(TopicSpec::new("t", 1))
            .await
            .expect("create");
        for n in 0..10 {
            log.append(&["t".to_string()], &[event(&format!("e-{n}"), "k", n)])
                .await
                .expect("append");
        }
        log.close().await.expect("close");
    });
    drop(EmbeddedLog::open(dir, opts()).expect("reopen"));
    segment_files(dir, "t", 0).pop().expect("a segment").1
}

/// Defect 2 (a): damage at the end of the active segment was taken for a torn tail and
/// cut off, though those records were acknowledged: they were lost and their offsets
/// given out again. Before the recovery point, damage is corruption.
#[test]
fn damage_before_the_recovery_point_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let active = ten_acknowledged(dir.path());
    let mut bytes = std::fs::read(&active).expect("read");
    let last = bytes.len() - 3;
    bytes[last] ^= 0x20;
    std::fs::write(&active, &bytes).expect("damage the last record");
    block_on(async {
        let log = EmbeddedLog::open(dir.path(), small_segments()).expect("reopen");
        let info = log.describe_topic("t").await.expect("describe");
        assert_eq!(info.partition_info[0].next_offset, 10, "nothing is cut off");
        assert_eq!(
            info.partition_info[0].corrupt,
            vec![crmbus::OffsetRange { first: 9, count: 1 }],
            "the topic's description names the damaged offset"
        );
        assert!(matches!(
            log.read("t", 0, 9, 1).await,
            Err(LogError::Corrupt { offset: 9, .. })
        ));
        let r = log
            .append(&["t".to_string()], &[event("new", "k", 0)])
            .await
            .expect("append");
        assert_eq!(r[0].offset, 10, "offset 9 is not given out again");
    });
}

/// Defect 2 (b): after a power cut, a round's pages may be missing in the middle while
/// later ones reached the disk. The scan took the hole for corruption and kept the valid
/// frames after it: half of an unacknowledged batch survived. After the recovery point,
/// the first damage ends the segment, back to the last whole batch.
#[test]
fn a_torn_batch_after_the_recovery_point_never_survives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let active = ten_acknowledged(dir.path());
    let mut bytes = std::fs::read(&active).expect("read");
    // An unacknowledged batch of three (offsets 10-12) whose middle page never arrived.
    let frame = |offset: u64, last: bool| {
        let mut out = Vec::new();
        let meta = crmbus_embedded::record::RecordMeta {
            offset,
            timestamp_us: 1_800_000_000_000_000,
            dedupe_hash: offset,
            flags: if last {
                crmbus_embedded::record::FLAG_BATCH_END
            } else {
                0
            },
            version: 0,
            intent: 0,
        };
        crmbus_embedded::record::encode(
            &mut out,
            &meta,
            &event(&format!("torn-{offset}"), "k", 0).to_json_vec(),
        );
        out
    };
    let (a, b, c) = (frame(10, false), frame(11, false), frame(12, true));
    bytes.extend(&a);
    bytes.extend(vec![0u8; b.len()]);
    bytes.extend(&c);
    std::fs::write(&active, &bytes).expect("write the torn batch");
    block_on(async {
        let log = EmbeddedLog::open(dir.path(), small_segments()).expect("reopen");
        let info = log.describe_topic("t").await.expect("describe");
        assert_eq!(
            info.partition_info[0].next_offset, 10,
            "the torn batch is cut off whole"
        );
        let all = read_all(&log, "t", 0, 0).await.expect("read");
        assert_eq!(all.len(), 10);
        assert!(all.iter().all(|e| !e.event.id.starts_with("torn")));
    });
}

/// Found by the power-loss simulation: the round that wrote a topic's deletion mark also
/// wrote the recovery point of the deleted topic's partition, after the mark, so a topic
/// created again under the name inherited it, and its records read as corrupt up to the
/// old topic's end.
#[test]
fn a_topic_created_again_does_not_inherit_the_old_recovery_point() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = || EmbeddedOptions {
        retention_interval: None,
        ..Default::default()
    };
    let topic = ["t".to_string()];
    block_on(async {
        let log = EmbeddedLog::open(dir.path(), opts()).expect("open");
        log.create_topic(TopicSpec::new("t", 1))
            .await
            .expect("create");
        for n in 0..10 {
            log.append(&topic, &[event(&format!("old-{n}"), "k", n)])
                .await
                .expect("append");
        }
        log.delete_topic("t").await.expect("delete");
        log.create_topic(TopicSpec::new("t", 1))
            .await
            .expect("create again");
        log.append(&topic, &[event("new-0", "k", 0)])
            .await
            .expect("append");
        log.close().await.expect("close");
    });
    block_on(async {
        let log = EmbeddedLog::open(dir.path(), opts()).expect("reopen");
        let info = log.describe_topic("t").await.expect("describe");
        assert_eq!(info.partition_info[0].next_offset, 1);
        assert!(info.partition_info[0].corrupt.is_empty(), "{info:?}");
        let all = read_all(&log, "t", 0, 0).await.expect("read");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].event.id, "new-0");
    });
}

/// Defect 7 (a): an append to several topics awaited each topic's lock in turn, so a
/// caller that went away (a client that disconnected) while it waited for the second
/// topic left the events staged in the first only, until the next restart. The locks are
/// now all taken first and nothing awaits between staging and submitting. Appends are
/// polled once and dropped while another task keeps the second topic's lock busy; every
/// dropped event must end up in both topics or in neither.
#[test]
fn a_cancelled_multi_topic_append_is_in_every_topic_or_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let seed = rand::random::<u64>();
    println!("seed {seed}");
    let log = Arc::new(
        EmbeddedLog::open(
            dir.path(),
            EmbeddedOptions {
                retention_interval: None,
                durability: crmbus_embedded::Durability::Os,
                ..Default::default()
            },
        )
        .expect("open"),
    );
    let both = ["a".to_string(), "b".to_string()];
    let cancelled = runtime.block_on(async {
        for t in &both {
            log.create_topic(TopicSpec::new(t.as_str(), 1))
                .await
                .expect("create");
        }
        // Keeps topic b's lock busy with large batches until told to stop.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy = {
            let log = Arc::clone(&log);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                for round in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let batch: Vec<crmbus::Event> = (0..500)
                        .map(|k| event(&format!("busy-{round}-{k}"), "k", k))
                        .collect();
                    if log.append(&["b".to_string()], &batch).await.is_err() {
                        break;
                    }
                }
            })
        };
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
        let mut cancelled = Vec::new();
        // At least 400 tries, and on until 20 were cancelled (how many are depends on
        // how the two tasks interleave on this machine), 20,000 at most.
        for n in 0..20_000 {
            if n >= 400 && cancelled.len() >= 20 {
                break;
            }
            let e = event(&format!("both-{n}"), "k", n);
            // Polled once, then dropped if it did not finish: the caller went away.
            let mut append = Box::pin(log.append(&both, std::slice::from_ref(&e)));
            let finished = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(append.as_mut().poll(cx).is_ready())
            })
            .await;
            drop(append);
            if !finished {
                cancelled.push(e.id);
            }
            // Let the busy task take the lock again now and then.
            if rand::RngExt::random_bool(&mut rng, 0.5) {
                tokio::task::yield_now().await;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        busy.await.expect("busy task");
        // One more append to each topic flushes whatever a cancelled append staged.
        log.append(&both, &[event("last", "k", 0)])
            .await
            .expect("append");
        cancelled
    });
    assert!(!cancelled.is_empty(), "some appends were cancelled");
    let ids = |t: &str| -> std::collections::HashSet<String> {
        runtime
            .block_on(read_all(&log, t, 0, 0))
            .expect("read")
            .into_iter()
            .map(|e| e.event.id)
            .collect()
    };
    let (a, b) = (ids("a"), ids("b"));
    for id in &cancelled {
        assert_eq!(
            a.contains(id),
            b.contains(id),
            "seed {seed}: cancelled {id} is in a: {}, in b: {}",
            a.contains(id),
            b.contains(id)
        );
    }
    println!("{} appends dropped unfinished", cancelled.len());
}

/// A power cut alone never shows as corruption. In the round that rolls a segment, the
/// old segment's last records are written before the new segment's first ones; unless the
/// old segment is fsynced when it is sealed, a cut can keep the new segment's data and
/// lose the old one's tail, which recovery must then report as damage in a sealed segment.
#[test]
fn a_power_cut_in_the_round_that_rolls_is_never_reported_as_corruption() {
    let one = SimPartition::json(0).len() as u64 + 33;
    let mut cuts = 0;
    for k in 1..24u64 {
        for seed in 0..24u64 {
            let sim = crmbus_embedded::SimStorage::new();
            // Room for two records: record 1 fills the first segment, record 2 rolls.
            let p = sim_partition(&sim, 2 * one);
            let first = p.stage(0);
            p.commit(vec![first]);
            let a = p.stage(1);
            let b = p.stage(2);
            sim.crash_at_op(
                sim.ops() + k,
                crmbus_embedded::storage::CrashMode::Mixed,
                seed,
            );
            let ticket = p.commit.submit(vec![a, b]);
            let _ = block_on(p.commit.wait(ticket));
            if !sim.crash_pending() {
                cuts += 1;
            }
            let reopened = p.crash_and_reopen();
            assert!(
                reopened.corrupt_ranges().is_empty(),
                "cut at operation {k} of the round (seed {seed}): {:?}",
                reopened.corrupt_ranges()
            );
            assert!(matches!(
                reopened.read_raw(0).expect("read 0"),
                RawRecord::Json(_)
            ));
        }
    }
    assert!(cuts > 0, "the round was cut somewhere");
}

/// What survives a crash of the process (the page cache is intact) but was never fsynced
/// is made durable on open before it is served: a power cut after that must not take back
/// what readers saw, nor show it as damage. Both with zeros written ahead of the records
/// (a small write) and without (a write larger than `PREFILL_WRITES_UP_TO`, where the file
/// ends at the last record and open finds nothing to cut).
#[test]
fn what_open_serves_after_a_process_crash_survives_a_later_power_cut() {
    for count in [1, 200] {
        let sim = crmbus_embedded::SimStorage::new();
        let data = std::path::Path::new("/data");
        let opts = |durability| EmbeddedOptions {
            durability,
            retention_interval: None,
            storage: Arc::new(sim.mount()),
            ..Default::default()
        };
        let events: Vec<_> = (0..count)
            .map(|i| event(&format!("cached-{i}"), "k", i))
            .collect();
        let bytes: usize = events.iter().map(|e| e.to_json_vec().len()).sum();
        assert_eq!(
            bytes as u64 > crmbus_embedded::segment::PREFILL_WRITES_UP_TO,
            count > 1
        );
        block_on(async {
            let log =
                EmbeddedLog::open(data, opts(crmbus_embedded::Durability::Fsync)).expect("open");
            log.create_topic(TopicSpec::new("t", 1))
                .await
                .expect("create");
            drop(log);
            // Page-cache appends, then the process dies: the writes are still in the cache.
            let log = EmbeddedLog::open(data, opts(crmbus_embedded::Durability::Os)).expect("open");
            log.append(&["t".to_string()], &events)
                .await
                .expect("append");
            sim.kill_process();
        });
        block_on(async {
            let log =
                EmbeddedLog::open(data, opts(crmbus_embedded::Durability::Fsync)).expect("reopen");
            let seen = read_all(&log, "t", 0, 0).await.expect("read");
            assert_eq!(seen.len(), count, "the cached events are served");
            sim.crash(crmbus_embedded::storage::CrashMode::KeepNone, 1);
        });
        block_on(async {
            let log =
                EmbeddedLog::open(data, opts(crmbus_embedded::Durability::Fsync)).expect("reopen");
            let info = log.describe_topic("t").await.expect("describe");
            assert!(info.partition_info[0].corrupt.is_empty(), "{info:?}");
            let seen = read_all(&log, "t", 0, 0).await.expect("read");
            assert_eq!(
                seen.len(),
                count,
                "what was served survives the power cut ({count} events)"
            );
        });
    }
}

/// The parts of an append that spans two partitions, for journal tests.
fn two_parts() -> Vec<crmbus_embedded::batch_journal::Part> {
    (0..2)
        .map(|partition| crmbus_embedded::batch_journal::Part {
            topic: "t".into(),
            partition,
            first: 0,
            count: 1,
        })
        .collect()
}

/// A compaction of the batch journal keeps the outstanding intents across a power cut:
/// the rewritten file is fsynced before it is renamed over the old one, and its name after.
#[test]
fn a_journal_compaction_keeps_outstanding_intents_across_a_power_cut() {
    use crmbus_embedded::batch_journal::BatchJournal;
    let sim = crmbus_embedded::SimStorage::new();
    let dir = std::path::Path::new("/data");
    crmbus_embedded::Storage::create_dir_all(&sim, dir).expect("mkdir");
    crmbus_embedded::Storage::sync_dir(&sim, std::path::Path::new("/")).expect("sync /");
    let (journal, _) =
        BatchJournal::open_compacting_at(Arc::new(sim.mount()), dir, 1).expect("open");
    let (kept, frame) = journal.begin(&two_parts());
    journal.write(&frame, true).expect("write");
    for _ in 0..4 {
        let (id, frame) = journal.begin(&two_parts());
        journal.write(&frame, true).expect("write");
        let done = journal.finished(id);
        journal.write(&done, true).expect("write");
    }
    journal.compact_if_large().expect("compact");
    sim.crash(crmbus_embedded::storage::CrashMode::KeepNone, 0);
    drop(journal);
    let (_, pending) =
        BatchJournal::open_compacting_at(Arc::new(sim.mount()), dir, 1).expect("reopen");
    let ids: Vec<u64> = pending.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        vec![kept],
        "the outstanding intent survives the compaction"
    );
}

/// A new batch journal's name is durable before an intent written to it is relied on.
#[test]
fn an_intent_in_a_new_journal_survives_a_power_cut() {
    use crmbus_embedded::batch_journal::{BatchJournal, COMPACT_AT};
    let sim = crmbus_embedded::SimStorage::new();
    let dir = std::path::Path::new("/data");
    crmbus_embedded::Storage::create_dir_all(&sim, dir).expect("mkdir");
    crmbus_embedded::Storage::sync_dir(&sim, std::path::Path::new("/")).expect("sync /");
    let (journal, _) =
        BatchJournal::open_compacting_at(Arc::new(sim.mount()), dir, COMPACT_AT).expect("open");
    let (id, frame) = journal.begin(&two_parts());
    journal.write(&frame, true).expect("write");
    sim.crash(crmbus_embedded::storage::CrashMode::KeepNone, 0);
    drop(journal);
    let (_, pending) =
        BatchJournal::open_compacting_at(Arc::new(sim.mount()), dir, COMPACT_AT).expect("reopen");
    assert_eq!(pending.len(), 1, "the intent survives");
    assert_eq!(pending[0].0, id);
}

/// What retention removed stays removed after a power cut: the directory is fsynced
/// before `enforce_retention` returns, so a consumer reading from the earliest offset never
/// sees expired events come back.
#[test]
fn segments_removed_by_retention_stay_removed_after_a_power_cut() {
    let sim = crmbus_embedded::SimStorage::new();
    let one = SimPartition::json(0).len() as u64 + 33;
    let p = sim_partition(&sim, one);
    // One record a segment: 0, 1 and 2 sealed, 3 in the active segment.
    for n in 0..4 {
        let item = p.stage(n);
        p.commit(vec![item]);
    }
    let retention = Retention {
        max_age: None,
        max_bytes: Some(one),
    };
    let removed = p
        .partition
        .enforce_retention(&retention, &p.opts)
        .expect("retention");
    assert_eq!(
        removed, 3,
        "the three sealed segments are over the byte limit"
    );
    assert_eq!(p.partition.first_offset(), 3);
    let reopened = p.crash_and_reopen();
    assert_eq!(
        reopened.first_offset(),
        3,
        "segments removed by retention came back after the power cut"
    );
    assert!(matches!(
        reopened.read_raw(0).expect("read 0"),
        RawRecord::Missing
    ));
}

/// When retention replaces an expired active segment and then fails to remove the old
/// file, the replacement's name is still durable before the writer lock is released: a
/// record acknowledged in it survives a power cut.
#[test]
fn a_replacement_segment_is_durable_even_when_removing_the_old_one_fails() {
    use crmbus_embedded::storage::{Fault, FaultOp};
    let sim = crmbus_embedded::SimStorage::new();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000));
    let p = sim_partition_with_clock(&sim, 1 << 20, clock.clone());
    let item = p.stage(0);
    p.commit(vec![item]);
    clock.advance(Duration::from_secs(3600));
    sim.inject(Fault::eio(FaultOp::Remove, ".log"));
    let retention = Retention {
        max_age: Some(Duration::from_secs(60)),
        max_bytes: None,
    };
    let failed = p.partition.enforce_retention(&retention, &p.opts);
    assert!(failed.is_err(), "the removal fails: {failed:?}");
    // Record 1 goes to the replacement segment and is acknowledged.
    let item = p.stage(1);
    p.commit(vec![item]);
    let reopened = p.crash_and_reopen();
    match reopened.read_raw(1).expect("read 1") {
        RawRecord::Json(j) => assert_eq!(j, SimPartition::json(1)),
        RawRecord::Missing => panic!("acknowledged record 1 was lost by the power cut"),
        RawRecord::InFlight => panic!("record 1 reads as in flight after a reopen"),
    }
}

/// Once `Metadata::open` has created the store, a topic written to it survives a power
/// cut: the renamed file's name is durable (its directory is fsynced), not only its
/// contents. (Within `EmbeddedLog::open` the batch journal's creation fsyncs the same
/// directory right after; this pins the store's own promise.)
#[test]
fn a_new_metadata_store_and_what_it_holds_survive_a_power_cut() {
    use crmbus_embedded::metadata::Metadata;
    use crmbus_embedded::Storage;
    let sim = crmbus_embedded::SimStorage::new();
    let dir = std::path::Path::new("/data");
    sim.create_dir_all(dir).expect("mkdir");
    sim.sync_dir(std::path::Path::new("/")).expect("sync /");
    let meta = Metadata::open(&sim.mount(), &dir.join("meta.redb")).expect("open");
    meta.put_topic(&TopicSpec::new("deals", 2))
        .expect("put topic");
    drop(meta);
    sim.crash(crmbus_embedded::storage::CrashMode::KeepNone, 0);
    let meta = Metadata::open(&sim.mount(), &dir.join("meta.redb")).expect("reopen");
    let names: Vec<String> = meta
        .topics()
        .expect("topics")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(
        names,
        vec!["deals".to_string()],
        "the stored topic survives"
    );
}

/// A power cut at any operation of a journal compaction keeps the outstanding intents: the
/// rewritten file is durable before it replaces the old one, and the old one stays whole
/// until then.
#[test]
fn a_power_cut_anywhere_in_a_journal_compaction_keeps_outstanding_intents() {
    use crmbus_embedded::batch_journal::BatchJournal;
    use crmbus_embedded::storage::CrashMode;
    let dir = std::path::Path::new("/data");
    let mut cuts = 0;
    for k in 1..16u64 {
        for (mode, seed) in [
            (CrashMode::KeepNone, 0),
            (CrashMode::TornTail, 1),
            (CrashMode::Mixed, 2),
            (CrashMode::Mixed, 3),
            (CrashMode::RandomPages, 4),
        ] {
            let sim = crmbus_embedded::SimStorage::new();
            crmbus_embedded::Storage::create_dir_all(&sim, dir).expect("mkdir");
            crmbus_embedded::Storage::sync_dir(&sim, std::path::Path::new("/")).expect("sync /");
            let (journal, _) =
                BatchJournal::open_compacting_at(Arc::new(sim.mount()), dir, 1).expect("open");
            let (kept, frame) = journal.begin(&two_parts());
            journal.write(&frame, true).expect("write");
            for _ in 0..4 {
                let (id, frame) = journal.begin(&two_parts());
                journal.write(&frame, true).expect("write");
                let done = journal.finished(id);
                journal.write(&done, true).expect("write");
            }
            sim.crash_at_op(sim.ops() + k, mode, seed);
            let _ = journal.compact_if_large();
            if !sim.crash_pending() {
                cuts += 1;
            }
            sim.crash(mode, seed);
            drop(journal);
            let (_, pending) =
                BatchJournal::open_compacting_at(Arc::new(sim.mount()), dir, 1).expect("reopen");
            let ids: Vec<u64> = pending.iter().map(|(id, _)| *id).collect();
            assert_eq!(
                ids,
                vec![kept],
                "cut at operation {k} of the compaction ({mode:?}, seed {seed})"
            );
        }
    }
    assert!(cuts > 0, "the compaction was cut somewhere");
}

/// Found by the power-loss simulation: a topic whose creation failed after its spec was
/// stored (so it exists on the next open) but whose directory was removed. Open made the
/// topic's and partitions' directories again without fsyncing the directories that hold
/// their names, so a power cut took the directories, and every event acknowledged in them
/// since, away.
#[test]
fn directories_open_makes_again_survive_a_power_cut() {
    use crmbus_embedded::storage::CrashMode;
    use crmbus_embedded::Storage;
    let sim = crmbus_embedded::SimStorage::new();
    let data = std::path::Path::new("/data");
    let opts = || EmbeddedOptions {
        retention_interval: None,
        storage: Arc::new(sim.mount()),
        ..Default::default()
    };
    block_on(async {
        let log = EmbeddedLog::open(data, opts()).expect("open");
        log.create_topic(TopicSpec::new("deals", 2))
            .await
            .expect("create");
        log.close().await.expect("close");
    });
    // The state the failed creation left: the spec stored, the directory gone (durably).
    sim.remove_dir_all(&data.join("topics/deals"))
        .expect("remove");
    sim.sync_dir(&data.join("topics")).expect("sync");
    let acked = block_on(async {
        let log = EmbeddedLog::open(data, opts()).expect("reopen");
        let receipts = log
            .append(
                &["deals".to_string()],
                &[event("e1", "k1", 0), event("e2", "k2", 1)],
            )
            .await
            .expect("append");
        receipts.len()
    });
    sim.crash(CrashMode::KeepNone, 0);
    block_on(async {
        let log = EmbeddedLog::open(data, opts()).expect("open after the power cut");
        let mut stored = 0;
        for p in 0..2 {
            stored += read_all(&log, "deals", p, 0).await.expect("read").len();
        }
        assert_eq!(stored, acked, "every acknowledged event survives");
    });
}

/// The versions retention keeps for subjects it leaves without events (`subjects.heads`)
/// survive a power cut right after the retention pass: the file is written under a
/// temporary name and fsynced before the rename, so the name never points at contents
/// that did not reach the disk (those would fail their checksum and be ignored, and the
/// subject would start again from version 1, reusing versions readers already saw).
#[test]
fn versions_kept_by_retention_survive_a_power_cut() {
    use crmbus::{Event, ExtensionValue, EXPECTED_VERSION};
    use crmbus_embedded::storage::CrashMode;
    let sim = crmbus_embedded::SimStorage::new();
    let data = std::path::Path::new("/data");
    let opts = || EmbeddedOptions {
        retention_interval: None,
        segment_bytes: 4096,
        storage: Arc::new(sim.mount()),
        ..Default::default()
    };
    let deal = |id: String, deal: &str| {
        Event::new("deal.stage_changed", serde_json::json!({"deal_id": deal}))
            .id(id)
            .subject(deal)
            .source("urn:crm:deals")
    };
    let t = vec!["deals".to_string()];
    block_on(async {
        let log = EmbeddedLog::open(data, opts()).expect("open");
        let spec = TopicSpec::new("deals", 1).with_retention(Retention {
            max_age: None,
            max_bytes: Some(8192),
        });
        log.create_topic(spec).await.expect("create");
        // deal-old's two events first, then enough of deal-1 to roll many segments.
        for i in 0..2 {
            log.append(&t, &[deal(format!("o{i}"), "deal-old")])
                .await
                .expect("append");
        }
        for i in 0..120 {
            log.append(&t, &[deal(format!("d{i}"), "deal-1")])
                .await
                .expect("append");
        }
        let removed = log.enforce_retention().await.expect("retention");
        assert!(removed > 2, "retention removed {removed} events");
        let read = log
            .read_subject("deals", "deal-old", 1, 10)
            .await
            .expect("read subject");
        assert_eq!((read.version, read.events.len()), (2, 0));
        sim.crash(CrashMode::KeepNone, 0);
    });
    block_on(async {
        let log = EmbeddedLog::open(data, opts()).expect("open after the power cut");
        let read = log
            .read_subject("deals", "deal-old", 1, 10)
            .await
            .expect("read subject");
        assert_eq!(read.version, 2, "deal-old's version survives the power cut");
        let mut next = deal("o2".into(), "deal-old");
        next.extensions.insert(
            EXPECTED_VERSION.to_string(),
            ExtensionValue::Number(2.into()),
        );
        let r = log.append(&t, &[next]).await.expect("append");
        assert_eq!(r[0].version, Some(3));
    });
}
