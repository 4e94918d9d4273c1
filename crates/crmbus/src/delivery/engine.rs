//! The delivery engine of one subscription (topic + group): reads the topic's partitions
//! from the group's cursor, delivers each matching event to the handler — one event per
//! key in flight, keys in parallel — retries failures on a persisted schedule, dead-letters
//! what exhausts its retries, and commits the contiguous low-water mark of finished
//! offsets.
//!
//! Durable state, in the [`StateStore`] under `sub/<topic>/<group>/…`:
//! - `retry`: the retry schedule of each failing event (attempts, next due time, error);
//! - `done`: per partition, one entry `<partition>` holding the ranges of offsets finished
//!   above the committed offset, so a restart does not deliver them again (see
//!   [`Engine`]'s persist for why ranges);
//! - `dlq`: dead letters ([`DeadLetter`]), including held ones that park their key.
//!
//! Each step writes its changes in one state batch, then commits the group offset.
//! Time comes from a [`Clock`], so tests drive retries with a manual clock.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use super::breaker::CircuitBreaker;
use super::group_state::{GroupState, StateKind};
use super::handler::{Delivery, Handler, HandlerError};
use super::options::{OnExhausted, Ordering, StartAt, SubscribeOptions};
use super::ranges::OffsetRanges;
use crate::clock::Clock;
use crate::error::LogError;
use crate::event::Event;
use crate::log::EventLog;
use crate::state::{StateOp, StateStore};

/// The retry schedule of one failing event, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryRecord {
    /// The ordering key of the event.
    pub key: String,
    /// Deliveries made so far.
    pub attempts: u32,
    /// When the first delivery failed (µs since the epoch).
    pub first_failure_us: i64,
    /// When the next delivery is due (µs since the epoch).
    pub next_due_us: i64,
    /// The last failure's message.
    pub last_error: String,
}

/// An event that exhausted its retries (or failed permanently), kept for people to
/// inspect, redrive or discard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Entry id: `<partition>-<offset>`.
    pub id: String,
    /// Topic of the event.
    pub topic: String,
    /// The group that failed to process it.
    pub group: String,
    /// Partition of the event.
    pub partition: u32,
    /// Offset of the event.
    pub offset: u64,
    /// Ordering key of the event.
    pub key: String,
    /// The event.
    pub event: Event,
    /// Deliveries made.
    pub attempts: u32,
    /// First failure (µs since the epoch).
    pub first_failure_us: i64,
    /// Last failure (µs since the epoch).
    pub last_failure_us: i64,
    /// The last failure's message.
    pub last_error: String,
    /// True when the key waits for this entry to be redriven or discarded.
    pub held: bool,
    /// True while a redrive of this entry is under way (it is removed once delivered).
    #[serde(default)]
    pub redriving: bool,
    /// True when the log could not serve the record (it failed its checksum or does not
    /// decode): `event` is then a placeholder of type [`UNREADABLE_TYPE`] naming the
    /// position, `last_error` says why, and the entry cannot be redriven, only discarded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unreadable: bool,
}

/// The type of the placeholder event a dead letter of an unreadable record carries.
pub const UNREADABLE_TYPE: &str = "crmbus.record.unreadable";

/// Which dead letters a list or a redrive selects. Every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DlqFilter {
    /// Event type pattern (`*` wildcards).
    #[serde(rename = "type")]
    pub ty: Option<String>,
    /// Text the last error contains.
    pub error: Option<String>,
    /// Last failure at or after this time (µs since the epoch).
    pub since_us: Option<i64>,
    /// Last failure before this time (µs since the epoch).
    pub until_us: Option<i64>,
}

impl DlqFilter {
    /// Does the entry match?
    pub fn matches(&self, d: &DeadLetter) -> bool {
        self.ty
            .as_deref()
            .is_none_or(|p| super::filter::glob_match(p, &d.event.ty))
            && self
                .error
                .as_deref()
                .is_none_or(|t| d.last_error.contains(t))
            && self.since_us.is_none_or(|t| d.last_failure_us >= t)
            && self.until_us.is_none_or(|t| d.last_failure_us < t)
    }
}

/// One operator action on the DLQ, as kept in the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When (µs since the epoch).
    pub at_us: i64,
    /// Who did it (as the caller named them).
    pub who: String,
    /// `redrive` or `discard`.
    pub action: String,
    /// The dead letter's entry id.
    pub entry: String,
    /// The event's id.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
}

/// Counters of a subscription since it started.
#[derive(Debug, Default)]
pub struct SubscriptionStats {
    /// Handler calls made.
    pub delivered: AtomicU64,
    /// Deliveries acknowledged.
    pub acked: AtomicU64,
    /// Failed deliveries scheduled for a retry.
    pub retried: AtomicU64,
    /// Events dead-lettered.
    pub dead_lettered: AtomicU64,
    /// Events passed over by the filter.
    pub filtered: AtomicU64,
    /// Events passed over because the group already processed their (source, id).
    pub deduped: AtomicU64,
}

/// A point-in-time copy of [`SubscriptionStats`] plus the engine's current state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Handler calls made.
    pub delivered: u64,
    /// Deliveries acknowledged.
    pub acked: u64,
    /// Failed deliveries scheduled for a retry.
    pub retried: u64,
    /// Events dead-lettered.
    pub dead_lettered: u64,
    /// Events passed over by the filter.
    pub filtered: u64,
    /// Events passed over as already processed.
    pub deduped: u64,
    /// Deliveries in flight now.
    pub in_flight: u64,
    /// Keys waiting for a retry or held by a dead letter.
    pub parked_keys: u64,
    /// Committed offset per partition.
    pub committed: Vec<u64>,
    /// Circuit breaker: 0 closed, 1 open, 2 half-open (0 without a breaker).
    pub breaker: u8,
    /// Consumer dedupe entries held in memory now.
    pub dedupe_entries: u64,
    /// Ranges of finished offsets above the committed offset held in memory now (all
    /// partitions).
    pub done_entries: u64,
    /// Ranges of finished offsets in the stored done entries (all partitions).
    pub done_markers: u64,
    /// Entries in the group's dead-letter queue.
    pub dlq_entries: u64,
}

/// The message of a panic payload (a `&str` or a `String`; anything else is unnamed).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// True for the put of a done entry (rebuilt from the done set when a persist is retried).
fn is_done_put(op: &StateOp, done_ns: &str) -> bool {
    matches!(op, StateOp::Put { namespace, .. } if namespace == done_ns)
}

fn pos_key(partition: u32, offset: u64) -> String {
    format!("{partition:010}/{offset:020}")
}

/// The key of a partition's done ranges.
fn done_key(partition: u32) -> String {
    format!("{partition:010}")
}

fn parse_pos_key(k: &str) -> Option<(u32, u64)> {
    let (p, o) = k.split_once('/')?;
    Some((p.parse().ok()?, o.parse().ok()?))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, LogError> {
    serde_json::to_vec(v).map_err(|e| LogError::Backend(format!("encoding state: {e}")))
}

fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, LogError> {
    serde_json::from_slice(b).map_err(|e| LogError::Backend(format!("decoding state: {e}")))
}

struct PartCursor {
    id: u32,
    next_read: u64,
    committed: u64,
    /// Finished offsets above `committed`, as ranges.
    done: OffsetRanges,
    /// `done` changed since it was last stored.
    dirty: bool,
    /// A done entry is stored for this partition (and how many ranges it holds).
    stored_done: Option<usize>,
    /// Events read and not finished.
    buffered: usize,
}

impl PartCursor {
    fn mark_done(&mut self, offset: u64) {
        self.done.insert(offset);
        self.dirty = true;
    }

    /// The contiguous low-water mark: the first offset from `committed` not finished.
    fn lwm(&self) -> u64 {
        self.done.first_missing_from(self.committed)
    }
}

/// An event waiting in its key's queue.
struct Queued {
    offset: u64,
    event: Event,
    /// Redriven from the DLQ after its offset was already passed: finishing it does not
    /// move the cursor.
    redrive: bool,
}

#[derive(Default)]
struct KeyState {
    queue: VecDeque<Queued>,
    in_flight: bool,
}

struct Completion {
    partition: u32,
    offset: u64,
    key: String,
    attempt: u32,
    redrive: bool,
    dedupe_hash: u64,
    result: Result<(), HandlerError>,
}

type KeyId = (u32, String);

/// The engine of one subscription. Drive it with [`Engine::run_until_idle`] (tests, with
/// a manual clock) or let a [`super::Subscription`] run it in the background.
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
    log: Arc<dyn EventLog>,
    state: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    topic: String,
    group: String,
    /// Where the group's retries, done markers, dead letters, dedupe and audit live.
    stored: GroupState,
    handler: Arc<dyn Handler>,
    opts: SubscribeOptions,
    parts: Vec<PartCursor>,
    keys: HashMap<KeyId, KeyState>,
    ready: VecDeque<KeyId>,
    timers: BTreeSet<(i64, u32, String)>,
    retries: HashMap<(u32, u64), RetryRecord>,
    held: HashSet<(u32, u64)>,
    in_flight: JoinSet<Completion>,
    breaker: Option<CircuitBreaker>,
    rng: u64,
    ops: Vec<StateOp>,
    /// Consumer dedupe: digest of (source, id) → expiry (µs), when enabled.
    processed: HashMap<u64, i64>,
    /// The entries of `processed` in the order they expire (an entry may be listed again
    /// with a later expiry; only the one matching `processed` counts).
    expiries: VecDeque<(i64, u64)>,
    /// Entries in the DLQ.
    dlq_count: u64,
    /// Positions of dead letters being redriven (their entries are removed once
    /// delivered; a discard in between takes them out).
    redriving_pos: HashSet<(u32, u64)>,
    stats: Arc<SubscriptionStats>,
    finished_since_persist: usize,
    last_persist: std::time::Instant,
}

impl Engine {
    /// Opens the engine of (`topic`, `group`): loads the group's cursor (or places a new
    /// group per `opts.start` and commits it), its retry schedule, done markers and held
    /// dead letters.
    pub async fn open(
        log: Arc<dyn EventLog>,
        state: Arc<dyn StateStore>,
        clock: Arc<dyn Clock>,
        topic: &str,
        group: &str,
        handler: Arc<dyn Handler>,
        opts: SubscribeOptions,
    ) -> Result<Engine, LogError> {
        if group.is_empty() || group.contains('/') {
            return Err(LogError::InvalidArgument(format!(
                "group name '{group}' must be non-empty and without '/'"
            )));
        }
        if opts.max_in_flight == 0 || opts.read_ahead == 0 {
            return Err(LogError::InvalidArgument(
                "max_in_flight and read_ahead must be at least 1".into(),
            ));
        }
        let stored = GroupState::new(topic, group);
        let info = log.describe_topic(topic).await?;
        let mut parts = Vec::with_capacity(info.partition_info.len());
        for p in &info.partition_info {
            let committed =
                match log.committed_offset(group, topic, p.partition).await? {
                    Some(c) if c > p.next_offset => {
                        // The log lost its tail, or the topic was made again: a cursor past the
                        // end would pass over every event appended below it.
                        tracing::warn!(topic, group, partition = p.partition, committed = c,
                        next_offset = p.next_offset,
                        "the group's offset is past the end of the partition; clamped to the end");
                        log.commit_offset(group, topic, p.partition, p.next_offset)
                            .await?;
                        p.next_offset
                    }
                    Some(c) => c,
                    None => {
                        let start = match opts.start {
                            StartAt::Earliest => p.first_offset,
                            StartAt::Latest => p.next_offset,
                            StartAt::Time(us) => {
                                let t =
                                    chrono::DateTime::from_timestamp_micros(us).unwrap_or_default();
                                log.offset_for_time(topic, p.partition, t).await?
                            }
                        };
                        log.commit_offset(group, topic, p.partition, start).await?;
                        start
                    }
                };
            parts.push(PartCursor {
                id: p.partition,
                next_read: committed,
                committed,
                done: OffsetRanges::default(),
                dirty: false,
                stored_done: None,
                buffered: 0,
            });
        }
        let mut retries = HashMap::new();
        for (k, v) in state.scan(&stored.namespace(StateKind::Retry), "").await? {
            if let Some(pos) = parse_pos_key(&k) {
                retries.insert(pos, decode::<RetryRecord>(&v)?);
            }
        }
        // Done entries: one per partition, the ranges finished above the committed offset
        // (ranges below it are what a later commit passed). One marker per offset
        // (`<partition>/<offset>`) is how older versions stored them: folded in and
        // rewritten as ranges here.
        let done_ns = stored.namespace(StateKind::Done);
        let mut legacy = Vec::new();
        for (k, v) in state.scan(&done_ns, "").await? {
            if let Some((p, o)) = parse_pos_key(&k) {
                if let Some(part) = parts.iter_mut().find(|c| c.id == p) {
                    if o >= part.committed {
                        part.done.insert(o);
                        part.dirty = true;
                    }
                }
                legacy.push(StateOp::Delete {
                    namespace: done_ns.clone(),
                    key: k,
                });
            } else if let Ok(p) = k.parse::<u32>() {
                let ranges: Vec<(u64, u64)> = decode(&v)?;
                if let Some(part) = parts.iter_mut().find(|c| c.id == p) {
                    for (a, b) in ranges {
                        part.done.insert_range(a.max(part.committed), b);
                    }
                    part.stored_done = Some(part.done.range_count());
                }
            }
        }
        if !legacy.is_empty() {
            let mut ops = Vec::new();
            for part in parts.iter_mut().filter(|p| p.dirty) {
                ops.push(StateOp::Put {
                    namespace: done_ns.clone(),
                    key: done_key(part.id),
                    value: encode(&part.done.to_pairs())?,
                });
                part.stored_done = Some(part.done.range_count());
                part.dirty = false;
            }
            ops.extend(legacy);
            state.apply(ops).await?;
        }
        let mut held = HashSet::new();
        let mut redriving = Vec::new();
        let mut dlq_count = 0u64;
        for (_, v) in state
            .scan(&stored.namespace(StateKind::DeadLetter), "")
            .await?
        {
            let d: DeadLetter = decode(&v)?;
            dlq_count += 1;
            if d.redriving {
                redriving.push(d);
            } else if d.held {
                held.insert((d.partition, d.offset));
            }
        }
        let mut processed = HashMap::new();
        let mut expiries = Vec::new();
        if opts.dedupe_ttl.is_some() {
            let ns = stored.namespace(StateKind::Dedupe);
            let now = clock.now_micros();
            let mut expired = Vec::new();
            for (k, v) in state.scan(&ns, "").await? {
                let expiry: i64 = decode(&v)?;
                match u64::from_str_radix(&k, 16) {
                    Ok(h) if expiry > now => {
                        processed.insert(h, expiry);
                        expiries.push((expiry, h));
                    }
                    _ => expired.push(StateOp::Delete {
                        namespace: ns.clone(),
                        key: k,
                    }),
                }
            }
            if !expired.is_empty() {
                state.apply(expired).await?;
            }
        }
        expiries.sort_unstable();
        let seed = clock.now_micros() as u64 ^ 0x9E37_79B9_7F4A_7C15;
        let mut engine = Engine {
            log,
            state,
            clock,
            topic: topic.to_string(),
            group: group.to_string(),
            stored,
            handler,
            breaker: opts.breaker.map(CircuitBreaker::new),
            opts,
            parts,
            keys: HashMap::new(),
            ready: VecDeque::new(),
            timers: BTreeSet::new(),
            retries,
            held,
            in_flight: JoinSet::new(),
            rng: seed | 1,
            ops: Vec::new(),
            processed,
            expiries: expiries.into(),
            dlq_count,
            redriving_pos: redriving.iter().map(|d| (d.partition, d.offset)).collect(),
            stats: Arc::new(SubscriptionStats::default()),
            finished_since_persist: 0,
            last_persist: std::time::Instant::now(),
        };
        // Redrives that were under way when the engine stopped start again.
        for d in redriving {
            engine.enqueue_redrive(d);
        }
        Ok(engine)
    }

    /// The topic this engine reads.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Exports the subscription's gauges, its lag (events not yet committed) and its DLQ
    /// size as metrics.
    pub async fn export_metrics(&self) -> Result<(), LogError> {
        let s = self.stats();
        let labels = [("topic", self.topic.clone()), ("group", self.group.clone())];
        metrics::gauge!("crmbus_subscription_in_flight", &labels).set(s.in_flight as f64);
        metrics::gauge!("crmbus_subscription_parked_keys", &labels).set(s.parked_keys as f64);
        metrics::gauge!("crmbus_subscription_breaker_state", &labels).set(f64::from(s.breaker));
        let info = self.log.describe_topic(&self.topic).await?;
        let lag: u64 = info
            .partition_info
            .iter()
            .zip(&s.committed)
            .map(|(p, c)| p.next_offset.saturating_sub(*c))
            .sum();
        metrics::gauge!("crmbus_subscription_lag", &labels).set(lag as f64);
        metrics::gauge!("crmbus_subscription_dlq_size", &labels).set(self.dlq_count as f64);
        Ok(())
    }

    /// The subscription's counters (shared; they keep counting).
    pub fn stats_handle(&self) -> Arc<SubscriptionStats> {
        Arc::clone(&self.stats)
    }

    /// A snapshot of the counters and the current state.
    pub fn stats(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(AtomicOrdering::Relaxed);
        StatsSnapshot {
            delivered: g(&self.stats.delivered),
            acked: g(&self.stats.acked),
            retried: g(&self.stats.retried),
            dead_lettered: g(&self.stats.dead_lettered),
            filtered: g(&self.stats.filtered),
            deduped: g(&self.stats.deduped),
            in_flight: self.in_flight.len() as u64,
            parked_keys: self.parked_keys() as u64,
            committed: self.parts.iter().map(|p| p.committed).collect(),
            breaker: self
                .breaker
                .as_ref()
                .map(|b| b.current().gauge() as u8)
                .unwrap_or(0),
            dedupe_entries: self.processed.len() as u64,
            done_entries: self.parts.iter().map(|p| p.done.range_count() as u64).sum(),
            done_markers: self
                .parts
                .iter()
                .map(|p| p.stored_done.unwrap_or(0) as u64)
                .sum(),
            dlq_entries: self.dlq_count,
        }
    }

    fn parked_keys(&self) -> usize {
        self.keys
            .iter()
            .filter(|((p, _), ks)| {
                ks.queue.front().is_some_and(|q| {
                    self.retries.contains_key(&(*p, q.offset))
                        || self.held.contains(&(*p, q.offset))
                })
            })
            .count()
    }

    /// The earliest time (µs) a parked retry is due, if any.
    pub fn next_due_us(&self) -> Option<i64> {
        self.timers.iter().next().map(|(t, _, _)| *t)
    }

    fn counter(&self, name: &'static str) {
        metrics::counter!(name, "topic" => self.topic.clone(), "group" => self.group.clone())
            .increment(1);
    }

    fn count_delivered(&self) {
        self.stats.delivered.fetch_add(1, AtomicOrdering::Relaxed);
        self.counter("crmbus_deliveries_total");
    }

    fn count_acked(&self) {
        self.stats.acked.fetch_add(1, AtomicOrdering::Relaxed);
        self.counter("crmbus_acks_total");
    }

    fn count_retried(&self) {
        self.stats.retried.fetch_add(1, AtomicOrdering::Relaxed);
        self.counter("crmbus_retries_total");
    }

    fn count_dead_lettered(&self) {
        self.stats
            .dead_lettered
            .fetch_add(1, AtomicOrdering::Relaxed);
        self.counter("crmbus_dead_lettered_total");
    }

    fn count_filtered(&self) {
        self.stats.filtered.fetch_add(1, AtomicOrdering::Relaxed);
    }

    fn count_deduped(&self) {
        self.stats.deduped.fetch_add(1, AtomicOrdering::Relaxed);
        self.counter("crmbus_deduped_total");
    }

    fn random(&mut self) -> f64 {
        // xorshift64*: jitter only needs to be spread, not unpredictable.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn key_for(&self, event: &Event, offset: u64) -> String {
        match self.opts.ordering {
            Ordering::Key => event.subject.clone().unwrap_or_else(|| event.id.clone()),
            Ordering::None => format!("#{offset}"),
        }
    }

    /// Reads more events into the key queues, up to `read_ahead` per partition.
    ///
    /// A record the log cannot serve ([`LogError::Corrupt`]) costs only itself: when the
    /// error names an offset past `from` (a backend that fails a whole batch), the events
    /// before it are read first; the record is then dead-lettered with the reason
    /// (see [`DeadLetter::unreadable`]) and the group moves past it.
    async fn fill(&mut self) -> Result<(), LogError> {
        for i in 0..self.parts.len() {
            // An unreadable offset met in this partition: read only up to it.
            let mut stop_at: Option<u64> = None;
            loop {
                let part = &self.parts[i];
                let room = self.opts.read_ahead.saturating_sub(part.buffered);
                if room == 0 {
                    break;
                }
                let (p, from) = (part.id, part.next_read);
                let mut max = room.min(512);
                if let Some(bad) = stop_at.filter(|b| *b > from) {
                    max = max.min(usize::try_from(bad - from).unwrap_or(usize::MAX));
                }
                let batch = match self.log.read(&self.topic, p, from, max).await {
                    Ok(b) => b,
                    Err(LogError::Corrupt { offset, detail, .. }) => {
                        let bad = offset.max(from);
                        if bad > from && stop_at != Some(bad) {
                            // Deliver up to it first.
                            stop_at = Some(bad);
                            continue;
                        }
                        let bad = if bad > from {
                            // Even the offsets before it cannot be read: those that
                            // retention removed are gone; any other is unreadable too.
                            let first = self
                                .log
                                .describe_topic(&self.topic)
                                .await?
                                .partition_info
                                .iter()
                                .find(|x| x.partition == p)
                                .map(|x| x.first_offset)
                                .unwrap_or(0);
                            if first > from {
                                let part = &mut self.parts[i];
                                part.done.insert_range(from, first.min(bad));
                                part.dirty = true;
                                part.next_read = first.min(bad);
                                continue;
                            }
                            from
                        } else {
                            bad
                        };
                        self.dead_letter_unreadable(i, bad, &detail).await?;
                        stop_at = None;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if batch.is_empty() {
                    break;
                }
                for stored in batch {
                    let offset = stored.offset;
                    let part = &mut self.parts[i];
                    if offset > part.next_read {
                        // The log served nothing in between: retention removed those
                        // offsets before the group read them. Nothing can deliver them,
                        // so they count as done, or the commit would wait for ever.
                        if part.next_read == part.committed && part.buffered == 0 {
                            part.committed = offset;
                        } else {
                            part.done.insert_range(part.next_read, offset);
                            part.dirty = true;
                        }
                    }
                    part.next_read = offset + 1;
                    if offset < part.committed || part.done.contains(offset) {
                        continue;
                    }
                    if self.opts.dedupe_ttl.is_some() {
                        let h =
                            crate::partition::dedupe_hash(&stored.event.source, &stored.event.id);
                        if self
                            .processed
                            .get(&h)
                            .is_some_and(|exp| *exp > self.clock.now_micros())
                        {
                            part.mark_done(offset);
                            self.count_deduped();
                            continue;
                        }
                    }
                    if !self.opts.filter.matches(&stored.event) {
                        part.mark_done(offset);
                        self.count_filtered();
                        continue;
                    }
                    part.buffered += 1;
                    let key = self.key_for(&stored.event, offset);
                    let ks = self.keys.entry((p, key.clone())).or_default();
                    let was_idle = ks.queue.is_empty() && !ks.in_flight;
                    ks.queue.push_back(Queued {
                        offset,
                        event: stored.event,
                        redrive: false,
                    });
                    if was_idle {
                        self.schedule(p, key);
                    }
                }
            }
        }
        Ok(())
    }

    /// Dead-letters the record at `offset` of partition index `i`, which the log cannot
    /// serve, with the reason; the group moves past it.
    async fn dead_letter_unreadable(
        &mut self,
        i: usize,
        offset: u64,
        detail: &str,
    ) -> Result<(), LogError> {
        let p = self.parts[i].id;
        let now = self.clock.now_micros();
        let id = format!("{p}-{offset}");
        let ns = self.stored.namespace(StateKind::DeadLetter);
        // A crash before the commit reads it again: the entry is then already there.
        let existed = self.state.get(&ns, &id).await?.is_some();
        let event = Event::new(
            UNREADABLE_TYPE,
            serde_json::json!({"topic": self.topic, "partition": p, "offset": offset}),
        )
        .id(format!("{}-{id}", self.topic))
        .source("urn:crmbus:unreadable");
        let entry = DeadLetter {
            id: id.clone(),
            topic: self.topic.clone(),
            group: self.group.clone(),
            partition: p,
            offset,
            key: String::new(),
            event,
            attempts: 0,
            first_failure_us: now,
            last_failure_us: now,
            last_error: format!("the log cannot serve this record: {detail}"),
            held: false,
            redriving: false,
            unreadable: true,
        };
        self.ops.push(StateOp::Put {
            namespace: ns,
            key: id,
            value: encode(&entry)?,
        });
        if !existed {
            self.dlq_count += 1;
        }
        self.count_dead_lettered();
        tracing::error!(topic = %self.topic, group = %self.group, partition = p, offset, %detail,
            "an unreadable record was dead-lettered");
        let part = &mut self.parts[i];
        part.mark_done(offset);
        part.next_read = part.next_read.max(offset + 1);
        Ok(())
    }

    /// Puts a key with a queued head event in the ready queue, on a timer, or nowhere
    /// (held by a dead letter).
    fn schedule(&mut self, p: u32, key: String) {
        let Some(ks) = self.keys.get(&(p, key.clone())) else {
            return;
        };
        let Some(Queued { offset, .. }) = ks.queue.front() else {
            return;
        };
        if ks.in_flight || self.held.contains(&(p, *offset)) {
            return;
        }
        match self.retries.get(&(p, *offset)) {
            Some(r) if r.next_due_us > self.clock.now_micros() => {
                self.timers.insert((r.next_due_us, p, key));
            }
            _ => self.ready.push_back((p, key)),
        }
    }

    /// Starts deliveries for ready keys, up to `max_in_flight`.
    fn dispatch(&mut self) {
        let now = self.clock.now_micros();
        while let Some(first) = self.timers.iter().next().cloned() {
            if first.0 > now {
                break;
            }
            self.timers.remove(&first);
            self.ready.push_back((first.1, first.2));
        }
        while self.in_flight.len() < self.opts.max_in_flight {
            let Some((p, key)) = self.ready.pop_front() else {
                break;
            };
            let Some(ks) = self.keys.get(&(p, key.clone())) else {
                continue;
            };
            let Some(Queued {
                offset,
                event,
                redrive,
            }) = ks.queue.front()
            else {
                continue;
            };
            let (offset, redrive) = (*offset, *redrive);
            if ks.in_flight || self.held.contains(&(p, offset)) {
                continue;
            }
            if self
                .retries
                .get(&(p, offset))
                .is_some_and(|r| r.next_due_us > now)
            {
                continue;
            }
            if let Some(b) = self.breaker.as_mut() {
                if !b.try_acquire(now) {
                    self.ready.push_front((p, key));
                    break;
                }
            }
            if !redrive && self.opts.dedupe_ttl.is_some() {
                let h = crate::partition::dedupe_hash(&event.source, &event.id);
                if self.processed.get(&h).is_some_and(|exp| *exp > now) {
                    // Processed already (a duplicate read before its twin was acked).
                    self.count_deduped();
                    self.pop_head(p, &key);
                    if self.retries.remove(&(p, offset)).is_some() {
                        self.ops.push(StateOp::Delete {
                            namespace: self.stored.namespace(StateKind::Retry),
                            key: pos_key(p, offset),
                        });
                    }
                    self.finish_offset(p, offset);
                    self.schedule(p, key);
                    continue;
                }
            }
            let attempt = self
                .retries
                .get(&(p, offset))
                .map(|r| r.attempts + 1)
                .unwrap_or(1);
            let delivery = Delivery {
                topic: self.topic.clone(),
                group: self.group.clone(),
                partition: p,
                offset,
                attempt,
                event: event.clone(),
            };
            if let Some(ks) = self.keys.get_mut(&(p, key.clone())) {
                ks.in_flight = true;
            }
            self.count_delivered();
            let handler = Arc::clone(&self.handler);
            let dedupe_hash =
                crate::partition::dedupe_hash(&delivery.event.source, &delivery.event.id);
            self.in_flight.spawn(async move {
                // A handler that panics fails this attempt like a transient error, with the
                // panic's message: its completion must come back, or its key and its
                // partition's commit would wait for ever.
                let result = match AssertUnwindSafe(handler.handle(delivery))
                    .catch_unwind()
                    .await
                {
                    Ok(result) => result,
                    Err(panic) => Err(HandlerError::transient(format!(
                        "the handler panicked: {}",
                        panic_message(panic.as_ref())
                    ))),
                };
                Completion {
                    partition: p,
                    offset,
                    key,
                    attempt,
                    redrive,
                    dedupe_hash,
                    result,
                }
            });
        }
    }

    fn finish_offset(&mut self, p: u32, offset: u64) {
        if let Some(part) = self.parts.iter_mut().find(|c| c.id == p) {
            part.mark_done(offset);
            part.buffered = part.buffered.saturating_sub(1);
        }
    }

    fn complete(&mut self, c: Completion) {
        let now = self.clock.now_micros();
        let (p, offset, key) = (c.partition, c.offset, c.key.clone());
        let retry_ns = self.stored.namespace(StateKind::Retry);
        if let Some(ks) = self.keys.get_mut(&(p, key.clone())) {
            ks.in_flight = false;
        }
        if let Some(b) = self.breaker.as_mut() {
            b.record(c.result.is_ok(), now);
        }
        match c.result {
            Ok(()) => {
                self.count_acked();
                self.pop_head(p, &key);
                if self.retries.remove(&(p, offset)).is_some() {
                    self.ops.push(StateOp::Delete {
                        namespace: retry_ns,
                        key: pos_key(p, offset),
                    });
                }
                self.remember_processed(c.dedupe_hash, now);
                if c.redrive {
                    // Unless it was discarded while the redrive was under way.
                    if self.redriving_pos.remove(&(p, offset)) {
                        self.ops.push(StateOp::Delete {
                            namespace: self.stored.namespace(StateKind::DeadLetter),
                            key: format!("{p}-{offset}"),
                        });
                        self.dlq_count = self.dlq_count.saturating_sub(1);
                    }
                } else {
                    self.finish_offset(p, offset);
                }
            }
            Err(e) => {
                let mut rec = self
                    .retries
                    .get(&(p, offset))
                    .cloned()
                    .unwrap_or(RetryRecord {
                        key: key.clone(),
                        attempts: 0,
                        first_failure_us: now,
                        next_due_us: now,
                        last_error: String::new(),
                    });
                rec.attempts = c.attempt;
                rec.last_error = e.message.clone();
                let age =
                    Duration::from_micros(now.saturating_sub(rec.first_failure_us).max(0) as u64);
                if e.permanent || self.opts.retry.exhausted(rec.attempts, age) {
                    self.dead_letter(p, offset, &key, &rec, now);
                } else {
                    let r = self.random();
                    let delay = self.opts.retry.next_delay(rec.attempts, r, e.retry_after);
                    // `next_delay` caps the delay; convert without truncating all the same.
                    let delay_us = i64::try_from(delay.as_micros()).unwrap_or(i64::MAX);
                    rec.next_due_us = now.saturating_add(delay_us);
                    match encode(&rec) {
                        Ok(bytes) => self.ops.push(StateOp::Put {
                            namespace: retry_ns,
                            key: pos_key(p, offset),
                            value: bytes,
                        }),
                        Err(err) => tracing::error!(error = %err, "cannot record a retry"),
                    }
                    self.retries.insert((p, offset), rec);
                    self.count_retried();
                }
            }
        }
        self.schedule(p, key);
    }

    /// Records a processed event for consumer dedupe (when enabled).
    fn remember_processed(&mut self, hash: u64, now: i64) {
        let Some(ttl) = self.opts.dedupe_ttl else {
            return;
        };
        let ttl_us = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
        let expiry = now.saturating_add(ttl_us);
        self.processed.insert(hash, expiry);
        self.expiries.push_back((expiry, hash));
        match encode(&expiry) {
            Ok(value) => self.ops.push(StateOp::Put {
                namespace: self.stored.namespace(StateKind::Dedupe),
                key: format!("{hash:016x}"),
                value,
            }),
            Err(err) => tracing::error!(error = %err, "cannot record a processed event"),
        }
    }

    /// Drops the dedupe entries that expired by `now`, from memory and from the store.
    /// Each entry is looked at once when it expires: the cost follows the rate of new
    /// entries, not the size of the window.
    fn prune_processed(&mut self, now: i64) {
        let ns = self.stored.namespace(StateKind::Dedupe);
        while let Some(&(expiry, hash)) = self.expiries.front() {
            if expiry > now {
                break;
            }
            self.expiries.pop_front();
            if self.processed.get(&hash) == Some(&expiry) {
                self.processed.remove(&hash);
                self.ops.push(StateOp::Delete {
                    namespace: ns.clone(),
                    key: format!("{hash:016x}"),
                });
            }
        }
    }

    fn pop_head(&mut self, p: u32, key: &str) {
        let k = (p, key.to_string());
        if let Some(ks) = self.keys.get_mut(&k) {
            ks.queue.pop_front();
            if ks.queue.is_empty() && !ks.in_flight {
                self.keys.remove(&k);
            }
        }
    }

    fn dead_letter(&mut self, p: u32, offset: u64, key: &str, rec: &RetryRecord, now: i64) {
        let Some(event) = self
            .keys
            .get(&(p, key.to_string()))
            .and_then(|ks| ks.queue.front())
            .map(|q| q.event.clone())
        else {
            return;
        };
        let held = self.opts.on_exhausted == OnExhausted::Hold;
        let entry = DeadLetter {
            id: format!("{p}-{offset}"),
            topic: self.topic.clone(),
            group: self.group.clone(),
            partition: p,
            offset,
            key: key.to_string(),
            event,
            attempts: rec.attempts,
            first_failure_us: rec.first_failure_us,
            last_failure_us: now,
            last_error: rec.last_error.clone(),
            held,
            redriving: false,
            unreadable: false,
        };
        match encode(&entry) {
            Ok(bytes) => self.ops.push(StateOp::Put {
                namespace: self.stored.namespace(StateKind::DeadLetter),
                key: entry.id.clone(),
                value: bytes,
            }),
            Err(err) => tracing::error!(error = %err, "cannot record a dead letter"),
        }
        if self.retries.remove(&(p, offset)).is_some() {
            self.ops.push(StateOp::Delete {
                namespace: self.stored.namespace(StateKind::Retry),
                key: pos_key(p, offset),
            });
        }
        self.count_dead_lettered();
        tracing::info!(topic = %self.topic, group = %self.group, partition = p, offset, key,
            attempts = rec.attempts, error = %rec.last_error, held, "event dead-lettered");
        let redriven = self
            .keys
            .get(&(p, key.to_string()))
            .and_then(|ks| ks.queue.front())
            .is_some_and(|q| q.redrive);
        // A redriven event's entry is still there (it is put back), unless a discard took
        // it out meanwhile.
        if !(redriven && self.redriving_pos.remove(&(p, offset))) {
            self.dlq_count += 1;
        }
        if held {
            self.held.insert((p, offset));
        } else {
            self.pop_head(p, key);
            if !redriven {
                self.finish_offset(p, offset);
            }
        }
    }

    /// Writes the step's state changes in one batch, then commits each partition's
    /// contiguous low-water mark.
    async fn persist(&mut self) -> Result<(), LogError> {
        // In this order, so that a crash or a failure between two steps loses nothing:
        // 1. the pending operations and, for each partition with something finished past
        //    its new low-water mark (or with a done entry stored already), its whole done
        //    set as ranges, in one batch (kept to be tried again if it fails);
        // 2. the new committed offsets (if one fails, its done set is stored instead);
        // 3. only then the done entries the committed offsets passed entirely.
        // Without a gap nothing is stored but the offset: no extra state write per event.
        self.prune_processed(self.clock.now_micros());
        let lwms: Vec<u64> = self.parts.iter().map(PartCursor::lwm).collect();
        let done_ns = self.stored.namespace(StateKind::Done);
        let mut ops = std::mem::take(&mut self.ops);
        let mut written = Vec::new();
        for (i, part) in self.parts.iter().enumerate() {
            if part.dirty && (part.done.any_from(lwms[i]) || part.stored_done.is_some()) {
                ops.push(StateOp::Put {
                    namespace: done_ns.clone(),
                    key: done_key(part.id),
                    value: encode(&part.done.to_pairs())?,
                });
                written.push(i);
            }
        }
        if !ops.is_empty() {
            if let Err(e) = self.state.apply(ops.clone()).await {
                // Nothing of the batch was applied: keep it (dead letters and retry
                // schedules among it) for the next persist; done entries are rebuilt.
                let later = std::mem::replace(&mut self.ops, ops);
                self.ops.extend(later);
                self.ops.retain(|op| !is_done_put(op, &done_ns));
                return Err(e);
            }
        }
        for i in written {
            let part = &mut self.parts[i];
            part.stored_done = Some(part.done.range_count());
            part.dirty = false;
        }
        for (i, &lwm) in lwms.iter().enumerate() {
            let part = &self.parts[i];
            if lwm == part.committed {
                continue;
            }
            let id = part.id;
            if let Err(e) = self
                .log
                .commit_offset(&self.group, &self.topic, id, lwm)
                .await
            {
                // What this commit would have covered is not forgotten: store the done
                // set (best effort; the next persist tries the commit again).
                let part = &self.parts[i];
                if part.dirty || part.stored_done.is_none() {
                    let put = StateOp::Put {
                        namespace: done_ns.clone(),
                        key: done_key(id),
                        value: encode(&part.done.to_pairs())?,
                    };
                    if self.state.apply(vec![put]).await.is_ok() {
                        let part = &mut self.parts[i];
                        part.stored_done = Some(part.done.range_count());
                        part.dirty = false;
                    }
                }
                return Err(e);
            }
            let part = &mut self.parts[i];
            part.done.remove_below(lwm);
            part.committed = lwm;
        }
        let mut deletes = Vec::new();
        for part in &self.parts {
            if part.stored_done.is_some() && part.done.is_empty() {
                deletes.push(self.stored.delete(StateKind::Done, done_key(part.id)));
            }
        }
        if !deletes.is_empty() {
            // A failure leaves the entries in place: the next persist tries again.
            self.state.apply(deletes).await?;
            for part in &mut self.parts {
                if part.done.is_empty() {
                    part.stored_done = None;
                    part.dirty = false;
                }
            }
        }
        Ok(())
    }

    /// Does whatever needs no waiting on handlers: reads, dispatches ready keys, takes in
    /// finished deliveries, and persists when nothing is in flight or enough has finished
    /// since the last time. A background subscription calls it between
    /// [`Engine::finish_one`] and its commands, so slow handlers never block commands.
    pub async fn pump(&mut self) -> Result<(), LogError> {
        self.fill().await?;
        self.dispatch();
        while let Some(joined) = self.in_flight.try_join_next() {
            self.absorb(joined);
            self.finished_since_persist += 1;
        }
        // Finished deliveries may have released keys.
        self.dispatch();
        if self.in_flight.is_empty()
            || self.finished_since_persist >= 64
            || (self.finished_since_persist > 0
                && self.last_persist.elapsed() >= Duration::from_millis(100))
        {
            self.persist().await?;
            self.finished_since_persist = 0;
            self.last_persist = std::time::Instant::now();
        }
        Ok(())
    }

    /// Waits until one delivery in flight finishes and takes its result in; returns
    /// false at once when nothing is in flight. Cancel-safe.
    pub async fn finish_one(&mut self) -> bool {
        match self.in_flight.join_next().await {
            Some(joined) => {
                self.absorb(joined);
                self.finished_since_persist += 1;
                true
            }
            None => false,
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
            let Some(joined) = self.in_flight.join_next().await else {
                return self.persist().await;
            };
            self.absorb(joined);
            while let Some(joined) = self.in_flight.try_join_next() {
                self.absorb(joined);
            }
            since_persist += 1;
            if since_persist >= 64 {
                self.persist().await?;
                since_persist = 0;
            }
        }
    }

    fn absorb(&mut self, joined: Result<Completion, tokio::task::JoinError>) {
        match joined {
            Ok(c) => self.complete(c),
            Err(e) => tracing::error!(error = %e, "a handler task failed to join"),
        }
    }

    /// Waits for in-flight deliveries and persists; used before stopping.
    pub async fn drain(&mut self) -> Result<(), LogError> {
        while let Some(joined) = self.in_flight.join_next().await {
            self.absorb(joined);
        }
        self.persist().await
    }

    /// Dead letters matching `filter`, by partition and offset.
    pub async fn dead_letters(&self, filter: &DlqFilter) -> Result<Vec<DeadLetter>, LogError> {
        let ns = self.stored.namespace(StateKind::DeadLetter);
        let mut out = Vec::new();
        for (_, v) in self.state.scan(&ns, "").await? {
            let d: DeadLetter = decode(&v)?;
            if filter.matches(&d) {
                out.push(d);
            }
        }
        out.sort_by_key(|d| (d.partition, d.offset));
        Ok(out)
    }

    /// One dead letter by entry id.
    pub async fn dead_letter_entry(&self, id: &str) -> Result<Option<DeadLetter>, LogError> {
        let ns = self.stored.namespace(StateKind::DeadLetter);
        match self.state.get(&ns, id).await? {
            Some(v) => Ok(Some(decode(&v)?)),
            None => Ok(None),
        }
    }

    fn audit(&mut self, who: &str, action: &str, d: &DeadLetter) {
        let at_us = self.clock.now_micros();
        let rec = AuditRecord {
            at_us,
            who: who.to_string(),
            action: action.to_string(),
            entry: d.id.clone(),
            event_id: d.event.id.clone(),
            event_type: d.event.ty.clone(),
        };
        match encode(&rec) {
            Ok(value) => self.ops.push(StateOp::Put {
                namespace: self.stored.namespace(StateKind::Audit),
                key: format!("{at_us:020}-{}-{action}", d.id),
                value,
            }),
            Err(err) => tracing::error!(error = %err, "cannot write an audit record"),
        }
        tracing::info!(topic = %self.topic, group = %self.group, entry = %d.id, who, action, "dead letter {action}");
    }

    /// The audit log of DLQ actions, oldest first.
    pub async fn audit_log(&self) -> Result<Vec<AuditRecord>, LogError> {
        let ns = self.stored.namespace(StateKind::Audit);
        self.state
            .scan(&ns, "")
            .await?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    /// Queues a skipped dead letter for delivery again, after the key's in-flight event
    /// and before its other waiting events, in offset order among redriven ones.
    fn enqueue_redrive(&mut self, d: DeadLetter) {
        let k = (d.partition, d.key.clone());
        let ks = self.keys.entry(k).or_default();
        let was_idle = ks.queue.is_empty() && !ks.in_flight;
        let start = usize::from(ks.in_flight);
        let at = ks
            .queue
            .iter()
            .enumerate()
            .skip(start)
            .find(|(_, q)| !q.redrive || q.offset > d.offset)
            .map(|(i, _)| i)
            .unwrap_or(ks.queue.len());
        ks.queue.insert(
            at,
            Queued {
                offset: d.offset,
                event: d.event,
                redrive: true,
            },
        );
        if was_idle {
            self.schedule(d.partition, d.key);
        }
    }

    /// Redrives the given dead letters (all matching entries when `ids` is `None` and
    /// `filter` selects them), each audited:
    /// - a held entry whose event waits in its key's queue releases its key, which
    ///   delivers it again from attempt 1;
    /// - a held entry whose offset is no longer queued (the group sought past it, or
    ///   retention removed it) and a skipped entry are delivered again from the entry's
    ///   copy of the event, in their key's order; the entry goes once delivered;
    /// - a held entry the group has not read yet (it sought back before it) is released:
    ///   its event is delivered when the group reads it.
    ///
    /// Entries of records the log could not read ([`DeadLetter::unreadable`]) have no
    /// event to deliver: a filter passes over them, and naming one in `ids` is an
    /// [`LogError::InvalidArgument`] (nothing is redriven). Returns how many entries were
    /// redriven.
    pub async fn redrive(
        &mut self,
        ids: Option<&[String]>,
        filter: &DlqFilter,
        who: &str,
    ) -> Result<usize, LogError> {
        let mut selected: Vec<DeadLetter> = self
            .dead_letters(filter)
            .await?
            .into_iter()
            .filter(|d| !d.redriving && ids.is_none_or(|ids| ids.contains(&d.id)))
            .collect();
        if ids.is_some() {
            if let Some(d) = selected.iter().find(|d| d.unreadable) {
                return Err(LogError::InvalidArgument(format!(
                    "dead letter {} is a record the log cannot read; it can be discarded, not redriven",
                    d.id
                )));
            }
        }
        selected.retain(|d| !d.unreadable);
        selected.sort_by_key(|d| (d.partition, d.offset));
        let ns = self.stored.namespace(StateKind::DeadLetter);
        for d in &selected {
            self.audit(who, "redrive", d);
            let pos = (d.partition, d.offset);
            let k = (d.partition, d.key.clone());
            // Is the event in its key's queue, and is it a redriven copy there?
            let queued = self
                .keys
                .get(&k)
                .and_then(|ks| ks.queue.iter().find(|q| q.offset == d.offset))
                .map(|q| q.redrive);
            let unread = self
                .parts
                .iter()
                .find(|c| c.id == d.partition)
                .is_some_and(|c| d.offset >= c.next_read);
            let held = d.held && self.held.remove(&pos);
            match (held, queued) {
                // The event itself waits in its key's queue, or will be read: release it.
                (true, Some(false)) | (true, None) if queued.is_some() || unread => {
                    self.ops.push(StateOp::Delete {
                        namespace: ns.clone(),
                        key: d.id.clone(),
                    });
                    self.dlq_count = self.dlq_count.saturating_sub(1);
                    self.schedule(d.partition, d.key.clone());
                }
                (true, Some(true)) => {
                    // Its redriven copy waits at the key's head: deliver that.
                    let mut marked = d.clone();
                    marked.redriving = true;
                    marked.held = false;
                    self.ops.push(StateOp::Put {
                        namespace: ns.clone(),
                        key: d.id.clone(),
                        value: encode(&marked)?,
                    });
                    self.redriving_pos.insert(pos);
                    self.schedule(d.partition, d.key.clone());
                }
                _ => {
                    let mut marked = d.clone();
                    marked.redriving = true;
                    marked.held = false;
                    self.ops.push(StateOp::Put {
                        namespace: ns.clone(),
                        key: d.id.clone(),
                        value: encode(&marked)?,
                    });
                    self.redriving_pos.insert(pos);
                    self.enqueue_redrive(marked);
                }
            }
        }
        self.persist().await?;
        Ok(selected.len())
    }

    /// Discards a dead letter (audited). Its event is not delivered again: a held entry's
    /// key moves on past it (if it waits behind an earlier event of its key, it is taken
    /// out of the queue and the key's hold stays with that earlier event), and a redrive
    /// under way that has not started is dropped. Returns false if there is no such
    /// entry.
    pub async fn discard(&mut self, id: &str, who: &str) -> Result<bool, LogError> {
        let Some(d) = self.dead_letter_entry(id).await? else {
            return Ok(false);
        };
        self.audit(who, "discard", &d);
        self.ops.push(StateOp::Delete {
            namespace: self.stored.namespace(StateKind::DeadLetter),
            key: d.id.clone(),
        });
        self.dlq_count = self.dlq_count.saturating_sub(1);
        let pos = (d.partition, d.offset);
        let was_held = self.held.remove(&pos);
        let was_redriving = self.redriving_pos.remove(&pos);
        if was_held || was_redriving {
            let k = (d.partition, d.key.clone());
            let mut removed = None;
            if let Some(ks) = self.keys.get_mut(&k) {
                // The head is in flight (a redrive under way): its completion sees the
                // discard. Otherwise take the event out wherever it waits.
                let skip = usize::from(ks.in_flight);
                let at = ks
                    .queue
                    .iter()
                    .enumerate()
                    .skip(skip)
                    .find(|(_, q)| q.offset == d.offset && (was_held || q.redrive))
                    .map(|(i, _)| i);
                if let Some(i) = at {
                    removed = ks.queue.remove(i);
                }
                if ks.queue.is_empty() && !ks.in_flight {
                    self.keys.remove(&k);
                }
            }
            if let Some(q) = removed {
                if !q.redrive {
                    self.finish_offset(d.partition, d.offset);
                }
            }
            self.schedule(d.partition, d.key.clone());
        }
        self.persist().await?;
        Ok(true)
    }

    /// The retry schedule the engine holds now, by (partition, offset).
    pub fn pending_retries(&self) -> BTreeMap<(u32, u64), RetryRecord> {
        self.retries.iter().map(|(k, v)| (*k, v.clone())).collect()
    }
}
