//! Reading a partition: the walk over its segments' records that serves reads, dedupe
//! checks and recovery, and how it meets damaged records (never served, counted once).

use crmbus::sync::LockExt;
use std::sync::atomic::Ordering;

use std::borrow::Cow;
use std::sync::Arc;

use bytes::BytesMut;

use crmbus::{Event, LogError, StoredEvent, SubjectEvent, SubjectRead};

use super::{micros_to_time, Partition, RawRecord, Staged};
use crate::record::{self, Parsed, RecordMeta};
use crate::segment::Segment;
use crate::subjects::SubjectEntry;

/// The `subject` of a stored event's JSON, read without decoding the rest (rebuilding the
/// subject index on open). `None` for JSON that is not an event object.
pub(super) fn subject_of(json: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct SubjectOnly<'a> {
        #[serde(borrow, default)]
        subject: Option<Cow<'a, str>>,
    }
    serde_json::from_slice::<SubjectOnly<'_>>(json)
        .ok()?
        .subject
        .map(Cow::into_owned)
}

const READ_CHUNK: usize = 256 * 1024;
/// Bytes a read of one subject's event asks for first (most frames fit).
const FIRST_READ: usize = 4096;

/// Bytes of the blocks [`Partition::read`] copies the records' JSON into, several records
/// to a block: one allocation for a block instead of one for each record (and the events'
/// `data` text is a slice of it too, not another copy).
///
/// A record's block lives as long as any event of the block is held, so a block held by
/// one event where the rest were delivered wastes the rest of it. Small blocks bound
/// that: an engine holding `read_ahead` events of a partition holds at most that many
/// blocks, at most `BLOCK_BYTES` more each than its own records, however the events it
/// holds are spread over the log (a key stuck in retries among keys that flow, say). A
/// record of more than half a block gets a block of its own size. The read buffer itself
/// is never shared: it is `READ_CHUNK` long.
const BLOCK_BYTES: usize = 8 * 1024;

impl Partition {
    /// Reads up to `max` durable records from `from`, decoding each event. A record that
    /// passed its checksum but does not decode is treated like a damaged one: the read
    /// stops before it, or fails with [`LogError::Corrupt`] naming its offset when it is
    /// the first one asked for (so a consumer can deliver up to it and then pass it).
    pub fn read(&self, from: u64, max: usize) -> Result<Vec<StoredEvent>, LogError> {
        let mut out = Vec::new();
        let limit = self.durable_next();
        let mut block = BytesMut::new();
        self.scan(from, limit, false, |meta, json, _| {
            // A copy of the record's JSON in the current block (a new one when it has no
            // room left): shared, not copied again, by the event's `data` text and the
            // stored JSON handed on.
            if json.len() > BLOCK_BYTES / 2 {
                // A large record gets a block of its own size: sharing would leave most
                // of a block unused.
                block = BytesMut::with_capacity(json.len());
            } else if block.capacity() < json.len() {
                block = BytesMut::with_capacity(BLOCK_BYTES);
            }
            block.extend_from_slice(json);
            let json = block.split().freeze();
            let event = match Event::from_stored_json_bytes(&json) {
                Ok(event) => event,
                Err(_) if !out.is_empty() => return Ok(false),
                Err(e) => {
                    return Err(self.corrupt_error(
                        meta.offset,
                        &format!("the record does not decode as an event: {e}"),
                    ))
                }
            };
            out.push(StoredEvent {
                partition: self.id,
                offset: meta.offset,
                timestamp: micros_to_time(meta.timestamp_us),
                event,
                stored_json: Some(json),
            });
            Ok(out.len() < max)
        })?;
        Ok(out)
    }

    /// Up to `max` durable events of `subject` from version `from_version` on, and the
    /// subject's durable version, served from the subject index: each event is read at
    /// the position the index holds, its checksum verified. Damage is met as in
    /// [`Partition::read`]: the read stops before a damaged record, or fails with
    /// [`LogError::Corrupt`] if it is the first one asked for.
    pub fn read_subject(
        &self,
        subject: &str,
        from_version: u64,
        max: usize,
    ) -> Result<SubjectRead, LogError> {
        let limit = self.durable_next();
        // The segments first: retention removes a segment before it forgets its entries,
        // so the entries taken below lie in these segments (a page is never made of
        // entries of removed segments alone, which would hide the newer ones).
        let segments = self.segments();
        let kept_from = segments.first().map_or(0, |s| s.base);
        let (version, entries) = {
            let index = self.subjects.locked();
            (
                index.durable_version(subject, limit),
                index.entries(subject, from_version.max(1), kept_from, limit, max),
            )
        };
        let mut events = Vec::with_capacity(entries.len());
        let mut buf = Vec::new();
        for entry in entries {
            let i = segments.partition_point(|s| s.base <= entry.offset);
            // Removed by retention since the index was read.
            let Some(seg) = i.checked_sub(1).and_then(|i| segments.get(i)) else {
                continue;
            };
            match self.event_at(seg, entry, &mut buf)? {
                Ok(stored) => events.push(SubjectEvent {
                    version: entry.version,
                    stored,
                }),
                Err(detail) => {
                    self.count_damage(seg, entry.position);
                    if events.is_empty() {
                        return Err(self.corrupt_error(entry.offset, &detail));
                    }
                    break;
                }
            }
        }
        Ok(SubjectRead { version, events })
    }

    /// The event of the record the index places at `entry`: `Ok(Err(why))` when the
    /// record there is damaged or not the one expected.
    fn event_at(
        &self,
        seg: &Arc<Segment>,
        entry: SubjectEntry,
        buf: &mut Vec<u8>,
    ) -> Result<Result<StoredEvent, String>, LogError> {
        let file = seg.file().map_err(LogError::Io)?;
        // One read covers most frames whole; a longer one is read on after it.
        let avail = seg.len().saturating_sub(entry.position);
        let first = usize::try_from(avail).map_or(FIRST_READ, |a| a.min(FIRST_READ));
        if first < record::FRAME_HEADER {
            return Ok(Err("record runs past the end of its segment".into()));
        }
        buf.resize(first, 0);
        file.read_exact_at(buf, entry.position)
            .map_err(LogError::Io)?;
        let body_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let total = record::FRAME_HEADER + body_len;
        if !(record::BODY_HEADER..=record::MAX_BODY).contains(&body_len) || total as u64 > avail {
            return Ok(Err("record length out of range".into()));
        }
        if total > first {
            buf.resize(total, 0);
            file.read_exact_at(&mut buf[first..], entry.position + first as u64)
                .map_err(LogError::Io)?;
        }
        let (meta, json) = match record::parse(&buf[..total]) {
            Parsed::Record(meta, json, _) => (meta, json),
            Parsed::Invalid(why) => return Ok(Err(why.into())),
            Parsed::Incomplete(_) => return Ok(Err("record cut short".into())),
        };
        if meta.offset != entry.offset || meta.version != entry.version {
            return Ok(Err(format!(
                "the subject index places offset {} version {} where offset {} version {} lies",
                entry.offset, entry.version, meta.offset, meta.version
            )));
        }
        Ok(match Event::from_stored_json_slice(json) {
            Ok(event) => Ok(StoredEvent {
                partition: self.id,
                offset: meta.offset,
                timestamp: micros_to_time(meta.timestamp_us),
                event,
                stored_json: None,
            }),
            Err(e) => Err(format!("the record does not decode as an event: {e}")),
        })
    }

    /// The raw event JSON at `offset`, durable or not, staged or written (for dedupe checks
    /// under the append lock).
    pub fn read_raw(&self, offset: u64) -> Result<RawRecord, LogError> {
        {
            let w = self.writer.locked();
            for item in &w.staged {
                let Staged::Write { frames, lens, .. } = item else {
                    continue;
                };
                let mut pos = 0usize;
                for (meta, len) in lens {
                    if meta.offset == offset {
                        let end = pos + *len as usize;
                        return match frames.get(pos..end).map(record::parse) {
                            Some(Parsed::Record(_, json, _)) => Ok(RawRecord::Json(json.to_vec())),
                            _ => Ok(RawRecord::Missing),
                        };
                    }
                    pos += *len as usize;
                }
            }
        }
        // Not the last segment's end: right after a roll that is the new segment's base,
        // while the old segment's last records are still being written.
        let written = self.written_next.load(Ordering::Acquire);
        if offset >= written {
            return Ok(RawRecord::InFlight);
        }
        let mut found = RawRecord::Missing;
        self.scan(offset, written, false, |meta, json, _| {
            if meta.offset == offset {
                found = RawRecord::Json(json.to_vec());
            }
            Ok(false)
        })?;
        Ok(found)
    }

    /// The first durable offset whose timestamp is at or after `time_us`.
    pub fn offset_for_time(&self, time_us: i64) -> Result<u64, LogError> {
        let limit = self.durable_next();
        let segments = self.segments();
        let Some(seg) = segments
            .iter()
            .find(|s| !s.is_empty() && s.max_timestamp_us() >= time_us)
        else {
            return Ok(limit);
        };
        let (start, _) = seg.seek_time(time_us);
        let mut found = limit;
        self.scan(start, limit, false, |meta, _, _| {
            if meta.timestamp_us >= time_us {
                found = meta.offset;
                return Ok(false);
            }
            Ok(true)
        })?;
        Ok(found)
    }

    /// Every record header with a timestamp at or after `time_us` (for rebuilding the
    /// dedupe index on open). Damaged records are skipped: the records after them still
    /// count, and damage does not keep the log from opening.
    pub fn headers_since(&self, time_us: i64) -> Result<Vec<RecordMeta>, LogError> {
        let mut out = Vec::new();
        self.scan_since(time_us, |meta, _| out.push(*meta))?;
        Ok(out)
    }

    /// The (source, id) of every durable record appended at or after `time_us` whose
    /// dedupe digest is in `hashes`. Damaged records and events that do not decode are
    /// skipped (recovery must not stop at them).
    pub fn ids_since(
        &self,
        time_us: i64,
        hashes: &std::collections::HashSet<u64>,
    ) -> Result<Vec<(String, String)>, LogError> {
        let mut out = Vec::new();
        self.scan_since(time_us, |meta, json| {
            if hashes.contains(&meta.dedupe_hash) {
                if let Ok(e) = Event::from_stored_json_slice(json) {
                    out.push((e.source, e.id));
                }
            }
        })?;
        Ok(out)
    }

    /// The first offset and intent id of every part of an append that spans partitions
    /// (records of [`crate::record::FLAG_INTENT`]) among the durable records from offset
    /// `from` on, skipping damaged records: for recovery on open.
    pub fn intents_from(&self, from: u64) -> Result<Vec<(u64, u64)>, LogError> {
        let mut out = Vec::new();
        self.scan(from, self.durable_next(), true, |meta, _, _| {
            if meta.intent > 0 {
                out.push((meta.offset, meta.intent));
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// Calls `f` with every durable record whose timestamp is at or after `time_us`,
    /// skipping damaged records.
    fn scan_since<F>(&self, time_us: i64, mut f: F) -> Result<(), LogError>
    where
        F: FnMut(&RecordMeta, &[u8]),
    {
        let segments = self.segments();
        let Some(seg) = segments
            .iter()
            .find(|s| !s.is_empty() && s.max_timestamp_us() >= time_us)
        else {
            return Ok(());
        };
        let (start, _) = seg.seek_time(time_us);
        self.scan(start, self.durable_next(), true, |meta, json, _| {
            if meta.timestamp_us >= time_us {
                f(meta, json);
            }
            Ok(true)
        })
    }

    fn corrupt_error(&self, offset: u64, detail: &str) -> LogError {
        LogError::Corrupt {
            topic: self.topic.clone(),
            partition: self.id,
            offset,
            detail: detail.to_string(),
        }
    }

    /// Walks valid records with offsets in `[from, limit)` in order, calling `f` for each
    /// until it returns `Ok(false)`. Damaged records are never passed to `f`: if damage is
    /// met before any record was passed, and `from` falls inside it, the walk fails with
    /// [`LogError::Corrupt`]; if records were already passed, the walk stops before it.
    /// With `skip_damage`, the walk instead goes on after damage. `f` also gets the
    /// record's byte position in its segment.
    pub(super) fn scan<F>(
        &self,
        from: u64,
        limit: u64,
        skip_damage: bool,
        mut f: F,
    ) -> Result<(), LogError>
    where
        F: FnMut(&RecordMeta, &[u8], u64) -> Result<bool, LogError>,
    {
        let segments = self.segments();
        let from = from.max(segments.first().map(|s| s.base).unwrap_or(0));
        if from >= limit {
            return Ok(());
        }
        let start = segments
            .partition_point(|s| s.base <= from)
            .saturating_sub(1);
        let mut passed = 0usize;
        let mut buf: Vec<u8> = Vec::new();
        for seg in &segments[start..] {
            if seg.base >= limit {
                break;
            }
            let (mut expected, mut pos) = if seg.base <= from {
                seg.seek_offset(from)
            } else {
                (seg.base, 0)
            };
            let end = seg.len();
            let mut buf_start = pos;
            buf.clear();
            loop {
                if expected >= limit || pos >= end {
                    break;
                }
                let rel = ((pos - buf_start) as usize).min(buf.len());
                let detail = match record::parse(&buf[rel..]) {
                    Parsed::Record(meta, json, len) if meta.offset == expected => {
                        if meta.offset >= from {
                            if !f(&meta, json, pos)? {
                                return Ok(());
                            }
                            passed += 1;
                        }
                        pos += len as u64;
                        expected += 1;
                        continue;
                    }
                    Parsed::Incomplete(needed) if pos + ((buf.len() - rel) as u64) < end => {
                        let want = needed.unwrap_or(0).max(READ_CHUNK) as u64;
                        buf.resize(want.min(end - pos) as usize, 0);
                        seg.file()
                            .and_then(|f| f.read_exact_at(&mut buf, pos))
                            .map_err(LogError::Io)?;
                        buf_start = pos;
                        continue;
                    }
                    Parsed::Incomplete(_) => "record runs past the end of its segment",
                    Parsed::Invalid(why) => why,
                    Parsed::Record(..) => "record holds an unexpected offset",
                };
                if skip_damage {
                    self.count_damage(seg, pos);
                    match seg.find_resume(pos, expected).map_err(LogError::Io)? {
                        Some(r) => {
                            expected = r.first + r.count;
                            pos = r.resume_position;
                            buf.clear();
                            buf_start = pos;
                            continue;
                        }
                        // Nothing valid follows in this segment: go on with the next one.
                        None => break,
                    }
                }
                match self.damage(seg, pos, expected, from, passed, detail)? {
                    Some((next_expected, next_pos)) => {
                        expected = next_expected;
                        pos = next_pos;
                        buf.clear();
                        buf_start = pos;
                    }
                    None => return Ok(()),
                }
            }
        }
        Ok(())
    }

    /// Handles damage at `pos` (where offset `expected` should start). Returns where to
    /// continue (next offset, position) when `from` lies after the damaged offsets,
    /// `Ok(None)` to stop the walk cleanly when records were already passed, or the
    /// corrupt-record error.
    fn damage(
        &self,
        seg: &Segment,
        pos: u64,
        expected: u64,
        from: u64,
        passed: usize,
        detail: &str,
    ) -> Result<Option<(u64, u64)>, LogError> {
        self.count_damage(seg, pos);
        if passed > 0 {
            return Ok(None);
        }
        let range = seg.find_resume(pos, expected).map_err(LogError::Io)?;
        match range {
            Some(r) if r.first + r.count <= from => {
                Ok(Some((r.first + r.count, r.resume_position)))
            }
            Some(r) => Err(self.corrupt_error(
                from.max(r.first),
                &format!(
                    "{detail}; offsets {}..{} are unreadable",
                    r.first,
                    r.first + r.count
                ),
            )),
            None => Err(self.corrupt_error(
                from.max(expected),
                &format!(
                    "{detail}; offsets from {expected} to the end of segment {} are unreadable",
                    seg.base
                ),
            )),
        }
    }

    /// Counts the damage at `pos` in `seg` as one corrupt record, once: damage found on
    /// open was counted then, damage first met by a walk is counted the first time.
    fn count_damage(&self, seg: &Segment, pos: u64) {
        if seg.known_corruption_at(pos).is_some() {
            return;
        }
        let first_time = self.counted_damage.locked().insert((seg.base, pos));
        if first_time {
            self.corrupt.add(&self.topic, self.id, 1);
        }
    }
}
