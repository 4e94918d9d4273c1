//! The engine's state (partition cursors, key queues, deliveries in flight) and its run
//! loop: [`Engine::pump`], [`Engine::finish_one`], [`Engine::next_step`], [`Engine::run_until_idle`],
//! [`Engine::drain`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::in_flight::InFlight;
use super::records::RetryRecord;
use super::stats::{EngineMetrics, SubscriptionStats};
use crate::clock::Clock;
use crate::delivery::breaker::CircuitBreaker;
use crate::delivery::group_state::{GroupState, StateKind};
use crate::delivery::handler::{Completion, Handler};
use crate::delivery::options::SubscribeOptions;
use crate::delivery::ranges::OffsetRanges;
use crate::error::LogError;
use crate::event::Event;
use crate::log::EventLog;
use crate::state::{StateOp, StateStore};

pub(super) struct PartCursor {
    pub(super) id: u32,
    pub(super) next_read: u64,
    pub(super) committed: u64,
    /// Finished offsets above `committed`, as ranges.
    pub(super) done: OffsetRanges,
    /// `done` changed since it was last stored.
    pub(super) dirty: bool,
    /// A done entry is stored for this partition (and how many ranges it holds).
    pub(super) stored_done: Option<usize>,
    /// Events read and not finished.
    pub(super) buffered: usize,
    /// One past the highest offset handed to the handler (fenced engines only track it).
    pub(super) dispatched_to: u64,
    /// What of `dispatched_to` is stored.
    pub(super) stored_dispatched: u64,
    /// Offsets below this, not finished, were handed out by a server that stopped
    /// without a clean stop (it crashed, or lost its lease): their first delivery here
    /// counts as a further attempt.
    pub(super) attempted_below: u64,
}

/// How often a busy engine persists what finished ([`Engine::pump`], which checks it each
/// time it runs: at least every [`POLL_INTERVAL`](crate::delivery::POLL_INTERVAL)). A
/// crash delivers again what was acknowledged since the last persist.
pub const PERSIST_INTERVAL: Duration = Duration::from_millis(100);

/// A busy engine also persists once this many deliveries finished, or this many state
/// operations (consumer dedupe entries, retries, dead letters) wait, whichever comes first,
/// so that one persist's batch stays within what every state store takes in one write.
pub const PERSIST_AFTER: usize = 4096;

/// Most emptied key queues an engine keeps for reuse ([`Engine::forget_key`]). Once a
/// subscription had this many keys queued at once, the spares stay allocated while it runs:
/// at most [`SPARE_QUEUE_ROOM`] slots each, about half a MiB in all.
const SPARE_QUEUES: usize = 1024;

/// A spare queue keeps at most this much room: a key that once queued many events does
/// not hold their memory for the next.
const SPARE_QUEUE_ROOM: usize = 8;

impl Engine {
    /// The state of key `k`, made (with a spare queue, if one is kept) when the key has
    /// none. Without key ordering every event is a key of its own, so a queue made and
    /// freed for each would be an allocation per event.
    pub(super) fn key_state(&mut self, k: KeyId) -> &mut KeyState {
        let spare = &mut self.spare_queues;
        self.keys.entry(k).or_insert_with(|| KeyState {
            queue: spare.pop().unwrap_or_default(),
            in_flight: false,
        })
    }

    /// Drops the state of key `k` (idle: nothing queued or in flight), keeping its queue
    /// for a later key.
    pub(super) fn forget_key(&mut self, k: &KeyId) {
        if let Some(ks) = self.keys.remove(k) {
            let mut queue = ks.queue;
            if self.spare_queues.len() < SPARE_QUEUES && queue.capacity() <= SPARE_QUEUE_ROOM {
                queue.clear();
                self.spare_queues.push(queue);
            }
        }
    }
}

impl PartCursor {
    pub(super) fn mark_done(&mut self, offset: u64) {
        self.done.insert(offset);
        self.dirty = true;
    }

    /// The contiguous low-water mark: the first offset from `committed` not finished.
    pub(super) fn lwm(&self) -> u64 {
        self.done.first_missing_from(self.committed)
    }
}

/// An event waiting in its key's queue.
pub(super) struct Queued {
    pub(super) offset: u64,
    /// Shared with the deliveries of it, so dispatching never copies the event.
    pub(super) event: Arc<Event>,
    /// Its JSON as the log stored it, when the log gave it (see [`Delivery::stored_json`]).
    ///
    /// [`Delivery::stored_json`]: crate::delivery::Delivery::stored_json
    pub(super) stored_json: Option<bytes::Bytes>,
    /// When the log appended it (µs since the epoch; 0 when not known: a redrive).
    pub(super) appended_us: i64,
    /// Redriven from the DLQ after its offset was already passed: finishing it does not
    /// move the cursor.
    pub(super) redrive: bool,
}

#[derive(Default)]
pub(super) struct KeyState {
    pub(super) queue: VecDeque<Queued>,
    pub(super) in_flight: bool,
}

pub(super) use crate::delivery::key::Key;

pub(super) type KeyId = (u32, Key);

/// The engine's maps, looked up several times for every event delivered: foldhash, not
/// SipHash. Its seed is random per process, which makes keys a publisher chooses
/// (subjects) hard to aim at collisions, though foldhash promises less against that than
/// SipHash; a collision costs time, never a wrong answer.
pub(super) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
/// A set hashed as [`FastMap`] is.
pub(super) type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// The engine of one subscription. Drive it with [`Engine::run_until_idle`] (tests, with
/// a manual clock) or let a [`Subscription`](crate::delivery::Subscription) run it in the
/// background.
///
/// Memory stays bounded while it runs:
/// - finished offsets above the committed offset are kept as ranges ([`OffsetRanges`]),
///   in memory and in the state store (one `done` entry per partition, rewritten when it
///   changes and only while something is finished past a gap). A held key (its head
///   event parked in the DLQ, its later events waiting behind it) keeps the commit at its
///   head, but the others' acknowledgements between its waiting events are a few ranges,
///   never one entry per event: the number of ranges is at most the number of unfinished
///   offsets, which `read_ahead` bounds. (Letting the commit pass held events instead
///   would not help: the held key's own later events are not finished either.)
/// - consumer dedupe entries expire as time passes: each is queued by expiry when it is
///   recorded and dropped (in memory and in the store) once expired, a few at a time, at
///   each persist;
/// - the DLQ size is a counter, counted once at open and kept by every dead letter,
///   redrive and discard.
pub struct Engine {
    pub(super) log: Arc<dyn EventLog>,
    pub(super) state: Arc<dyn StateStore>,
    pub(super) clock: Arc<dyn Clock>,
    /// The topic and group, shared with every delivery (a delivery copies no name).
    pub(super) topic: Arc<str>,
    pub(super) group: Arc<str>,
    /// Where the group's retries, done markers, dead letters, dedupe and audit live.
    pub(super) stored: GroupState,
    pub(super) handler: Arc<dyn Handler>,
    pub(super) opts: SubscribeOptions,
    pub(super) parts: Vec<PartCursor>,
    pub(super) keys: FastMap<KeyId, KeyState>,
    /// Events taken off their queues since the last step handed deliveries over, freed
    /// once it has (see [`Engine::pump`]).
    pub(super) finished_events: Vec<Queued>,
    /// Emptied queues of keys that went idle, kept for the next keys (see
    /// [`Engine::key_state`]).
    pub(super) spare_queues: Vec<VecDeque<Queued>>,
    pub(super) ready: VecDeque<KeyId>,
    pub(super) timers: BTreeSet<(i64, u32, Key)>,
    pub(super) retries: FastMap<(u32, u64), RetryRecord>,
    pub(super) held: FastSet<(u32, u64)>,
    /// A delivery came back interrupted (the handler is stopping): no new delivery starts,
    /// and interrupted events stay unfinished and uncounted for the next run.
    pub(super) interrupted: bool,
    pub(super) in_flight: InFlight,
    /// The handler takes deliveries handed over ([`Handler::hands_over`], asked at open).
    pub(super) hands_over: bool,
    pub(super) breaker: Option<CircuitBreaker>,
    pub(super) rng: u64,
    pub(super) ops: Vec<StateOp>,
    /// Consumer dedupe: digest of (source, id) → expiry (µs), when enabled.
    pub(super) processed: FastMap<u64, i64>,
    /// The entries of `processed` in the order they expire (an entry may be listed again
    /// with a later expiry; only the one matching `processed` counts).
    pub(super) expiries: VecDeque<(i64, u64)>,
    /// Entries in the DLQ.
    pub(super) dlq_count: u64,
    /// Positions of dead letters being redriven (their entries are removed once
    /// delivered; a discard in between takes them out).
    pub(super) redriving_pos: FastSet<(u32, u64)>,
    pub(super) stats: Arc<SubscriptionStats>,
    /// The metric handles it bumps as it delivers.
    pub(super) metrics: EngineMetrics,
    pub(super) finished_since_persist: usize,
    pub(super) last_persist: std::time::Instant,
    /// Reads started ahead of the next fill ([`Engine::start_prefetch`]): per partition
    /// index, the offset the read began at and what it got.
    pub(super) prefetch: Option<tokio::task::JoinHandle<Vec<PrefetchedRead>>>,
    /// What reads started ahead got, once finished while the engine waited
    /// ([`Engine::read_ahead_finished`]), for the next fill.
    pub(super) prefetched: Option<Vec<PrefetchedRead>>,
    /// Per partition index: the last read found nothing more (or less than it asked
    /// for), so no read is started ahead for it; the next fill reads it as usual.
    pub(super) caught_up: Vec<bool>,
    /// Batches read ahead that a fill took in (tests check that reads ahead are used).
    pub(super) prefetched_batches: u64,
}

impl Drop for Engine {
    /// A read started ahead ends with the engine: it holds the log, which must be free to
    /// close (and its directory to open again) once the subscription has stopped.
    fn drop(&mut self) {
        if let Some(task) = self.prefetch.take() {
            task.abort();
        }
    }
}

/// A read started ahead of a fill: the partition's index, the offset the read began at,
/// and what the log gave.
pub(super) type PrefetchedRead = (usize, u64, Result<Vec<crate::log::StoredEvent>, LogError>);

impl Engine {
    /// The topic this engine reads.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Whether this engine drives `partition` (all partitions unless it was given a set).
    pub fn owns(&self, partition: u32) -> bool {
        self.opts
            .partitions
            .as_ref()
            .is_none_or(|o| o.contains(&partition))
    }

    /// The earliest time (µs) a parked retry is due, if any.
    pub fn next_due_us(&self) -> Option<i64> {
        self.timers.iter().next().map(|(t, _, _)| *t)
    }

    /// Does whatever needs no waiting on handlers: reads, takes in finished deliveries,
    /// dispatches ready keys, starts reading into the room they made, and persists when
    /// nothing is in flight or [`PERSIST_INTERVAL`] has passed since the last time with
    /// something finished. A background subscription calls it between
    /// [`Engine::next_step`] and its commands, so slow handlers never block commands.
    ///
    /// Under load a persist (a state commit, with an fsync on the embedded log) comes once
    /// per interval or per [`PERSIST_AFTER`] deliveries: the engine waits for each persist,
    /// and persisting every 64 deliveries made it wait for one in every few pulls of a
    /// busy group. A crash loses the acknowledgements since the last persist (their
    /// events are delivered again).
    pub async fn pump(&mut self) -> Result<(), LogError> {
        self.fill().await?;
        // Every answer that came back is taken in before anything is dispatched, so the
        // room they made goes out in one hand-over: dispatching before taking them in
        // gave a waiting pull the one slot freed by the answer that woke the step, and it
        // answered with that one delivery alone.
        self.take_answers_in();
        self.dispatch();
        // The finished deliveries also made room to read into: the log reads it while this
        // step persists and the next waits for handlers.
        self.start_prefetch();
        // The events finished above are freed only now, once the deliveries that replace
        // them are handed over: a handler that waits for them (a pull) is not kept
        // waiting on the frees.
        self.finished_events.clear();
        // A fenced engine also stores how far it handed events out, even while nothing
        // finishes (deliveries pulled and not yet answered).
        let unstored_dispatch = !self.opts.fences.is_empty()
            && self
                .parts
                .iter()
                .any(|p| p.dispatched_to > p.stored_dispatched);
        if self.in_flight.is_empty()
            || self.finished_since_persist >= PERSIST_AFTER
            || self.ops.len() >= PERSIST_AFTER
            || ((self.finished_since_persist > 0 || unstored_dispatch)
                && self.last_persist.elapsed() >= PERSIST_INTERVAL)
        {
            self.persist().await?;
            self.finished_since_persist = 0;
            self.last_persist = std::time::Instant::now();
        }
        Ok(())
    }

    /// Takes in every answer that has come back, with one clock reading for them all
    /// (they came back within a step; a reading per answer was 1.5% of a busy read-back).
    fn take_answers_in(&mut self) {
        let mut now = None;
        while let Some(joined) = self.in_flight.try_join_next() {
            let now = *now.get_or_insert_with(|| self.clock.now_micros());
            self.absorb(joined, now);
            self.finished_since_persist += 1;
        }
    }

    /// Waits until one delivery in flight finishes and takes its result in; returns
    /// false at once when nothing is in flight. Cancel-safe.
    pub async fn finish_one(&mut self) -> bool {
        match self.in_flight.join_next().await {
            Some(joined) => {
                self.absorb(joined, self.clock.now_micros());
                self.finished_since_persist += 1;
                true
            }
            None => false,
        }
    }

    /// Waits for what lets the engine go on without new events or commands: a delivery in
    /// flight finishing (taken in, as [`Engine::finish_one`] does), or, with none in
    /// flight, the reads started ahead ([`Engine::read_ahead_finished`]): a step that
    /// took every answer in and started reading ahead has nothing else to wake it before
    /// its next poll. False at once when there is neither. Cancel-safe.
    pub async fn next_step(&mut self) -> bool {
        match (self.has_in_flight(), self.prefetch.as_mut()) {
            (false, None) => false,
            (false, Some(_)) => {
                self.read_ahead_finished().await;
                true
            }
            (true, None) => self.finish_one().await,
            // Whichever comes first: reads ahead that finish while deliveries are still
            // out fill the room finished deliveries made without waiting for the next.
            (true, Some(reads)) => {
                tokio::select! {
                    biased;
                    joined = self.in_flight.join_next() => {
                        if let Some(joined) = joined {
                            self.absorb(joined, self.clock.now_micros());
                            self.finished_since_persist += 1;
                        }
                    }
                    reads = reads => {
                        self.prefetch = None;
                        self.prefetched = reads.ok();
                    }
                }
                true
            }
        }
    }

    /// Whether any delivery is in flight.
    pub fn has_in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Delivers everything that can be delivered now: reads, dispatches, and waits for
    /// handlers until no delivery is in flight and none is ready (what remains waits for
    /// a retry time, a held dead letter, or new events). Persists state and commits
    /// offsets before returning.
    pub async fn run_until_idle(&mut self) -> Result<(), LogError> {
        let mut since_persist = 0usize;
        loop {
            self.fill().await?;
            self.dispatch();
            self.finished_events.clear();
            let Some(joined) = self.in_flight.join_next().await else {
                return self.persist().await;
            };
            let now = self.clock.now_micros();
            self.absorb(joined, now);
            while let Some(joined) = self.in_flight.try_join_next() {
                self.absorb(joined, now);
            }
            since_persist += 1;
            if since_persist >= 64 {
                self.persist().await?;
                since_persist = 0;
            }
        }
    }

    /// Takes in one finished delivery, as of `now` (µs, the engine's clock).
    fn absorb(&mut self, joined: Result<Completion, tokio::task::JoinError>, now: i64) {
        match joined {
            Ok(c) => self.complete(c, now),
            Err(e) => tracing::error!(error = %e, "a handler task failed to join"),
        }
    }

    /// Waits for in-flight deliveries and persists; used before stopping.
    pub async fn drain(&mut self) -> Result<(), LogError> {
        if let Some(task) = self.prefetch.take() {
            // Nothing more is delivered: its reads are not needed, and it holds the log.
            task.abort();
            let _ = task.await;
        }
        while let Some(joined) = self.in_flight.join_next().await {
            self.absorb(joined, self.clock.now_micros());
        }
        self.persist().await?;
        // A clean stop: what this engine handed out and is left unfinished was
        // interrupted, not attempted, so the next owner delivers it as the same attempt;
        // what a crashed owner had handed out before stays counted until it is finished.
        if !self.opts.fences.is_empty() {
            let mut ops = Vec::new();
            for p in &self.parts {
                let key = p.id.to_string();
                if p.attempted_below > p.committed {
                    ops.push(self.stored.put(
                        StateKind::Dispatched,
                        key,
                        super::records::encode(&p.attempted_below)?,
                    ));
                } else {
                    ops.push(self.stored.delete(StateKind::Dispatched, key));
                }
            }
            self.state.apply_fenced(&self.opts.fences, ops).await?;
        }
        Ok(())
    }

    /// The retry schedule the engine holds now, by (partition, offset).
    pub fn pending_retries(&self) -> BTreeMap<(u32, u64), RetryRecord> {
        self.retries.iter().map(|(k, v)| (*k, v.clone())).collect()
    }
}
