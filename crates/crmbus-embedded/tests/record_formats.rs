//! The record format's versions, across builds: a log whose records carry their subject's
//! version in eight bytes (the layout before varint versions) opens and reads the same;
//! a record of the varint layout, read as a build that knows only the eight-byte layout
//! reads it, does not decode (it is reported corrupt there, never misread); a log of
//! format 2, whose batches' records name no batch journal intent, opens and reads the same;
//! and a log marked as holding records of a layout newer than this build's is refused at
//! open, with a message that says so.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crmbus::clock::ManualClock;
use crmbus::{Event, EventLog, LogError, TopicSpec};
use crmbus_embedded::metadata::{Metadata, RECORD_FORMAT};
use crmbus_embedded::record::{
    self, Parsed, BODY_HEADER, FLAG_INTENT, FLAG_VERSIONED, FLAG_VERSION_VARINT, FRAME_HEADER,
};
use crmbus_embedded::{EmbeddedLog, EmbeddedOptions, OsStorage};
use serde_json::json;

fn opts(clock: &ManualClock) -> EmbeddedOptions {
    EmbeddedOptions {
        retention_interval: None,
        clock: Arc::new(clock.clone()),
        ..EmbeddedOptions::default()
    }
}

/// A log in `dir` with the topic `deals` of one partition.
async fn log_with_deals(dir: &Path, clock: &ManualClock) -> EmbeddedLog {
    let log = EmbeddedLog::open(dir, opts(clock)).expect("open");
    log.create_topic(TopicSpec::new("deals", 1))
        .await
        .expect("create");
    log
}

/// Event `n` of subject `deal-{n % 3}`.
fn deal(n: u64) -> Event {
    Event::new("deal.won", json!({"deal_id": format!("deal-{n}"), "n": n}))
        .id(format!("evt-{n}"))
        .subject(format!("deal-{}", n % 3))
        .source("urn:crm:deals")
}

/// Sets (or, with `None`, removes) the log's record format marker, as another build of
/// crmbus would have left it.
fn mark_record_format(dir: &Path, format: Option<u64>) {
    let table: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("format");
    let db = redb::Database::open(dir.join("meta.redb")).expect("open meta.redb");
    let tx = db.begin_write().expect("write");
    {
        let mut t = tx.open_table(table).expect("format table");
        match format {
            Some(f) => {
                t.insert("records", f).expect("insert");
            }
            None => {
                t.remove("records").expect("remove");
            }
        }
    }
    tx.commit().expect("commit");
}

fn record_format(dir: &Path) -> u64 {
    Metadata::open(&OsStorage, &dir.join("meta.redb"))
        .expect("meta")
        .record_format()
        .expect("format")
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let pdir = dir.join("topics/deals/0");
    let mut v: Vec<PathBuf> = std::fs::read_dir(pdir)
        .expect("partition dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

/// Every record of a segment file: its header fields and event JSON.
fn records(bytes: &[u8]) -> Vec<(record::RecordMeta, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Parsed::Record(meta, json, len) = record::parse(&bytes[at..]) {
        out.push((meta, json.to_vec()));
        at += len;
    }
    assert_eq!(at, bytes.len(), "a segment of whole records");
    out
}

/// A record as the previous layout wrote it: a version in eight bytes, under bit 1.
fn eight_byte_frame(meta: &record::RecordMeta, json: &[u8]) -> Vec<u8> {
    let mut flags = meta.flags & !FLAG_VERSION_VARINT;
    let mut body = Vec::new();
    body.extend_from_slice(&meta.offset.to_le_bytes());
    body.extend_from_slice(&meta.timestamp_us.to_le_bytes());
    body.extend_from_slice(&meta.dedupe_hash.to_le_bytes());
    if meta.version > 0 {
        flags |= FLAG_VERSIONED;
    }
    body.push(flags);
    if meta.version > 0 {
        body.extend_from_slice(&meta.version.to_le_bytes());
    }
    body.extend_from_slice(json);
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    frame.extend_from_slice(&body);
    frame
}

#[tokio::test]
async fn a_log_of_eight_byte_versions_opens_and_reads_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let written: Vec<Event> = (0..40).map(deal).collect();
    {
        let log = log_with_deals(dir.path(), &clock).await;
        for chunk in written.chunks(7) {
            log.append(&["deals".to_string()], chunk)
                .await
                .expect("append");
        }
        log.close().await.expect("close");
    }
    // Rewrite every record in the previous layout, as a build of that layout left it.
    let files = segment_files(dir.path());
    assert!(!files.is_empty());
    let mut versioned = 0;
    for file in &files {
        let bytes = std::fs::read(file).expect("read segment");
        let mut old = Vec::new();
        for (meta, json) in records(&bytes) {
            assert_eq!(
                meta.flags & FLAG_VERSION_VARINT != 0,
                meta.version > 0,
                "this build writes a version as a varint"
            );
            versioned += u64::from(meta.version > 0);
            old.extend(eight_byte_frame(&meta, &json));
        }
        assert!(old.len() > bytes.len(), "the old layout is the longer one");
        std::fs::write(file, &old).expect("write segment");
        let _ = std::fs::remove_file(file.with_extension("idx"));
    }
    assert_eq!(versioned, 40);
    // Its lengths and positions are those of the new layout: the journal's recovery points
    // go with it (a log of the old layout had its own).
    std::fs::remove_file(dir.path().join(crmbus_embedded::batch_journal::FILE_NAME))
        .expect("remove journal");
    // A build of that layout wrote no record format marker.
    assert_eq!(record_format(dir.path()), RECORD_FORMAT);
    mark_record_format(dir.path(), None);
    assert_eq!(record_format_unchecked(dir.path()), None);

    let log = EmbeddedLog::open(dir.path(), opts(&clock)).expect("reopen");
    let read = log.read("deals", 0, 0, 1_000).await.expect("read");
    let ids: Vec<&str> = read.iter().map(|s| s.event.id.as_str()).collect();
    let expected: Vec<String> = (0..40).map(|n| format!("evt-{n}")).collect();
    assert_eq!(ids, expected.iter().map(String::as_str).collect::<Vec<_>>());
    for (stored, event) in read.iter().zip(&written) {
        assert_eq!(&stored.event, event);
    }
    // The versions are read from the old records: each subject goes on from its last.
    for subject in 0..3u64 {
        let name = format!("deal-{subject}");
        let got = log
            .read_subject("deals", &name, 1, 100)
            .await
            .expect("read subject");
        let count = (0..40).filter(|n| n % 3 == subject).count() as u64;
        assert_eq!(got.version, count, "{name}");
        let versions: Vec<u64> = got.events.iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=count).collect::<Vec<u64>>(), "{name}");
    }
    let receipts = log
        .append(&["deals".to_string()], &[deal(40), deal(41)])
        .await
        .expect("append after reopen");
    assert_eq!(
        receipts.iter().map(|r| r.version).collect::<Vec<_>>(),
        vec![Some(14), Some(14)],
        "deal-1 and deal-2 had 13 events each"
    );
    assert_eq!(
        log.read("deals", 0, 0, 1_000).await.expect("read").len(),
        42
    );
    log.close().await.expect("close");
    drop(log);
    // The log now holds records of this build's layout, and says so.
    assert_eq!(record_format(dir.path()), RECORD_FORMAT);
}

#[tokio::test]
async fn a_log_of_a_newer_record_format_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    {
        let log = log_with_deals(dir.path(), &clock).await;
        log.append(&["deals".to_string()], &[deal(1)])
            .await
            .expect("append");
        log.close().await.expect("close");
    }
    let newer = RECORD_FORMAT + 1;
    mark_record_format(dir.path(), Some(newer));
    match EmbeddedLog::open(dir.path(), opts(&clock)) {
        Err(LogError::Unavailable(msg)) => {
            assert!(msg.contains("newer crmbus"), "{msg}");
            assert!(msg.contains(&format!("format {newer}")), "{msg}");
            assert!(
                msg.contains(&format!("formats up to {RECORD_FORMAT}")),
                "{msg}"
            );
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a log of a newer record format was opened"),
    }
    // Refused without a change: marked with this build's format again, it opens whole.
    assert_eq!(record_format_unchecked(dir.path()), Some(newer));
    mark_record_format(dir.path(), Some(RECORD_FORMAT));
    let log = EmbeddedLog::open(dir.path(), opts(&clock)).expect("reopen");
    assert_eq!(log.read("deals", 0, 0, 10).await.expect("read").len(), 1);
}

/// The marker as stored, read without the check [`Metadata::open`] makes.
fn record_format_unchecked(dir: &Path) -> Option<u64> {
    let table: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("format");
    let db = redb::Database::open(dir.join("meta.redb")).expect("open meta.redb");
    let tx = redb::ReadableDatabase::begin_read(&db).expect("read");
    let t = tx.open_table(table).expect("format table");
    let v = t.get("records").expect("get").map(|v| v.value());
    v
}

#[tokio::test]
async fn a_varint_record_read_by_the_eight_byte_layout_does_not_decode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let log = log_with_deals(dir.path(), &clock).await;
    // Versions of one varint byte, of two, and all of JSON's whitespace bytes (9, 10, 13, 32).
    let events: Vec<Event> = (0..300)
        .map(|n| deal(n).subject(if n < 200 { "deal-many" } else { "deal-few" }))
        .collect();
    for chunk in events.chunks(50) {
        log.append(&["deals".to_string()], chunk)
            .await
            .expect("append");
    }
    log.close().await.expect("close");
    let mut checked = 0;
    for file in segment_files(dir.path()) {
        let bytes = std::fs::read(&file).expect("read segment");
        let mut at = 0;
        while let Parsed::Record(meta, json, len) = record::parse(&bytes[at..]) {
            assert!(meta.version > 0);
            // What a build that knows only bit 1 takes for the event: the body after its
            // header, since bit 1 is not set.
            let body = &bytes[at + FRAME_HEADER..at + len];
            assert_eq!(body[24] & FLAG_VERSIONED, 0);
            let misread = &body[BODY_HEADER..];
            assert!(
                Event::from_stored_json_slice(misread).is_err(),
                "version {} read as part of the event",
                meta.version
            );
            assert!(Event::from_stored_json_slice(json).is_ok());
            at += len;
            checked += 1;
        }
    }
    assert_eq!(checked, 300);
}

/// The segment files of every partition of `topic`.
fn topic_segment_files(dir: &Path, topic: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for p in std::fs::read_dir(dir.join("topics").join(topic)).expect("topic dir") {
        let pdir = p.expect("entry").path();
        for f in std::fs::read_dir(&pdir).expect("partition dir") {
            let f = f.expect("entry").path();
            if f.extension().is_some_and(|x| x == "log") {
                v.push(f);
            }
        }
    }
    v.sort();
    v
}

/// The intent ids the records of `files` name, one entry per record (0: none).
fn intents_named(files: &[PathBuf]) -> Vec<u64> {
    files
        .iter()
        .flat_map(|f| records(&std::fs::read(f).expect("read segment")))
        .map(|(meta, _)| {
            assert_eq!(meta.flags & FLAG_INTENT != 0, meta.intent > 0);
            meta.intent
        })
        .collect()
}

#[tokio::test]
async fn a_log_of_format_2_opens_reads_the_same_and_its_new_batches_name_their_intent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let written: Vec<Event> = (0..12).map(deal).collect();
    {
        let log = EmbeddedLog::open(dir.path(), opts(&clock)).expect("open");
        log.create_topic(TopicSpec::new("spread", 4))
            .await
            .expect("create");
        log.append(&["spread".to_string()], &written)
            .await
            .expect("append");
        log.close().await.expect("close");
    }
    let files = topic_segment_files(dir.path(), "spread");
    // The first record of each part names the batch's intent, no other record does.
    let parts = |batch: &[Event]| {
        let mut p: Vec<u32> = batch.iter().map(|e| crmbus::partition_for(e, 4)).collect();
        p.sort_unstable();
        p.dedup();
        p.len()
    };
    assert!(parts(&written) > 1, "the batch spans partitions");
    let named = intents_named(&files);
    assert_eq!(named.len(), 12);
    let ids: Vec<u64> = named.iter().copied().filter(|i| *i > 0).collect();
    assert_eq!(ids.len(), parts(&written), "{named:?}");
    assert!(ids.iter().all(|i| *i == ids[0]), "{named:?}");
    // Rewrite every record as format 2 wrote it: without the intent.
    for file in &files {
        let bytes = std::fs::read(file).expect("read segment");
        let mut old = Vec::new();
        for (meta, json) in records(&bytes) {
            record::encode(&mut old, &record::RecordMeta { intent: 0, ..meta }, &json);
        }
        std::fs::write(file, &old).expect("write segment");
        let _ = std::fs::remove_file(file.with_extension("idx"));
    }
    // Its positions differ: the journal's recovery points go with it.
    std::fs::remove_file(dir.path().join(crmbus_embedded::batch_journal::FILE_NAME))
        .expect("remove journal");
    mark_record_format(dir.path(), Some(2));

    let log = EmbeddedLog::open(dir.path(), opts(&clock)).expect("reopen");
    let mut read = Vec::new();
    for p in 0..4 {
        read.extend(log.read("spread", p, 0, 100).await.expect("read"));
    }
    assert_eq!(read.len(), 12);
    for e in &written {
        assert!(read.iter().any(|s| &s.event == e), "{} read back", e.id);
    }
    assert!(intents_named(&topic_segment_files(dir.path(), "spread"))
        .iter()
        .all(|i| *i == 0));
    // A batch appended now names its intent.
    let later: Vec<Event> = (12..24).map(deal).collect();
    log.append(&["spread".to_string()], &later)
        .await
        .expect("append");
    log.close().await.expect("close");
    drop(log);
    let named = intents_named(&topic_segment_files(dir.path(), "spread"));
    assert_eq!(named.len(), 24);
    assert_eq!(named.iter().filter(|i| **i > 0).count(), parts(&later));
    assert_eq!(record_format(dir.path()), RECORD_FORMAT);
}

/// A journal removed by hand knows none of the intent ids the records name: the log opens
/// whole (nothing is cut for an intent it cannot see), and gives out no id a record
/// already names, so a later crash cannot take an old part for a new one.
#[tokio::test]
async fn after_the_journal_is_removed_no_intent_id_is_given_out_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    {
        let log = EmbeddedLog::open(dir.path(), opts(&clock)).expect("open");
        log.create_topic(TopicSpec::new("spread", 4))
            .await
            .expect("create");
        for k in 0..5u64 {
            let batch: Vec<Event> = (k * 12..k * 12 + 12).map(deal).collect();
            log.append(&["spread".to_string()], &batch)
                .await
                .expect("append");
        }
        log.close().await.expect("close");
    }
    let before = intents_named(&topic_segment_files(dir.path(), "spread"));
    let highest = before.iter().copied().max().unwrap_or(0);
    assert!(highest >= 5, "{before:?}");
    std::fs::remove_file(dir.path().join(crmbus_embedded::batch_journal::FILE_NAME))
        .expect("remove journal");
    let log = EmbeddedLog::open(dir.path(), opts(&clock)).expect("reopen");
    let mut stored = 0;
    for p in 0..4 {
        stored += log.read("spread", p, 0, 100).await.expect("read").len();
    }
    assert_eq!(stored, 60, "nothing is cut");
    let later: Vec<Event> = (60..72).map(deal).collect();
    log.append(&["spread".to_string()], &later)
        .await
        .expect("append");
    log.close().await.expect("close");
    let after = intents_named(&topic_segment_files(dir.path(), "spread"));
    let new: Vec<u64> = after
        .iter()
        .copied()
        .filter(|i| *i > 0 && !before.contains(i))
        .collect();
    assert!(!new.is_empty());
    assert!(new.iter().all(|i| *i > highest), "{new:?} after {highest}");
}
