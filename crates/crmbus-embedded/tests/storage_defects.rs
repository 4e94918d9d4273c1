//! Defects of the embedded log found by reading it (issue 11), each pinned by a test that
//! failed before its fix. These use the real file system; the power-loss cases live in
//! `power_loss.rs`, on the simulated disk.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{block_on, event, read_all, segment_files};
use crmbus::clock::ManualClock;
use crmbus::{EventLog, LogError, Retention, TopicSpec};
use crmbus_embedded::partition::{CorruptCounter, Partition, RawRecord};
use crmbus_embedded::{EmbeddedLog, EmbeddedOptions};

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
    let p = Arc::new(
        Partition::open(
            "t",
            0,
            &dir.path().join("p"),
            &opts,
            Arc::new(CorruptCounter::default()),
        )
        .expect("open partition"),
    );
    // One record written to the first segment, one more staged into it (still under the
    // roll size), then a third that rolls to a new segment.
    let a = p.append(&[(&json(0), 0)], &opts).expect("append 0");
    p.flush_staged(&opts).expect("flush 0");
    p.mark_durable(a.sync.next_offset);
    let body = json(1);
    p.append(&[(&body, 1)], &opts).expect("append 1 (staged)");
    p.append(&[(&json(2), 2)], &opts).expect("append 2 (rolls)");
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
