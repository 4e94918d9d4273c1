//! One partition of a topic: an ordered list of segments, the writer that appends to the
//! last one, the reader that serves durable records (`partition/read.rs`), and retention.

use crmbus::sync::{LockExt, RwLockExt};
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use crmbus::Retention;

use crate::batch_journal::RecoveryPoint;
use crate::handles::HandleCache;
use crate::options::EmbeddedOptions;
use crate::record::{self, RecordMeta, FLAG_BATCH_END};
use crate::segment::{log_name, Segment, SegmentRole};
use crate::storage::{create_dir_all_durable, remove_if_exists};
use crate::subjects::{SubjectEntry, SubjectIndex};
use crate::vec_pool::VecPool;

mod heads;
mod read;

/// Counts records found corrupt, shared by every partition of a log.
#[derive(Debug, Default)]
pub struct CorruptCounter(AtomicU64);

impl CorruptCounter {
    /// Records `n` newly detected corrupt records of `topic`/`partition`.
    pub fn add(&self, topic: &str, partition: u32, n: u64) {
        if n == 0 {
            return;
        }
        self.0.fetch_add(n, Ordering::Relaxed);
        metrics::counter!(
            "crmbus_log_corrupt_records_total",
            "topic" => topic.to_string(),
            "partition" => partition.to_string()
        )
        .increment(n);
        tracing::error!(
            topic,
            partition,
            records = n,
            "corrupt records detected; they will not be served"
        );
    }

    /// Total detected so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One partition.
pub struct Partition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub id: u32,
    /// Directory holding the segment files.
    pub dir: PathBuf,
    segments: RwLock<Vec<Arc<Segment>>>,
    durable_next: AtomicU64,
    /// Offset after the last record written to a segment file (durable or not). Records
    /// from here to the writer's next offset are staged, or taken by a flush and being
    /// written right now.
    written_next: AtomicU64,
    writer: Mutex<WriterState>,
    /// Held while staged writes are taken and written, so flushes apply in order.
    flush: Mutex<()>,
    corrupt: Arc<CorruptCounter>,
    /// The log's bound on open segment files.
    handles: Arc<HandleCache>,
    /// Set when its topic is deleted.
    deleted: std::sync::atomic::AtomicBool,
    /// Damage found by reads (segment base, byte position), so each is counted once.
    counted_damage: Mutex<HashSet<(u64, u64)>>,
    /// Every subject's version and events (see [`crate::subjects`]). Taken after the
    /// writer lock when both are held.
    subjects: Mutex<SubjectIndex>,
}

/// One event to stage ([`Partition::append`]).
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    /// The event's JSON.
    pub json: &'a [u8],
    /// [`crmbus::dedupe_hash`] of its source and id.
    pub dedupe_hash: u64,
    /// Its subject, when it has one: it gets the subject's next version.
    pub subject: Option<&'a str>,
    /// On the first record of a part of an append that spans partitions, the id of the
    /// append's batch journal intent (stored with the record, see [`crate::record`]); 0 on
    /// every other record.
    pub intent: u64,
}

impl<'a> NewRecord<'a> {
    /// An event without a subject (no version).
    pub fn plain(json: &'a [u8], dedupe_hash: u64) -> NewRecord<'a> {
        NewRecord {
            json,
            dedupe_hash,
            subject: None,
            intent: 0,
        }
    }
}

struct WriterState {
    next_offset: u64,
    /// The segment staged into last (its base) and the byte position after everything
    /// written to it or staged for it: where the next staged frame will lie.
    active_end: (u64, u64),
    last_timestamp_us: i64,
    /// Encoded batches waiting to be written by the next flush, in order.
    staged: Vec<Staged>,
    /// Bytes staged for the last segment and not yet written to it.
    staged_active_bytes: u64,
}

/// Staging buffers of every partition in the process, handed back after their round
/// wrote them (see [`crate::vec_pool`]): at most this many bytes are kept.
static FRAME_BUFFERS: VecPool<u8> = VecPool::new(64 << 20);
/// The same for the staged records' headers and lengths.
static LEN_BUFFERS: VecPool<(RecordMeta, u32)> = VecPool::new(16 << 20);

/// Work for the next flush of a partition.
enum Staged {
    /// Frames to write at the end of `segment`, with each record's header and length.
    Write {
        segment: Arc<Segment>,
        frames: Vec<u8>,
        lens: Vec<(RecordMeta, u32)>,
    },
    /// Seal `segment` (write its index file) once every write before it is done.
    Seal(Arc<Segment>),
}

/// Called with each write of [`Partition::write_taken_noting`]: the segment, the position
/// and the bytes.
pub type NoteWrite<'a> = dyn FnMut(&Segment, u64, &[u8]) -> io::Result<()> + 'a;

/// Staged writes taken from a partition and not written yet.
pub struct TakenStaged {
    staged: Vec<Staged>,
    next: u64,
}

/// What [`Partition::read_raw`] found at an offset.
pub enum RawRecord {
    /// The event JSON of the record.
    Json(Vec<u8>),
    /// The record is being written right now by a flush.
    InFlight,
    /// No such record (removed by retention, or never written).
    Missing,
}

/// Something an append staged: a partition whose staged writes must reach the disk before
/// it may serve offsets below `next_offset`. (A new segment's directory entry is made
/// durable when the segment before it is sealed, ahead of any write to it.) The group
/// commit ([`crate::syncer`]) takes these; it is defined here so that the partition, which
/// makes them, does not import the group commit that imports the partition.
pub struct SyncItem {
    /// The partition written to.
    pub partition: Arc<Partition>,
    /// The partition's next offset after the append.
    pub next_offset: u64,
}

/// The result of appending a batch to a partition.
pub struct Appended {
    /// Offset of the batch's first record.
    pub first_offset: u64,
    /// The version each record got in its subject's stream (0: no subject).
    pub versions: Vec<u64>,
    /// What the group commit must make durable.
    pub sync: SyncItem,
}

impl Partition {
    /// Opens (or creates) a partition directory, recovering its segments.
    pub fn open(
        topic: &str,
        id: u32,
        dir: &Path,
        opts: &EmbeddedOptions,
        corrupt: Arc<CorruptCounter>,
        handles: Arc<HandleCache>,
        point: Option<RecoveryPoint>,
    ) -> io::Result<Partition> {
        let storage = opts.storage.as_ref();
        // Made again if missing (a topic whose creation failed after its spec was stored):
        // the names of new directories must be durable before anything in them is.
        create_dir_all_durable(storage, dir)?;
        let now = opts.clock.now_micros();
        let mut bases = Vec::new();
        for name in storage.list_dir(dir)? {
            if let Some(stem) = name.strip_suffix(".log") {
                if let Ok(base) = stem.parse::<u64>() {
                    bases.push(base);
                }
            } else if name.ends_with(".tmp") {
                storage.remove_file(&dir.join(&name))?;
            }
        }
        bases.sort_unstable();
        // A segment is created (empty) when the one before it rolls, and gets its first
        // record only after that one is sealed whole on disk. So an empty last segment
        // after a crash holds nothing, and the segment before it may still have a torn
        // tail: drop the empty one, and recover the one before as the active segment.
        while bases.len() > 1 {
            let Some(&last) = bases.last() else { break };
            let path = dir.join(log_name(last));
            let empty = storage
                .open(&path, crate::storage::OpenMode::Existing)
                .and_then(|f| f.len())?
                == 0;
            if !empty {
                break;
            }
            storage.remove_file(&path)?;
            remove_if_exists(storage, &path.with_extension("idx"))?;
            bases.pop();
        }
        let mut segments: Vec<Arc<Segment>> = Vec::new();
        for (i, &base) in bases.iter().enumerate() {
            let path = dir.join(log_name(base));
            let next_base = bases.get(i + 1).copied();
            // The active segment's recovery point: all of it is tail when none is known or
            // the point is in an earlier segment (it rolled since; the roll sealed that
            // one whole).
            let durable = match point {
                Some(p) if p.base == base => (p.len, p.next),
                Some(p) if p.base > base => {
                    tracing::warn!(
                        topic,
                        partition = id,
                        base,
                        point = p.base,
                        "the recovery point is past the last segment"
                    );
                    (0, base)
                }
                _ => (0, base),
            };
            let (seg, outcome) = Segment::open(
                &opts.storage,
                &handles,
                &path,
                base,
                match next_base {
                    Some(next_base) => SegmentRole::Sealed { next_base },
                    None => SegmentRole::Active { durable },
                },
                opts.index_interval_bytes,
                now,
            )?;
            let lost: u64 = outcome.corrupt.iter().map(|r| r.count).sum();
            corrupt.add(topic, id, lost);
            if outcome.torn && outcome.zero_tail {
                tracing::debug!(
                    topic,
                    partition = id,
                    base,
                    valid_len = outcome.valid_len,
                    "cut the zeros written ahead of the records"
                );
            } else if outcome.torn {
                tracing::warn!(
                    topic,
                    partition = id,
                    base,
                    valid_len = outcome.valid_len,
                    "truncated a torn tail"
                );
            }
            segments.push(Arc::new(seg));
        }
        if segments.is_empty() {
            segments.push(Arc::new(Segment::create(
                &opts.storage,
                &handles,
                dir,
                0,
                now,
            )?));
        }
        let active = segments
            .last()
            .cloned()
            .ok_or_else(|| io::Error::other("no segment"))?;
        // What survived on disk is made durable before it is served: after a crash of the
        // process (not of the machine) the page cache may still hold unsynced tails of the
        // active segment, and new directory entries. Sealed segments were fsynced whole.
        active.file()?.sync_data()?;
        storage.sync_dir(dir)?;
        let next_offset = active.next_offset();
        let active_end = (active.base, active.len());
        let last_ts = segments
            .iter()
            .map(|s| s.max_timestamp_us())
            .max()
            .unwrap_or(0);
        Partition {
            topic: topic.to_string(),
            id,
            dir: dir.to_path_buf(),
            segments: RwLock::new(segments),
            durable_next: AtomicU64::new(next_offset),
            written_next: AtomicU64::new(next_offset),
            writer: Mutex::new(WriterState {
                next_offset,
                active_end,
                last_timestamp_us: last_ts,
                staged: Vec::new(),
                staged_active_bytes: 0,
            }),
            flush: Mutex::new(()),
            corrupt,
            handles,
            deleted: std::sync::atomic::AtomicBool::new(false),
            counted_damage: Mutex::new(HashSet::new()),
            subjects: Mutex::new(SubjectIndex::default()),
        }
        .with_subject_index(storage)
    }

    /// The partition with its subject index rebuilt from its records (and the versions
    /// kept for subjects retention emptied). A record that fails its checksum is skipped,
    /// as is one that does not decode; damage never keeps the log from opening.
    fn with_subject_index(self, storage: &dyn crate::storage::Storage) -> io::Result<Partition> {
        let mut index = SubjectIndex::default();
        for (subject, version) in heads::load(storage, &self.dir, &self.topic, self.id)? {
            index.set_head(&subject, version);
        }
        let first = self.first_offset();
        self.scan(first, self.durable_next(), true, |meta, json, position| {
            if meta.version > 0 {
                if let Some(subject) = read::subject_of(json) {
                    index.insert(
                        &subject,
                        SubjectEntry {
                            version: meta.version,
                            offset: meta.offset,
                            position,
                        },
                    );
                }
            }
            Ok(true)
        })
        .map_err(|e| io::Error::other(format!("rebuilding the subject index: {e}")))?;
        *self.subjects.locked() = index;
        Ok(self)
    }

    fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments.read_locked().clone()
    }

    /// Cuts the zeros written ahead of the active segment's records (at a clean close,
    /// once nothing more is written).
    pub fn trim_prefill(&self) -> io::Result<()> {
        // The flush lock too: with `Durability::Os` an append that got in before the close
        // writes under it, and its frames must not be cut.
        let _flush = self.flush.locked();
        let _w = self.writer.locked();
        match self.segments().last() {
            Some(active) => active.trim_prefill(),
            None => Ok(()),
        }
    }

    /// Whether the active segment wants zeros written ahead of its records (see
    /// [`Segment::wants_prefill`]).
    pub fn wants_prefill(&self) -> bool {
        !self.is_deleted()
            && self
                .segments
                .read_locked()
                .last()
                .is_some_and(|s| s.wants_prefill())
    }

    /// Writes zeros ahead of the active segment's records if it wants them (see
    /// [`Segment::prefill_ahead`]). The caller holds the group commit's round lock, so no
    /// round writes to the partition's files meanwhile.
    pub fn prefill_ahead(&self) -> bool {
        if self.is_deleted() {
            return false;
        }
        let active = self.segments.read_locked().last().cloned();
        active.is_some_and(|s| s.prefill_ahead())
    }

    /// Offset of the oldest record held.
    pub fn first_offset(&self) -> u64 {
        self.segments
            .read_locked()
            .first()
            .map(|s| s.base)
            .unwrap_or(0)
    }

    /// Offset the next durable record will have; readers see offsets below it.
    pub fn durable_next(&self) -> u64 {
        self.durable_next.load(Ordering::Acquire)
    }

    /// The recovery point of the partition as of now: the active segment's length and next
    /// offset. Only meaningful right after a flush fsynced everything written (the group
    /// commit calls it then, from the one thread that writes the partition).
    pub fn recovery_point(&self) -> Option<RecoveryPoint> {
        let segments = self.segments();
        let last_written = segments.iter().rev().find(|s| !s.is_empty())?;
        Some(RecoveryPoint {
            base: last_written.base,
            len: last_written.len(),
            next: last_written.next_offset(),
        })
    }

    /// Marks the partition's topic deleted (it gets no recovery point any more).
    pub fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    /// Whether its topic was deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Offsets known damaged (found on open, or by reads since): never served.
    pub fn corrupt_ranges(&self) -> Vec<crmbus::OffsetRange> {
        let mut out: Vec<crmbus::OffsetRange> = self
            .segments()
            .iter()
            .flat_map(|s| s.corrupt_ranges())
            .filter(|r| r.count > 0)
            .map(|r| crmbus::OffsetRange {
                first: r.first,
                count: r.count,
            })
            .collect();
        out.sort_by_key(|r| r.first);
        out.dedup();
        out
    }

    /// Called by the group commit once data up to `next_offset` is on disk.
    pub fn mark_durable(&self, next_offset: u64) {
        self.durable_next.fetch_max(next_offset, Ordering::AcqRel);
    }

    /// Bytes held on disk.
    pub fn size_bytes(&self) -> u64 {
        self.segments().iter().map(|s| s.len()).sum()
    }

    /// Stages a batch of encoded events (`(json, dedupe_hash)`) for the next flush, giving
    /// them the next offsets and rolling to a new segment first if the active one is full
    /// or old. The caller holds the topic's append lock and hands the returned
    /// [`SyncItem`] to the group commit, which flushes and fsyncs it; with
    /// [`crate::Durability::Os`] the caller flushes right away.
    ///
    /// Staging keeps the copy into the page cache out of the append lock: the lock covers
    /// only encoding into memory, and the flush writes a whole round of batches at once.
    pub fn append(
        self: &Arc<Self>,
        events: &[NewRecord<'_>],
        opts: &EmbeddedOptions,
    ) -> io::Result<Appended> {
        let mut w = self.writer.locked();
        let now = opts.clock.now_micros();
        let mut active = self
            .segments()
            .last()
            .cloned()
            .ok_or_else(|| io::Error::other("no segment"))?;
        let has_records = !active.is_empty() || w.staged_active_bytes > 0;
        let too_big = active.len() + w.staged_active_bytes >= opts.segment_bytes;
        let too_old =
            now.saturating_sub(active.created_us) >= opts.segment_max_age.as_micros() as i64;
        if has_records && (too_big || too_old) {
            // The new file's name becomes durable when the flusher seals the old segment,
            // before it writes any record to the new one.
            let seg = Arc::new(Segment::create(
                &opts.storage,
                &self.handles,
                &self.dir,
                w.next_offset,
                now,
            )?);
            w.staged.push(Staged::Seal(Arc::clone(&active)));
            self.segments.write_locked().push(Arc::clone(&seg));
            active = seg;
            w.staged_active_bytes = 0;
        }
        let bytes: u64 = events
            .iter()
            .map(|e| {
                RecordMeta::frame_len_at_most(e.subject.is_some(), e.intent > 0, e.json.len())
                    as u64
            })
            .sum();
        // Space for what this append adds, reserved before any offset is given out: a full
        // disk fails this append cleanly (see `Segment::reserve`).
        active.reserve(
            active.len() + w.staged_active_bytes + bytes,
            opts.segment_bytes.min(1 << 20),
        )?;
        let ts = now.max(w.last_timestamp_us);
        let first = w.next_offset;
        let extend = matches!(w.staged.last(), Some(Staged::Write { segment, .. }) if Arc::ptr_eq(segment, &active));
        if !extend {
            w.staged.push(Staged::Write {
                segment: Arc::clone(&active),
                frames: FRAME_BUFFERS.take(),
                lens: LEN_BUFFERS.take(),
            });
        }
        let mut added = 0u64;
        let mut position = if w.active_end.0 == active.base {
            w.active_end.1
        } else {
            active.len()
        };
        let mut subjects = self.subjects.locked();
        let mut versions = Vec::with_capacity(events.len());
        if let Some(Staged::Write { frames, lens, .. }) = w.staged.last_mut() {
            frames.reserve(bytes as usize);
            lens.reserve(events.len());
            for (i, e) in events.iter().enumerate() {
                let offset = first + i as u64;
                let version = match e.subject {
                    Some(subject) => subjects.append(subject, offset, position),
                    None => 0,
                };
                versions.push(version);
                let meta = RecordMeta {
                    offset,
                    timestamp_us: ts,
                    dedupe_hash: e.dedupe_hash,
                    flags: if i + 1 == events.len() {
                        FLAG_BATCH_END
                    } else {
                        0
                    },
                    version,
                    intent: e.intent,
                };
                let before = frames.len();
                record::encode(frames, &meta, e.json);
                let len = frames.len() - before;
                lens.push((meta, len as u32));
                position += len as u64;
                added += len as u64;
            }
        }
        drop(subjects);
        w.active_end = (active.base, position);
        w.staged_active_bytes += added;
        w.next_offset = first + events.len() as u64;
        w.last_timestamp_us = ts;
        Ok(Appended {
            first_offset: first,
            versions,
            sync: SyncItem {
                partition: Arc::clone(self),
                next_offset: w.next_offset,
            },
        })
    }

    /// Writes everything staged so far to the segment files, in order, sealing segments
    /// that were rolled. Returns the segments written to (to be fsynced) and the offset
    /// after the last record written. On error the partition's files are as the failed
    /// write left them; the caller poisons the log.
    pub fn flush_staged(&self, opts: &EmbeddedOptions) -> io::Result<(Vec<Arc<Segment>>, u64)> {
        let _flush = self.flush.locked();
        self.write_taken(self.take_staged(), opts)
    }

    /// Takes back what was staged from offset `first` on, which must all still be staged
    /// (an append that spans partitions and failed before it submitted, holding its
    /// topics' locks and the commit gate). A segment rolled meanwhile stays rolled.
    pub fn unstage(&self, first: u64) -> io::Result<()> {
        let active = self.segments().last().cloned();
        let mut guard = self.writer.locked();
        let w = &mut *guard;
        let not_staged = || {
            io::Error::other(format!(
                "offsets from {first} of {}/{} are no longer staged",
                self.topic, self.id
            ))
        };
        let mut i = w.staged.len();
        while w.next_offset > first {
            i = i.checked_sub(1).ok_or_else(not_staged)?;
            let Staged::Write {
                segment,
                frames,
                lens,
            } = &mut w.staged[i]
            else {
                continue;
            };
            let keep = lens.partition_point(|(meta, _)| meta.offset < first);
            let Some(&(from, _)) = lens.get(keep) else {
                return Err(not_staged());
            };
            let cut: usize = lens[keep..].iter().map(|(_, len)| *len as usize).sum();
            frames.truncate(frames.len() - cut);
            lens.truncate(keep);
            if active.as_ref().is_some_and(|a| Arc::ptr_eq(a, segment)) {
                w.staged_active_bytes = w.staged_active_bytes.saturating_sub(cut as u64);
            }
            if w.active_end.0 == segment.base {
                w.active_end.1 = w.active_end.1.saturating_sub(cut as u64);
            }
            if lens.is_empty() {
                w.staged.remove(i);
            }
            w.next_offset = from.offset;
        }
        self.subjects.locked().truncate_from(first);
        Ok(())
    }

    /// The current version of `subject` here, counting what is staged (0 before its first
    /// event). Stable while the caller holds the topic's append lock.
    pub fn subject_version(&self, subject: &str) -> u64 {
        self.subjects.locked().version(subject)
    }

    /// The version of `subject`'s event at `offset`, if the index holds it.
    pub fn subject_version_at(&self, subject: &str, offset: u64) -> Option<u64> {
        self.subjects.locked().version_at(subject, offset)
    }

    /// Recovery only (the partition is opened again after): removes every record from
    /// `offset` on from the files. The first segment is cut, never removed, so the
    /// partition's offsets go on from where they were. Returns the recovery point of what
    /// is left, if anything was removed: all of it is durable (recovery read it whole, or
    /// counted its damage, before it decided to cut), so opening the partition again must
    /// not take damage in it for a torn tail.
    pub fn cut_files_from(
        &self,
        offset: u64,
        opts: &EmbeddedOptions,
    ) -> io::Result<Option<RecoveryPoint>> {
        let segments = self.segments();
        let mut point = None;
        for (i, seg) in segments.iter().enumerate().rev() {
            if seg.next_offset() <= offset {
                if point.is_some() {
                    // The segment before the ones removed: sealed whole.
                    point = Some(RecoveryPoint {
                        base: seg.base,
                        len: seg.len(),
                        next: seg.next_offset(),
                    });
                }
                break;
            }
            if seg.base >= offset && i > 0 {
                seg.remove_files()?;
                point = Some(RecoveryPoint {
                    base: seg.base,
                    len: 0,
                    next: seg.base,
                });
                continue;
            }
            let len = seg.cut_at(offset)?;
            point = Some(RecoveryPoint {
                base: seg.base,
                len,
                next: offset.max(seg.base),
            });
            break;
        }
        // Not needed for correctness while recovery is the only caller: it reopens the
        // partition after the cut, and the open fsyncs the directory (see `Segment::cut_at`).
        opts.storage.sync_dir(&self.dir)?; // mutants: equivalent (see above)
        Ok(point)
    }

    /// Takes everything staged so far, to be written by [`Partition::write_taken`]. Taking
    /// and writing in two steps is for the partition's only flusher (the group-commit
    /// thread), which writes what it took, in order, before it takes again.
    pub fn take_staged(&self) -> TakenStaged {
        let mut w = self.writer.locked();
        w.staged_active_bytes = 0;
        TakenStaged {
            staged: std::mem::take(&mut w.staged),
            next: w.next_offset,
        }
    }

    /// Writes what [`Partition::take_staged`] took (see [`Partition::flush_staged`]).
    pub fn write_taken(
        &self,
        taken: TakenStaged,
        opts: &EmbeddedOptions,
    ) -> io::Result<(Vec<Arc<Segment>>, u64)> {
        self.write_taken_noting(taken, opts, &mut |_, _, _| Ok(()))
    }

    /// [`Partition::write_taken`], calling `note` with each write's segment, position and
    /// bytes once it is done (for the commit file's record of the round, see
    /// [`crate::commit_file`]); a failure of `note` fails the write.
    pub fn write_taken_noting(
        &self,
        taken: TakenStaged,
        opts: &EmbeddedOptions,
        note: &mut NoteWrite<'_>,
    ) -> io::Result<(Vec<Arc<Segment>>, u64)> {
        let mut touched: Vec<Arc<Segment>> = Vec::new();
        for item in taken.staged {
            match item {
                Staged::Write {
                    segment,
                    frames,
                    lens,
                } => {
                    let position = segment.len();
                    segment.append(&frames, &lens, opts.index_interval_bytes)?;
                    note(&segment, position, &frames)?;
                    if let Some((last, _)) = lens.last() {
                        self.written_next
                            .fetch_max(last.offset + 1, Ordering::AcqRel);
                    }
                    FRAME_BUFFERS.give(frames);
                    LEN_BUFFERS.give(lens);
                    if !touched.iter().any(|s| Arc::ptr_eq(s, &segment)) {
                        touched.push(segment);
                    }
                }
                Staged::Seal(segment) => segment.seal()?,
            }
        }
        Ok((touched, taken.next))
    }

    /// A [`SyncItem`] that covers everything staged so far (used when an append only
    /// returns duplicates whose originals may not be durable yet).
    pub fn sync_item_for_current(self: &Arc<Self>) -> SyncItem {
        let w = self.writer.locked();
        SyncItem {
            partition: Arc::clone(self),
            next_offset: w.next_offset,
        }
    }

    /// Deletes whole segments that retention no longer keeps; returns how many records
    /// were removed. The active segment is removed only when all of it is older than
    /// `max_age` (it is replaced by an empty one first).
    ///
    /// Once anything changed, the directory is fsynced before this returns, on success or
    /// failure: what was removed stays removed after a power cut, and a replacement
    /// segment's name is durable before an append (which waits for the writer lock held
    /// here) can be acknowledged in it.
    pub fn enforce_retention(
        &self,
        retention: &Retention,
        opts: &EmbeddedOptions,
    ) -> io::Result<u64> {
        if retention.max_age.is_none() && retention.max_bytes.is_none() {
            return Ok(0);
        }
        let w = self.writer.locked();
        let mut removed = 0;
        let mut changed = false;
        let outcome = self.remove_old_segments(&w, retention, opts, &mut removed, &mut changed);
        if changed {
            opts.storage.sync_dir(&self.dir)?;
        }
        drop(w);
        outcome.map(|()| removed)
    }

    /// The loop of [`Partition::enforce_retention`]: removes the oldest segment while
    /// retention does not keep it, counting records into `removed` and setting `changed`
    /// once the directory was touched (before the step that may fail after it).
    fn remove_old_segments(
        &self,
        w: &WriterState,
        retention: &Retention,
        opts: &EmbeddedOptions,
        removed: &mut u64,
        changed: &mut bool,
    ) -> io::Result<()> {
        let now = opts.clock.now_micros();
        let cutoff = retention
            .max_age
            .map(|a| now.saturating_sub(a.as_micros() as i64));
        loop {
            let segments = self.segments();
            let total: u64 = segments.iter().map(|s| s.len()).sum();
            let Some(oldest) = segments.first().cloned() else {
                return Ok(());
            };
            if oldest.is_empty() {
                return Ok(());
            }
            let expired = cutoff.is_some_and(|c| oldest.max_timestamp_us() < c);
            let over = retention.max_bytes.is_some_and(|m| total > m);
            let is_active = segments.len() == 1;
            if is_active && (oldest.next_offset() != w.next_offset || !w.staged.is_empty()) {
                // Writes to it are staged or being flushed: it is not all old.
                return Ok(());
            }
            if !is_active && !oldest.is_sealed() {
                // Rolled, but its last writes (and its seal) are still to be flushed: the
                // flusher would write acknowledged records into a deleted file.
                return Ok(());
            }
            if !(expired || over && !is_active) {
                return Ok(());
            }
            // The versions of subjects this leaves without events are kept first: after
            // a restart they go on from there, not from 1.
            let new_first = oldest.next_offset();
            let keep = self
                .subjects
                .locked()
                .to_keep(new_first, self.durable_next());
            if !keep.is_empty() {
                heads::save(opts.storage.as_ref(), &self.dir, &keep)?;
            }
            let mut list = self.segments.write_locked();
            if is_active {
                oldest.seal()?;
                let replacement =
                    Segment::create(&opts.storage, &self.handles, &self.dir, w.next_offset, now);
                // Created or not, the directory changed (the caller fsyncs it).
                *changed = true;
                list.push(Arc::new(replacement?));
            }
            list.remove(0);
            drop(list);
            *changed = true;
            oldest.remove_files()?;
            self.subjects.locked().remove_below(new_first);
            *removed += oldest.next_offset() - oldest.base;
        }
    }
}

/// Microseconds since the epoch as a UTC time.
pub fn micros_to_time(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}
