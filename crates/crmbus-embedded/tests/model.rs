//! Model-based property test of the embedded log: random sequences of topic creation and
//! deletion, single and multi-topic appends (with duplicate ids), reads, retention, group
//! offset commits and reopens run against the real log on the real file system and against
//! an in-memory model of the `EventLog` contract; every answer must match the model.
//!
//! Segments are small (a few records each), so rolls happen all the time.
//!
//! Cases: `CRMBUS_MODEL_CASES` (default 48, about half a minute in a debug build). A long
//! run: `CRMBUS_MODEL_CASES=2000 cargo test --release -p crmbus-embedded --test model`.
//! A failure prints the shrunk sequence of operations and proptest's seed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crmbus::clock::ManualClock;
use crmbus::{partition_for, Event, EventLog, LogError, Receipt, Retention, TopicSpec};
use crmbus_embedded::{EmbeddedLog, EmbeddedOptions};
use crmbus_testkit::embedded::{block_on, read_all};
use proptest::prelude::*;

/// Topic names the operations pick from (by index). Topic 2 has a byte limit.
const TOPICS: [&str; 3] = ["deals", "leads", "invoices"];
/// The byte limit of the topic with retention: a few segments.
const LIMIT_BYTES: u64 = 1_500;

#[derive(Debug, Clone)]
enum Op {
    Create {
        topic: usize,
        partitions: u32,
    },
    Delete {
        topic: usize,
    },
    /// Appends `events` (key, id) to the listed topics in one call.
    Append {
        topics: Vec<usize>,
        events: Vec<(u8, u8)>,
    },
    /// Reads from `from` offsets past the partition's first one (may be beyond its end).
    Read {
        topic: usize,
        partition: u32,
        from: u64,
        max: usize,
    },
    Retention,
    Commit {
        group: u8,
        topic: usize,
        partition: u32,
        back: u64,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..3usize, 1..=3u32).prop_map(|(topic, partitions)| Op::Create { topic, partitions }),
        1 => (0..3usize).prop_map(|topic| Op::Delete { topic }),
        8 => (
            prop::collection::btree_set(0..3usize, 1..=2),
            prop::collection::vec((0..4u8, 0..24u8), 1..=6)
        )
            .prop_map(|(topics, events)| Op::Append {
                topics: topics.into_iter().collect(),
                events
            }),
        4 => (0..3usize, 0..3u32, 0..12u64, 1..6usize)
            .prop_map(|(topic, partition, from, max)| Op::Read { topic, partition, from, max }),
        1 => Just(Op::Retention),
        1 => (0..2u8, 0..3usize, 0..3u32, 0..4u64)
            .prop_map(|(group, topic, partition, back)| Op::Commit { group, topic, partition, back }),
        1 => Just(Op::Reopen),
    ]
}

/// One partition of the model: the events it holds, from `first` on.
#[derive(Debug, Clone, Default)]
struct MPart {
    first: u64,
    events: Vec<Event>,
}

impl MPart {
    fn next(&self) -> u64 {
        self.first + self.events.len() as u64
    }
}

#[derive(Debug, Clone)]
struct MTopic {
    parts: Vec<MPart>,
    /// Where each id was first stored, and whether that event is still held (retention may
    /// have removed it, after which a retry is either a duplicate or stored again).
    ids: HashMap<String, (Receipt, bool)>,
    groups: HashMap<(u8, u32), u64>,
}

#[derive(Debug, Default)]
struct Model {
    topics: BTreeMap<String, MTopic>,
}

fn spec(topic: usize, partitions: u32) -> TopicSpec {
    let spec = TopicSpec::new(TOPICS[topic], partitions);
    if topic == 2 {
        spec.with_retention(Retention {
            max_age: None,
            max_bytes: Some(LIMIT_BYTES),
        })
    } else {
        spec
    }
}

fn event(key: u8, id: u8, n: usize) -> Event {
    Event::new(
        "deal.won",
        serde_json::json!({ "n": n, "pad": "x".repeat(40) }),
    )
    .id(format!("e{id}"))
    .source("urn:model")
    .subject(format!("k{key}"))
}

fn options(clock: &Arc<ManualClock>) -> EmbeddedOptions {
    EmbeddedOptions {
        segment_bytes: 700,
        retention_interval: None,
        clock: clock.clone(),
        ..Default::default()
    }
}

/// Runs `ops` against a fresh log and the model; fails at the first disagreement.
fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    // The clock stands still, so the dedupe window covers the whole run.
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000));
    block_on(async {
        let mut log = EmbeddedLog::open(dir.path(), options(&clock)).expect("open");
        let mut model = Model::default();
        let mut appended = 0usize;
        for (step, op) in ops.iter().enumerate() {
            let at = format!("step {step} ({op:?})");
            match op {
                Op::Create { topic, partitions } => {
                    let got = log.create_topic(spec(*topic, *partitions)).await;
                    let name = TOPICS[*topic];
                    if model.topics.contains_key(name) {
                        prop_assert!(
                            matches!(got, Err(LogError::TopicExists(_))),
                            "{at}: {got:?}"
                        );
                    } else {
                        let info = got.map_err(|e| TestCaseError::fail(format!("{at}: {e}")))?;
                        prop_assert_eq!(info.spec.partitions, *partitions, "{}", at);
                        prop_assert_eq!(info.event_count(), 0, "{}: a new topic is empty", at);
                        model.topics.insert(
                            name.to_string(),
                            MTopic {
                                parts: vec![MPart::default(); *partitions as usize],
                                ids: HashMap::new(),
                                groups: HashMap::new(),
                            },
                        );
                    }
                }
                Op::Delete { topic } => {
                    let got = log.delete_topic(TOPICS[*topic]).await;
                    if model.topics.remove(TOPICS[*topic]).is_some() {
                        prop_assert!(got.is_ok(), "{at}: {got:?}");
                    } else {
                        prop_assert!(
                            matches!(got, Err(LogError::TopicNotFound(_))),
                            "{at}: {got:?}"
                        );
                    }
                }
                Op::Append { topics, events } => {
                    let names: Vec<String> =
                        topics.iter().map(|t| TOPICS[*t].to_string()).collect();
                    let batch: Vec<Event> = events
                        .iter()
                        .map(|(k, id)| {
                            appended += 1;
                            event(*k, *id, appended)
                        })
                        .collect();
                    let got = log.append(&names, &batch).await;
                    if names.iter().any(|n| !model.topics.contains_key(n)) {
                        prop_assert!(
                            matches!(got, Err(LogError::TopicNotFound(_))),
                            "{at}: {got:?}"
                        );
                        continue;
                    }
                    let receipts = got.map_err(|e| TestCaseError::fail(format!("{at}: {e}")))?;
                    prop_assert_eq!(receipts.len(), names.len() * batch.len(), "{}", at);
                    let mut it = receipts.into_iter();
                    for name in &names {
                        let t = model.topics.get_mut(name).expect("checked above");
                        for e in &batch {
                            let r = it.next().expect("counted above");
                            let p = partition_for(e, t.parts.len() as u32);
                            prop_assert_eq!(&r.topic, name, "{}", at);
                            prop_assert_eq!(&r.id, &e.id, "{}", at);
                            match t.ids.get(&e.id) {
                                Some((first, true)) => {
                                    // Still held: a duplicate, answered with the first receipt.
                                    prop_assert!(r.duplicate, "{at}: {} stored twice", e.id);
                                    prop_assert_eq!(
                                        (r.partition, r.offset),
                                        (first.partition, first.offset),
                                        "{}",
                                        at
                                    );
                                }
                                Some((first, false)) if r.duplicate => {
                                    prop_assert_eq!(
                                        (r.partition, r.offset),
                                        (first.partition, first.offset),
                                        "{}",
                                        at
                                    );
                                }
                                _ => {
                                    prop_assert!(!r.duplicate, "{at}: {} is new: {r:?}", e.id);
                                    let part = &mut t.parts[p as usize];
                                    prop_assert_eq!(
                                        (r.partition, r.offset),
                                        (p, part.next()),
                                        "{}: placement",
                                        at
                                    );
                                    part.events.push(e.clone());
                                    t.ids.insert(e.id.clone(), (r.clone(), true));
                                }
                            }
                        }
                    }
                }
                Op::Read {
                    topic,
                    partition,
                    from,
                    max,
                } => {
                    let name = TOPICS[*topic];
                    let Some(t) = model.topics.get(name) else {
                        let got = log.read(name, *partition, *from, *max).await;
                        prop_assert!(
                            matches!(got, Err(LogError::TopicNotFound(_))),
                            "{at}: {got:?}"
                        );
                        continue;
                    };
                    let Some(part) = t.parts.get(*partition as usize) else {
                        let got = log.read(name, *partition, *from, *max).await;
                        prop_assert!(got.is_err(), "{at}: a partition past the last one: {got:?}");
                        continue;
                    };
                    // `from` counts from offset 0, so reads before the first offset happen too.
                    let got = log
                        .read(name, *partition, *from, *max)
                        .await
                        .map_err(|e| TestCaseError::fail(format!("{at}: {e}")))?;
                    let start = (*from).max(part.first);
                    let want: Vec<(u64, &Event)> = part
                        .events
                        .iter()
                        .enumerate()
                        .map(|(i, e)| (part.first + i as u64, e))
                        .filter(|(o, _)| *o >= start)
                        .take(*max)
                        .collect();
                    let seen: Vec<(u64, &Event)> =
                        got.iter().map(|s| (s.offset, &s.event)).collect();
                    prop_assert_eq!(seen, want, "{}", at);
                }
                Op::Retention => {
                    let removed = log
                        .enforce_retention()
                        .await
                        .map_err(|e| TestCaseError::fail(format!("{at}: {e}")))?;
                    let mut advanced = 0;
                    for (name, t) in model.topics.iter_mut() {
                        let info = log
                            .describe_topic(name)
                            .await
                            .map_err(|e| TestCaseError::fail(format!("{at}: {e}")))?;
                        for (p, part) in t.parts.iter_mut().enumerate() {
                            let first = info.partition_info[p].first_offset;
                            if name != TOPICS[2] {
                                prop_assert_eq!(
                                    first,
                                    part.first,
                                    "{}: {} has no retention",
                                    at,
                                    name
                                );
                            }
                            prop_assert!(
                                first >= part.first && first <= part.next(),
                                "{at}: {name}/{p} first offset {first}, model {}..{}",
                                part.first,
                                part.next()
                            );
                            let gone = (first - part.first) as usize;
                            for e in part.events.drain(..gone) {
                                if let Some(entry) = t.ids.get_mut(&e.id) {
                                    entry.1 = false;
                                }
                            }
                            part.first = first;
                            advanced += gone as u64;
                            // The limit is met, or only the active segment is left.
                            let bytes: u64 = part
                                .events
                                .iter()
                                .map(|e| e.to_json_vec().len() as u64)
                                .sum();
                            prop_assert!(
                                bytes <= LIMIT_BYTES + 1_000 || name != TOPICS[2],
                                "{at}: {name}/{p} holds {bytes} bytes after retention"
                            );
                        }
                    }
                    prop_assert_eq!(removed, advanced, "{}: removed count", at);
                }
                Op::Commit {
                    group,
                    topic,
                    partition,
                    back,
                } => {
                    let name = TOPICS[*topic];
                    let Some(t) = model.topics.get_mut(name) else {
                        continue;
                    };
                    let Some(part) = t.parts.get(*partition as usize) else {
                        continue;
                    };
                    let offset = part.next().saturating_sub(*back);
                    let g = format!("g{group}");
                    log.commit_offset(&g, name, *partition, offset)
                        .await
                        .map_err(|e| TestCaseError::fail(format!("{at}: {e}")))?;
                    t.groups.insert((*group, *partition), offset);
                }
                Op::Reopen => {
                    log.close()
                        .await
                        .map_err(|e| TestCaseError::fail(format!("{at}: {e}")))?;
                    drop(log);
                    log = EmbeddedLog::open(dir.path(), options(&clock))
                        .map_err(|e| TestCaseError::fail(format!("{at}: {e}")))?;
                    check_all(&log, &model, &at).await?;
                }
            }
        }
        check_all(&log, &model, "the end").await?;
        log.close()
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        Ok(())
    })
}

/// Every topic, partition, event and group offset the model holds, and nothing else.
async fn check_all(log: &EmbeddedLog, model: &Model, at: &str) -> Result<(), TestCaseError> {
    let listed: Vec<String> = log
        .list_topics()
        .await
        .map_err(|e| TestCaseError::fail(format!("{at}: {e}")))?
        .into_iter()
        .map(|t| t.spec.name)
        .collect();
    let want: Vec<String> = model.topics.keys().cloned().collect();
    prop_assert_eq!(listed, want, "{}: topics", at);
    for (name, t) in &model.topics {
        let info = log
            .describe_topic(name)
            .await
            .map_err(|e| TestCaseError::fail(format!("{at}: {e}")))?;
        prop_assert_eq!(info.partition_info.len(), t.parts.len(), "{}", at);
        for (p, part) in t.parts.iter().enumerate() {
            let pi = &info.partition_info[p];
            prop_assert_eq!(
                (pi.first_offset, pi.next_offset),
                (part.first, part.next()),
                "{}: {}/{}",
                at,
                name,
                p
            );
            prop_assert!(
                pi.corrupt.is_empty(),
                "{at}: {name}/{p} reports damage: {pi:?}"
            );
            let got = read_all(log, name, p as u32, 0)
                .await
                .map_err(|e| TestCaseError::fail(format!("{at}: {e}")))?;
            let seen: Vec<(u64, &Event)> = got.iter().map(|s| (s.offset, &s.event)).collect();
            let want: Vec<(u64, &Event)> = part
                .events
                .iter()
                .enumerate()
                .map(|(i, e)| (part.first + i as u64, e))
                .collect();
            prop_assert_eq!(seen, want, "{}: {}/{}", at, name, p);
        }
        // Every group the operations use: a deleted topic's offsets must not come back
        // with a new topic of the same name.
        for group in 0..2u8 {
            for p in 0..t.parts.len() as u32 {
                let got = log
                    .committed_offset(&format!("g{group}"), name, p)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{at}: {e}")))?;
                let want = t.groups.get(&(group, p)).copied();
                prop_assert_eq!(got, want, "{}: group g{} {}/{}", at, group, name, p);
            }
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("CRMBUS_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn the_embedded_log_behaves_like_its_model(ops in prop::collection::vec(op(), 1..60)) {
        run(&ops)?;
    }
}
