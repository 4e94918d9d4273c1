//! The commit file: one fdatasync makes a whole group-commit round durable, however many
//! files the round wrote.
//!
//! A round that writes several files (the segments of several partitions, and the batch
//! journal when it carries intents) would otherwise fsync each of them. On the disks this
//! log runs on, each fdatasync costs a device flush of its own and the flushes do not
//! overlap: a round over four partitions and the journal paid five flushes. Instead, such a
//! round writes its data into the files as usual (to the page cache, no fsync), then
//! appends one *record* to the commit file that holds the same bytes and where they went
//! (file, position), and fdatasyncs only the commit file. The round is acknowledged once
//! that record is durable.
//!
//! On open, before anything else reads the log's files, every whole record of the current
//! *generation* is written again where it says ([`CommitFile::recover`]): what a power cut
//! took from the files' page cache comes back. A torn last record fails its checksum and is
//! not replayed; nothing in it was acknowledged (its round had not returned), and the files
//! hold at most some of its writes, which is what a crash in the middle of any round leaves
//! and what recovery already handles (a torn tail is cut, and the batch journal rolls back
//! an append that is not whole). A damaged record followed by records of the current
//! generation is damage in the middle (records are made durable one after another): it is
//! reported, and the records after it are written again. Then the file is cut to its header
//! and the next generation starts.
//!
//! Each generation has a random *nonce*, in its header and in every record of it (under the
//! record's checksum). Records are recognised by it, not by the generation number: the
//! bytes of older records still in the file (events' data among them) cannot pass for
//! records of the current generation, whatever a producer put in its events.
//!
//! A *checkpoint* fdatasyncs every file written since the last one, then starts a new
//! generation: it rewrites the header with the next generation number, so the records of
//! the old one are never replayed again. It runs when the file is full, before the batch
//! journal is compacted (rewritten under a new file), before a topic's files are removed (a
//! topic created again under the name reuses the paths), and when the log stops; a log
//! closed cleanly leaves the commit file only its header.
//!
//! ```text
//! header (HEADER_LEN bytes, zeros after) = "CRMBWAL" | version u8 | generation u64 LE
//!                                        | nonce u64 LE | crc32c(the 24 bytes) u32 LE
//! record = body_len u32 LE | crc32c(body) u32 LE | body
//! body   = nonce u64 | part count u32
//!          | per part: path length u16 | path (UTF-8, relative to the data directory)
//!                      | position u64 | data length u32 | data          (all LE)
//! ```
//!
//! The version byte is the format's: a header of a later version makes the open fail with
//! a message that says so (its records could mean something this version would misread). A
//! data directory without a commit file (written by a version before it) opens as one whose
//! commit file is empty. A header that does not read (a power cut in the middle of writing
//! it) is a checkpoint that did not finish writing its header: every file it covered was
//! already fsynced, so nothing is replayed.

use std::collections::HashMap;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::storage::{is_no_space, OpenMode, Storage, StorageFile};

/// The commit file's name in the data directory.
pub const FILE_NAME: &str = "commit.wal";
/// The first seven bytes of the header; the eighth is the format version.
const MAGIC: &[u8; 7] = b"CRMBWAL";
/// The format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Bytes kept for the header; records start here, a page after it, so that no record's
/// write shares the header's page or sector.
pub const HEADER_LEN: u64 = 4096;
/// Bytes before a record's body: its length and checksum.
const RECORD_PREFIX: usize = 8;
/// Bytes of a body before its parts: nonce and part count.
const BODY_PREFIX: usize = 12;
/// The file grows in zero-filled steps of this size (or of its capacity, if smaller), so a
/// record overwrites bytes already in the file (zeros, or older records) and its fdatasync
/// need not commit a new file size as well.
const GROW_BY: u64 = 1024 * 1024;
/// The default capacity: rounds fill it before a checkpoint fsyncs the files they wrote.
pub const DEFAULT_CAPACITY: u64 = 8 * 1024 * 1024;

/// One round's writes, built up as the round writes them, to be appended with
/// [`CommitFile::append`].
#[derive(Debug)]
pub struct CommitRecord {
    buf: Vec<u8>,
    parts: u32,
}

impl CommitRecord {
    /// An empty record (a buffer to reuse from round to round: [`CommitRecord::clear`]).
    pub fn new() -> CommitRecord {
        let mut r = CommitRecord {
            buf: Vec::new(),
            parts: 0,
        };
        r.clear();
        r
    }

    /// Empties the record, keeping its buffer.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.buf.resize(RECORD_PREFIX + BODY_PREFIX, 0);
        self.parts = 0;
    }

    /// Whether no write was added.
    pub fn is_empty(&self) -> bool {
        self.parts == 0
    }

    /// Bytes the record takes in the file.
    pub fn len(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Adds a write of `data` at `position` of the file `path` (relative to the data
    /// directory). Fails if the path cannot be stored (longer than 64 KiB) or the data is
    /// longer than 4 GiB.
    pub fn add(&mut self, path: &str, position: u64, data: &[u8]) -> io::Result<()> {
        let path_len = u16::try_from(path.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "path too long for a commit record",
            )
        })?;
        let data_len = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "write too long for a commit record",
            )
        })?;
        self.buf.reserve(2 + path.len() + 12 + data.len());
        self.buf.extend_from_slice(&path_len.to_le_bytes());
        self.buf.extend_from_slice(path.as_bytes());
        self.buf.extend_from_slice(&position.to_le_bytes());
        self.buf.extend_from_slice(&data_len.to_le_bytes());
        self.buf.extend_from_slice(data);
        self.parts += 1;
        Ok(())
    }

    /// Fills in the prefix for the generation of `nonce`; returns the bytes to write.
    fn seal(&mut self, nonce: u64) -> io::Result<&[u8]> {
        let body_len = u32::try_from(self.buf.len() - RECORD_PREFIX)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "commit record too long"))?;
        self.buf[RECORD_PREFIX..RECORD_PREFIX + 8].copy_from_slice(&nonce.to_le_bytes());
        self.buf[RECORD_PREFIX + 8..RECORD_PREFIX + 12].copy_from_slice(&self.parts.to_le_bytes());
        let crc = crc32c::crc32c(&self.buf[RECORD_PREFIX..]);
        self.buf[0..4].copy_from_slice(&body_len.to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        Ok(&self.buf)
    }
}

impl Default for CommitRecord {
    fn default() -> Self {
        CommitRecord::new()
    }
}

/// The open commit file (see the module documentation). Used by one round at a time.
#[derive(Debug)]
pub struct CommitFile {
    dir: PathBuf,
    file: Box<dyn StorageFile>,
    capacity: u64,
    generation: u64,
    /// The current generation's nonce (see the module documentation).
    nonce: u64,
    /// Where the next record goes.
    end: u64,
    /// The file's size: zeros (or older generations' records) from `end` up to here.
    allocated: u64,
    /// Whether [`CommitFile::close`] ran and nothing was written since.
    closed: bool,
}

/// What [`CommitFile::recover`] found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Records of the current generation written again.
    pub records: u64,
    /// Writes in them (parts) written again.
    pub writes: u64,
    /// Of those, writes to files that no longer exist (removed since), skipped.
    pub skipped: u64,
    /// Damaged records found before records of the same generation (skipped, reported).
    pub damaged: u64,
}

/// A header: its generation and nonce, or why it does not read.
enum Header {
    Current {
        generation: u64,
        nonce: u64,
    },
    /// Torn or zeros: no generation is current.
    Unreadable,
}

/// Bytes of the header before its zeros.
const HEADER_BYTES: usize = 28;

fn encode_header(generation: u64, nonce: u64) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..7].copy_from_slice(MAGIC);
    h[7] = VERSION;
    h[8..16].copy_from_slice(&generation.to_le_bytes());
    h[16..24].copy_from_slice(&nonce.to_le_bytes());
    let crc = crc32c::crc32c(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

fn decode_header(bytes: &[u8], path: &Path) -> io::Result<Header> {
    let Some(h) = bytes.get(..HEADER_BYTES) else {
        return Ok(Header::Unreadable);
    };
    let crc = u32::from_le_bytes([h[24], h[25], h[26], h[27]]);
    if &h[..7] != MAGIC || crc32c::crc32c(&h[..24]) != crc {
        return Ok(Header::Unreadable);
    }
    if h[7] != VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is in commit file format {} and this version of crmbus reads only format {VERSION}: it was written by a later version; open the data directory with that version",
                path.display(),
                h[7]
            ),
        ));
    }
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&h[at..at + 8]);
        u64::from_le_bytes(w)
    };
    Ok(Header::Current {
        generation: word(8),
        nonce: word(16),
    })
}

/// One write of a record, borrowed from the file's bytes.
struct Part<'a> {
    path: &'a str,
    position: u64,
    data: &'a [u8],
}

/// The record at `at`, if a whole one is there: its nonce, parts and end.
fn read_record(bytes: &[u8], at: usize) -> Option<(u64, Vec<Part<'_>>, usize)> {
    let prefix = bytes.get(at..at + RECORD_PREFIX)?;
    let body_len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    let crc = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
    if body_len < BODY_PREFIX || body_len > bytes.len() {
        return None;
    }
    let body = bytes.get(at + RECORD_PREFIX..at + RECORD_PREFIX + body_len)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let nonce = u64::from_le_bytes(body[..8].try_into().ok()?);
    let count = u32::from_le_bytes(body[8..12].try_into().ok()?);
    let mut parts = Vec::new();
    let mut p = BODY_PREFIX;
    for _ in 0..count {
        let path_len = u16::from_le_bytes(body.get(p..p + 2)?.try_into().ok()?) as usize;
        let path = std::str::from_utf8(body.get(p + 2..p + 2 + path_len)?).ok()?;
        p += 2 + path_len;
        let position = u64::from_le_bytes(body.get(p..p + 8)?.try_into().ok()?);
        let data_len = u32::from_le_bytes(body.get(p + 8..p + 12)?.try_into().ok()?) as usize;
        let data = body.get(p + 12..p + 12 + data_len)?;
        p += 12 + data_len;
        parts.push(Part {
            path,
            position,
            data,
        });
    }
    if p != body.len() {
        return None;
    }
    Some((nonce, parts, at + RECORD_PREFIX + body_len))
}

/// Where the next whole record of the generation of `nonce` starts at or after `from`, if
/// any (looking past damage: a record's nonce is checked before its checksum, so a
/// position costs a few byte reads, and bytes that are not that generation's records
/// cannot pass for one).
fn next_record_of(bytes: &[u8], from: usize, nonce: u64) -> Option<usize> {
    let wanted = nonce.to_le_bytes();
    (from..bytes.len().saturating_sub(RECORD_PREFIX + BODY_PREFIX)).find(|&at| {
        bytes.get(at + RECORD_PREFIX..at + RECORD_PREFIX + 8) == Some(&wanted[..])
            && matches!(read_record(bytes, at), Some((n, _, _)) if n == nonce)
    })
}

/// The file a part names, under `dir`; refuses a path that would leave it (a record is
/// checksummed, so this is a defect, not damage).
fn part_path(dir: &Path, rel: &str) -> io::Result<PathBuf> {
    let p = Path::new(rel);
    if rel.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("commit record names the path {rel:?}, which is not inside the data directory"),
        ));
    }
    Ok(dir.join(p))
}

impl CommitFile {
    /// Opens the commit file of the data directory `dir` (creating it if missing), writes
    /// every whole record of its current generation again where it says (reporting damage
    /// in the middle and going on after it), fsyncs the files written, cuts the file to its
    /// header and starts the next generation. Call it before anything reads the log's
    /// files. `capacity`: bytes of records (after the header) between checkpoints.
    ///
    /// Fails if the file was written by a later format version, or if a write or fsync
    /// fails (nothing may be served then: the files may lack acknowledged data).
    pub fn recover(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        capacity: u64,
    ) -> io::Result<(CommitFile, Replayed)> {
        let path = dir.join(FILE_NAME);
        let existed = storage.exists(&path);
        let file = storage.open(&path, OpenMode::OpenOrCreate)?;
        if !existed {
            // The file's name must survive a power cut as surely as the records in it.
            storage.sync_dir(dir)?;
        }
        let mut bytes = vec![0u8; usize::try_from(file.len()?).map_err(io::Error::other)?];
        file.read_exact_at(&mut bytes, 0)?;
        let mut replayed = Replayed::default();
        // The header's generation (0 when it does not read): the next one follows it.
        let mut last_generation = 0u64;
        match decode_header(&bytes, &path)? {
            Header::Current { generation, nonce } => {
                last_generation = generation;
                let mut written: Vec<Box<dyn StorageFile>> = Vec::new();
                let mut by_name: HashMap<PathBuf, Option<usize>> = HashMap::new();
                let mut at = HEADER_LEN as usize;
                loop {
                    let (parts, end) = match read_record(&bytes, at) {
                        Some((n, parts, end)) if n == nonce => (parts, end),
                        _ => match next_record_of(&bytes, at + 1, nonce) {
                            // Records of this generation after damage: the damage is in
                            // the middle (records are made durable one after another), so
                            // it is reported, and what follows is still written again.
                            Some(next) => {
                                tracing::error!(
                                    file = %path.display(),
                                    position = at,
                                    "a record of the commit file is damaged; the records after it are written again"
                                );
                                metrics::counter!("crmbus_log_corrupt_records_total").increment(1);
                                replayed.damaged += 1;
                                at = next;
                                continue;
                            }
                            // The end, or a torn last record (never acknowledged).
                            None => break,
                        },
                    };
                    for part in parts {
                        replayed.writes += 1;
                        let target = part_path(dir, part.path)?;
                        let slot = match by_name.get(&target) {
                            Some(slot) => *slot,
                            None => {
                                let slot = match storage.open(&target, OpenMode::Existing) {
                                    Ok(f) => {
                                        written.push(f);
                                        Some(written.len() - 1)
                                    }
                                    // Removed since (retention removed the segment): its
                                    // records are gone on purpose.
                                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                                    Err(e) => return Err(e),
                                };
                                by_name.insert(target, slot);
                                slot
                            }
                        };
                        match slot {
                            Some(i) => written[i].write_all_at(part.data, part.position)?,
                            None => replayed.skipped += 1,
                        }
                    }
                    replayed.records += 1;
                    at = end;
                }
                for f in &written {
                    f.sync_data()?;
                }
            }
            Header::Unreadable => {
                // A checkpoint cut short while writing the header: everything it covered
                // was fsynced first, and nothing ran after it. (Or a new file.) Records
                // after a header that does not read could also mean the header sector was
                // damaged: that is worth a line in the log.
                if read_record(&bytes, HEADER_LEN as usize).is_some() {
                    tracing::warn!(
                        file = %path.display(),
                        "the commit file's header does not read and records follow it; taking it for a checkpoint a power cut interrupted and writing none of them again"
                    );
                }
            }
        }
        if replayed.records > 0 {
            tracing::info!(
                records = replayed.records,
                writes = replayed.writes,
                skipped = replayed.skipped,
                "wrote the commit file's records again after an unclean stop"
            );
        }
        // Every record is written again and fsynced (or was covered): none may be read
        // again. Cut before the new header is written, so no record of an older generation
        // stays behind the new generation's (a torn header later could otherwise count
        // generations from an earlier one).
        if bytes.len() as u64 > HEADER_LEN {
            file.set_len(HEADER_LEN)?;
            file.sync_data()?;
        }
        let mut commit = CommitFile {
            dir: dir.to_path_buf(),
            file,
            capacity,
            generation: last_generation,
            nonce: 0,
            end: HEADER_LEN,
            allocated: (bytes.len() as u64).min(HEADER_LEN),
            closed: false,
        };
        commit.start_generation()?;
        Ok((commit, replayed))
    }

    /// Writes the header of the next generation and fsyncs it: from here on the records
    /// written before are never replayed.
    fn start_generation(&mut self) -> io::Result<()> {
        let next = self.generation.wrapping_add(1);
        let nonce = rand::random::<u64>();
        self.file.write_all_at(&encode_header(next, nonce), 0)?;
        self.allocated = self.allocated.max(HEADER_BYTES as u64);
        self.file.sync_data()?;
        (self.generation, self.nonce) = (next, nonce);
        self.end = HEADER_LEN;
        Ok(())
    }

    /// The data directory's path of `file`, as a record stores it. Fails for a file
    /// outside the data directory.
    pub fn relative<'a>(&self, file: &'a Path) -> io::Result<&'a str> {
        file.strip_prefix(&self.dir)
            .ok()
            .and_then(Path::to_str)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not inside the data directory", file.display()),
                )
            })
    }

    /// Whether `record` fits before the capacity is reached (if not, checkpoint instead).
    pub fn fits(&self, record: &CommitRecord) -> bool {
        self.end + record.len() <= HEADER_LEN.saturating_add(self.capacity)
    }

    /// Appends `record` and fdatasyncs the file: once this returns `Ok(true)`, the
    /// record's writes are durable. `Ok(false)` when the disk has no room for it (the file
    /// could not grow, or a copy-on-write file system found none for the write): nothing of
    /// it counts, and the caller checkpoints instead (on a file system that overwrites in
    /// place, that needs no new space). The caller checked that it
    /// [`fits`](CommitFile::fits). A failed fsync is an error.
    pub fn append(&mut self, record: &mut CommitRecord) -> io::Result<bool> {
        self.closed = false;
        let bytes = record.seal(self.nonce)?;
        let end = self.end + bytes.len() as u64;
        if end > self.allocated {
            // Zeros ahead, a step at a time, so the records' fdatasyncs need not commit a
            // new file size too.
            let step = self.capacity.clamp(1, GROW_BY);
            let grown = end
                .div_ceil(step)
                .saturating_mul(step)
                .min(HEADER_LEN.saturating_add(self.capacity).max(end));
            let zeros = vec![0u8; (grown - self.allocated) as usize];
            match self.file.write_all_at(&zeros, self.allocated) {
                Ok(()) => self.allocated = grown,
                Err(e) if is_no_space(&e) => {
                    // What did get written is zeros past the last record: harmless.
                    tracing::debug!(error = %e, "no room to grow the commit file; checkpointing instead");
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        match self.file.write_all_at(bytes, self.end) {
            Ok(()) => {}
            // Part of the record may be written: it fails its checksum, and the checkpoint
            // that follows starts a generation that never reads it.
            Err(e) if is_no_space(&e) => return Ok(false),
            Err(e) => return Err(e),
        }
        self.file.sync_data()?;
        self.end = end;
        Ok(true)
    }

    /// Starts the next generation; call it once every file the records of this one wrote
    /// is fsynced.
    pub fn checkpointed(&mut self) -> io::Result<()> {
        self.start_generation()
    }

    /// For a log that stopped cleanly (every file fsynced): starts the next generation and
    /// cuts the file to its header, giving back its space.
    pub fn close(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        self.start_generation()?;
        self.file.set_len(HEADER_LEN)?;
        self.file.sync_data()?;
        self.allocated = HEADER_LEN;
        self.closed = true;
        Ok(())
    }

    /// Bytes of records written in this generation.
    pub fn used(&self) -> u64 {
        self.end - HEADER_LEN
    }

    /// Bytes of records a generation holds before a checkpoint.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SimStorage;

    fn setup() -> (SimStorage, Arc<dyn Storage>, PathBuf) {
        let sim = SimStorage::new();
        let storage: Arc<dyn Storage> = Arc::new(sim.mount());
        let dir = PathBuf::from("/d");
        storage.create_dir_all(&dir.join("t")).unwrap();
        (sim, storage, dir)
    }

    fn read(storage: &Arc<dyn Storage>, path: &Path) -> Vec<u8> {
        storage.read(path).unwrap()
    }

    /// Creates the empty data file `t/a.log` the tests' records write to; returns its path.
    fn empty_data_file(storage: &Arc<dyn Storage>, dir: &Path) -> PathBuf {
        let a = dir.join("t/a.log");
        storage.open(&a, OpenMode::Truncate).unwrap();
        a
    }

    /// Writes `bytes` over the commit file at `at` (damage a test plants).
    fn overwrite_commit_file(storage: &Arc<dyn Storage>, dir: &Path, at: u64, bytes: &[u8]) {
        storage
            .open(&dir.join(FILE_NAME), OpenMode::Existing)
            .unwrap()
            .write_all_at(bytes, at)
            .unwrap();
    }

    #[test]
    fn records_of_the_current_generation_are_written_again_and_older_ones_never() {
        let (_sim, storage, dir) = setup();
        let a = dir.join("t/a.log");
        let fa = storage.open(&a, OpenMode::Truncate).unwrap();
        fa.write_all_at(b"xxxxxxxx", 0).unwrap();
        let (mut c, r) = CommitFile::recover(&storage, &dir, 4096).unwrap();
        assert_eq!(r, Replayed::default());
        let mut rec = CommitRecord::new();
        rec.add("t/a.log", 2, b"OLD").unwrap();
        rec.add("t/gone.log", 0, b"zz").unwrap();
        assert!(c.append(&mut rec).unwrap());
        rec.clear();
        rec.add("t/a.log", 0, b"BAD").unwrap();
        assert!(c.append(&mut rec).unwrap());
        c.checkpointed().unwrap();
        // The same size as the first record of the old generation: the second one (BAD)
        // follows it whole in the file.
        rec.clear();
        rec.add("t/a.log", 4, b"NEW").unwrap();
        rec.add("t/gone.log", 0, b"zz").unwrap();
        assert!(c.append(&mut rec).unwrap());
        drop(c);
        let (c, r) = CommitFile::recover(&storage, &dir, 1 << 20).unwrap();
        assert_eq!(
            r,
            Replayed {
                records: 1,
                writes: 2,
                skipped: 1,
                damaged: 0
            }
        );
        // The older generation's writes (OLD at 2, BAD at 0) were not replayed.
        assert_eq!(read(&storage, &a), b"xxxxNEWx".to_vec());
        assert!(!storage.exists(&dir.join("t/gone.log")));
        // Recovery started a new generation: nothing is replayed twice.
        drop(c);
        let (_, r) = CommitFile::recover(&storage, &dir, 4096).unwrap();
        assert_eq!(r.records, 0);
    }

    #[test]
    fn a_torn_record_ends_the_replay() {
        let (_sim, storage, dir) = setup();
        let a = empty_data_file(&storage, &dir);
        let (mut c, _) = CommitFile::recover(&storage, &dir, 4096).unwrap();
        let mut rec = CommitRecord::new();
        rec.add("t/a.log", 0, b"one").unwrap();
        assert!(c.append(&mut rec).unwrap());
        let second_at = c.end;
        rec.clear();
        rec.add("t/a.log", 3, b"two").unwrap();
        assert!(c.append(&mut rec).unwrap());
        drop(c);
        // Damage one byte of the second record's data.
        overwrite_commit_file(&storage, &dir, second_at + rec.len() - 1, b"?");
        let (_, r) = CommitFile::recover(&storage, &dir, 4096).unwrap();
        assert_eq!(r.records, 1);
        assert_eq!(read(&storage, &a), b"one".to_vec());
    }

    #[test]
    fn damage_in_the_middle_is_reported_and_the_records_after_it_are_written_again() {
        let (_sim, storage, dir) = setup();
        let a = empty_data_file(&storage, &dir);
        let (mut c, _) = CommitFile::recover(&storage, &dir, 1 << 20).unwrap();
        let mut rec = CommitRecord::new();
        let mut second_at = 0;
        for (i, data) in [b"one", b"two", b"six"].iter().enumerate() {
            if i == 1 {
                second_at = c.end;
            }
            rec.clear();
            rec.add("t/a.log", 3 * i as u64, *data).unwrap();
            assert!(c.append(&mut rec).unwrap());
        }
        drop(c);
        overwrite_commit_file(&storage, &dir, second_at + rec.len() - 1, b"?");
        let (_, r) = CommitFile::recover(&storage, &dir, 1 << 20).unwrap();
        assert_eq!((r.records, r.damaged), (2, 1));
        assert_eq!(read(&storage, &a), b"one\0\0\0six".to_vec());
    }

    #[test]
    fn a_header_that_does_not_read_replays_nothing_and_leaves_no_record_behind() {
        let (_sim, storage, dir) = setup();
        let a = empty_data_file(&storage, &dir);
        let (mut c, _) = CommitFile::recover(&storage, &dir, 4096).unwrap();
        let mut rec = CommitRecord::new();
        rec.add("t/a.log", 0, b"abc").unwrap();
        assert!(c.append(&mut rec).unwrap());
        drop(c);
        overwrite_commit_file(&storage, &dir, 0, &[0u8; HEADER_BYTES]);
        let (_, r) = CommitFile::recover(&storage, &dir, 4096).unwrap();
        assert_eq!(r.records, 0);
        assert!(read(&storage, &a).is_empty());
        assert_eq!(
            read(&storage, &dir.join(FILE_NAME)).len() as u64,
            HEADER_LEN
        );
    }

    /// Bytes of older records (events' data among them) cannot pass for records of the
    /// current generation: a record made to look like one, with the next generation's
    /// number where the nonce goes, is not written again.
    #[test]
    fn a_record_forged_in_older_data_is_not_written_again() {
        let (_sim, storage, dir) = setup();
        let a = empty_data_file(&storage, &dir);
        let (mut c, _) = CommitFile::recover(&storage, &dir, 1 << 20).unwrap();
        let mut forged = CommitRecord::new();
        forged.add("t/a.log", 0, b"FORGED").unwrap();
        let forged = forged.seal(c.generation() + 1).unwrap().to_vec();
        let mut rec = CommitRecord::new();
        rec.add("t/a.log", 0, &[b'-'; 64]).unwrap();
        rec.add("t/a.log", 100, &forged).unwrap();
        assert!(c.append(&mut rec).unwrap());
        c.checkpointed().unwrap();
        // Shorter than the old record: its bytes (the forged record among them) follow.
        rec.clear();
        rec.add("t/a.log", 0, b"new").unwrap();
        assert!(c.append(&mut rec).unwrap());
        drop(c);
        let (_, r) = CommitFile::recover(&storage, &dir, 1 << 20).unwrap();
        assert_eq!((r.records, r.damaged), (1, 0));
        assert_eq!(read(&storage, &a), b"new".to_vec());
    }

    #[test]
    fn a_header_of_a_later_format_is_refused_with_a_message() {
        let (_sim, storage, dir) = setup();
        let f = storage
            .open(&dir.join(FILE_NAME), OpenMode::Truncate)
            .unwrap();
        let mut h = encode_header(7, 9);
        h[7] = VERSION + 1;
        let crc = crc32c::crc32c(&h[..24]);
        h[24..28].copy_from_slice(&crc.to_le_bytes());
        f.write_all_at(&h, 0).unwrap();
        let e = CommitFile::recover(&storage, &dir, 4096).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("written by a later version"), "{e}");
    }

    #[test]
    fn a_record_naming_a_path_outside_the_directory_is_refused() {
        let (_sim, storage, dir) = setup();
        let (mut c, _) = CommitFile::recover(&storage, &dir, 4096).unwrap();
        let mut rec = CommitRecord::new();
        rec.add("../escape", 0, b"x").unwrap();
        assert!(c.append(&mut rec).unwrap());
        drop(c);
        let e = CommitFile::recover(&storage, &dir, 4096).unwrap_err();
        assert!(
            e.to_string().contains("not inside the data directory"),
            "{e}"
        );
    }

    #[test]
    fn close_leaves_only_the_header() {
        let (_sim, storage, dir) = setup();
        let (mut c, _) = CommitFile::recover(&storage, &dir, 1 << 20).unwrap();
        let mut rec = CommitRecord::new();
        rec.add("t/a.log", 0, &[7u8; 1000]).unwrap();
        assert!(c.fits(&rec));
        assert!(c.append(&mut rec).unwrap());
        assert!(c.used() > 1000);
        c.close().unwrap();
        assert_eq!(
            read(&storage, &dir.join(FILE_NAME)).len() as u64,
            HEADER_LEN
        );
    }
}
