//! The append path: which events are new and which are duplicates, staging them in their
//! partitions, the batch journal's intent and done mark of an append that spans
//! partitions, and the commit that makes the append durable.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crmbus::{dedupe_hash, expected_version, partition_for, Event, LogError, Receipt};

use super::{Inner, Topic};
use crate::batch_journal::{spans_frame_bound, Part};
use crate::committer::storage_error;
use crate::dedupe::{DedupeIndex, FirstAppend};
use crate::partition::{NewRecord, RawRecord, SyncItem};
use crate::record::{BODY_HEADER, MAX_BODY, MAX_INTENT_BYTES, MAX_VERSION_BYTES};

/// Whether an append to `topics` touches more than one partition in all.
fn spans_partitions(topics: &[Arc<Topic>], events: &[Event]) -> bool {
    if topics.len() > 1 {
        return !events.is_empty();
    }
    let Some(t) = topics.first() else {
        return false;
    };
    let n = t.spec.partitions;
    let mut first = None;
    for e in events {
        let p = partition_for(e, n);
        match first {
            None => first = Some(p),
            Some(f) if f != p => return true,
            Some(_) => {}
        }
    }
    false
}

/// What staging an append produced, topic by topic.
#[derive(Default)]
pub(super) struct Staged {
    /// A receipt per event and topic, in order.
    pub(super) receipts: Vec<Receipt>,
    /// What the commit must make durable.
    pub(super) sync: Vec<SyncItem>,
    /// Where the new events went.
    pub(super) parts: Vec<StagedPart>,
}

/// A partition's share of an append as staged: what its intent records, and what to take
/// back if the append fails before it submits.
pub(super) struct StagedPart {
    partition: Arc<crate::partition::Partition>,
    /// Offset of the first record.
    first: u64,
    /// The records' dedupe digests, in order.
    hashes: Vec<u64>,
}

/// What an append decided for one event in one topic.
#[derive(Clone, Copy)]
enum Slot {
    New {
        partition: u32,
        index_in_partition: usize,
    },
    Duplicate(FirstAppend),
    SameAs(usize),
}

impl Inner {
    /// Appends `events` to every topic in `topics` ([`crmbus::EventLog::append`]): checks
    /// and encodes every event before anything is written, then stages and commits them.
    pub(super) async fn append(
        &self,
        topics: &[String],
        events: &[Event],
    ) -> Result<Vec<Receipt>, LogError> {
        self.check_open()?;
        if topics.is_empty() {
            return Err(LogError::InvalidArgument("no topic given".into()));
        }
        let resolved: Vec<Arc<Topic>> = topics
            .iter()
            .map(|t| self.topic(t))
            .collect::<Result<_, _>>()?;
        let mut encoded = Vec::with_capacity(events.len());
        let mut expected = Vec::with_capacity(events.len());
        for e in events {
            e.validate()?;
            let expects = expected_version(e)?;
            expected.push(expects);
            // The expectation is a condition of this append, not part of the fact stored.
            let json = match expects {
                Some(_) => {
                    let mut stored = e.clone();
                    stored.extensions.remove(crmbus::EXPECTED_VERSION);
                    stored.to_json_vec()
                }
                None => e.to_json_vec(),
            };
            if json.len() + BODY_HEADER + MAX_VERSION_BYTES + MAX_INTENT_BYTES > MAX_BODY {
                return Err(LogError::InvalidArgument(format!(
                    "event {} is {} bytes; the limit is {} bytes",
                    e.id,
                    json.len(),
                    MAX_BODY - BODY_HEADER - MAX_VERSION_BYTES - MAX_INTENT_BYTES
                )));
            }
            encoded.push((json, dedupe_hash(&e.source, &e.id)));
        }
        if resolved.len() > 1 && expected.iter().any(Option::is_some) {
            return Err(LogError::InvalidArgument(format!(
                "{} applies to one topic's subject: publish an event that states it to one topic",
                crmbus::EXPECTED_VERSION
            )));
        }
        // An append that reaches several partitions is journalled, so a crash cannot leave
        // it in some of them only (see `batch_journal`).
        let may_span = spans_partitions(&resolved, events);
        self.stage_and_commit(&resolved, events, &encoded, &expected, may_span)
            .await
    }

    /// Stages `events` in every topic and waits until they are durable. An append that
    /// may span partitions (`may_span`, decided from the events) reserves room for its
    /// intent and the intent's id first, stages under the commit gate (the first record of
    /// each part names the intent), queues its intent (if it staged anything) and submits
    /// before it lets go of the gate, and writes its done mark once durable.
    ///
    /// Cancellation-safe: every topic's lock is taken first (in name order, so appends do
    /// not deadlock), and from then to the submission to the commit nothing awaits, so a
    /// caller that goes away (a client that disconnects) cannot leave the append staged in
    /// some topics only. An append that fails before it submits takes back what it staged.
    async fn stage_and_commit(
        &self,
        resolved: &[Arc<Topic>],
        events: &[Event],
        encoded: &[(Vec<u8>, u64)],
        expected: &[Option<u64>],
        may_span: bool,
    ) -> Result<Vec<Receipt>, LogError> {
        let mut by_name: Vec<&Arc<Topic>> = resolved.iter().collect();
        by_name.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        by_name.dedup_by(|a, b| a.spec.name == b.spec.name);
        let mut guards = Vec::with_capacity(by_name.len());
        for t in &by_name {
            guards.push(t.append.lock().await);
        }
        // A topic deleted while this append waited for its lock takes no more records.
        if let Some(t) = by_name
            .iter()
            .find(|t| t.partitions.iter().any(|p| p.is_deleted()))
        {
            return Err(LogError::TopicNotFound(t.spec.name.clone()));
        }
        // No await from here until the staged data is handed to the commit.
        if may_span {
            let topics: Vec<(&str, u32)> = resolved
                .iter()
                .map(|t| (t.spec.name.as_str(), t.spec.partitions))
                .collect();
            self.commit
                .reserve_intent(spans_frame_bound(&topics, events.len()))?;
        }
        let gate = if may_span { self.commit.gate() } else { None };
        // Reserved before staging: the first record of each part names it (see
        // `crate::record`), and the group commit writes the intent beside the data.
        let intent = if may_span { self.journal.reserve() } else { 0 };
        let mut out = Staged {
            receipts: Vec::with_capacity(events.len() * resolved.len()),
            ..Staged::default()
        };
        let mut staged = Ok(());
        for t in resolved {
            let Some(i) = by_name.iter().position(|b| b.spec.name == t.spec.name) else {
                continue;
            };
            staged = self.stage_topic(
                t,
                &mut guards[i],
                Batch {
                    events,
                    encoded,
                    expected: Some(expected),
                    intent,
                },
                &mut out,
            );
            if staged.is_err() {
                break;
            }
        }
        let Staged {
            receipts,
            sync,
            parts,
        } = out;
        let queued = staged.and_then(|()| self.queue_intent(intent, &parts));
        let intent = match queued {
            Ok(intent) => intent,
            Err(e) => {
                if intent > 0 {
                    self.journal.finished(intent);
                }
                // Nothing was submitted: take back what was staged, so no part of a
                // publish answered with an error is ever written.
                for part in parts.iter().rev() {
                    if let Err(undo) = part.partition.unstage(part.first) {
                        tracing::error!(topic = %part.partition.topic, partition = part.partition.id,
                            error = %undo, "could not take back what a failed append staged");
                    }
                    if let Some(i) = by_name
                        .iter()
                        .position(|t| t.spec.name == part.partition.topic)
                    {
                        for (k, &hash) in part.hashes.iter().enumerate() {
                            guards[i].forget(
                                hash,
                                FirstAppend {
                                    partition: part.partition.id,
                                    offset: part.first + k as u64,
                                },
                            );
                        }
                    }
                }
                return Err(e);
            }
        };
        let barrier = self.commit.submit(sync, &self.opts);
        drop(gate);
        drop(guards);
        // On failure an intent stays outstanding: the next open finds the append whole or
        // rolls it back.
        self.commit.wait(barrier?).await?;
        if let Some(id) = intent {
            self.write_done(id)?;
        }
        Ok(receipts)
    }

    /// Queues intent `id` (reserved by an append that may span partitions; 0 for any
    /// other) of an append whose new events went to `parts` (after staging them, holding
    /// the commit gate); returns its id if queued. An append that staged nothing (every
    /// event a duplicate) drops it; one whose events all went to one partition queues it
    /// all the same, since its first record names it.
    fn queue_intent(&self, id: u64, parts: &[StagedPart]) -> Result<Option<u64>, LogError> {
        if id == 0 {
            return Ok(None);
        }
        if parts.is_empty() {
            self.journal.finished(id);
            return Ok(None);
        }
        let spans: Vec<Part> = parts
            .iter()
            .map(|p| Part {
                topic: p.partition.topic.clone(),
                partition: p.partition.id,
                first: p.first,
                count: p.hashes.len() as u64,
            })
            .collect();
        let frame = self.journal.begin_reserved(id, &spans);
        self.commit.queue_intent(frame).map(|()| Some(id))
    }

    /// Marks intent `id` done: its append is durable in every partition.
    fn write_done(&self, id: u64) -> Result<(), LogError> {
        self.commit.finish_intent(self.journal.finished(id))
    }

    /// Is the remembered first append really the same (source, id)? Guards against digest
    /// collisions; costs a read only when a digest matches.
    fn same_event(&self, topic: &Topic, at: FirstAppend, event: &Event) -> Result<bool, LogError> {
        let Some(part) = topic.partitions.get(at.partition as usize) else {
            return Ok(false);
        };
        let raw = match part.read_raw(at.offset) {
            Ok(RawRecord::Json(raw)) => raw,
            // The original is damaged and never served: storing the event again is the
            // only way it reaches a consumer (refusing would fail every retry for ever).
            Err(LogError::Corrupt { .. }) => {
                tracing::warn!(topic = %topic.spec.name, partition = at.partition, offset = at.offset,
                    "the original of a retried event is damaged; storing the event again");
                return Ok(false);
            }
            Err(e) => return Err(e),
            // Being written this very moment: a 64-bit digest match on an event appended
            // milliseconds ago is taken as the same event.
            Ok(RawRecord::InFlight) => return Ok(true),
            Ok(RawRecord::Missing) => return Ok(false),
        };
        // A record that passed its checksum but does not decode cannot be the same event.
        Ok(Event::from_stored_json_slice(&raw)
            .is_ok_and(|stored| stored.source == event.source && stored.id == event.id))
    }

    /// Decides, under the topic's lock (`dedupe`), which events are new and which are
    /// duplicates, gives each new event with a subject the subject's next version
    /// (refusing the whole batch, before anything is staged, if an event's expected
    /// version is not its subject's), and stages the new ones in their partitions.
    pub(super) fn stage_topic(
        &self,
        topic: &Topic,
        dedupe: &mut DedupeIndex,
        batch: Batch<'_>,
        out: &mut Staged,
    ) -> Result<(), LogError> {
        let Batch {
            events,
            encoded,
            expected,
            intent,
        } = batch;
        let now = self.opts.clock.now_micros();
        dedupe.expire(now);
        let n = topic.spec.partitions;
        let mut slots = Vec::with_capacity(events.len());
        let mut in_batch: HashMap<u64, usize> = HashMap::new();
        let mut per_partition: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, e) in events.iter().enumerate() {
            let hash = encoded[i].1;
            if let Some(&first) = in_batch.get(&hash) {
                if events[first].source == e.source && events[first].id == e.id {
                    slots.push(Slot::SameAs(first));
                    continue;
                }
            }
            if let Some(at) = dedupe.get(hash) {
                if self.same_event(topic, at, e)? {
                    slots.push(Slot::Duplicate(at));
                    continue;
                }
            }
            in_batch.insert(hash, i);
            let p = partition_for(e, n);
            let list = per_partition.entry(p).or_default();
            slots.push(Slot::New {
                partition: p,
                index_in_partition: list.len(),
            });
            list.push(i);
        }
        if let Some(expected) = expected.filter(|x| x.iter().any(Option::is_some)) {
            check_expected(topic, events, &slots, expected)?;
        }
        let mut versions = vec![0u64; events.len()];
        let mut first_offsets: HashMap<u32, u64> = HashMap::new();
        for (&p, idxs) in &per_partition {
            let part = &topic.partitions[p as usize];
            let batch: Vec<NewRecord<'_>> = idxs
                .iter()
                .enumerate()
                .map(|(k, &i)| NewRecord {
                    json: encoded[i].0.as_slice(),
                    dedupe_hash: encoded[i].1,
                    subject: events[i].subject.as_deref(),
                    intent: if k == 0 { intent } else { 0 },
                })
                .collect();
            let appended = part.append(&batch, &self.opts).map_err(storage_error)?;
            for (k, &i) in idxs.iter().enumerate() {
                versions[i] = appended.versions[k];
                let at = FirstAppend {
                    partition: p,
                    offset: appended.first_offset + k as u64,
                };
                dedupe.insert(encoded[i].1, at, now);
            }
            first_offsets.insert(p, appended.first_offset);
            out.sync.push(appended.sync);
            out.parts.push(StagedPart {
                partition: Arc::clone(part),
                first: appended.first_offset,
                hashes: idxs.iter().map(|&i| encoded[i].1).collect(),
            });
        }
        let resolve = |slot: Slot| -> (FirstAppend, bool) {
            match slot {
                Slot::New {
                    partition,
                    index_in_partition,
                } => (
                    FirstAppend {
                        partition,
                        offset: first_offsets.get(&partition).copied().unwrap_or(0)
                            + index_in_partition as u64,
                    },
                    false,
                ),
                Slot::Duplicate(at) => (at, true),
                Slot::SameAs(_) => (
                    FirstAppend {
                        partition: 0,
                        offset: 0,
                    },
                    true,
                ),
            }
        };
        for (i, &slot) in slots.iter().enumerate() {
            let (at, duplicate) = match slot {
                Slot::SameAs(first) => (resolve(slots[first]).0, true),
                other => resolve(other),
            };
            let version = match (slot, events[i].subject.as_deref()) {
                (Slot::New { .. }, Some(_)) => Some(versions[i]),
                (Slot::SameAs(first), Some(_)) => Some(versions[first]).filter(|&v| v > 0),
                (Slot::Duplicate(at), Some(subject)) => {
                    topic.partitions[at.partition as usize].subject_version_at(subject, at.offset)
                }
                (_, None) => None,
            };
            if duplicate && !per_partition.contains_key(&at.partition) {
                let part = &topic.partitions[at.partition as usize];
                if at.offset >= part.durable_next() {
                    // The first append is not durable yet: wait for it too.
                    out.sync.push(part.sync_item_for_current());
                }
            }
            out.receipts.push(Receipt {
                id: events[i].id.clone(),
                topic: topic.spec.name.clone(),
                partition: at.partition,
                offset: at.offset,
                duplicate,
                version,
            });
        }
        Ok(())
    }
}

/// One topic's share of an append, as [`Inner::stage_topic`] takes it.
pub(super) struct Batch<'a> {
    /// The events.
    pub(super) events: &'a [Event],
    /// Each event's JSON and dedupe digest.
    pub(super) encoded: &'a [(Vec<u8>, u64)],
    /// Each event's expected version; `None` checks none (recovery completing an append
    /// that was checked when it ran).
    pub(super) expected: Option<&'a [Option<u64>]>,
    /// The batch journal intent the first record of each part names (0: none).
    pub(super) intent: u64,
}

/// Checks, before anything of a batch is staged, that every new event stating an expected
/// version finds its subject there: the subject's version plus the batch's new events of
/// the same subject before it (the versions [`crate::partition::Partition::append`] will
/// give them, under the same lock). Otherwise the whole batch fails with
/// [`LogError::VersionConflict`].
fn check_expected(
    topic: &Topic,
    events: &[Event],
    slots: &[Slot],
    expected: &[Option<u64>],
) -> Result<(), LogError> {
    let n = topic.spec.partitions;
    let mut current: HashMap<&str, u64> = HashMap::new();
    for (i, slot) in slots.iter().enumerate() {
        let (Slot::New { partition, .. }, Some(subject)) = (slot, events[i].subject.as_deref())
        else {
            continue;
        };
        debug_assert_eq!(*partition, partition_for(&events[i], n));
        let at = current
            .entry(subject)
            .or_insert_with(|| topic.partitions[*partition as usize].subject_version(subject));
        if let Some(Some(want)) = expected.get(i) {
            if *want != *at {
                return Err(LogError::VersionConflict {
                    topic: topic.spec.name.clone(),
                    subject: subject.to_string(),
                    expected: *want,
                    current: *at,
                });
            }
        }
        *at += 1;
    }
    Ok(())
}
