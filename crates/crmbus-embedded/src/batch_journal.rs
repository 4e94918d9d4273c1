//! The batch journal: an append that spans several partitions (a batch whose events hash to
//! different partitions, or one event published to several topics) is all-or-nothing across
//! a crash.
//!
//! Each partition is written and fsynced on its own, so a crash in the middle of such an
//! append could leave it in some partitions and not others. To prevent that, the append
//! reserves an intent id, stages its records in every partition (the first record of each
//! part names the id, see [`crate::record`]), then queues an *intent* for
//! `batches.journal`: where each part went (topic, partition, first offset, count), no
//! event data. The group commit takes an append's staged parts and its intent in the same
//! round (appends that span partitions stage under a gate the round closes while it takes
//! its work), and with [`Durability::Fsync`](crate::Durability) it writes and fsyncs the
//! journal *beside* the round's data, at the same time: one fsync latency per round, not
//! two. Once the append is durable everywhere a *done* mark follows (it needs no fsync of
//! its own).
//!
//! On open, two kinds of append are *rolled back* (each of their partitions is cut at the
//! part's first offset):
//! - an intent without a done mark whose parts are not all in their partitions;
//! - a part whose intent the journal does not hold: its first record names an intent that
//!   is neither in the journal nor below its *settled* mark (see below), so the intent's
//!   write was lost in the crash.
//!
//! Nothing after such a cut was acknowledged: the round that wrote the part did not finish
//! (the append would be whole, and its intent durable, otherwise), and no later round ran.
//! Cutting one append can take the part of another with it, so recovery repeats until no
//! intent changes (see [`rollback_cuts`]).
//!
//! Finished intents leave the journal when it is compacted (and when open empties it). So
//! that a part whose intent was finished and compacted away is not taken for one whose
//! intent was lost, every rewrite of the file starts with a *settled* mark: every intent
//! id below its `floor` (the next id to be given out) was durably written (the rewrite
//! itself keeps every outstanding intent's frame), finished, rolled back or never used,
//! except the ids it lists: reserved by appends still staging, whose intents are written
//! after it. A journal that says nothing (missing, removed by hand, or whose settled mark
//! does not read, as in a journal an earlier version wrote) counts every intent as
//! written: nothing is cut for it.
//!
//! ```text
//! frame = body_len: u32 LE | crc32c(body): u32 LE | body
//! body  = kind: u8 | id: u64 LE | payload
//! kind 5, spans:  part count u32 | per part: partition u32 | first u64 | count u32
//!                 | topic length u16 | topic name                     (all LE)
//! kind 2, done: empty; kind 3, topic deleted: the topic's name
//! kind 4, recovery point: partition u32 | segment base u64 | length u64 | next offset u64
//!                 | the topic's name                                  (all LE)
//! kind 6, settled: count u32 | the ids reserved and not written, u64 each (all LE; the
//!                 frame's id is the floor)
//! kind 1, intent with events (the format before kind 5, still read): JSON with the
//!                 events, completed on open instead of rolled back
//! ```
//!
//! The frame kind is the journal's version: a journal a previous version wrote (kind 1
//! intents) opens and is completed as that version would have; a whole frame of a kind
//! this version does not know (written by a later version) makes the open fail with a
//! message that says so, rather than skip an intent silently.
//!
//! The journal also keeps each partition's *recovery point*: the active segment's length
//! and next offset as of a group-commit round that fsynced them (see
//! [`RecoveryPoint`]). They ride along with the next round's journal write and never cost
//! an fsync of their own; recovery treats damage before a partition's point as corruption
//! and everything after it as a tail that may be torn.
//!
//! A frame that is torn or fails its checksum is lost, and only it: the reader goes on
//! at the next whole frame, if any (every frame is true once it is on disk; an intent
//! found after damage is rolled back unless whole, as any other). Zeros, or nothing
//! whole, after it are the end. So bit rot in a frame written long ago does not hide the
//! intents written after it, which would then look lost.
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
const KIND_SPANS: u8 = 5;
const KIND_SETTLED: u8 = 6;
const HEADER: usize = 8;
const BODY_PREFIX: usize = 9;
/// The journal is compacted (rewritten with only the outstanding intents, the recovery
/// points and the deletion marks) once it is this large. Its frames are small (an intent
/// takes about 30 bytes per part, a round's recovery points about 50 bytes per partition),
/// so this is tens of thousands of rounds, and a compaction rewrites a few kilobytes.
pub const COMPACT_AT: u64 = 4 * 1024 * 1024;

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

/// One partition's share of an append that spans partitions: `count` records from offset
/// `first` of `topic`/`partition`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The topic's name.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// Offset of the part's first record.
    pub first: u64,
    /// How many records the part has.
    pub count: u64,
}

/// An intent the last run left without a done mark.
#[derive(Debug, Clone)]
pub enum PendingIntent {
    /// Where an append's parts went (this version's format): rolled back on open unless
    /// every part is stored.
    Spans(Vec<Part>),
    /// An append with its events (the previous format): completed on open.
    Events(Intent),
}

/// The bytes of the frame of an intent with `parts`, at most: for reserving journal
/// space before the parts are known. `topics` are the topics' names and partition counts,
/// `events` the number of events (an append has at most that many parts per topic).
pub fn spans_frame_bound(topics: &[(&str, u32)], events: usize) -> u64 {
    let parts: u64 = topics
        .iter()
        .map(|(name, partitions)| {
            (*partitions as u64).min(events as u64) * (PART_FIXED + name.len() as u64)
        })
        .sum();
    (HEADER + BODY_PREFIX) as u64 + 4 + parts
}

/// Bytes of a part in a spans frame besides its topic's name.
const PART_FIXED: u64 = 4 + 8 + 4 + 2;

/// Encodes intent `id` of an append whose records went to `parts`.
pub fn encode_spans(id: u64, parts: &[Part]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(4 + parts.len() * 32);
    payload.extend_from_slice(&(parts.len() as u32).to_le_bytes());
    for p in parts {
        // Topic names are at most 249 bytes (`TopicSpec::validate`), counts at most a batch.
        let name = &p.topic.as_bytes()[..p.topic.len().min(u16::MAX as usize)];
        payload.extend_from_slice(&p.partition.to_le_bytes());
        payload.extend_from_slice(&p.first.to_le_bytes());
        payload.extend_from_slice(&(p.count.min(u32::MAX as u64) as u32).to_le_bytes());
        payload.extend_from_slice(&(name.len() as u16).to_le_bytes());
        payload.extend_from_slice(name);
    }
    frame(KIND_SPANS, id, &payload)
}

fn decode_spans(payload: &[u8]) -> Option<Vec<Part>> {
    let n = u32::from_le_bytes(payload.get(0..4)?.try_into().ok()?) as usize;
    let mut parts = Vec::with_capacity(n.min(4096));
    let mut at = 4usize;
    for _ in 0..n {
        let fixed = payload.get(at..at + PART_FIXED as usize)?;
        let partition = u32::from_le_bytes(fixed[0..4].try_into().ok()?);
        let first = u64::from_le_bytes(fixed[4..12].try_into().ok()?);
        let count = u32::from_le_bytes(fixed[12..16].try_into().ok()?);
        let name_len = u16::from_le_bytes(fixed[16..18].try_into().ok()?) as usize;
        at += PART_FIXED as usize;
        let topic = String::from_utf8(payload.get(at..at + name_len)?.to_vec()).ok()?;
        at += name_len;
        parts.push(Part {
            topic,
            partition,
            first,
            count: u64::from(count),
        });
    }
    (at == payload.len()).then_some(parts)
}

/// Encodes an intent's frame from the events' JSON, in the previous format (kind 1), which
/// this version reads but no longer writes: for tests of journals an earlier version left.
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

/// Encodes the settled mark: every intent id below `floor` (the next id to be given out)
/// was durably written or never used, except those in `unwritten` (reserved by appends
/// still staging).
pub fn encode_settled(floor: u64, unwritten: &[u64]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(4 + 8 * unwritten.len());
    payload.extend_from_slice(&(unwritten.len() as u32).to_le_bytes());
    for id in unwritten {
        payload.extend_from_slice(&id.to_le_bytes());
    }
    frame(KIND_SETTLED, floor, &payload)
}

fn decode_settled(payload: &[u8]) -> Option<Vec<u64>> {
    let n = u32::from_le_bytes(payload.get(0..4)?.try_into().ok()?) as usize;
    let ids = payload.get(4..)?;
    if ids.len() != n.checked_mul(8)? {
        return None;
    }
    Some(
        ids.chunks_exact(8)
            .filter_map(|c| c.try_into().ok().map(u64::from_le_bytes))
            .collect(),
    )
}

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
pub fn pending_intents(bytes: &[u8]) -> io::Result<Vec<(u64, PendingIntent)>> {
    read_frames(bytes).map(|r| r.pending)
}

/// What reading the journal found.
struct Frames {
    /// The intents without a done mark.
    pending: Vec<(u64, PendingIntent)>,
    /// The last recovery point of each partition (of topics not deleted after it).
    points: RecoveryPoints,
    /// The highest id in any frame read.
    max_id: u64,
    /// What the journal says about which intents were written.
    written: WrittenIntents,
    /// Where the last whole frame ends.
    end: usize,
}

/// Which intents a journal shows were durably written: those it holds (with or without a
/// done mark) and those below its settled floor that it does not list as unwritten.
#[derive(Debug, Clone)]
pub struct WrittenIntents {
    /// Every id below this one was written (or never used), but those in `unwritten`.
    floor: u64,
    /// Ids below the floor reserved by appends that were still staging at the rewrite.
    unwritten: std::collections::HashSet<u64>,
    /// The ids of the intents and done marks read.
    ids: std::collections::HashSet<u64>,
    /// Set when the journal says nothing (missing, or no settled mark read): every intent
    /// counts as written.
    unknown: bool,
}

impl Default for WrittenIntents {
    fn default() -> Self {
        WrittenIntents {
            floor: 0,
            unwritten: std::collections::HashSet::new(),
            ids: std::collections::HashSet::new(),
            unknown: true,
        }
    }
}

impl WrittenIntents {
    /// Whether the intent `id` a part's first record names was durably written. When not,
    /// the crash took the intent's write, and the part was never acknowledged.
    pub fn contains(&self, id: u64) -> bool {
        self.unknown || self.ids.contains(&id) || (id < self.floor && !self.unwritten.contains(&id))
    }
}

/// An intent's kind, its payload, and the topics deleted after it.
type RawIntent<'a> = (u8, &'a [u8], Vec<String>);

/// The body of the whole frame at `at` in `bytes` (its length in range, its checksum
/// right), if there is one.
fn whole_frame(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let header = bytes.get(at..at + HEADER)?;
    let body_len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if body_len < BODY_PREFIX {
        return None;
    }
    let body = bytes.get(at + HEADER..(at + HEADER).checked_add(body_len)?)?;
    (crc32c::crc32c(body) == crc).then_some(body)
}

fn read_frames(bytes: &[u8]) -> io::Result<Frames> {
    let mut intents: BTreeMap<u64, RawIntent<'_>> = BTreeMap::new();
    let mut points = RecoveryPoints::new();
    let mut max_id = 0u64;
    let mut written = WrittenIntents::default();
    let mut at = 0usize;
    let mut end = 0usize;
    while bytes.len() - at >= HEADER {
        let Some(body) = whole_frame(bytes, at) else {
            // Zeros to the end (the room written ahead of the next frame): the end, with no
            // search for a frame byte by byte through up to a MiB of them on every open.
            if bytes[at..].iter().all(|b| *b == 0) {
                break;
            }
            // Damage, or the end. A whole frame further on (of a known kind) means damage:
            // what follows is read on, since every frame is true once it is on disk (an
            // intent found there is rolled back unless whole, as any other).
            match (at + 1..bytes.len()).find(|&i| {
                whole_frame(bytes, i).is_some_and(|b| (KIND_INTENT..=KIND_SETTLED).contains(&b[0]))
            }) {
                Some(next) => {
                    tracing::warn!(
                        at,
                        next,
                        "the batch journal is damaged; reading on after the damage"
                    );
                    at = next;
                    continue;
                }
                None => break,
            }
        };
        let mut id = [0u8; 8];
        id.copy_from_slice(&body[1..9]);
        let id = u64::from_le_bytes(id);
        max_id = max_id.max(id);
        match body[0] {
            kind @ (KIND_INTENT | KIND_SPANS) => {
                written.ids.insert(id);
                intents.insert(id, (kind, &body[BODY_PREFIX..], Vec::new()));
            }
            KIND_SETTLED => {
                // One, at the start of the file (a file rewritten whole).
                if let Some(unwritten) = decode_settled(&body[BODY_PREFIX..]) {
                    written.floor = id;
                    written.unwritten = unwritten.into_iter().collect();
                    written.unknown = false;
                }
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
                for (_, _, deleted) in intents.values_mut() {
                    deleted.push(name.clone());
                }
            }
            KIND_DONE => {
                written.ids.insert(id);
                intents.remove(&id);
            }
            kind => {
                // A whole frame this version cannot read: a later version wrote the
                // journal. Skipping it could skip an intent, so the log does not open.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{FILE_NAME} holds a frame of kind {kind}, which this version of crmbus \
                         does not know: the log was last opened by a later version; open it \
                         with that version"
                    ),
                ));
            }
        }
        at += HEADER + body.len();
        end = at;
    }
    let pending = intents
        .into_iter()
        .map(|(id, (kind, payload, deleted))| {
            let unreadable = |why: String| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "batch journal intent {id} has a valid checksum but cannot be read: {why}"
                    ),
                )
            };
            if kind == KIND_SPANS {
                let mut parts = decode_spans(payload)
                    .ok_or_else(|| unreadable("its parts do not decode".into()))?;
                parts.retain(|p| !deleted.contains(&p.topic));
                return Ok((id, PendingIntent::Spans(parts)));
            }
            serde_json::from_slice::<Intent>(payload)
                .map(|mut intent| {
                    intent.topics.retain(|t| !deleted.contains(&t.name));
                    (id, PendingIntent::Events(intent))
                })
                .map_err(|e| unreadable(e.to_string()))
        })
        .collect::<io::Result<Vec<_>>>()?;
    Ok(Frames {
        pending,
        points,
        max_id,
        written,
        end,
    })
}

/// A part on disk whose intent the journal does not hold: (topic, partition, the part's
/// first offset). It is cut out with everything after it.
pub type LostIntentPart = (String, u32, u64);

/// Where recovery cuts partitions so that every append in `pending` is whole or absent,
/// and no part in `lost` remains. `end` gives each partition's next offset as found on
/// disk (`None`: the topic or partition does not exist, and its parts are left out).
/// Returns the ids of the intents rolled back and, per (topic, partition), the offset to
/// cut at (below its end).
///
/// An intent is whole when every part is below its partition's end. One that is not is
/// rolled back: each of its partitions ends at the part's first offset at most. That can
/// take another intent's part (and so can a lost part's cut), so this repeats until
/// nothing changes.
pub fn rollback_cuts(
    pending: &[(u64, Vec<Part>)],
    lost: &[LostIntentPart],
    end: impl Fn(&str, u32) -> Option<u64>,
) -> (Vec<u64>, HashMap<(String, u32), u64>) {
    let mut ends: HashMap<(String, u32), u64> = HashMap::new();
    let parts = pending
        .iter()
        .flat_map(|(_, parts)| parts.iter().map(|p| (p.topic.as_str(), p.partition)));
    let lost_at = lost.iter().map(|(t, p, _)| (t.as_str(), *p));
    for (topic, partition) in parts.chain(lost_at) {
        if let Some(e) = end(topic, partition) {
            ends.insert((topic.to_string(), partition), e);
        }
    }
    let original = ends.clone();
    for (topic, partition, first) in lost {
        if let Some(e) = ends.get_mut(&(topic.clone(), *partition)) {
            *e = (*e).min(*first);
        }
    }
    let mut rolled: Vec<u64> = Vec::new();
    loop {
        let mut changed = false;
        for (id, parts) in pending {
            if rolled.contains(id) {
                continue;
            }
            let whole = parts.iter().all(|p| {
                ends.get(&(p.topic.clone(), p.partition))
                    .is_none_or(|&e| e >= p.first.saturating_add(p.count))
            });
            if whole {
                continue;
            }
            rolled.push(*id);
            changed = true;
            for p in parts {
                if let Some(e) = ends.get_mut(&(p.topic.clone(), p.partition)) {
                    *e = (*e).min(p.first);
                }
            }
        }
        if !changed {
            break;
        }
    }
    rolled.sort_unstable();
    let cuts = ends
        .into_iter()
        .filter(|(k, e)| original.get(k).is_some_and(|o| e < o))
        .collect();
    (rolled, cuts)
}

struct FileState {
    file: Box<dyn StorageFile>,
    /// Where the next frame goes (the end of the last frame).
    len: u64,
    /// The file's size: zeros from `len` up to here, written ahead of time.
    allocated: u64,
    /// What the last compaction kept.
    live: u64,
    /// The frames up to here are durable: fsynced, or written again by a durable record of
    /// the commit file (see [`BatchJournal::uncovered`]).
    covered: u64,
}

/// The journal grows in zero-filled steps of this size (or of the compaction threshold, if
/// smaller, down to 64 KiB). Writing a frame then overwrites
/// zeros inside the file, so its fdatasync does not have to commit a new file size too
/// (on ext4 about half the cost of an appending one). A frame of zeros reads as the end.
const GROW_BY: u64 = 1024 * 1024;

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
    /// keeps (an id reserved for an append still staging has no frame yet, and holds the
    /// compaction's settled floor below it). Intent ids are taken from `next_id` under
    /// this lock.
    outstanding: Mutex<HashMap<u64, Vec<u8>>>,
    /// Which intents the journal showed were written when it was opened.
    written: WrittenIntents,
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
    pub fn open(dir: &Path) -> io::Result<(BatchJournal, Vec<(u64, PendingIntent)>)> {
        BatchJournal::open_compacting_at(Arc::new(OsStorage), dir, COMPACT_AT)
    }

    /// [`BatchJournal::open`] on `storage`, compacting once the file reaches `compact_at`
    /// bytes.
    pub fn open_compacting_at(
        storage: Arc<dyn Storage>,
        dir: &Path,
        compact_at: u64,
    ) -> io::Result<(BatchJournal, Vec<(u64, PendingIntent)>)> {
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
            written,
            end,
        } = read_frames(&bytes)?;
        let (len, allocated) = (end as u64, bytes.len() as u64);
        if len > 0 {
            // What was read may be only in the page cache (the last run was killed): the
            // frames after it are written (and made durable) from `len` on, and must not
            // follow a hole a power cut would leave.
            file.sync_data()?;
        }
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
                    covered: len,
                }),
                deletions: Mutex::new(Vec::new()),
                points: Mutex::new(HashMap::new()),
                found_points,
                room: AtomicU64::new(allocated - len),
                next_id: AtomicU64::new(max_id + 1),
                outstanding: Mutex::new(HashMap::new()),
                written,
            },
            pending,
        ))
    }

    /// Reserves the id of a new intent, outstanding until [`BatchJournal::finished`]: an
    /// append that may span partitions takes it before it stages, so that its records can
    /// name it.
    pub fn reserve(&self) -> u64 {
        let mut outstanding = self.outstanding.locked();
        let id = self.next_id.fetch_add(1, Ordering::AcqRel);
        outstanding.insert(id, Vec::new());
        id
    }

    /// Encodes reserved intent `id` of an append whose records went to `parts`; returns
    /// its frame, to be written in the round that writes the append's data.
    pub fn begin_reserved(&self, id: u64, parts: &[Part]) -> Vec<u8> {
        let frame = encode_spans(id, parts);
        self.outstanding.locked().insert(id, frame.clone());
        frame
    }

    /// [`BatchJournal::reserve`] and [`BatchJournal::begin_reserved`] in one; returns the
    /// id and the frame.
    pub fn begin(&self, parts: &[Part]) -> (u64, Vec<u8>) {
        let id = self.reserve();
        (id, self.begin_reserved(id, parts))
    }

    /// Which intents the journal showed were written when it was opened (for parts on
    /// disk that name one; see the module documentation).
    pub fn written_intents(&self) -> &WrittenIntents {
        &self.written
    }

    /// Gives out no id below `next` from now on: recovery found records naming ids up to
    /// just below it (a journal that says nothing may not know them).
    pub fn skip_ids_below(&self, next: u64) {
        let _outstanding = self.outstanding.locked();
        self.next_id.fetch_max(next, Ordering::AcqRel);
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

    /// Compacts the file if it holds anything besides what the last compaction kept, and
    /// cuts the zeros written ahead of its last frame off, fsyncing its size: a log closed
    /// cleanly leaves the journal only its live frames (outstanding intents, deletion marks,
    /// each partition's last recovery point) and no more space taken. Call it once nothing
    /// writes any more (on close); the next write grows the file again.
    pub fn trim(&self) -> io::Result<()> {
        let mut s = self.state.locked();
        if s.len > s.live {
            self.compact(&mut s, false)?;
        }
        if s.allocated == s.len {
            return Ok(());
        }
        s.file.set_len(s.len)?;
        // Not needed for correctness: if the cut is lost, the file ends in zeros after its
        // last frame again, and zeros read as the end. It only gives the space back.
        s.file.sync_data()?; // mutants: equivalent (see above)
        s.allocated = s.len;
        self.room.store(0, Ordering::Release);
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
            s.covered = s.len;
        }
        Ok(())
    }

    /// The frames written since the journal was last made durable, and where they start:
    /// a group-commit round that makes its writes durable with one record of the commit
    /// file ([`crate::commit_file`]) puts them in it, then calls
    /// [`BatchJournal::mark_covered`]. `None` when there are none.
    pub fn uncovered(&self) -> io::Result<Option<(u64, Vec<u8>)>> {
        let s = self.state.locked();
        if s.len <= s.covered {
            return Ok(None);
        }
        let mut bytes = vec![0u8; (s.len - s.covered) as usize];
        s.file.read_exact_at(&mut bytes, s.covered)?;
        Ok(Some((s.covered, bytes)))
    }

    /// The frames up to `end` (returned by [`BatchJournal::uncovered`]) are durable.
    pub fn mark_covered(&self, end: u64) {
        let mut s = self.state.locked();
        s.covered = s.covered.max(end.min(s.len));
    }

    /// Fsyncs the file: every frame written is durable.
    pub fn sync(&self) -> io::Result<()> {
        let mut s = self.state.locked();
        s.file.sync_data()?;
        s.covered = s.len;
        Ok(())
    }

    /// Whether [`BatchJournal::compact_if_large`] would rewrite the file now.
    pub fn wants_compaction(&self) -> bool {
        let s = self.state.locked();
        s.len >= self.compact_at.max(2 * s.live)
    }

    /// The journal file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
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
        self.compact(&mut s, true)
    }

    /// Rewrites the file with only what is live (see [`BatchJournal::compact_if_large`]);
    /// with `make_room`, grows the new file by the room appenders reserved.
    fn compact(&self, s: &mut FileState, make_room: bool) -> io::Result<()> {
        let len = match self.rewrite() {
            Ok(len) => len,
            Err(e) => {
                // The old file is still in place and whole: go on with it, try again later.
                tracing::warn!(error = %e, "compacting the batch journal failed; it keeps growing");
                s.live = s.len;
                return Ok(());
            }
        };
        self.replaced(s, len, make_room)
    }

    /// Writes a new file beside the journal with only what is live (the settled mark
    /// first, then the outstanding intents, deletion marks and recovery points in id
    /// order), fsyncs it and renames it over the journal; returns its length. On failure
    /// the old file is still in place and whole.
    fn rewrite(&self) -> io::Result<u64> {
        let (settled, mut keep) = {
            let outstanding = self.outstanding.locked();
            // Ids are taken under this lock, so every intent id below `next` not in it
            // finished (or was never used); of those in it, the ones with a frame are
            // written into the new file, and the rest are listed.
            let next = self.next_id.load(Ordering::Acquire);
            let mut unwritten = Vec::new();
            let mut keep: Vec<(u64, Vec<u8>)> = Vec::new();
            for (id, f) in outstanding.iter() {
                if f.is_empty() {
                    unwritten.push(*id);
                } else {
                    keep.push((*id, f.clone()));
                }
            }
            unwritten.sort_unstable();
            (encode_settled(next, &unwritten), keep)
        };
        keep.extend(self.deletions.locked().iter().cloned());
        keep.extend(self.points.locked().values().cloned());
        keep.sort_unstable_by_key(|(id, _)| *id);
        let path = self.dir.join(FILE_NAME);
        let tmp = self.dir.join(format!("{FILE_NAME}.compact"));
        let written = (|| -> io::Result<u64> {
            let f = self.storage.open(&tmp, OpenMode::Truncate)?;
            f.write_all_at(&settled, 0)?;
            let mut len = settled.len() as u64;
            for (_, frame) in &keep {
                f.write_all_at(frame, len)?;
                len += frame.len() as u64;
            }
            f.sync_all()?;
            self.storage.rename(&tmp, &path)?;
            Ok(len)
        })();
        if written.is_err() {
            let _ = self.storage.remove_file(&tmp);
        }
        written
    }

    /// Goes on with the file [`BatchJournal::rewrite`] renamed into place, `len` bytes
    /// long; with `make_room`, grows it by the room appenders reserved in the old one.
    fn replaced(&self, s: &mut FileState, len: u64, make_room: bool) -> io::Result<()> {
        // From here on new frames must go to the new file, and its name must be durable.
        let room = s.allocated - s.len;
        s.file = self
            .storage
            .open(&self.dir.join(FILE_NAME), OpenMode::OpenOrCreate)?;
        self.storage.sync_dir(&self.dir)?;
        s.len = len;
        s.covered = len;
        s.allocated = len;
        self.room.store(0, Ordering::Release);
        s.live = len;
        // The room appenders reserved for their queued frames (see `ensure_room`) is made
        // again in the new file, so that writing them cannot meet a full disk. The old
        // file's space was just freed; if this fails anyway, the next write grows the file.
        if make_room {
            if let Err(e) = self.grow(s, len + room) {
                tracing::warn!(error = %e, "could not make room in the compacted batch journal");
            }
        }
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

    /// Empties the file now (after recovery has completed every pending intent durably
    /// and rolled back the rest), leaving only the settled mark (and the intents still
    /// outstanding, of which open has none): every intent id given out so far is settled. Replaces the file whole (a new file renamed over it), so a
    /// power cut leaves either the old journal, which the next open recovers from again,
    /// or the new one.
    pub fn clear(&self) -> io::Result<()> {
        let mut s = self.state.locked();
        let len = self.rewrite()?;
        self.replaced(&mut s, len, false)
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

    fn part(topic: &str, partition: u32, first: u64, count: u64) -> Part {
        Part {
            topic: topic.into(),
            partition,
            first,
            count,
        }
    }

    fn spans(pending: &[(u64, PendingIntent)]) -> Vec<(u64, Vec<Part>)> {
        pending
            .iter()
            .filter_map(|(id, p)| match p {
                PendingIntent::Spans(parts) => Some((*id, parts.clone())),
                PendingIntent::Events(_) => None,
            })
            .collect()
    }

    #[test]
    fn intents_without_a_done_mark_are_pending_a_torn_tail_ends_the_journal_and_damage_does_not() {
        let a = event("a").to_json_vec();
        let mut bytes = encode_spans(1, &[part("deals", 0, 0, 2), part("deals", 3, 4, 1)]);
        bytes.extend(encode_spans(2, &[part("x", 0, 7, 1), part("y", 1, 1, 1)]));
        // An intent of the previous format (with its events) is read too.
        bytes.extend(encode_intent(3, 6, &[("z", vec![0, 0])], &[&a]));
        bytes.extend(encode_done(1));
        let whole = pending_intents(&bytes).expect("read");
        assert_eq!(
            spans(&whole),
            vec![(2, vec![part("x", 0, 7, 1), part("y", 1, 1, 1)])]
        );
        match &whole[1] {
            (3, PendingIntent::Events(intent)) => {
                assert_eq!(intent.events[0].id, "a");
                assert_eq!(intent.topics[0].name, "z");
            }
            other => panic!("intent 3 should be of the previous format: {other:?}"),
        }

        // The done mark of 1 torn: 1 is pending again.
        let ids = |bytes: &[u8]| -> Vec<u64> {
            pending_intents(bytes)
                .expect("read")
                .iter()
                .map(|(id, _)| *id)
                .collect()
        };
        assert_eq!(ids(&bytes[..bytes.len() - 3]), vec![1, 2, 3]);
        // A damaged byte loses its frame only: what follows is read on (and the zeros
        // written ahead after the last frame are the end).
        let mut damaged = bytes.clone();
        damaged.extend([0u8; 64]);
        damaged[HEADER + 2] ^= 0xff;
        assert_eq!(ids(&damaged), vec![2, 3]);
        let (mut garbage, at) = (bytes.clone(), bytes.len() - 40);
        garbage[at..].iter_mut().for_each(|b| *b = 0x5a);
        // Intent 3's end and the done mark of 1 are in the damage.
        assert_eq!(ids(&garbage), vec![1, 2]);
        let frames = read_frames(&damaged).expect("read");
        assert_eq!(
            frames.end,
            bytes.len(),
            "new frames go after the last whole one"
        );
    }

    #[test]
    fn a_topic_deleted_after_an_intent_drops_its_parts() {
        let mut bytes = encode_spans(1, &[part("deals", 0, 0, 2), part("leads", 0, 4, 1)]);
        bytes.extend(encode_topic_deleted(2, "leads"));
        let pending = pending_intents(&bytes).expect("read");
        assert_eq!(spans(&pending), vec![(1, vec![part("deals", 0, 0, 2)])]);
    }

    #[test]
    fn a_frame_of_a_later_version_is_refused_with_a_message_that_says_so() {
        let mut bytes = encode_spans(1, &[part("deals", 0, 0, 2), part("deals", 1, 0, 1)]);
        bytes.extend(frame(9, 2, b"from the future"));
        let err = pending_intents(&bytes).expect_err("an unknown kind is refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("later version"), "{err}");
    }

    #[test]
    fn the_reserved_bound_covers_every_spans_frame() {
        let long = "t".repeat(249);
        for (topics, events) in [
            (vec![("deals", 4u32)], 256usize),
            (vec![("deals", 64), (long.as_str(), 2)], 3),
            (vec![("a", 1), ("b", 1)], 1),
        ] {
            let parts: Vec<Part> = topics
                .iter()
                .flat_map(|(name, n)| {
                    (0..(*n).min(events as u32)).map(|p| part(name, p, u64::MAX - 1, 1 << 31))
                })
                .collect();
            let frame = encode_spans(u64::MAX, &parts);
            assert!(frame.len() as u64 <= spans_frame_bound(&topics, events));
            assert_eq!(decode_spans(&frame[HEADER + BODY_PREFIX..]), Some(parts));
        }
    }

    #[test]
    fn rollback_cuts_every_append_not_whole_and_what_cutting_it_takes_along() {
        // Partition ends found on disk.
        let ends: HashMap<(&str, u32), u64> = [
            (("deals", 0), 30),
            (("deals", 1), 12),
            (("deals", 2), 50),
            (("audit", 0), 9),
        ]
        .into_iter()
        .collect();
        let end = |t: &str, p: u32| ends.get(&(t, p)).copied();
        let pending = vec![
            // Whole: kept.
            (1, vec![part("deals", 0, 0, 10), part("deals", 1, 0, 10)]),
            // Its part in deals/1 is cut short (12 < 10 + 5): rolled back.
            (2, vec![part("deals", 1, 10, 5), part("deals", 2, 40, 5)]),
            // Whole on disk, but its part in deals/2 lies after 2's cut there: rolled back.
            (3, vec![part("deals", 2, 45, 5), part("audit", 0, 8, 1)]),
            // A topic that no longer exists leaves its part out; the rest is whole.
            (4, vec![part("deals", 0, 20, 10), part("gone", 0, 0, 3)]),
        ];
        let (rolled, cuts) = rollback_cuts(&pending, &[], end);
        assert_eq!(rolled, vec![2, 3]);
        let mut cuts: Vec<_> = cuts.into_iter().collect();
        cuts.sort();
        assert_eq!(
            cuts,
            vec![
                (("audit".to_string(), 0), 8),
                (("deals".to_string(), 1), 10),
                (("deals".to_string(), 2), 40),
            ]
        );
        // Nothing pending, nothing cut.
        let (rolled, cuts) = rollback_cuts(&[], &[], end);
        assert!(rolled.is_empty() && cuts.is_empty());
    }

    #[test]
    fn a_part_whose_intent_was_lost_is_cut_with_what_it_takes_along() {
        let ends: HashMap<(&str, u32), u64> = [(("deals", 0), 30), (("deals", 1), 20)]
            .into_iter()
            .collect();
        let end = |t: &str, p: u32| ends.get(&(t, p)).copied();
        // Whole on disk, but its part in deals/1 lies after the lost part's cut there.
        let pending = vec![(7, vec![part("deals", 0, 25, 5), part("deals", 1, 15, 5)])];
        let lost = vec![
            ("deals".to_string(), 1, 12),
            // A partition that no longer exists: nothing to cut.
            ("gone".to_string(), 0, 3),
        ];
        let (rolled, cuts) = rollback_cuts(&pending, &lost, end);
        assert_eq!(rolled, vec![7]);
        let mut cuts: Vec<_> = cuts.into_iter().collect();
        cuts.sort();
        assert_eq!(
            cuts,
            vec![
                (("deals".to_string(), 0), 25),
                (("deals".to_string(), 1), 12),
            ]
        );
        // A lost part at the partition's end cuts nothing.
        let at_end = vec![("deals".to_string(), 0, 30)];
        let (rolled, cuts) = rollback_cuts(&[], &at_end, end);
        assert!(rolled.is_empty() && cuts.is_empty());
    }

    #[test]
    fn the_journal_tells_written_intents_from_lost_ones_across_compactions_and_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (journal, _) =
            BatchJournal::open_compacting_at(Arc::new(OsStorage), dir.path(), 1).expect("open");
        let parts = [part("t", 0, 0, 1), part("t", 1, 0, 1)];
        // Finished and compacted away: below the settled floor.
        let (done, frame) = journal.begin(&parts);
        journal.write(&frame, true).expect("write");
        journal
            .write(&journal.finished(done), false)
            .expect("write");
        // Reserved by an append still staging when the compaction runs: its intent is
        // written after it.
        let staging = journal.reserve();
        journal.compact_if_large().expect("compact");
        journal
            .write(&journal.begin_reserved(staging, &parts), true)
            .expect("write");
        // Written, not finished.
        let (pending, frame) = journal.begin(&parts);
        journal.write(&frame, true).expect("write");
        // Reserved and never written: the crash took it.
        let lost = journal.reserve();
        drop(journal);
        let (journal, _) = BatchJournal::open(dir.path()).expect("reopen");
        let written = journal.written_intents();
        for id in [done, staging, pending] {
            assert!(written.contains(id), "intent {id} was written");
        }
        assert!(!written.contains(lost), "intent {lost} was not");
        assert!(!written.contains(lost + 1));
        // Emptied once recovery is done (it cut every part naming `lost`): every id the
        // file shows is settled, and ids go on from there.
        journal.clear().expect("clear");
        let high = journal.reserve();
        assert!(high > pending);
        drop(journal);
        let (journal, pending_after) = BatchJournal::open(dir.path()).expect("reopen");
        assert!(pending_after.is_empty());
        for id in [done, staging, pending] {
            assert!(
                journal.written_intents().contains(id),
                "intent {id} is settled"
            );
        }
        assert!(!journal.written_intents().contains(high));
        assert!(journal.reserve() > high);
    }

    #[test]
    fn an_intent_finished_while_an_older_one_stages_stays_written_after_a_compaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (journal, _) =
            BatchJournal::open_compacting_at(Arc::new(OsStorage), dir.path(), 1).expect("open");
        let parts = [part("t", 0, 0, 1), part("t", 1, 0, 1)];
        // An append still staging holds an older id than one that finishes meanwhile.
        let staging = journal.reserve();
        let (finished, frame) = journal.begin(&parts);
        journal.write(&frame, true).expect("write");
        journal
            .write(&journal.finished(finished), false)
            .expect("write");
        journal.compact_if_large().expect("compact");
        // The crash: the staging append's intent never reached the file.
        drop(journal);
        let (journal, pending) = BatchJournal::open(dir.path()).expect("reopen");
        assert!(pending.is_empty());
        let written = journal.written_intents();
        assert!(
            written.contains(finished),
            "finished and compacted away, still written"
        );
        assert!(
            !written.contains(staging),
            "listed as reserved and unwritten"
        );
    }

    #[test]
    fn a_journal_that_says_nothing_counts_every_intent_as_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Missing: created empty.
        let (journal, _) = BatchJournal::open(dir.path()).expect("open");
        assert!(journal.written_intents().contains(5));
        drop(journal);
        // Empty, or of an earlier version: no settled mark.
        let (journal, _) = BatchJournal::open(dir.path()).expect("reopen");
        assert!(journal.written_intents().contains(5));
        journal.skip_ids_below(5);
        journal.clear().expect("clear");
        drop(journal);
        // Settled as of now: ids below 5 are, 5 is not.
        let (journal, _) = BatchJournal::open(dir.path()).expect("reopen");
        assert!(journal.written_intents().contains(4));
        assert!(!journal.written_intents().contains(5));
        assert!(
            journal.reserve() >= 5,
            "ids below the skip are not given out again"
        );
        drop(journal);
        // A settled mark that does not read says nothing.
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[HEADER + 1] ^= 0x01;
        std::fs::write(&path, &bytes).expect("write");
        let (journal, _) = BatchJournal::open(dir.path()).expect("reopen");
        assert!(journal.written_intents().contains(5));
    }

    #[test]
    fn frames_written_after_the_file_is_emptied_are_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (journal, pending) = BatchJournal::open(dir.path()).expect("open");
        assert!(pending.is_empty());
        let (first, frame) = journal.begin(&[part("t", 0, 0, 1), part("t", 1, 0, 1)]);
        journal.write(&frame, true).expect("write");
        // As on open: recovery settled every intent, and none is outstanding.
        journal.finished(first);
        journal.clear().expect("clear");
        let later = [part("t", 0, 3, 1), part("t", 1, 5, 2)];
        let (second, frame) = journal.begin(&later);
        assert!(second > first, "ids go on after the journal is emptied");
        journal.write(&frame, true).expect("write");
        drop(journal);
        let (journal, pending) = BatchJournal::open(dir.path()).expect("reopen");
        assert_eq!(spans(&pending), vec![(second, later.to_vec())]);
        // New ids stay above every id in the file.
        assert!(journal.begin(&[]).0 > second);
    }

    #[test]
    fn compaction_keeps_exactly_the_outstanding_intents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (journal, _) =
            BatchJournal::open_compacting_at(Arc::new(OsStorage), dir.path(), 1).expect("open");
        let mut ids = Vec::new();
        for n in 0..5u64 {
            let (id, frame) = journal.begin(&[part("t", 0, n, 1), part("t", 1, n, 1)]);
            journal.write(&frame, false).expect("write");
            ids.push(id);
        }
        for id in [ids[0], ids[2], ids[3]] {
            let done = journal.finished(id);
            journal.write(&done, false).expect("write");
        }
        // The frames (what comes before the zeros written ahead) shrink; the room the
        // file had for more is kept.
        let frames_and_size = || {
            let bytes = std::fs::read(dir.path().join(FILE_NAME)).expect("read");
            let frames = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
            (frames, bytes.len())
        };
        let (before, size_before) = frames_and_size();
        journal.compact_if_large().expect("compact");
        let (after, size_after) = frames_and_size();
        assert!(after < before, "{after} < {before}");
        assert!(
            size_after - after >= size_before - before,
            "room kept: {size_after} - {after} vs {size_before} - {before}"
        );
        // Frames written after a compaction land in the new file.
        let (late, frame) = journal.begin(&[part("t", 0, 9, 1), part("t", 1, 9, 1)]);
        journal.write(&frame, true).expect("write");
        drop(journal);
        let (_, pending) = BatchJournal::open(dir.path()).expect("reopen");
        let got: Vec<(u64, u64)> = spans(&pending)
            .iter()
            .map(|(id, parts)| (*id, parts[0].first))
            .collect();
        assert_eq!(got, vec![(ids[1], 1), (ids[4], 4), (late, 9)]);
    }
}
