//! What the engine stores of a group and shows of its dead letters: retry schedules, dead
//! letters and their filter, audit records; and the keys and encoding of stored entries.

use serde::{Deserialize, Serialize};

use crate::error::LogError;
use crate::event::Event;

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
    /// The messages of the last failures (at most 5, `RECENT_ERRORS`), oldest first (the
    /// last one is `last_error`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_errors: Vec<String>,
}

/// How many failures' messages a retry record and a dead letter keep.
pub const RECENT_ERRORS: usize = 5;

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
    /// The messages of the last failures, oldest first (a webhook's name each answer's
    /// status, latency and the start of its body).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_errors: Vec<String>,
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
            .is_none_or(|p| crate::delivery::filter::glob_match(p, &d.event.ty))
            && self
                .error
                .as_deref()
                .is_none_or(|t| d.last_error.contains(t))
            && self.since_us.is_none_or(|t| d.last_failure_us >= t)
            && self.until_us.is_none_or(|t| d.last_failure_us < t)
    }
}

/// One action on a subscription's dead letters (or on the subscription as a whole), as
/// kept in its audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When (µs since the epoch).
    pub at_us: i64,
    /// Who did it (as the caller named them).
    pub who: String,
    /// `redrive` or `discard` (a dead letter), `disable` or `enable` (the subscription's
    /// push target), `rotate_secret` (its signing secret).
    pub action: String,
    /// The dead letter's entry id (empty for an action on the subscription).
    pub entry: String,
    /// The event's id (for `disable`: the event whose delivery was answered 410).
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// Why, in words, when the action says more than its name (`disable`: what the
    /// receiver answered).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

pub(super) fn pos_key(partition: u32, offset: u64) -> String {
    format!("{partition:010}/{offset:020}")
}

/// The key of a partition's done ranges.
pub(super) fn done_key(partition: u32) -> String {
    format!("{partition:010}")
}

pub(super) fn parse_pos_key(k: &str) -> Option<(u32, u64)> {
    let (p, o) = k.split_once('/')?;
    Some((p.parse().ok()?, o.parse().ok()?))
}

pub(super) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, LogError> {
    serde_json::to_vec(v).map_err(|e| LogError::backend_from("encoding state", e))
}

pub(super) fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, LogError> {
    serde_json::from_slice(b).map_err(|e| LogError::backend_from("decoding state", e))
}
