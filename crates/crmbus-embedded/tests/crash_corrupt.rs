//! Crash test: a bit flips in a record in the middle of a segment (in its event JSON or in
//! its offset field). After reopening, that record is reported corrupt — by the read that
//! asks for it, by `EmbeddedLog::corrupt_records()` and by the metric
//! `crmbus_log_corrupt_records_total` — and never served as data; the records before and
//! after it are still served, and the log is not cut there.
//!
//! The damaged segment is either the active (last) one, which recovery scans on open, or a
//! sealed one in the middle of the partition, whose index file lets open trust it (damage
//! is then found by the first read over it) or whose index file is gone (open scans it).
//! A damaged record is counted once however often it is read; producer dedupe still knows
//! the records after it; and damage in a partition's first record does not stop the log
//! from opening.

use std::fs;
use std::path::Path;

use crmbus::{Event, EventLog, LogError, TopicSpec};
use crmbus_embedded::record::{BODY_HEADER, FRAME_HEADER};
use crmbus_embedded::{EmbeddedLog, EmbeddedOptions};
use crmbus_testkit::embedded::{block_on, copy_dir, event, frames, segment_files};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

const TOPIC: &str = "corrupt";
const METRIC: &str = "crmbus_log_corrupt_records_total";

#[derive(Debug, Clone, Copy)]
enum Flip {
    /// A bit in the middle of the event JSON.
    EventJson,
    /// A bit in the record's offset field (first byte of the body).
    OffsetField,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    /// The last segment, one big segment holding every record.
    Active,
    /// A sealed segment in the middle of the partition, with its index file.
    Sealed,
    /// A sealed segment in the middle of the partition whose index file was lost.
    SealedWithoutIndex,
}

fn options(place: Where) -> EmbeddedOptions {
    EmbeddedOptions {
        retention_interval: None,
        segment_bytes: match place {
            Where::Active => 64 * 1024 * 1024,
            Where::Sealed | Where::SealedWithoutIndex => 2 * 1024,
        },
        index_interval_bytes: 256,
        ..EmbeddedOptions::default()
    }
}

/// Writes `n` events in batches of 1–3 to a one-partition topic and closes the log.
fn write_log(dir: &Path, place: Where, n: usize) -> Vec<Event> {
    let log = EmbeddedLog::open(dir, options(place)).expect("open");
    let events: Vec<Event> = (0..n)
        .map(|i| event(&format!("e{i}"), "deal-7", i))
        .collect();
    block_on(async {
        log.create_topic(TopicSpec::new(TOPIC, 1))
            .await
            .expect("create topic");
        let mut i = 0;
        while i < n {
            let end = (i + 1 + i % 3).min(n);
            log.append(&[TOPIC.to_string()], &events[i..end])
                .await
                .expect("append");
            i = end;
        }
        log.close().await.expect("close");
    });
    drop(log);
    events
}

/// Flips one bit of the record in the middle of the chosen segment (or of the partition's
/// very first record when `first`); returns its offset.
fn damage(dir: &Path, place: Where, flip: Flip, first: bool) -> u64 {
    let segments = segment_files(dir, TOPIC, 0);
    let path = match place {
        Where::Active => {
            assert_eq!(segments.len(), 1, "one segment holds every record");
            segments[0].1.clone()
        }
        Where::Sealed | Where::SealedWithoutIndex => {
            assert!(segments.len() >= 4, "the log spans several segments");
            let path = segments[if first { 0 } else { segments.len() / 2 }]
                .1
                .clone();
            let idx = path.with_extension("idx");
            assert!(idx.exists(), "a sealed segment has an index file");
            if place == Where::SealedWithoutIndex {
                fs::remove_file(&idx).expect("remove index file");
            }
            path
        }
    };
    let mut bytes = fs::read(&path).expect("read segment");
    let all = frames(&bytes);
    assert!(all.len() >= 5, "the damaged segment holds several records");
    let target = all[if first { 0 } else { all.len() / 2 }];
    let body = target.pos + FRAME_HEADER;
    let at = match flip {
        Flip::EventJson => body + BODY_HEADER + (target.len - FRAME_HEADER - BODY_HEADER) / 2,
        Flip::OffsetField => body,
    };
    bytes[at] ^= 0x02;
    fs::write(&path, &bytes).expect("write damaged segment");
    target.meta.offset
}

/// The corrupt-records counter of the test topic since the last snapshot.
fn metric_delta(snapshotter: &Snapshotter) -> u64 {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == METRIC)
        .map(|(key, _, _, value)| {
            let labels: Vec<(String, String)> = key
                .key()
                .labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect();
            assert!(
                labels.contains(&("topic".into(), TOPIC.into()))
                    && labels.contains(&("partition".into(), "0".into())),
                "{METRIC} labels: {labels:?}"
            );
            match value {
                DebugValue::Counter(n) => n,
                other => panic!("{METRIC} is not a counter: {other:?}"),
            }
        })
        .sum()
}

fn assert_same(stored: &[crmbus::StoredEvent], events: &[Event], first: u64, what: &str) {
    assert_eq!(stored.len(), events.len(), "{what}: number of records");
    for (i, (s, e)) in stored.iter().zip(events).enumerate() {
        assert_eq!(s.offset, first + i as u64, "{what}: offsets");
        assert_eq!(&s.event, e, "{what}: event at offset {}", s.offset);
    }
}

fn run(place: Where, flip: Flip) {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("data");
    let n = 40;
    let events = write_log(&dir, place, n);
    let k = damage(&dir, place, flip, false);
    assert!(
        k > 0 && k + 1 < n as u64,
        "the damaged record is in the middle"
    );
    let k_us = k as usize;
    // Keep a copy to reopen later: detection must not depend on this open's memory.
    let again = root.path().join("again");
    copy_dir(&dir, &again).expect("copy data dir");

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let mut metric = 0;
    metrics::with_local_recorder(&recorder, || {
        let log = EmbeddedLog::open(&dir, options(place)).expect("reopen a damaged log");
        metric += metric_delta(&snapshotter);
        if place != Where::Sealed {
            // The recovery scan of the segment found it.
            assert_eq!(log.corrupt_records(), 1, "found on open");
            assert_eq!(metric, 1, "{METRIC} after open");
        }
        block_on(async {
            let info = log.describe_topic(TOPIC).await.expect("describe");
            assert_eq!(
                info.partition_info[0].next_offset, n as u64,
                "damage in the middle does not cut the log"
            );

            // From the start: exactly the records before the damage, then the read stops.
            let head = log.read(TOPIC, 0, 0, 1000).await.expect("read from 0");
            assert_same(&head, &events[..k_us], 0, "read from 0");
            let before = log.read(TOPIC, 0, k - 1, 1000).await.expect("read k-1");
            assert_same(&before, &events[k_us - 1..k_us], k - 1, "read from k-1");

            // The damaged record itself: an error naming it.
            for _ in 0..2 {
                match log.read(TOPIC, 0, k, 1000).await {
                    Err(LogError::Corrupt {
                        topic,
                        partition,
                        offset,
                        ..
                    }) => {
                        assert_eq!((topic.as_str(), partition, offset), (TOPIC, 0, k));
                    }
                    other => panic!("reading the damaged offset {k} gave {other:?}"),
                }
            }

            // After it, everything is served.
            let tail = log.read(TOPIC, 0, k + 1, 1000).await.expect("read k+1");
            assert_same(&tail, &events[k_us + 1..], k + 1, "read from k+1");

            // Reading again from the start still stops before it.
            let head = log.read(TOPIC, 0, 0, 1000).await.expect("read from 0");
            assert_eq!(head.len(), k_us, "second read from 0");

            // Producer dedupe still knows the records on both sides of the damage (its
            // window is rebuilt from the records on open): retries are absorbed.
            for i in [k_us - 1, k_us + 1, n - 1] {
                let r = log
                    .append(&[TOPIC.to_string()], std::slice::from_ref(&events[i]))
                    .await
                    .expect("retry append");
                assert!(
                    r[0].duplicate && r[0].offset == i as u64,
                    "a retry of the event at offset {i} must be absorbed, got {:?}",
                    r[0]
                );
            }

            // The log takes appends after the damage as usual.
            let extra = event("extra", "deal-7", n);
            let r = log
                .append(&[TOPIC.to_string()], std::slice::from_ref(&extra))
                .await
                .expect("append");
            assert_eq!(r[0].offset, n as u64);
            let tail = log.read(TOPIC, 0, k + 1, 1000).await.expect("read k+1");
            assert_eq!(tail.len(), n - k_us, "tail with the new event");
            assert_eq!(tail.last().map(|s| &s.event), Some(&extra));
            log.close().await.expect("close");
        });
        metric += metric_delta(&snapshotter);
        assert_eq!(
            log.corrupt_records(),
            1,
            "one damaged record is counted once, however often it is read"
        );
        assert_eq!(metric, 1, "{METRIC} after the reads");
    });

    // A later open of the same damage reports it again, and still serves around it.
    let log = EmbeddedLog::open(&again, options(place)).expect("reopen the copy");
    block_on(async {
        let head = log.read(TOPIC, 0, 0, 1000).await.expect("read from 0");
        assert_same(&head, &events[..k_us], 0, "copy: read from 0");
        assert!(
            matches!(log.read(TOPIC, 0, k, 1).await, Err(LogError::Corrupt { offset, .. }) if offset == k),
            "copy: the damaged record is reported"
        );
        let tail = log.read(TOPIC, 0, k + 1, 1000).await.expect("read k+1");
        assert_same(&tail, &events[k_us + 1..], k + 1, "copy: read from k+1");
    });
    assert_eq!(log.corrupt_records(), 1, "copy: counted once");
}

/// The damaged record is the partition's first: nothing precedes it, and it is the first
/// record the dedupe window is rebuilt from on open.
fn run_first(place: Where) {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("data");
    let n = 40;
    let events = write_log(&dir, place, n);
    assert_eq!(damage(&dir, place, Flip::EventJson, true), 0);
    let log = EmbeddedLog::open(&dir, options(place))
        .unwrap_or_else(|e| panic!("one damaged record must not keep the log closed: {e}"));
    block_on(async {
        let info = log.describe_topic(TOPIC).await.expect("describe");
        assert_eq!(info.partition_info[0].next_offset, n as u64);
        assert!(
            matches!(
                log.read(TOPIC, 0, 0, 1000).await,
                Err(LogError::Corrupt { offset: 0, .. })
            ),
            "reading offset 0 reports it corrupt"
        );
        let tail = log.read(TOPIC, 0, 1, 1000).await.expect("read from 1");
        assert_same(&tail, &events[1..], 1, "read from 1");
        let r = log
            .append(&[TOPIC.to_string()], std::slice::from_ref(&events[1]))
            .await
            .expect("retry append");
        assert!(
            r[0].duplicate && r[0].offset == 1,
            "retry absorbed: {:?}",
            r[0]
        );
        log.close().await.expect("close");
    });
    assert_eq!(log.corrupt_records(), 1);
}

#[test]
fn bit_flip_in_first_record_of_active_segment() {
    run_first(Where::Active);
}

#[test]
fn bit_flip_in_first_record_of_sealed_segment() {
    run_first(Where::Sealed);
}

#[test]
fn event_json_bit_flip_in_active_segment() {
    run(Where::Active, Flip::EventJson);
}

#[test]
fn offset_field_bit_flip_in_active_segment() {
    run(Where::Active, Flip::OffsetField);
}

#[test]
fn event_json_bit_flip_in_sealed_segment() {
    run(Where::Sealed, Flip::EventJson);
}

#[test]
fn offset_field_bit_flip_in_sealed_segment() {
    run(Where::Sealed, Flip::OffsetField);
}

#[test]
fn event_json_bit_flip_in_sealed_segment_without_index() {
    run(Where::SealedWithoutIndex, Flip::EventJson);
}

#[test]
fn offset_field_bit_flip_in_sealed_segment_without_index() {
    run(Where::SealedWithoutIndex, Flip::OffsetField);
}

/// A segment sealed whole, whose next segment a crash left empty (created by the roll,
/// never written), is the active one again after open. It was fsynced whole before its
/// index file was written, so damage in it is counted as damage, not taken for a torn
/// tail, even when the journal holds no recovery point for it (as when the crash took the
/// journal write that carried it).
#[tokio::test]
async fn a_sealed_segment_active_again_keeps_its_records_after_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nth = |n: usize| event(&format!("e{n}"), "deal-7", n);
    let json_len = nth(0).to_json_vec().len() as u64;
    let opts = EmbeddedOptions {
        // A segment rolls once it holds three records.
        segment_bytes: (json_len + 34) * 5 / 2,
        retention_interval: None,
        ..EmbeddedOptions::default()
    };
    {
        let log = EmbeddedLog::open(dir.path(), opts.clone()).expect("open");
        log.create_topic(TopicSpec::new(TOPIC, 1))
            .await
            .expect("create");
        for n in 0..4 {
            log.append(&[TOPIC.to_string()], &[nth(n)])
                .await
                .expect("append");
        }
    }
    let pdir = dir.path().join("topics").join(TOPIC).join("0");
    let (sealed, next) = (
        pdir.join("00000000000000000000.log"),
        pdir.join("00000000000000000003.log"),
    );
    assert!(
        pdir.join("00000000000000000000.idx").exists(),
        "sealed whole"
    );
    // The crash: the next segment never got its record, and the journal write that
    // carried the partition's recovery point was lost.
    fs::write(&next, b"").expect("empty the next segment");
    fs::remove_file(dir.path().join(crmbus_embedded::batch_journal::FILE_NAME))
        .expect("remove journal");
    let mut bytes = fs::read(&sealed).expect("read");
    let second = &frames(&bytes)[1];
    bytes[second.pos + second.len / 2] ^= 0x10;
    fs::write(&sealed, &bytes).expect("write");

    let log = EmbeddedLog::open(dir.path(), opts).expect("reopen");
    let info = log.describe_topic(TOPIC).await.expect("describe");
    assert_eq!(info.partition_info[0].next_offset, 3, "no record is cut");
    let after = log.read(TOPIC, 0, 2, 10).await.expect("read");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].event.id, "e2");
    assert!(matches!(
        log.read(TOPIC, 0, 1, 10).await,
        Err(LogError::Corrupt { .. })
    ));
}
