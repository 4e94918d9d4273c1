//! Helpers for tests that look at the embedded log's files, shared by crmbus-embedded's
//! crash, storage-defect and model tests and this crate's `tests/crash_kill.rs`: run a
//! future on a current-thread runtime, copy a data directory, list a partition's segments,
//! parse their frames, read a partition whole, build a small event with a fixed id.

use std::fs;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};

use crmbus::{Event, EventLog, StoredEvent};
use crmbus_embedded::record::{self, Parsed, RecordMeta};
use crmbus_embedded::EmbeddedLog;

/// Runs a future to completion on a fresh current-thread runtime (so everything the log
/// does for the call happens on this thread, where a local metrics recorder sees it).
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime")
        .block_on(f)
}

/// Copies a directory tree (regular files and directories only).
pub fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The segment files of a partition, sorted by base offset.
pub fn segment_files(dir: &Path, topic: &str, partition: u32) -> Vec<(u64, PathBuf)> {
    let pdir = dir.join("topics").join(topic).join(partition.to_string());
    let mut out: Vec<(u64, PathBuf)> = fs::read_dir(&pdir)
        .unwrap_or_else(|e| panic!("list {}: {e}", pdir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter_map(|p| {
            let base = p
                .file_name()?
                .to_str()?
                .strip_suffix(".log")?
                .parse::<u64>()
                .ok()?;
            Some((base, p))
        })
        .collect();
    out.sort();
    out
}

/// One frame found in a segment file.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    /// Byte position of the frame.
    pub pos: usize,
    /// Total frame length (header + body).
    pub len: usize,
    /// Its header fields.
    pub meta: RecordMeta,
}

/// Parses every frame of an intact segment file.
pub fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        match record::parse(&bytes[pos..]) {
            Parsed::Record(meta, _, len) => {
                out.push(Frame { pos, len, meta });
                pos += len;
            }
            other => panic!("segment is not intact at byte {pos}: {other:?}"),
        }
    }
    out
}

/// Reads a whole partition from `from` (until a read returns nothing or fails).
pub async fn read_all(
    log: &EmbeddedLog,
    topic: &str,
    partition: u32,
    from: u64,
) -> Result<Vec<StoredEvent>, crmbus::LogError> {
    let mut out: Vec<StoredEvent> = Vec::new();
    let mut next = from;
    loop {
        let chunk = log.read(topic, partition, next, 1000).await?;
        let Some(last) = chunk.last() else {
            return Ok(out);
        };
        next = last.offset + 1;
        out.extend(chunk);
    }
}

/// A small event with a fixed id.
pub fn event(id: &str, subject: &str, n: usize) -> Event {
    Event::new(
        "crmbus.crash.test",
        serde_json::json!({ "n": n, "note": "crash test payload" }),
    )
    .id(id)
    .source("crmbus-crash-test")
    .subject(subject)
}
