//! The zeros written ahead of the active segment's records (so that the fdatasync of an
//! append does not change the file's size): they are there while the segment takes
//! appends; a sealed segment and a cleanly closed log keep none; a crash that leaves them
//! (in the active segment, or in a segment whose seal the power cut short) loses nothing,
//! counts no corruption, and the next append goes right after the last record.

use std::fs;
use std::path::Path;

use crmbus::{Event, EventLog, TopicSpec};
use crmbus_embedded::record::{self, Parsed};
use crmbus_embedded::{EmbeddedLog, EmbeddedOptions};
use crmbus_testkit::embedded::{block_on, copy_dir, event, frames, read_all, segment_files};

const TOPIC: &str = "prefill";

fn options() -> EmbeddedOptions {
    EmbeddedOptions {
        retention_interval: None,
        // Segments of 32 KiB: the log spans several, and earlier ones are sealed.
        segment_bytes: 32 * 1024,
        ..EmbeddedOptions::default()
    }
}

/// The bytes of the records at the start of `bytes` (up to the first frame that does not
/// parse), and whether everything after them is zeros.
fn records_then_zeros(bytes: &[u8]) -> (usize, bool) {
    let mut pos = 0;
    while let Parsed::Record(_, _, len) = record::parse(&bytes[pos..]) {
        pos += len;
    }
    (pos, bytes[pos..].iter().all(|b| *b == 0))
}

/// Appends `n` single-event batches numbered from `first` to `log`'s one-partition topic.
async fn append(log: &EmbeddedLog, first: usize, n: usize) -> Vec<Event> {
    let mut out = Vec::new();
    for i in first..first + n {
        let e = event(&format!("e{i}"), "deal-1", i);
        let receipts = log
            .append(&[TOPIC.to_string()], std::slice::from_ref(&e))
            .await
            .expect("append");
        assert_eq!(receipts[0].offset, i as u64);
        out.push(e);
    }
    out
}

/// Opens `dir` again and checks that exactly `events` are served, that nothing counts as
/// corrupt, that every segment file is exactly its records, and that the next append gets
/// the next offset.
fn check_reopened(dir: &Path, events: &[Event]) {
    let log = EmbeddedLog::open(dir, options()).expect("reopen");
    block_on(async {
        let read = read_all(&log, TOPIC, 0, 0).await.expect("read all");
        assert_eq!(read.len(), events.len(), "records served after reopening");
        for (i, (stored, original)) in read.iter().zip(events).enumerate() {
            assert_eq!(stored.offset, i as u64);
            assert_eq!(&stored.event, original, "event at offset {i}");
        }
        assert_eq!(
            log.corrupt_records(),
            0,
            "zeros written ahead are no damage"
        );
        for (_, path) in segment_files(dir, TOPIC, 0) {
            let bytes = fs::read(&path).expect("read segment");
            // Panics on anything but whole records.
            frames(&bytes);
        }
        let next = event("after", "deal-1", events.len());
        let receipts = log
            .append(&[TOPIC.to_string()], std::slice::from_ref(&next))
            .await
            .expect("append after reopening");
        assert_eq!(receipts[0].offset, events.len() as u64);
        log.close().await.expect("close");
    });
}

#[test]
fn the_active_segment_has_zeros_ahead_and_sealed_and_closed_segments_have_none() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = EmbeddedLog::open(dir.path(), options()).expect("open");
    let events = block_on(async {
        log.create_topic(TopicSpec::new(TOPIC, 1))
            .await
            .expect("create topic");
        append(&log, 0, 400).await
    });
    let segments = segment_files(dir.path(), TOPIC, 0);
    assert!(segments.len() >= 3, "the log should span several segments");
    let (_, active) = segments.last().expect("an active segment");
    let bytes = fs::read(active).expect("read the active segment");
    let (records, zeros) = records_then_zeros(&bytes);
    assert!(records > 0, "the active segment holds records");
    assert!(
        bytes.len() > records && zeros,
        "the active segment should end in zeros written ahead: {} bytes of records in a \
         file of {}",
        records,
        bytes.len()
    );
    for (_, sealed) in &segments[..segments.len() - 1] {
        let bytes = fs::read(sealed).expect("read a sealed segment");
        assert_eq!(
            frames(&bytes).iter().map(|f| f.len).sum::<usize>(),
            bytes.len(),
            "a sealed segment is exactly its records"
        );
    }
    block_on(async { log.close().await.expect("close") });
    drop(log);
    let bytes = fs::read(active).expect("read the closed segment");
    assert_eq!(
        frames(&bytes).iter().map(|f| f.len).sum::<usize>(),
        bytes.len(),
        "a clean close cuts the zeros"
    );
    check_reopened(dir.path(), &events);
}

#[test]
fn zeros_left_in_the_active_segment_by_a_crash_lose_nothing() {
    let root = tempfile::tempdir().expect("temp dir");
    let live = root.path().join("live");
    let log = EmbeddedLog::open(&live, options()).expect("open");
    let events = block_on(async {
        log.create_topic(TopicSpec::new(TOPIC, 1))
            .await
            .expect("create topic");
        append(&log, 0, 150).await
    });
    // A copy of the directory while the log is open and every append acknowledged: the
    // files as a power cut would leave them (everything acknowledged was fsynced).
    let crashed = root.path().join("crashed");
    copy_dir(&live, &crashed).expect("copy the data directory");
    block_on(async { log.close().await.expect("close") });
    drop(log);
    fs::remove_file(crashed.join("LOCK")).ok();
    let (_, active) = segment_files(&crashed, TOPIC, 0)
        .pop()
        .expect("an active segment");
    let (records, zeros) = records_then_zeros(&fs::read(&active).expect("read"));
    assert!(
        zeros && fs::metadata(&active).expect("stat").len() as usize > records,
        "the copy should hold zeros after the records"
    );
    check_reopened(&crashed, &events);
}

#[test]
fn a_segment_whose_seal_was_cut_short_keeps_every_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = EmbeddedLog::open(dir.path(), options()).expect("open");
    let events = block_on(async {
        log.create_topic(TopicSpec::new(TOPIC, 1))
            .await
            .expect("create topic");
        let events = append(&log, 0, 400).await;
        log.close().await.expect("close");
        events
    });
    drop(log);
    // The first sealed segment as a power cut during its seal leaves it: the zeros written
    // ahead still after its records, and no index file.
    let (_, sealed) = segment_files(dir.path(), TOPIC, 0)
        .into_iter()
        .next()
        .expect("a sealed segment");
    fs::remove_file(sealed.with_extension("idx")).expect("remove the index");
    let mut bytes = fs::read(&sealed).expect("read");
    bytes.extend(std::iter::repeat_n(0u8, 48 * 1024));
    fs::write(&sealed, &bytes).expect("write zeros after the records");
    check_reopened(dir.path(), &events);
}

/// The group-commit thread writes the next zeros between rounds, once fewer than half of
/// those written ahead are left: appends led by their own tasks (a multi-threaded
/// runtime) go on writing into zeros already there, and a copy of the files taken then
/// (as a power cut leaves them) serves every acknowledged event.
#[test]
fn the_group_commit_thread_writes_the_next_zeros_between_rounds() {
    let root = tempfile::tempdir().expect("temp dir");
    let live = root.path().join("live");
    // Segments larger than this test writes: one active segment, reserved 1 MiB ahead.
    let opts = || EmbeddedOptions {
        segment_bytes: 8 << 20,
        ..options()
    };
    let log = EmbeddedLog::open(&live, opts()).expect("open");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let events = runtime.block_on(async {
        log.create_topic(TopicSpec::new(TOPIC, 1))
            .await
            .expect("create topic");
        append(&log, 0, 1500).await
    });
    // The thread is woken after each round that finds fewer than half left, and writes
    // them as soon as it runs: wait for it to have done so since the last round.
    let (_, active) = segment_files(&live, TOPIC, 0)
        .pop()
        .expect("an active segment");
    let margin = || {
        let bytes = fs::read(&active).expect("read the active segment");
        let (records, zeros) = records_then_zeros(&bytes);
        assert!(
            records > 256 * 1024,
            "the records passed the first zeros ahead"
        );
        assert!(zeros, "only zeros after the records");
        bytes.len() - records
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while log.group_commit_stats().prefills_ahead == 0 || margin() < 128 * 1024 {
        assert!(
            std::time::Instant::now() < deadline,
            "the thread did not write zeros ahead: {:?}, {} bytes of zeros after the records",
            log.group_commit_stats(),
            margin()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(
        log.group_commit_stats().rounds_led > 0,
        "appends led rounds"
    );
    let crashed = root.path().join("crashed");
    copy_dir(&live, &crashed).expect("copy the data directory");
    runtime.block_on(async { log.close().await.expect("close") });
    drop(log);
    fs::remove_file(crashed.join("LOCK")).ok();
    check_reopened(&crashed, &events);
}
