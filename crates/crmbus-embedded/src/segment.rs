//! One segment file of a partition: its records, its sparse offset and time index, the
//! index file written when it is sealed, and the scan that recovers it on open.

use crmbus::sync::RwLockExt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::handles::{HandleCache, HandleSlot};
use crate::record::RecordMeta;
use crate::storage::{remove_if_exists, OpenMode, Storage, StorageFile};

mod scan;
use scan::{read_whole, resync};
pub use scan::{scan_active, scan_bytes, CorruptRange, IndexEntry, ScanOutcome};

/// What a segment is to its partition when it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentRole {
    /// Sealed: whole on disk; the next segment starts at `next_base`.
    Sealed {
        /// Base offset of the segment after it.
        next_base: u64,
    },
    /// The last segment, taking appends; `durable` is its recovery point (byte length,
    /// next offset).
    Active {
        /// The recovery point.
        durable: (u64, u64),
    },
}

/// A segment: a file of framed records whose offsets start at `base`.
#[derive(Debug)]
pub struct Segment {
    /// Offset of the segment's first record.
    pub base: u64,
    /// Path of the `.log` file.
    pub path: PathBuf,
    /// The file, open while active and opened on demand once sealed (see
    /// [`crate::handles`]); reads use `pread`, appends `pwrite` at `len`.
    handle: Arc<HandleSlot>,
    storage: Arc<dyn Storage>,
    cache: Arc<HandleCache>,
    len: AtomicU64,
    /// Bytes of disk space reserved for the file (see [`Segment::reserve`]).
    reserved: AtomicU64,
    /// The file's size while it takes appends: its records, then zeros written ahead of
    /// them (see [`Segment::append`]).
    prefilled: AtomicU64,
    /// Whether zeros are written ahead at all (see `Storage::overwrites_in_place`).
    prefill: bool,
    /// Whether the last append was small (at most [`PREFILL_WRITES_UP_TO`]): only then
    /// does the group commit write zeros ahead of the next ones (see
    /// [`Segment::prefill_ahead`]).
    small_writes: AtomicBool,
    next_offset: AtomicU64,
    max_timestamp_us: AtomicI64,
    /// Append time of the first record (µs), or creation time while empty.
    pub created_us: i64,
    sealed: AtomicBool,
    index: RwLock<Vec<IndexEntry>>,
    corrupt: RwLock<Vec<CorruptRange>>,
}

/// File name of a segment's log: the base offset, zero-padded.
pub fn log_name(base: u64) -> String {
    format!("{base:020}.log")
}

fn index_path(log_path: &Path) -> PathBuf {
    log_path.with_extension("idx")
}

impl Segment {
    /// Creates a new, empty segment file. Its directory entry is made durable before any
    /// record is written to it: by the caller, or by sealing the segment before it.
    pub fn create(
        storage: &Arc<dyn Storage>,
        cache: &Arc<HandleCache>,
        dir: &Path,
        base: u64,
        now_us: i64,
    ) -> io::Result<Segment> {
        let path = dir.join(log_name(base));
        let file = storage.open(&path, OpenMode::CreateNew)?;
        let handle = HandleSlot::pinned(file);
        cache.track(&handle);
        Ok(Segment::from_parts(
            (storage, cache, handle),
            base,
            path,
            0,
            base,
            now_us,
            now_us,
            Vec::new(),
            Vec::new(),
        )
        .takes_appends())
    }

    /// Marks a new or active segment as taking appends: whether zeros are written ahead of
    /// its records is decided once, by its file system (see `Storage::overwrites_in_place`).
    fn takes_appends(mut self) -> Segment {
        self.prefill = self
            .path
            .parent()
            .is_some_and(|dir| self.storage.overwrites_in_place(dir));
        self
    }

    #[allow(clippy::too_many_arguments)]
    fn from_parts(
        (storage, cache, handle): (&Arc<dyn Storage>, &Arc<HandleCache>, Arc<HandleSlot>),
        base: u64,
        path: PathBuf,
        len: u64,
        next_offset: u64,
        max_ts: i64,
        created_us: i64,
        index: Vec<IndexEntry>,
        corrupt: Vec<CorruptRange>,
    ) -> Segment {
        Segment {
            base,
            path,
            handle,
            storage: Arc::clone(storage),
            cache: Arc::clone(cache),
            len: AtomicU64::new(len),
            reserved: AtomicU64::new(len),
            prefilled: AtomicU64::new(len),
            // Decided for segments that take appends only ([`Segment::takes_appends`]).
            prefill: false,
            small_writes: AtomicBool::new(false),
            next_offset: AtomicU64::new(next_offset),
            max_timestamp_us: AtomicI64::new(max_ts),
            created_us,
            sealed: AtomicBool::new(false),
            index: RwLock::new(index),
            corrupt: RwLock::new(corrupt),
        }
    }

    /// Opens an existing segment as `role` says: sealed (with the base offset of the
    /// segment after it) or active (with its recovery point, see [`scan_active`]).
    ///
    /// A sealed segment was fsynced whole before the segment after it got any record, so
    /// nothing in it is ever a torn tail: it is trusted through a valid index file
    /// (checksums are still verified on every read), or else scanned, and damage anywhere in
    /// it, its end included, becomes a corrupt range that is never served and never cut
    /// off. Only the active segment may be truncated, back to its last whole batch.
    pub fn open(
        storage: &Arc<dyn Storage>,
        cache: &Arc<HandleCache>,
        path: &Path,
        base: u64,
        role: SegmentRole,
        index_interval: u64,
        now_us: i64,
    ) -> io::Result<(Segment, ScanOutcome)> {
        let (next_base, durable) = match role {
            SegmentRole::Sealed { next_base } => (Some(next_base), (0, base)),
            SegmentRole::Active { durable } => (None, durable),
        };
        let file = storage.open(path, OpenMode::Existing)?;
        let file_len = file.len()?;
        if let Some(next_base) = next_base {
            if let Some(idx) = read_index_file(storage.as_ref(), &index_path(path), base, file_len)
            {
                if idx.next_offset == next_base {
                    // Sealed: its file is opened again when a read needs it.
                    drop(file);
                    let seg = Segment::from_parts(
                        (storage, cache, HandleSlot::closed()),
                        base,
                        path.to_path_buf(),
                        file_len,
                        idx.next_offset,
                        idx.max_timestamp_us,
                        idx.first_timestamp_us,
                        idx.entries,
                        Vec::new(),
                    );
                    seg.sealed.store(true, Ordering::Release);
                    return Ok((
                        seg,
                        ScanOutcome {
                            next_offset: idx.next_offset,
                            valid_len: file_len,
                            ..Default::default()
                        },
                    ));
                }
            }
        }
        let active = next_base.is_none();
        // An active segment with an index that matches it was sealed whole (its data was
        // fsynced before the index was written) and the segment after it was dropped
        // empty: all of it is durable, whatever recovery point the journal still has.
        let durable = match read_index_file(storage.as_ref(), &index_path(path), base, file_len) {
            Some(idx) if active && durable.0 < file_len => (file_len, idx.next_offset),
            _ => durable,
        };
        let data = read_whole(file.as_ref())?;
        let mut outcome = if active {
            scan_active(&data, base, index_interval, durable, false)
        } else {
            scan_bytes(&data, base, index_interval, false, false)
        };
        // A sealed segment whose seal did not finish (the power went out before its size
        // was cut and fsynced, so it has no index either) may still end in the zeros
        // written ahead of its records: they are no damage, and are cut off here.
        let zero_tail = outcome.torn
            && data
                .get(outcome.valid_len as usize..)
                .is_some_and(|tail| tail.iter().all(|b| *b == 0));
        drop(data);
        outcome.zero_tail = zero_tail;
        if let (Some(next_base), true) = (next_base, zero_tail) {
            if outcome.next_offset == next_base {
                file.set_len(outcome.valid_len)?;
                // Not needed for correctness: if the cut is lost, the next open finds the
                // same records and the same zeros after them, and cuts again.
                file.sync_data()?; // mutants: equivalent (see above)
                outcome.torn = false;
            }
        }
        if let Some(next_base) = next_base {
            if outcome.next_offset > next_base {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "segment {} holds offsets up to {} but the next segment starts at {next_base}",
                        path.display(),
                        outcome.next_offset
                    ),
                ));
            }
            if outcome.torn || outcome.next_offset < next_base {
                // Damage at the end of a sealed segment: its offsets up to the next segment
                // are lost, not a tail to cut off.
                outcome.corrupt.push(CorruptRange {
                    first: outcome.next_offset,
                    count: next_base - outcome.next_offset,
                    position: outcome.valid_len,
                    resume_position: file_len,
                });
                outcome.torn = false;
                outcome.next_offset = next_base;
                outcome.valid_len = file_len;
            }
        } else if outcome.torn {
            file.set_len(outcome.valid_len)?;
            // Not needed for correctness: if the cut is lost, the next open finds the same
            // damage after the recovery point and cuts again, and the first append's fsync
            // makes the cut durable anyway. It keeps the disk matching what is served.
            file.sync_data()?; // mutants: equivalent (see above)
        }
        let created = outcome.first_timestamp_us.unwrap_or(now_us);
        let handle = if active {
            let h = HandleSlot::pinned(file);
            cache.track(&h);
            h
        } else {
            drop(file);
            HandleSlot::closed()
        };
        let mut seg = Segment::from_parts(
            (storage, cache, handle),
            base,
            path.to_path_buf(),
            outcome.valid_len,
            outcome.next_offset,
            outcome.max_timestamp_us,
            created,
            outcome.index.clone(),
            outcome.corrupt.clone(),
        );
        if active {
            seg = seg.takes_appends();
        } else {
            seg.sealed.store(true, Ordering::Release);
            // A missing or stale index is rebuilt on every open until one is written.
            if let Err(e) = seg.write_index_file() {
                tracing::warn!(segment = %path.display(), error = %e, "could not write a segment index");
            }
        }
        Ok((seg, outcome))
    }

    /// The segment's open file (opened again if the handle cache closed it).
    pub fn file(&self) -> io::Result<Arc<dyn StorageFile>> {
        self.cache
            .file(&self.handle, self.storage.as_ref(), &self.path)
    }

    /// Makes sure disk space is reserved for the file up to `end` bytes, reserving `slack`
    /// more when it must reserve at all. Called when writes are staged, so a full disk
    /// fails the append that would not fit, before any offset is given out, instead of
    /// failing the group commit's write (which would stop the log until a restart).
    pub fn reserve(&self, end: u64, slack: u64) -> io::Result<()> {
        if end <= self.reserved.load(Ordering::Acquire) {
            return Ok(());
        }
        let target = (end + slack).div_ceil(RESERVE_ALIGN) * RESERVE_ALIGN;
        self.file()?.allocate(target)?;
        self.reserved.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }

    /// Bytes of valid data in the file.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    /// True when the segment holds no record.
    pub fn is_empty(&self) -> bool {
        self.next_offset() == self.base
    }

    /// Offset after the segment's last record.
    pub fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    /// Newest append timestamp in the segment (µs).
    pub fn max_timestamp_us(&self) -> i64 {
        self.max_timestamp_us.load(Ordering::Acquire)
    }

    /// Known damaged ranges.
    pub fn corrupt_ranges(&self) -> Vec<CorruptRange> {
        self.corrupt.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Writes framed records at the end of the file and updates the in-memory state.
    /// `records` are the headers of the frames in `frames`, in order. On a write error
    /// the file is cut back to its previous length so no partial frame is left behind.
    ///
    /// When a small write (at most [`PREFILL_WRITES_UP_TO`]) reaches past the zeros written
    /// ahead, the file is filled with zeros after it, [`PREFILL_AHEAD`] or up to its
    /// reservation: the fdatasyncs of the small appends that follow then write into the
    /// file without changing its size, so they need not commit file-system metadata too
    /// (on ext4 here about three quarters of the latency of an appending fdatasync). Large
    /// writes get no zeros: every zero is written to disk once more before the records
    /// replace it, which costs large rounds more than the metadata commit it saves. A frame
    /// of zeros reads as the end of the records: the scan on open cuts the zeros of the
    /// active segment off as a tail, and [`Segment::seal`] cuts them before sealing.
    pub fn append(
        &self,
        frames: &[u8],
        records: &[(RecordMeta, u32)],
        index_interval: u64,
    ) -> io::Result<()> {
        let start = self.len();
        let file = self.file()?;
        let end = start + frames.len() as u64;
        let small = frames.len() as u64 <= PREFILL_WRITES_UP_TO;
        self.small_writes.store(small, Ordering::Release);
        if let Err(e) = file.write_all_at(frames, start) {
            let _ = file.set_len(start);
            self.prefilled.store(start, Ordering::Release);
            return Err(e);
        }
        let prefilled = self.prefilled.load(Ordering::Acquire);
        let ahead = self
            .reserved
            .load(Ordering::Acquire)
            .min(end + PREFILL_AHEAD);
        if self.prefill && end > prefilled && ahead > end && small {
            // Best effort: the records are written; zeros that do not fit (a file system
            // that could not reserve the space) only cost the next fdatasyncs their speed.
            match write_zeros(file.as_ref(), end, ahead) {
                Ok(()) => self.prefilled.store(ahead, Ordering::Release),
                Err(e) => {
                    tracing::debug!(segment = %self.path.display(), error = %e,
                        "could not write zeros ahead of the records");
                    let _ = file.set_len(end);
                    self.prefilled.store(end, Ordering::Release);
                }
            }
        } else if end > prefilled {
            self.prefilled.store(end, Ordering::Release);
        }
        let mut pos = start;
        {
            let mut index = self.index.write_locked();
            let mut next_index_at = index
                .last()
                .map(|e| e.position + index_interval)
                .unwrap_or(0);
            for (meta, len) in records {
                if pos >= next_index_at {
                    index.push(IndexEntry {
                        offset: meta.offset,
                        position: pos,
                        timestamp_us: meta.timestamp_us,
                    });
                    next_index_at = pos + index_interval;
                }
                pos += u64::from(*len);
            }
        }
        if let Some((last, _)) = records.last() {
            self.max_timestamp_us
                .fetch_max(last.timestamp_us, Ordering::AcqRel);
            self.next_offset.store(last.offset + 1, Ordering::Release);
        }
        self.len
            .store(start + frames.len() as u64, Ordering::Release);
        Ok(())
    }

    /// Whether fewer than half of [`PREFILL_AHEAD`] bytes of zeros are left ahead of the
    /// records of a segment that takes small appends, with room reserved for more: what
    /// [`Segment::prefill_ahead`] would write now. Never for a segment without records (one
    /// just rolled to gets nothing before the one before it is sealed: open drops an empty
    /// last file) nor after a large append (see [`Segment::append`]).
    pub fn wants_prefill(&self) -> bool {
        self.prefill_range().is_some()
    }

    /// The zeros [`Segment::prefill_ahead`] would write: from the end of those written so
    /// far up to [`PREFILL_AHEAD`] past the records, within the reserved space.
    fn prefill_range(&self) -> Option<(u64, u64)> {
        let len = self.len();
        if !self.prefill
            || self.is_sealed()
            || len == 0
            || !self.small_writes.load(Ordering::Acquire)
        {
            return None;
        }
        let from = self.prefilled.load(Ordering::Acquire).max(len);
        if from >= len + PREFILL_AHEAD / 2 {
            return None;
        }
        let to = self
            .reserved
            .load(Ordering::Acquire)
            .min(len + PREFILL_AHEAD);
        (to > from).then_some((from, to))
    }

    /// Writes the zeros [`Segment::append`] writes ahead of the records after a small
    /// write, before that write needs them, and starts their writeback: run by the group
    /// commit between rounds once fewer than half are left (see
    /// [`crate::syncer`]), so the round whose records reach the end of the zeros does not
    /// write and flush the next 256 KiB of them before its appenders are answered. The
    /// caller holds the group commit's round lock, so no round appends to the file
    /// meanwhile (retention may seal it, then removes it: zeros written into it then do no
    /// harm). Best effort, like the zeros `append` writes: returns whether any were
    /// written.
    pub fn prefill_ahead(&self) -> bool {
        let Some((from, to)) = self.prefill_range() else {
            return false;
        };
        let written = self.file().and_then(|file| {
            write_zeros(file.as_ref(), from, to)?;
            self.prefilled.store(to, Ordering::Release);
            // Best effort too: the next fdatasync writes them if this does not.
            if let Err(e) = file.start_writeback(from, to - from) {
                tracing::debug!(segment = %self.path.display(), error = %e,
                    "could not start the writeback of zeros written ahead");
            }
            Ok(())
        });
        match written {
            Ok(()) => true,
            Err(e) => {
                // Zeros written in part read as the end of the records like any others;
                // `append` writes them again when it gets there.
                tracing::debug!(segment = %self.path.display(), error = %e,
                    "could not write zeros ahead of the records");
                false
            }
        }
    }

    /// Seals the segment once its last write is done: fsyncs its data, writes its index
    /// file (fsynced, then renamed into place), and fsyncs the directory, which also makes
    /// the entry of the segment rolled to after it durable. Called before any record is
    /// written to the next segment, so every sealed segment is whole on disk. A failure to
    /// write the index only warns (it is rebuilt on open); the other steps must succeed.
    pub fn seal(&self) -> io::Result<()> {
        self.sealed.store(true, Ordering::Release);
        // The zeros written ahead are cut off (and the space reserved past the records
        // freed); its fdatasync makes the size durable with the data, before the index
        // file (which records that size) is written.
        self.trim_prefill()?;
        if let Err(e) = self.write_index_file() {
            tracing::warn!(segment = %self.path.display(), error = %e, "could not write a segment index");
        }
        let synced = match self.path.parent() {
            Some(dir) => self.storage.sync_dir(dir),
            None => Ok(()),
        };
        self.handle.unpin();
        synced
    }

    /// Cuts the zeros written ahead of the records off the file (which also frees the
    /// space reserved past them) and fsyncs its size, so a log closed cleanly leaves every
    /// segment file exactly its records and no more space taken.
    pub fn trim_prefill(&self) -> io::Result<()> {
        let file = self.file()?;
        file.set_len(self.len())?;
        file.sync_data()?;
        self.prefilled.store(self.len(), Ordering::Release);
        self.reserved.store(self.len(), Ordering::Release);
        Ok(())
    }

    /// True once the segment no longer takes appends.
    pub fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    /// Writes the index file: to a temporary file, fsynced, then renamed over the old one
    /// (the caller fsyncs the directory).
    fn write_index_file(&self) -> io::Result<()> {
        let storage = self.storage.as_ref();
        let index = self.index.read_locked().clone();
        let mut buf = Vec::with_capacity(48 + index.len() * 24);
        buf.extend_from_slice(INDEX_MAGIC);
        buf.extend_from_slice(&self.base.to_le_bytes());
        buf.extend_from_slice(&self.next_offset().to_le_bytes());
        buf.extend_from_slice(&self.len().to_le_bytes());
        buf.extend_from_slice(&self.max_timestamp_us().to_le_bytes());
        buf.extend_from_slice(&self.created_us.to_le_bytes());
        for e in &index {
            buf.extend_from_slice(&e.offset.to_le_bytes());
            buf.extend_from_slice(&e.position.to_le_bytes());
            buf.extend_from_slice(&e.timestamp_us.to_le_bytes());
        }
        let crc = crc32c::crc32c(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        let path = index_path(&self.path);
        let tmp = path.with_extension("idx.tmp");
        let f = storage.open(&tmp, OpenMode::Truncate)?;
        f.write_all_at(&buf, 0)?;
        f.sync_data()?;
        drop(f);
        storage.rename(&tmp, &path)
    }

    /// Recovery only (the partition is opened again after): cuts the file before the
    /// record at `offset` (all of it when `offset` is at or below the base), fsyncs it, and
    /// removes its index file (the caller fsyncs the directory); returns the file's new
    /// length. Damage before `offset` (counted when the segment was opened) is stepped
    /// over to the next whole record; fails if none is found up to the one at `offset`.
    pub fn cut_at(&self, offset: u64) -> io::Result<u64> {
        let position = if offset <= self.base {
            0
        } else {
            let (mut expected, start) = self.seek_offset(offset);
            let mut data = vec![0u8; (self.len() - start) as usize];
            self.file()?.read_exact_at(&mut data, start)?;
            let mut at = 0usize;
            while expected < offset {
                let resume = match crate::record::parse(&data[at..]) {
                    crate::record::Parsed::Record(meta, _, len) if meta.offset == expected => {
                        at += len;
                        expected += 1;
                        continue;
                    }
                    // Damage (counted when the segment was opened): go on at the next whole
                    // record after it, up to the one at `offset`.
                    _ => next_record(&data, at + 1, expected + 1, offset),
                };
                match resume {
                    Some((next_at, next)) => {
                        at = next_at;
                        expected = next;
                    }
                    None => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "segment {} does not hold whole records up to offset {offset}: cannot cut it there",
                                self.path.display()
                            ),
                        ))
                    }
                }
            }
            start + at as u64
        };
        let file = self.file()?;
        file.set_len(position)?;
        // Not needed for correctness while recovery is the only caller: it reopens the
        // partition after the cut, and the open fsyncs the active segment (this one) and
        // the directory before anything is served or the journal forgets the intent.
        file.sync_data()?; // mutants: equivalent (see above)
        remove_if_exists(self.storage.as_ref(), &index_path(&self.path))?;
        Ok(position)
    }

    /// Deletes the segment's files (the caller fsyncs the directory).
    pub fn remove_files(&self) -> io::Result<()> {
        self.storage.remove_file(&self.path)?;
        remove_if_exists(self.storage.as_ref(), &index_path(&self.path))
    }

    /// The index point to start a scan for `offset` from: the last entry at or before it.
    pub fn seek_offset(&self, offset: u64) -> (u64, u64) {
        let index = self.index.read_locked();
        let i = index.partition_point(|e| e.offset <= offset);
        if i == 0 {
            (self.base, 0)
        } else {
            (index[i - 1].offset, index[i - 1].position)
        }
    }

    /// The index point to start a scan for the first record at or after `time_us`.
    pub fn seek_time(&self, time_us: i64) -> (u64, u64) {
        let index = self.index.read_locked();
        let i = index.partition_point(|e| e.timestamp_us < time_us);
        if i == 0 {
            (self.base, 0)
        } else {
            (index[i - 1].offset, index[i - 1].position)
        }
    }

    /// Where to continue after damage starting at `position`, if it is a known range.
    pub fn known_corruption_at(&self, position: u64) -> Option<CorruptRange> {
        self.corrupt
            .read()
            .ok()
            .and_then(|c| c.iter().find(|r| r.position == position).copied())
    }

    /// Looks for the next valid frame after damage at `position` (whose expected offset is
    /// `expected`), scanning the file; remembers what it finds.
    pub fn find_resume(&self, position: u64, expected: u64) -> io::Result<Option<CorruptRange>> {
        if let Some(r) = self.known_corruption_at(position) {
            return Ok(Some(r));
        }
        let end = self.len();
        if position >= end {
            return Ok(None);
        }
        let mut data = vec![0u8; (end - position) as usize];
        self.file()?.read_exact_at(&mut data, position)?;
        let found = resync(&data, 1, expected).map(|(p, off)| CorruptRange {
            first: expected,
            count: off - expected,
            position,
            resume_position: position + p as u64,
        });
        if let Some(r) = found {
            if let Ok(mut c) = self.corrupt.write() {
                c.push(r);
            }
        }
        Ok(found)
    }
}

const INDEX_MAGIC: &[u8; 8] = b"CRMBIDX1";

/// Writes up to this size are followed by zeros written ahead (see [`Segment::append`]).
pub const PREFILL_WRITES_UP_TO: u64 = 16 * 1024;

/// How far ahead of a small write zeros are written, at most.
pub const PREFILL_AHEAD: u64 = 256 * 1024;

/// Writes zeros to `file` from `from` up to `to`.
fn write_zeros(file: &dyn StorageFile, from: u64, to: u64) -> io::Result<()> {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64);
        file.write_all_at(&ZEROS[..n as usize], at)?;
        at += n;
    }
    Ok(())
}

/// Reservations are made in multiples of this.
const RESERVE_ALIGN: u64 = 64 * 1024;

struct IndexFile {
    next_offset: u64,
    max_timestamp_us: i64,
    first_timestamp_us: i64,
    entries: Vec<IndexEntry>,
}

/// The position and offset of the first whole record in `data` from byte `from` on whose
/// offset is in `min..=max`: where a walk goes on after damage.
fn next_record(data: &[u8], from: usize, min: u64, max: u64) -> Option<(usize, u64)> {
    (from..data.len()).find_map(|at| {
        if !crate::record::plausible_start(&data[at..], min, max) {
            return None;
        }
        match crate::record::parse(&data[at..]) {
            crate::record::Parsed::Record(meta, _, _) => Some((at, meta.offset)),
            _ => None,
        }
    })
}

fn read_index_file(
    storage: &dyn Storage,
    path: &Path,
    base: u64,
    file_len: u64,
) -> Option<IndexFile> {
    let buf = storage.read(path).ok()?;
    if buf.len() < 48 + 4 || (buf.len() - 52) % 24 != 0 || &buf[..8] != INDEX_MAGIC {
        return None;
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let u = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?))
    };
    if u(8)? != base || u(24)? != file_len {
        return None;
    }
    let mut entries = Vec::with_capacity((body.len() - 48) / 24);
    let mut at = 48;
    while at + 24 <= body.len() {
        entries.push(IndexEntry {
            offset: u(at)?,
            position: u(at + 8)?,
            timestamp_us: u(at + 16)? as i64,
        });
        at += 24;
    }
    Some(IndexFile {
        next_offset: u(16)?,
        max_timestamp_us: u(32)? as i64,
        first_timestamp_us: u(40)? as i64,
        entries,
    })
}

#[cfg(test)]
mod tests;
