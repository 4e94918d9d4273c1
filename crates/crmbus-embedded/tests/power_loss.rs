//! The power-loss simulation: the embedded log runs on a simulated disk
//! ([`crmbus_embedded::SimStorage`]) that loses unsynced writes and directory entries at a
//! power cut, under a seeded random workload (single and batch appends, multi-topic
//! publishes, dedupe retries, topic create and delete, rolls with small segments,
//! retention, group offset commits, injected I/O errors, bit flips in sealed segments).
//! Each "life" of the log ends in a power cut at a random storage operation; the log is
//! reopened on what the disk kept and checked:
//!
//! - every acknowledged event is present exactly once, at its receipt's partition and
//!   offset (unless retention removed it, or damage made it unreadable and the log says so);
//! - every event served is byte for byte an event that was published (no damaged record is
//!   ever served);
//! - no acknowledged offset is given out again;
//! - an append that was not acknowledged is whole or absent, in every topic it went to;
//! - committed group offsets are the last ones acknowledged, and never beyond the log.
//!
//! `CRMBUS_SIM_SEED` replays a run (the seed is printed); `CRMBUS_SIM_CRASHES` sets the
//! number of power cuts (default 2,000). A long run:
//! `CRMBUS_SIM_CRASHES=100000 cargo test --release -p crmbus-embedded --test power_loss -- --nocapture`

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crmbus::clock::ManualClock;
use crmbus::{Event, EventLog, LogError, Retention, TopicSpec};
use crmbus_embedded::storage::{CrashMode, Fault, FaultOp, SimStorage};
use crmbus_embedded::{EmbeddedLog, EmbeddedOptions};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const TOPICS: [&str; 3] = ["deals", "leads", "billing"];
const GROUP: &str = "sim-group";

/// Event number `n`, made from its recipe (subject number, padding length): the model
/// keeps recipes, not events, so a run of 100,000 power cuts stays small.
fn published_event(n: u64, (subject, pad): (u8, u16)) -> Event {
    let time = chrono::DateTime::from_timestamp(1_700_000_000 + n as i64, 0)
        .unwrap_or_default()
        .fixed_offset();
    Event::new(
        "deal.won",
        serde_json::json!({ "n": n, "pad": "x".repeat(usize::from(pad)) }),
    )
    .time(time)
    .id(format!("ev-{n}"))
    .source("urn:crmbus:sim")
    .subject(format!("deal-{subject}"))
}

/// An append that failed: its events must all be present or all absent afterwards.
#[derive(Debug)]
struct Unacked {
    topics: Vec<String>,
    ids: Vec<String>,
}

/// What the workload knows the log must hold.
#[derive(Default)]
struct Model {
    /// Every event ever published, as what makes it (its subject and padding), indexed by
    /// the number in its id `ev-<n>` (ids are unique per run); see [`published_event`].
    published: Vec<(u8, u16)>,
    /// Acknowledged positions: (topic, partition, offset) → id.
    acked: BTreeMap<(String, u32, u64), String>,
    /// The highest acknowledged offset + 1 per (topic, partition).
    acked_end: HashMap<(String, u32), u64>,
    /// Appends whose outcome is unknown, to check after the next reopen.
    unacked: Vec<Unacked>,
    /// Topics that exist, with their partition counts.
    topics: BTreeMap<String, u32>,
    /// Acknowledged group offsets, and a commit whose outcome is unknown.
    committed: HashMap<(String, u32), u64>,
    commit_unknown: Option<((String, u32), u64)>,
    /// Acknowledged positions lost to injected damage (reported corrupt by the log).
    damaged: HashSet<(String, u32, u64)>,
    next_id: u64,
}

impl Model {
    fn event(&mut self, rng: &mut StdRng) -> Event {
        self.next_id += 1;
        let recipe = (rng.random_range(0..40u8), rng.random_range(10..300u16));
        self.published.push(recipe);
        published_event(self.next_id, recipe)
    }

    /// The event published with id `id`, if any.
    fn published(&self, id: &str) -> Option<Event> {
        let n: u64 = id.strip_prefix("ev-")?.parse().ok()?;
        let recipe = *self
            .published
            .get(usize::try_from(n).ok()?.checked_sub(1)?)?;
        Some(published_event(n, recipe))
    }

    fn ack(&mut self, r: &crmbus::Receipt) {
        let key = (r.topic.clone(), r.partition, r.offset);
        if let Some(prev) = self.acked.get(&key) {
            assert_eq!(prev, &r.id, "offset {key:?} acknowledged for two events");
        }
        self.acked.insert(key, r.id.clone());
        let end = self
            .acked_end
            .entry((r.topic.clone(), r.partition))
            .or_insert(0);
        *end = (*end).max(r.offset + 1);
    }

    fn forget_topic(&mut self, name: &str) {
        self.topics.remove(name);
        self.acked.retain(|(t, _, _), _| t != name);
        self.acked_end.retain(|(t, _), _| t != name);
        self.committed.retain(|(t, _), _| t != name);
        self.damaged.retain(|(t, _, _)| t != name);
        if matches!(&self.commit_unknown, Some(((t, _), _)) if t == name) {
            self.commit_unknown = None;
        }
        for u in &mut self.unacked {
            u.topics.retain(|t| t != name);
        }
    }
}

fn options(sim: &SimStorage, clock: &Arc<ManualClock>) -> EmbeddedOptions {
    options_with_commit_file(sim, clock, 8 * 1024)
}

/// The commit file's capacity by life: small (rounds fill it and checkpoint often), large
/// (records pile up across many rounds before a cut), or none (each file fsynced).
fn commit_file_bytes(life: u64) -> u64 {
    [8 * 1024, 1 << 20, 0][(life % 3) as usize]
}

fn options_with_commit_file(
    sim: &SimStorage,
    clock: &Arc<ManualClock>,
    commit_file_bytes: u64,
) -> EmbeddedOptions {
    EmbeddedOptions {
        commit_file_bytes,
        segment_bytes: 2048,
        index_interval_bytes: 256,
        batch_journal_compact_bytes: 8 * 1024,
        retention_interval: None,
        dedupe_window: Duration::from_secs(90 * 24 * 3600),
        clock: clock.clone(),
        storage: Arc::new(sim.mount()),
        ..Default::default()
    }
}

fn retention() -> Retention {
    Retention {
        max_age: None,
        max_bytes: Some(12 * 1024),
    }
}

/// Runs one step of the workload; returns false once the log stopped working (the
/// power was cut, or an injected error poisoned it).
async fn step(log: &EmbeddedLog, model: &mut Model, rng: &mut StdRng, clock: &ManualClock) -> bool {
    clock.advance(Duration::from_micros(rng.random_range(0..2_000u64)));
    let roll = rng.random_range(0..100u32);
    let names: Vec<String> = model.topics.keys().cloned().collect();
    if names.is_empty() || roll < 3 {
        // Create a topic that does not exist (or delete one, and create it later).
        let missing: Vec<&str> = TOPICS
            .iter()
            .copied()
            .filter(|t| !model.topics.contains_key(*t))
            .collect();
        if let Some(&name) = missing.first() {
            let partitions = rng.random_range(1..=3u32);
            let spec = TopicSpec::new(name, partitions).with_retention(retention());
            let created = log.create_topic(spec).await;
            if std::env::var("CRMBUS_SIM_TRACE").is_ok() {
                println!(
                    "create {name} {partitions} -> {:?}",
                    created.as_ref().map(|_| ())
                );
            }
            return match created {
                Ok(_) => {
                    model.topics.insert(name.to_string(), partitions);
                    true
                }
                Err(_) => {
                    // Unknown outcome: the topic may exist after the reopen; the checks
                    // take the log's word for which topics exist.
                    false
                }
            };
        }
    }
    if roll < 5 && names.len() > 1 {
        let name = &names[rng.random_range(0..names.len())];
        let result = log.delete_topic(name).await;
        if std::env::var("CRMBUS_SIM_TRACE").is_ok() {
            println!("delete {name} -> {result:?}");
        }
        // Deleted or not, its events are no longer checked (a delete is not undone by a
        // crash only if acknowledged; either outcome is allowed when it failed).
        model.forget_topic(name);
        return result.is_ok();
    }
    if roll < 10 {
        return log.enforce_retention().await.is_ok();
    }
    if roll < 16 {
        // Commit a group offset at or below what the log holds durably.
        let name = &names[rng.random_range(0..names.len())];
        let p = rng.random_range(0..model.topics[name]);
        let info = match log.describe_topic(name).await {
            Ok(i) => i,
            Err(_) => return false,
        };
        let pi = &info.partition_info[p as usize];
        let offset = rng.random_range(pi.first_offset..=pi.next_offset);
        let key = (name.clone(), p);
        return match log.commit_offset(GROUP, name, p, offset).await {
            Ok(()) => {
                model.committed.insert(key, offset);
                true
            }
            Err(_) => {
                model.commit_unknown = Some((key, offset));
                false
            }
        };
    }
    if roll < 24 && !model.acked.is_empty() {
        // A producer retries an acknowledged event: a duplicate at the first position.
        let i = rng.random_range(0..model.acked.len());
        let Some(((topic, p, off), id)) = model
            .acked
            .iter()
            .nth(i)
            .map(|(k, v)| (k.clone(), v.clone()))
        else {
            return true;
        };
        // Only events the log still holds intact: retention may have removed the original
        // (then a retry is a new event), and damage makes it unreadable.
        let Ok(info) = log.describe_topic(&topic).await else {
            return false;
        };
        if off < info.partition_info[p as usize].first_offset
            || model.damaged.contains(&(topic.clone(), p, off))
        {
            return true;
        }
        let Some(event) = model.published(&id) else {
            panic!("acknowledged event {id} was never published");
        };
        return match log.append(std::slice::from_ref(&topic), &[event]).await {
            Ok(r) => {
                assert!(r[0].duplicate, "a retried event was stored again: {r:?}");
                assert_eq!((r[0].partition, r[0].offset), (p, off), "retry of {id}");
                true
            }
            Err(_) => false,
        };
    }
    // An append: one event, a batch, or one or more events to several topics.
    let topics: Vec<String> = if roll < 40 && names.len() > 1 {
        let mut t = names.clone();
        t.truncate(rng.random_range(2..=names.len()));
        t
    } else {
        vec![names[rng.random_range(0..names.len())].clone()]
    };
    let n = if roll < 60 {
        1
    } else {
        rng.random_range(2..=8usize)
    };
    let events: Vec<Event> = (0..n).map(|_| model.event(rng)).collect();
    let result = log.append(&topics, &events).await;
    if std::env::var("CRMBUS_SIM_TRACE").is_ok() {
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        match &result {
            Ok(r) => println!(
                "append {topics:?} {ids:?} -> {:?}",
                r.iter()
                    .map(|r| (r.partition, r.offset))
                    .collect::<Vec<_>>()
            ),
            Err(e) => println!("append {topics:?} {ids:?} -> error {e}"),
        }
    }
    match result {
        Ok(receipts) => {
            assert_eq!(receipts.len(), n * topics.len());
            for r in &receipts {
                assert!(!r.duplicate, "a new event came back a duplicate: {r:?}");
                model.ack(r);
            }
            true
        }
        Err(_) => {
            model.unacked.push(Unacked {
                topics,
                ids: events.iter().map(|e| e.id.clone()).collect(),
            });
            false
        }
    }
}

/// Reads a whole partition; returns the events by offset and the offsets that read as
/// corrupt (skipped one at a time).
async fn read_partition(
    log: &EmbeddedLog,
    topic: &str,
    p: u32,
    from: u64,
    to: u64,
) -> (BTreeMap<u64, Event>, HashSet<u64>) {
    let mut events = BTreeMap::new();
    let mut corrupt = HashSet::new();
    let mut next = from;
    while next < to {
        match log.read(topic, p, next, 500).await {
            Ok(chunk) => {
                let Some(last) = chunk.last() else { break };
                let last = last.offset;
                for e in chunk {
                    events.insert(e.offset, e.event);
                }
                next = last + 1;
            }
            Err(LogError::Corrupt { offset, .. }) => {
                assert!(offset >= next, "corrupt offset {offset} before {next}");
                for o in next..=offset {
                    if !events.contains_key(&o) {
                        corrupt.insert(o);
                    }
                }
                next = offset + 1;
            }
            Err(e) => panic!("reading {topic}/{p} from {next}: {e}"),
        }
    }
    (events, corrupt)
}

/// The invariants, checked right after a reopen.
async fn check(log: &EmbeddedLog, model: &mut Model, flipped: bool, context: &str) {
    // Topics: the log's word decides whether a topic whose create or delete failed exists.
    let infos = log.list_topics().await.expect("list topics");
    let live: BTreeMap<String, u32> = infos
        .iter()
        .map(|t| (t.spec.name.clone(), t.spec.partitions))
        .collect();
    for name in model.topics.keys().cloned().collect::<Vec<_>>() {
        assert!(
            live.contains_key(&name),
            "{context}: acknowledged topic {name} is gone"
        );
    }
    for (name, parts) in &live {
        if !model.topics.contains_key(name) {
            model.topics.insert(name.clone(), *parts);
        }
    }
    let mut where_is: HashMap<(String, String), Vec<(u32, u64)>> = HashMap::new();
    let mut corrupt_at: HashSet<(String, u32, u64)> = HashSet::new();
    for info in &infos {
        for pi in &info.partition_info {
            let key = (info.spec.name.clone(), pi.partition);
            let end = model.acked_end.get(&key).copied().unwrap_or(0);
            assert!(
                pi.next_offset >= end,
                "{context}: {key:?} ends at {} but offsets up to {end} were acknowledged",
                pi.next_offset
            );
            let (events, corrupt) = read_partition(
                log,
                &info.spec.name,
                pi.partition,
                pi.first_offset,
                pi.next_offset,
            )
            .await;
            for (off, e) in events {
                let Some(sent) = model.published(&e.id) else {
                    panic!(
                        "{context}: {key:?}@{off} serves an event never published: {}",
                        e.id
                    );
                };
                assert_eq!(
                    e.to_json_vec(),
                    sent.to_json_vec(),
                    "{context}: {key:?}@{off} serves a changed event"
                );
                where_is
                    .entry((info.spec.name.clone(), e.id.clone()))
                    .or_default()
                    .push((pi.partition, off));
            }
            for o in corrupt {
                corrupt_at.insert((info.spec.name.clone(), pi.partition, o));
            }
            // Acknowledged positions below the first offset were removed by retention.
            let first = pi.first_offset;
            model
                .acked
                .retain(|(t, p, o), _| !(t == &info.spec.name && *p == pi.partition && *o < first));
        }
    }
    // Damage can make an acknowledged record unreadable: then the log must say so at its
    // position, and the event may exist once elsewhere (recovery of a journalled append
    // stores again an event it cannot find, damaged or not).
    // (old position, new (partition, offset), id)
    type Moved = ((String, u32, u64), (u32, u64), String);
    let mut moved: Vec<Moved> = Vec::new();
    for ((topic, p, off), id) in &model.acked {
        let key = (topic.clone(), id.clone());
        let found = where_is.get(&key).cloned().unwrap_or_default();
        let damaged = model.damaged.contains(&(topic.clone(), *p, *off)) || flipped;
        if damaged && !found.contains(&(*p, *off)) {
            assert!(
                corrupt_at.contains(&(topic.clone(), *p, *off)),
                "{context}: acknowledged {id} at {topic}/{p}@{off} is missing and not reported corrupt"
            );
            assert!(
                found.len() <= 1,
                "{context}: damaged {id} stored again twice: {found:?}"
            );
            if let Some(&at) = found.first() {
                moved.push(((topic.clone(), *p, *off), at, id.clone()));
            }
            continue;
        }
        if found != vec![(*p, *off)] {
            let near = log.read(topic, *p, off.saturating_sub(3), 12).await;
            let near: Result<Vec<(u64, String)>, _> =
                near.map(|v| v.into_iter().map(|e| (e.offset, e.event.id)).collect());
            let info = log.describe_topic(topic).await;
            panic!("{context}: acknowledged {id} must be exactly at {topic}/{p}@{off}, found at {found:?}; around it: {near:?}; topic: {info:?}");
        }
    }
    for ((topic, p, off), (np, noff), id) in moved {
        model.acked.remove(&(topic.clone(), p, off));
        model.damaged.insert((topic.clone(), p, off));
        model.ack(&crmbus::Receipt {
            id,
            topic,
            partition: np,
            offset: noff,
            duplicate: false,
            version: None,
        });
    }
    let lost: Vec<(String, u32, u64)> = model
        .acked
        .iter()
        .filter(|((t, _, _), id)| !where_is.contains_key(&(t.clone(), (*id).clone())))
        .map(|(k, _)| k.clone())
        .collect();
    for k in lost {
        model.acked.remove(&k);
        model.damaged.insert(k);
    }
    // Unacknowledged appends: whole or absent; what survived is acknowledged from now on.
    for u in std::mem::take(&mut model.unacked) {
        let mut present = 0usize;
        let mut expected = 0usize;
        for t in &u.topics {
            if !live.contains_key(t) {
                continue;
            }
            for id in &u.ids {
                expected += 1;
                let found = where_is
                    .get(&(t.clone(), id.clone()))
                    .cloned()
                    .unwrap_or_default();
                assert!(
                    found.len() <= 1,
                    "{context}: {id} stored twice in {t}: {found:?}"
                );
                if let Some(&(p, off)) = found.first() {
                    present += 1;
                    model.ack(&crmbus::Receipt {
                        id: id.clone(),
                        topic: t.clone(),
                        partition: p,
                        offset: off,
                        duplicate: false,
                        version: None,
                    });
                }
            }
        }
        assert!(
            present == 0 || present == expected,
            "{context}: an unacknowledged append is partly stored ({present} of {expected}): {u:?}"
        );
    }
    // Group offsets.
    for ((t, p), want) in &model.committed {
        let got = log
            .committed_offset(GROUP, t, *p)
            .await
            .expect("committed offset");
        let unknown = model
            .commit_unknown
            .as_ref()
            .filter(|(k, _)| k == &(t.clone(), *p))
            .map(|(_, o)| *o);
        assert!(
            got == Some(*want) || got.is_some() && got == unknown,
            "{context}: group offset of {t}/{p} is {got:?}, acknowledged {want}"
        );
    }
    if let Some(((t, p), o)) = model.commit_unknown.take() {
        if let Ok(Some(got)) = log.committed_offset(GROUP, &t, p).await {
            if got == o {
                model.committed.insert((t, p), o);
            }
        }
    }
    for info in &infos {
        for pi in &info.partition_info {
            if let Ok(Some(c)) = log
                .committed_offset(GROUP, &info.spec.name, pi.partition)
                .await
            {
                assert!(
                    c <= pi.next_offset,
                    "{context}: group offset {c} beyond the end {} of {}/{}",
                    pi.next_offset,
                    info.spec.name,
                    pi.partition
                );
            }
        }
    }
}

/// Flips one bit in a sealed segment (not the last of its partition): media damage.
fn flip_sealed(sim: &SimStorage, data: &Path, rng: &mut StdRng) -> bool {
    let mut by_dir: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for f in sim.files_under(data) {
        if f.extension().is_some_and(|e| e == "log") {
            if let Some(parent) = f.parent() {
                by_dir.entry(parent.to_path_buf()).or_default().push(f);
            }
        }
    }
    let sealed: Vec<PathBuf> = by_dir
        .into_values()
        .flat_map(|mut v| {
            v.sort();
            // The last segment is active; so is the one before an empty last segment
            // (recovery drops the empty one and goes on in the one before).
            if let Some(last) = v.pop() {
                if sim.file_len(&last).unwrap_or(0) == 0 {
                    v.pop();
                }
            }
            v
        })
        .collect();
    if sealed.is_empty() {
        return false;
    }
    let f = &sealed[rng.random_range(0..sealed.len())];
    let len = sim.file_len(f).unwrap_or(0);
    if len == 0 {
        return false;
    }
    let (pos, bit) = (rng.random_range(0..len), rng.random_range(0..8u8));
    if std::env::var("CRMBUS_SIM_TRACE").is_ok() {
        println!("flip {} byte {pos} bit {bit}", f.display());
    }
    sim.flip_bit(f, pos, bit).is_ok()
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn acknowledged_events_survive_every_simulated_power_cut() {
    let seed = env_u64("CRMBUS_SIM_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let crashes = env_u64("CRMBUS_SIM_CRASHES").unwrap_or(2_000);
    println!("power-loss simulation: seed {seed} (replay with CRMBUS_SIM_SEED={seed}), {crashes} power cuts");
    let mut rng = StdRng::seed_from_u64(seed);
    let sim = SimStorage::new();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000));
    let data = PathBuf::from("/data");
    let mut model = Model::default();
    let mut log = EmbeddedLog::open(&data, options(&sim, &clock)).expect("first open");
    let mut stats = (0u64, 0u64, 0u64, 0u64); // steps, flips, faults, acked at the end
                                              // Lives alternate between the two kinds of runtime: on the current-thread one the
                                              // group-commit thread runs every round; on the multi-threaded one an append that finds
                                              // no round running runs its own (both write and fsync in the same order).
    let current_thread = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let multi_thread = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mut rounds_led = 0;
    // Rounds made durable by a commit file record, and checkpoints of it.
    let (mut committed_rounds, mut checkpoints) = (0, 0);
    // Zeros the group-commit thread wrote ahead of a segment's records between rounds.
    let mut prefills_ahead = 0;
    for life in 0..crashes {
        let runtime = if life % 2 == 0 {
            &current_thread
        } else {
            &multi_thread
        };
        let context = format!("seed {seed}, life {life}");
        if std::env::var("CRMBUS_SIM_TRACE").is_ok() {
            println!("--- {context}");
        }
        // Plan this life's end: a power cut a random number of storage operations ahead,
        // and sometimes an I/O error before it.
        let mode = match rng.random_range(0..5u8) {
            0 => CrashMode::KeepNone,
            1 => CrashMode::KeepAll,
            2 => CrashMode::RandomPages,
            3 => CrashMode::TornTail,
            _ => CrashMode::Mixed,
        };
        let ahead = rng.random_range(1..400u64);
        if std::env::var("CRMBUS_SIM_TRACE").is_ok() {
            println!("crash {mode:?} in {ahead} operations");
        }
        sim.crash_at_op(sim.ops() + ahead, mode, rng.random());
        if rng.random_range(0..10u8) == 0 {
            let op = if rng.random_bool(0.5) {
                FaultOp::Write
            } else {
                FaultOp::Sync
            };
            let target = ["", ".log", "journal", "meta.redb", ".idx", "commit.wal"]
                [rng.random_range(0..6usize)];
            let mut fault = if rng.random_bool(0.5) {
                Fault::eio(op, target)
            } else {
                Fault::enospc(op, target)
            };
            fault.skip = rng.random_range(0..30u64);
            if std::env::var("CRMBUS_SIM_TRACE").is_ok() {
                println!("inject {fault:?}");
            }
            sim.inject(fault);
            stats.2 += 1;
        }
        let crashes_before = sim.crashes();
        runtime.block_on(async {
            for _ in 0..200 {
                stats.0 += 1;
                if !step(&log, &mut model, &mut rng, &clock).await {
                    break;
                }
                if sim.crashes() > crashes_before {
                    break;
                }
            }
        });
        if sim.crashes() == crashes_before {
            // The log stopped on an injected error before the planned cut: cut now.
            sim.crash(mode, rng.random());
        }
        sim.clear_faults();
        let commit_stats = log.group_commit_stats();
        rounds_led += commit_stats.rounds_led;
        committed_rounds += commit_stats.committed_rounds;
        checkpoints += commit_stats.checkpoints;
        prefills_ahead += commit_stats.prefills_ahead;
        drop(log);
        let flipped = rng.random_range(0..8u8) == 0 && flip_sealed(&sim, &data, &mut rng);
        stats.1 += u64::from(flipped);
        log = match EmbeddedLog::open(
            &data,
            options_with_commit_file(&sim, &clock, commit_file_bytes(life)),
        ) {
            Ok(l) => l,
            Err(e) => panic!("{context}: reopen after the power cut failed: {e}"),
        };
        runtime.block_on(check(&log, &mut model, flipped, &context));
    }
    stats.3 = model.acked.len() as u64;
    assert!(
        crashes < 10 || rounds_led > 0,
        "no append ran its own group-commit round: the multi-threaded lives tested nothing new"
    );
    assert!(
        crashes < 10 || (committed_rounds > 0 && checkpoints > 0),
        "no round used the commit file ({committed_rounds}) or no checkpoint ran ({checkpoints})"
    );
    println!(
        "power-loss simulation: seed {seed}: {crashes} power cuts, {} workload steps, {} bit flips, {} injected I/O errors, {} acknowledged events held at the end, {} storage operations, {rounds_led} rounds run by appenders, {committed_rounds} rounds made durable by a commit file record, {checkpoints} checkpoints, {prefills_ahead} zeros written ahead by the thread",
        stats.0,
        stats.1,
        stats.2,
        stats.3,
        sim.ops()
    );
    drop(log);
}

/// A power cut or kill at any operation of creating a data directory (and its first topic)
/// leaves a directory the next open accepts. A kill in the middle of initialising the
/// metadata store used to leave a file of zeros that every later open refused.
#[test]
fn a_cut_at_any_point_of_creating_a_log_leaves_a_directory_that_opens() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000));
    let data = PathBuf::from("/data");
    let probe = SimStorage::new();
    let ops = {
        let log = EmbeddedLog::open(&data, options(&probe, &clock)).expect("open");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime
            .block_on(log.create_topic(TopicSpec::new("deals", 2)))
            .expect("create");
        probe.ops()
    };
    let mut cuts = 0;
    for at in 1..=ops {
        for mode in [
            CrashMode::KeepAll,
            CrashMode::KeepNone,
            CrashMode::RandomPages,
        ] {
            let sim = SimStorage::new();
            sim.crash_at_op(at, mode, at);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            if let Ok(log) = EmbeddedLog::open(&data, options(&sim, &clock)) {
                let _ = runtime.block_on(log.create_topic(TopicSpec::new("deals", 2)));
            }
            if sim.crash_pending() {
                sim.crash(mode, at);
            }
            cuts += 1;
            let log = EmbeddedLog::open(&data, options(&sim, &clock))
                .unwrap_or_else(|e| panic!("cut at operation {at} ({mode:?}): reopen failed: {e}"));
            runtime.block_on(async {
                if let Ok(info) = log.describe_topic("deals").await {
                    assert_eq!(info.spec.partitions, 2);
                    log.append(
                        &["deals".to_string()],
                        &[Event::new("deal.won", serde_json::json!({}))],
                    )
                    .await
                    .unwrap_or_else(|e| {
                        panic!("cut at operation {at} ({mode:?}): append failed: {e}")
                    });
                }
            });
        }
    }
    println!("{cuts} cuts over the {ops} operations of creating a log and a topic");
}
