//! Crash test: torn writes. A log is written and closed, then the last segment file is cut
//! short inside its last record (at every byte), or inside a multi-event last batch, as a
//! crash in the middle of a write leaves it. Reopening must succeed, serve every earlier
//! record unchanged, drop the torn record (or the whole torn batch), and give the next
//! append the offset right after the last intact batch.

use std::fs::{self, OpenOptions};
use std::path::Path;

use crmbus::{Event, EventLog, TopicSpec};
use crmbus_embedded::record::FLAG_BATCH_END;
use crmbus_embedded::{EmbeddedLog, EmbeddedOptions};
use crmbus_testkit::embedded::{block_on, copy_dir, event, frames, read_all, segment_files, Frame};

const TOPIC: &str = "torn";

fn options() -> EmbeddedOptions {
    EmbeddedOptions {
        retention_interval: None,
        // Small segments: the log spans several, and earlier ones are sealed.
        segment_bytes: 2 * 1024,
        index_interval_bytes: 512,
        ..EmbeddedOptions::default()
    }
}

/// Writes batches of the given sizes to a one-partition topic and closes the log.
/// Returns the events in offset order.
fn write_log(dir: &Path, batches: &[usize]) -> Vec<Event> {
    let log = EmbeddedLog::open(dir, options()).expect("open");
    let mut all = Vec::new();
    block_on(async {
        log.create_topic(TopicSpec::new(TOPIC, 1))
            .await
            .expect("create topic");
        for (b, &size) in batches.iter().enumerate() {
            let events: Vec<Event> = (0..size)
                .map(|i| event(&format!("b{b}-e{i}"), "deal-1", all.len() + i))
                .collect();
            let receipts = log
                .append(&[TOPIC.to_string()], &events)
                .await
                .expect("append");
            for (k, r) in receipts.iter().enumerate() {
                assert_eq!(r.offset, (all.len() + k) as u64);
            }
            all.extend(events);
        }
        log.close().await.expect("close");
    });
    drop(log);
    assert!(
        segment_files(dir, TOPIC, 0).len() >= 3,
        "the test log should span several segments"
    );
    all
}

/// The last segment file and its frames.
fn last_segment(dir: &Path) -> (std::path::PathBuf, Vec<Frame>) {
    let (_, path) = segment_files(dir, TOPIC, 0).pop().expect("a segment file");
    let bytes = fs::read(&path).expect("read segment");
    (path, frames(&bytes))
}

/// Copies `original` to `case`, cuts the last segment to `len` bytes, reopens, and checks
/// that exactly `events[..kept]` are served and the next append gets offset `kept`.
fn check_cut(original: &Path, case: &Path, len: u64, events: &[Event], kept: usize) {
    if case.exists() {
        fs::remove_dir_all(case).expect("remove previous case");
    }
    copy_dir(original, case).expect("copy data dir");
    let (_, path) = segment_files(case, TOPIC, 0).pop().expect("a segment file");
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(len))
        .expect("truncate segment");

    let log = EmbeddedLog::open(case, options())
        .unwrap_or_else(|e| panic!("cut at {len}: open failed: {e}"));
    block_on(async {
        let info = log.describe_topic(TOPIC).await.expect("describe");
        assert_eq!(
            info.partition_info[0].next_offset, kept as u64,
            "cut at {len}: next offset"
        );
        let read = read_all(&log, TOPIC, 0, 0)
            .await
            .unwrap_or_else(|e| panic!("cut at {len}: read failed: {e}"));
        assert_eq!(read.len(), kept, "cut at {len}: records served");
        for (i, (stored, original)) in read.iter().zip(events).enumerate() {
            assert_eq!(stored.offset, i as u64, "cut at {len}");
            assert_eq!(&stored.event, original, "cut at {len}: event at offset {i}");
        }
        assert!(
            log.read(TOPIC, 0, kept as u64, 10)
                .await
                .expect("read past the end")
                .is_empty(),
            "cut at {len}: the torn record must not be served"
        );
        assert_eq!(
            log.corrupt_records(),
            0,
            "cut at {len}: a torn tail is not corruption"
        );

        // The producer retries the lost event: it is appended anew, right after the last
        // intact record (the torn copy must not count for dedupe either).
        let retry = events[kept].clone();
        let receipts = log
            .append(&[TOPIC.to_string()], std::slice::from_ref(&retry))
            .await
            .expect("append after recovery");
        assert_eq!(receipts[0].offset, kept as u64, "cut at {len}: next offset");
        assert!(!receipts[0].duplicate, "cut at {len}: lost event deduped");
        let back = log.read(TOPIC, 0, kept as u64, 10).await.expect("read");
        assert_eq!(back.len(), 1, "cut at {len}");
        assert_eq!(back[0].event, retry, "cut at {len}");
        log.close().await.expect("close");
    });
    drop(log);
}

#[test]
fn torn_last_record_is_dropped_at_every_byte() {
    let root = tempfile::tempdir().expect("temp dir");
    let original = root.path().join("original");
    // Several multi-event batches, then a single-event last batch.
    let mut batches: Vec<usize> = (0..14).map(|b| 1 + b % 4).collect();
    batches.push(1);
    let events = write_log(&original, &batches);
    let n = events.len();

    let (_, frames) = last_segment(&original);
    let last = *frames.last().expect("a record");
    assert_eq!(last.meta.offset, n as u64 - 1);
    assert_ne!(last.meta.flags & FLAG_BATCH_END, 0);
    let case = root.path().join("case");
    for cut in last.pos..last.pos + last.len {
        check_cut(&original, &case, cut as u64, &events, n - 1);
    }
    // The intact file keeps everything (the harness itself is sound).
    let whole = (last.pos + last.len) as u64;
    let mut all = events.clone();
    all.push(event("extra", "deal-1", n));
    check_cut(&original, &case, whole, &all, n);
}

#[test]
fn torn_multi_event_last_batch_is_dropped_whole() {
    let root = tempfile::tempdir().expect("temp dir");
    let original = root.path().join("original");
    let mut batches: Vec<usize> = (0..14).map(|b| 1 + b % 4).collect();
    let last_batch = 5;
    batches.push(last_batch);
    let events = write_log(&original, &batches);
    let n = events.len();
    let batch_start = n - last_batch;

    let (_, frames) = last_segment(&original);
    let batch: Vec<Frame> = frames
        .iter()
        .filter(|f| f.meta.offset >= batch_start as u64)
        .copied()
        .collect();
    assert_eq!(
        batch.len(),
        last_batch,
        "the last batch is in the last segment"
    );
    assert_eq!(
        batch[last_batch - 1].meta.flags & FLAG_BATCH_END,
        FLAG_BATCH_END
    );
    let case = root.path().join("case");
    for f in &batch {
        // At the frame's start (the records before it are whole, but the batch is not),
        // inside its header, in the middle of its body, and one byte short of its end.
        for cut in [f.pos, f.pos + 5, f.pos + f.len / 2, f.pos + f.len - 1] {
            check_cut(&original, &case, cut as u64, &events, batch_start);
        }
    }
}
