//! The counters of a subscription and their point-in-time copy with the engine's state,
//! and the metric handles ([`EngineMetrics`]) the engine registers once when it opens.

use std::sync::atomic::AtomicU64;

use metrics::{Counter, Histogram};
use serde::Serialize;

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
    /// Committed offset per partition the engine drives (in partition order; see
    /// `partitions`).
    pub committed: Vec<u64>,
    /// The partitions the engine drives, in the order of `committed` (every partition of
    /// the topic unless the engine was given a set).
    pub partitions: Vec<u32>,
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
    /// The parked keys themselves, each with the event it waits on, ordered by partition
    /// and offset (at most [`PARKED_SHOWN`]; `parked_keys` counts them all).
    pub parked: Vec<ParkedKey>,
}

/// How many parked keys a [`StatsSnapshot`] lists.
pub const PARKED_SHOWN: usize = 100;

/// A key whose next event waits: on a retry that is due later, or on a dead letter held
/// in the DLQ (ordering per key keeps the events behind it back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParkedKey {
    /// Partition of the event.
    pub partition: u32,
    /// The ordering key.
    pub key: String,
    /// Offset of the event the key waits on.
    pub offset: u64,
    /// Events of the key queued behind it (the waiting one included).
    pub queued: u64,
    /// What it waits on.
    pub waiting_on: Parked,
}

/// What a parked key waits on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Parked {
    /// A retry of the event.
    Retry {
        /// Deliveries made so far.
        attempts: u32,
        /// When the next delivery is due (µs since the epoch).
        next_due_us: i64,
        /// The last failure's message.
        last_error: String,
    },
    /// The event's dead letter, held in the DLQ until it is redriven or discarded.
    DeadLetter,
}

/// The engine's counters and its latency histogram in the metrics recorder, labelled with
/// its topic and group: registered once when the engine opens, not looked up by name and
/// labels for every event (that lookup was about 7% of a pull read-back's engine CPU).
pub(super) struct EngineMetrics {
    pub(super) delivered: Counter,
    pub(super) acked: Counter,
    pub(super) retried: Counter,
    pub(super) dead_lettered: Counter,
    pub(super) deduped: Counter,
    pub(super) latency: Histogram,
}

impl EngineMetrics {
    /// The handles of (`topic`, `group`) in the recorder installed now.
    pub(super) fn new(topic: &str, group: &str) -> EngineMetrics {
        let counter = |name: &'static str| metrics::counter!(name, "topic" => topic.to_string(), "group" => group.to_string());
        EngineMetrics {
            delivered: counter("crmbus_deliveries_total"),
            acked: counter("crmbus_acks_total"),
            retried: counter("crmbus_retries_total"),
            dead_lettered: counter("crmbus_dead_lettered_total"),
            deduped: counter("crmbus_deduped_total"),
            latency: metrics::histogram!(
                "crmbus_delivery_latency_seconds",
                "topic" => topic.to_string(),
                "group" => group.to_string()
            ),
        }
    }
}
