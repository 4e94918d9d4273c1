//! The batch journal: an append that spans several partitions (a batch whose events hash to
//! different partitions, or one event published to several topics) is all-or-nothing across
//! a crash.
//!
//! Each partition is written and fsynced on its own, so a crash in the middle of such an
//! append could leave it in some partitions and not others. To prevent that, before the
//! append stages anything, an *intent* — its topics and events — is queued for
//! `batches.journal`; with [`Durability::Fsync`](crate::Durability) the group commit writes
//! and fsyncs it before it writes any of the append's data (see [`crate::syncer`]). Once
//! the append is durable in every partition a *done* mark follows (it needs no fsync of its own). On open, every intent
//! without a done mark is completed before anything is served: events not yet in their
//! partition are appended, so the batch ends up whole, and the journal is emptied.
//!
//! ```text
//! frame = body_len: u32 LE | crc32c(body): u32 LE | body
//! body  = kind: u8 (1 intent, 2 done, 3 topic deleted, 4 recovery point) | id: u64 LE
//!         | payload (intent: JSON, done: empty, topic deleted: the topic's name,
//!           recovery point: partition u32 | segment base u64 | length u64 | next offset u64
//!           | the topic's name, all LE)
//! ```
//!
//! The journal also keeps each partition's *recovery point*: the active segment's length
//! and next offset as of a group-commit round that fsynced them (see
//! [`RecoveryPoint`]). They ride along with the next round's journal write and never cost
//! an fsync of their own; recovery treats damage before a partition's point as corruption
//! and everything after it as a tail that may be torn.
//!
//! A frame that is torn or fails its checksum ends the journal: nothing after it was
//! acknowledged, because an intent is durable before any of its append's data is written.
//! Once the file is large it is compacted: rewritten beside the old one with only the
//! intents still outstanding, fsynced, and renamed over it.

use crmbus::sync::LockExt;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crmbus::Event;
use serde::Deserialize;

use crate::storage::{remove_if_exists, OpenMode, OsStorage, Storage, StorageFile};

/// The journal's file name in the data directory.
pub const FILE_NAME: &str = "batches.journal";
const KIND_INTENT: u8 = 1;
const KIND_DONE: u8 = 2;
const KIND_TOPIC_DELETED: u8 = 3;
const KIND_RECOVERY_POINT: u8 = 4;
const HEADER: usize = 8;
const BODY_PREFIX: usize = 9;
/// The journal is compacted (rewritten with only the outstanding intents) once it is this
/// large.
pub const COMPACT_AT: u64 = 64 * 1024 * 1024;

/// One topic of an intent and, per partition, an offset at or below the first offset the
/// append could get there (the partition's durable end before the intent was written):
/// recovery looks for the intent's events from there on.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct IntentTopic {
    /// The topic's name.
    pub name: String,
    /// Per partition, where the append's records can start at the earliest.
    pub from: Vec<u64>,
}

/// An append that was not known to be durable everywhere when the log stopped.
#[derive(Debug, Clone, Deserialize)]
pub struct Intent {
    /// When the append ran (µs since the epoch, the log's clock).
    pub at_us: i64,
    /// The topics appended to.
    pub topics: Vec<IntentTopic>,
    /// The events, in the order given to the append.
    pub events: Vec<Event>,
}

/// Encodes an intent's frame from the events' JSON (as the log already encoded them).
pub fn encode_intent(
    id: u64,
    at_us: i64,
    topics: &[(&str, Vec<u64>)],
    events_json: &[&[u8]],
) -> Vec<u8> {
    let topics: Vec<serde_json::Value> = topics
        .iter()
        .map(|(name, from)| serde_json::json!({"name": name, "from": from}))
        .collect();
    let mut payload = format!("{{\"at_us\":{at_us},\"topics\":").into_bytes();
    payload.extend_from_slice(
        serde_json::to_string(&topics)
            .unwrap_or_else(|_| "[]".into())
            .as_bytes(),
    );
    payload.extend_from_slice(b",\"events\":[");
    for (i, json) in events_json.iter().enumerate() {
        if i > 0 {
            payload.push(b',');
        }
        payload.extend_from_slice(json);
    }
    payload.extend_from_slice(b"]}");
    frame(KIND_INTENT, id, &payload)
}

/// Encodes mark `id`: topic `name` was deleted, so intents written before the mark no
/// longer apply to it (a topic created again under the name is another topic).
pub fn encode_topic_deleted(id: u64, name: &str) -> Vec<u8> {
    frame(KIND_TOPIC_DELETED, id, name.as_bytes())
}

/// Where a partition's data was known durable: its active segment (by base offset) held
/// `len` bytes of whole batches, up to offset `next`. Recovery never cuts the segment
/// before `len`; what follows may be a torn tail and is cut at the first damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryPoint {
    /// Base offset of the segment the point is in.
    pub base: u64,
    /// Bytes of the segment known durable.
    pub len: u64,
    /// The offset after the last record in those bytes.
    pub next: u64,
}

/// Encodes recovery point `id` of `topic`/`partition`.
pub fn encode_recovery_point(id: u64, topic: &str, partition: u32, p: &RecoveryPoint) -> Vec<u8> {
    let mut payload = Vec::with_capacity(28 + topic.len());
    payload.extend_from_slice(&partition.to_le_bytes());
    payload.extend_from_slice(&p.base.to_le_bytes());
    payload.extend_from_slice(&p.len.to_le_bytes());
    payload.extend_from_slice(&p.next.to_le_bytes());
    payload.extend_from_slice(topic.as_bytes());
    frame(KIND_RECOVERY_POINT, id, &payload)
}

fn decode_recovery_point(payload: &[u8]) -> Option<(String, u32, RecoveryPoint)> {
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(
            payload.get(at..at + 8)?.try_into().ok()?,
        ))
    };
    let partition = u32::from_le_bytes(payload.get(0..4)?.try_into().ok()?);
    let point = RecoveryPoint {
        base: u64_at(4)?,
        len: u64_at(12)?,
        next: u64_at(20)?,
    };
    let topic = String::from_utf8(payload.get(28..)?.to_vec()).ok()?;
    Some((topic, partition, point))
}

/// A frame with its id (compactions keep frames in id order).
type IdFrame = (u64, Vec<u8>);

/// The recovery points found in a journal, by (topic, partition).
pub type RecoveryPoints = HashMap<(String, u32), RecoveryPoint>;

/// Encodes the done mark of intent `id`.
pub fn encode_done(id: u64) -> Vec<u8> {
    frame(KIND_DONE, id, &[])
}

fn frame(kind: u8, id: u64, payload: &[u8]) -> Vec<u8> {
    let body_len = BODY_PREFIX + payload.len();
    let mut out = Vec::with_capacity(HEADER + body_len);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[HEADER..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Reads the journal's frames: the intents without a done mark, in the order written.
/// Stops at the first torn or damaged frame.
pub fn pending_intents(bytes: &[u8]) -> io::Result<Vec<(u64, Intent)>> {
    read_frames(bytes).map(|r| r.pending)
}

/// What reading the journal found.
struct Frames {
    /// The intents without a done mark.
    pending: Vec<(u64, Intent)>,
    /// The last recovery point of each partition (of topics not deleted after it).
    points: RecoveryPoints,
    /// The highest id in any frame read.
    max_id: u64,
    /// Where the last whole frame ends.
    end: usize,
}

fn read_frames(bytes: &[u8]) -> io::Result<Frames> {
    // Each pending intent's payload, with the topics deleted after it.
    let mut intents: BTreeMap<u64, (&[u8], Vec<String>)> = BTreeMap::new();
    let mut points = RecoveryPoints::new();
    let mut max_id = 0u64;
    let mut at = 0usize;
    while bytes.len() - at >= HEADER {
        let mut len = [0u8; 4];
        len.copy_from_slice(&bytes[at..at + 4]);
        let body_len = u32::from_le_bytes(len) as usize;
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&bytes[at + 4..at + 8]);
        if body_len < BODY_PREFIX || bytes.len() - at - HEADER < body_len {
            break;
        }
        let body = &bytes[at + HEADER..at + HEADER + body_len];
        if crc32c::crc32c(body) != u32::from_le_bytes(crc) {
            break;
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&body[1..9]);
        let id = u64::from_le_bytes(id);
        max_id = max_id.max(id);
        match body[0] {
            KIND_INTENT => {
                intents.insert(id, (&body[BODY_PREFIX..], Vec::new()));
            }
            KIND_RECOVERY_POINT => {
                if let Some((topic, partition, point)) = decode_recovery_point(&body[BODY_PREFIX..])
                {
                    points.insert((topic, partition), point);
                }
            }
            KIND_TOPIC_DELETED => {
                let name = String::from_utf8_lossy(&body[BODY_PREFIX..]).into_owned();
                points.retain(|(t, _), _| t != &name);
                for (_, deleted) in intents.values_mut() {
                    deleted.push(name.clone());
                }
            }
            KIND_DONE => {
                intents.remove(&id);
            }
            _ => break,
        }
        at += HEADER + body_len;
    }
    let pending = intents
        .into_iter()
        .map(|(id, (payload, deleted))| {
            serde_json::from_slice::<Intent>(payload)
                .map(|mut intent| {
                    intent.topics.retain(|t| !deleted.contains(&t.name));
                    (id, intent)
                })
                .map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("batch journal intent {id} has a valid checksum but cannot be read: {e}"),
                    )
                })
        })
        .collect::<io::Result<Vec<_>>>()?;
    Ok(Frames {
        pending,
        points,
        max_id,
        end: at,
    })
}

struct FileState {
    file: Box<dyn StorageFile>,
    /// Where the next frame goes (the end of the last frame).
    len: u64,
    /// The file's size: zeros from `len` up to here, written ahead of time.
    allocated: u64,
    /// What the last compaction kept.
    live: u64,
}

/// The journal grows in zero-filled steps of this size (or of the compaction threshold, if
/// smaller, down to 64 KiB). Writing a frame then overwrites
/// zeros inside the file, so its fdatasync does not have to commit a new file size too
/// (on ext4 about half the cost of an appending one). A frame of zeros reads as the end.
const GROW_BY: u64 = 4 * 1024 * 1024;

/// Room kept free after the last frame when an appender makes room (frames of other
/// appends may be queued between its check and the write).
const ROOM_SLACK: u64 = 64 * 1024;

/// The open journal file. Written by one writer at a time (the group-commit thread, or the
/// appender itself with [`Durability::Os`](crate::Durability)).
pub struct BatchJournal {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    compact_at: u64,
    state: Mutex<FileState>,
    next_id: AtomicU64,
    /// Frames of the intents whose done mark is not handed over yet: what a compaction
    /// keeps.
    outstanding: Mutex<HashMap<u64, Vec<u8>>>,
    /// Topic deletion marks written since the journal was opened (kept by compactions: an
    /// outstanding intent written before one must not be replayed into a new topic).
    deletions: Mutex<Vec<(u64, Vec<u8>)>>,
    /// The last recovery point frame written for each partition (kept by compactions).
    points: Mutex<HashMap<(String, u32), IdFrame>>,
    /// The recovery points found when the journal was opened.
    found_points: RecoveryPoints,
    /// Bytes free after the last frame as of the last write (read without the file's lock,
    /// which the writer holds through its fsync).
    room: AtomicU64,
}

impl BatchJournal {
    /// Opens `dir/batches.journal`, creating it empty if missing; returns the journal and
    /// the intents left pending by the last run.
    pub fn open(dir: &Path) -> io::Result<(BatchJournal, Vec<(u64, Intent)>)> {
        BatchJournal::open_compacting_at(Arc::new(OsStorage), dir, COMPACT_AT)
    }

    /// [`BatchJournal::open`] on `storage`, compacting once the file reaches `compact_at`
    /// bytes.
    pub fn open_compacting_at(
        storage: Arc<dyn Storage>,
        dir: &Path,
        compact_at: u64,
    ) -> io::Result<(BatchJournal, Vec<(u64, Intent)>)> {
        // A compaction the last run did not finish: the old file is still whole.
        let leftover = dir.join(format!("{FILE_NAME}.compact"));
        remove_if_exists(storage.as_ref(), &leftover)?;
        let existed = storage.exists(&dir.join(FILE_NAME));
        let file = storage.open(&dir.join(FILE_NAME), OpenMode::OpenOrCreate)?;
        if !existed {
            // The file's name must survive a power loss as surely as what is written in it.
            storage.sync_dir(dir)?;
        }
        let mut bytes = vec![0u8; usize::try_from(file.len()?).map_err(io::Error::other)?];
        file.read_exact_at(&mut bytes, 0)?;
        let Frames {
            pending,
            points: found_points,
            max_id,
            end,
        } = read_frames(&bytes)?;
        let (len, allocated) = (end as u64, bytes.len() as u64);
        Ok((
            BatchJournal {
                storage,
                dir: dir.to_path_buf(),
                compact_at,
                state: Mutex::new(FileState {
                    file,
                    len,
                    allocated,
                    live: 0,
                }),
                deletions: Mutex::new(Vec::new()),
                points: Mutex::new(HashMap::new()),
                found_points,
                room: AtomicU64::new(allocated - len),
                next_id: AtomicU64::new(max_id + 1),
                outstanding: Mutex::new(HashMap::new()),
            },
            pending,
        ))
    }

    /// Encodes a new intent and counts it as outstanding until [`BatchJournal::finished`];
    /// returns its id and frame, to be written before any of the append's data.
    pub fn begin(
        &self,
        at_us: i64,
        topics: &[(&str, Vec<u64>)],
        events_json: &[&[u8]],
    ) -> (u64, Vec<u8>) {
        let id = self.next_id.fetch_add(1, Ordering::AcqRel);
        let frame = encode_intent(id, at_us, topics, events_json);
        self.outstanding.locked().insert(id, frame.clone());
        (id, frame)
    }

    /// Intent `id`'s append is durable everywhere; returns its done mark to write.
    pub fn finished(&self, id: u64) -> Vec<u8> {
        self.outstanding.locked().remove(&id);
        encode_done(id)
    }

    /// Grows the file (with zeros) so that at least `extra` bytes, plus some slack for
    /// frames queued meanwhile, fit after the last frame without growing it at write time.
    /// Called by an appender before it queues an intent: a full disk fails that append,
    /// not the group commit's write.
    pub fn ensure_room(&self, extra: u64) -> io::Result<()> {
        if self.room.load(Ordering::Acquire) >= extra + ROOM_SLACK {
            return Ok(());
        }
        let mut s = self.state.locked();
        let end = s.len + extra + ROOM_SLACK;
        if end <= s.allocated {
            return Ok(());
        }
        self.grow(&mut s, end)
    }

    fn grow(&self, s: &mut FileState, end: u64) -> io::Result<()> {
        let step = self.compact_at.clamp(64 * 1024, GROW_BY);
        let grown = end.div_ceil(step) * step;
        let zeros = vec![0u8; (grown - s.allocated) as usize];
        s.file.write_all_at(&zeros, s.allocated)?;
        s.allocated = grown;
        self.room.store(s.allocated - s.len, Ordering::Release);
        Ok(())
    }

    /// Writes frames after the last one; with `sync`, fdatasyncs the file.
    pub fn write(&self, bytes: &[u8], sync: bool) -> io::Result<()> {
        let mut s = self.state.locked();
        if !bytes.is_empty() {
            let end = s.len + bytes.len() as u64;
            if end > s.allocated {
                self.grow(&mut s, end)?;
            }
            s.file.write_all_at(bytes, s.len)?;
            s.len = end;
            self.room.store(s.allocated - s.len, Ordering::Release);
        }
        if sync {
            s.file.sync_data()?;
        }
        Ok(())
    }

    /// Once the file is large, rewrites it with only the outstanding intents: written to a
    /// new file, fsynced and renamed over the old one, so a crash leaves one or the other
    /// whole. Called by the writer between writes.
    pub fn compact_if_large(&self) -> io::Result<()> {
        let mut s = self.state.locked();
        // Also wait for the file to double what the last compaction kept, so a large set of
        // outstanding intents does not make every round compact.
        if s.len < self.compact_at.max(2 * s.live) {
            return Ok(());
        }
        let mut keep: Vec<(u64, Vec<u8>)> = self
            .outstanding
            .locked()
            .iter()
            .map(|(id, f)| (*id, f.clone()))
            .collect();
        keep.extend(self.deletions.locked().iter().cloned());
        keep.extend(self.points.locked().values().cloned());
        keep.sort_unstable_by_key(|(id, _)| *id);
        let path = self.dir.join(FILE_NAME);
        let tmp = self.dir.join(format!("{FILE_NAME}.compact"));
        let written = (|| -> io::Result<u64> {
            let f = self.storage.open(&tmp, OpenMode::Truncate)?;
            let mut len = 0u64;
            for (_, frame) in &keep {
                f.write_all_at(frame, len)?;
                len += frame.len() as u64;
            }
            f.sync_all()?;
            self.storage.rename(&tmp, &path)?;
            Ok(len)
        })();
        let len = match written {
            Ok(len) => len,
            Err(e) => {
                // The old file is still in place and whole: go on with it, try again later.
                tracing::warn!(error = %e, "compacting the batch journal failed; it keeps growing");
                let _ = self.storage.remove_file(&tmp);
                s.live = s.len;
                return Ok(());
            }
        };
        // From here on new frames must go to the new file, and its name must be durable.
        s.file = self.storage.open(&path, OpenMode::OpenOrCreate)?;
        self.storage.sync_dir(&self.dir)?;
        s.len = len;
        s.allocated = len;
        self.room.store(0, Ordering::Release);
        s.live = len;
        Ok(())
    }

    /// The recovery points the journal held when it was opened.
    pub fn recovery_points(&self) -> &RecoveryPoints {
        &self.found_points
    }

    /// Encodes `topic`/`partition`'s recovery point `point`, to be written with the next
    /// journal write (it needs no fsync of its own). Compactions keep the latest of each.
    pub fn recovery_point(&self, topic: &str, partition: u32, point: &RecoveryPoint) -> Vec<u8> {
        let id = self.next_id.fetch_add(1, Ordering::AcqRel);
        let frame = encode_recovery_point(id, topic, partition, point);
        self.points
            .locked()
            .insert((topic.to_string(), partition), (id, frame.clone()));
        frame
    }

    /// Notes that topic `name` was deleted; returns the mark to write (before the topic can
    /// be created again). Compactions keep it, in order among the intents.
    pub fn topic_deleted(&self, name: &str) -> Vec<u8> {
        let id = self.next_id.fetch_add(1, Ordering::AcqRel);
        let frame = encode_topic_deleted(id, name);
        self.points.locked().retain(|(t, _), _| t != name);
        self.deletions.locked().push((id, frame.clone()));
        frame
    }

    /// Empties the file now (after recovery has completed every pending intent durably).
    pub fn clear(&self) -> io::Result<()> {
        let mut s = self.state.locked();
        if s.allocated == 0 {
            return Ok(());
        }
        s.file.set_len(0)?;
        // Not needed for correctness: `open` writes the recovery points right after with
        // an fsync that makes the new length durable too; with no partition to write a
        // point for, a journal the power cut brings back holds only completed intents,
        // which the next open completes again (finding them stored) and clears.
        s.file.sync_all()?; // mutants: equivalent (see above)
        s.len = 0;
        s.allocated = 0;
        self.room.store(0, Ordering::Release);
        s.live = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(id: &str) -> Event {
        Event::new("deal.won", json!({"deal_id": id}))
            .id(id)
            .source("urn:test")
    }

    #[test]
    fn intents_without_a_done_mark_are_pending_and_a_torn_tail_ends_the_journal() {
        let (a, b) = (event("a"), event("b"));
        let (ja, jb) = (a.to_json_vec(), b.to_json_vec());
        let mut bytes = encode_intent(1, 5, &[("deals", vec![0, 4])], &[&ja, &jb]);
        bytes.extend(encode_intent(
            2,
            6,
            &[("x", vec![7]), ("y", vec![1])],
            &[&ja],
        ));
        bytes.extend(encode_done(1));
        let whole = pending_intents(&bytes).expect("read");
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].0, 2);
        assert_eq!(
            whole[0].1.topics,
            vec![
                IntentTopic {
                    name: "x".into(),
                    from: vec![7]
                },
                IntentTopic {
                    name: "y".into(),
                    from: vec![1]
                }
            ]
        );
        assert_eq!(whole[0].1.events[0].id, "a");

        // The done mark of 1 torn: 1 is pending again; a damaged byte stops the read there.
        let torn = &bytes[..bytes.len() - 3];
        let ids: Vec<u64> = pending_intents(torn)
            .expect("read")
            .iter()
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(ids, vec![1, 2]);
        let mut damaged = bytes.clone();
        damaged[HEADER + 2] ^= 0xff;
        assert!(pending_intents(&damaged).expect("read").is_empty());
    }

    #[test]
    fn frames_written_after_the_file_is_emptied_are_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let json = event("a").to_json_vec();
        let (journal, pending) = BatchJournal::open(dir.path()).expect("open");
        assert!(pending.is_empty());
        let (first, frame) = journal.begin(0, &[("t", vec![0, 0])], &[&json]);
        journal.write(&frame, true).expect("write");
        journal.clear().expect("clear");
        let (second, frame) = journal.begin(0, &[("t", vec![3, 5])], &[&json]);
        assert!(second > first, "ids go on after the journal is emptied");
        journal.write(&frame, true).expect("write");
        drop(journal);
        let (journal, pending) = BatchJournal::open(dir.path()).expect("reopen");
        let ids: Vec<u64> = pending.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![second]);
        assert_eq!(pending[0].1.topics[0].from, vec![3, 5]);
        // New ids stay above every id in the file.
        assert!(journal.begin(0, &[], &[]).0 > second);
    }

    #[test]
    fn compaction_keeps_exactly_the_outstanding_intents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let json = event("a").to_json_vec();
        let (journal, _) =
            BatchJournal::open_compacting_at(Arc::new(OsStorage), dir.path(), 1).expect("open");
        let mut ids = Vec::new();
        for n in 0..5u64 {
            let (id, frame) = journal.begin(0, &[("t", vec![n])], &[&json]);
            journal.write(&frame, false).expect("write");
            ids.push(id);
        }
        for id in [ids[0], ids[2], ids[3]] {
            let done = journal.finished(id);
            journal.write(&done, false).expect("write");
        }
        let before = std::fs::metadata(dir.path().join(FILE_NAME))
            .expect("meta")
            .len();
        journal.compact_if_large().expect("compact");
        let after = std::fs::metadata(dir.path().join(FILE_NAME))
            .expect("meta")
            .len();
        assert!(after < before, "{after} < {before}");
        // Frames written after a compaction land in the new file.
        let (late, frame) = journal.begin(0, &[("t", vec![9])], &[&json]);
        journal.write(&frame, true).expect("write");
        drop(journal);
        let (_, pending) = BatchJournal::open(dir.path()).expect("reopen");
        let got: Vec<(u64, Vec<u64>)> = pending
            .iter()
            .map(|(id, i)| (*id, i.topics[0].from.clone()))
            .collect();
        assert_eq!(
            got,
            vec![(ids[1], vec![1]), (ids[4], vec![4]), (late, vec![9])]
        );
    }
}
