//! Options of a subscription.

use chrono::DateTime;
use serde::{Deserialize, Serialize};

use super::breaker::BreakerPolicy;
use super::filter::Filter;
use super::retry::RetryPolicy;
use crate::position::Position;

/// Where a new group starts reading (an existing group resumes from its committed offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// From the oldest event kept.
    #[default]
    Earliest,
    /// From events appended after the subscription is created.
    Latest,
    /// From the first event appended at or after this time (µs since the epoch).
    Time(i64),
}

impl From<StartAt> for Position {
    fn from(start: StartAt) -> Position {
        match start {
            StartAt::Earliest => Position::Earliest,
            StartAt::Latest => Position::Latest,
            StartAt::Time(us) => {
                Position::Time(DateTime::from_timestamp_micros(us).unwrap_or_default())
            }
        }
    }
}

/// How deliveries of a group are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    /// Per business key (`subject`, else `id`): one event of a key in flight at a time, in
    /// log order; a failing event parks only its own key.
    #[default]
    Key,
    /// No ordering: every event may be in flight at once (up to `max_in_flight`).
    None,
}

/// What happens to a key when its event exhausts its retries (the event goes to the DLQ
/// either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExhausted {
    /// The key moves on to its next event.
    #[default]
    Skip,
    /// The key stays parked until an operator redrives or discards the dead letter.
    Hold,
}

/// Everything that shapes a subscription besides its topic, group and handler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscribeOptions {
    /// Where a new group starts.
    pub start: StartAt,
    /// Which events are delivered; the others are passed over.
    pub filter: Filter,
    /// Ordering of deliveries.
    pub ordering: Ordering,
    /// Deliveries in flight at once, across keys.
    pub max_in_flight: usize,
    /// Retries.
    pub retry: RetryPolicy,
    /// Key behaviour after exhaustion.
    pub on_exhausted: OnExhausted,
    /// The circuit breaker (`None`: no breaker).
    pub breaker: Option<BreakerPolicy>,
    /// Events read ahead per partition.
    pub read_ahead: usize,
    /// Consumer dedupe: remember processed (source, id) for this long and pass over
    /// redeliveries of them (`None`: off). Gives effects once on at-least-once delivery.
    #[serde(default, with = "opt_secs")]
    pub dedupe_ttl: Option<std::time::Duration>,
    /// The partitions this engine drives (`None`: all of them). Servers sharing a backend
    /// each drive the partitions they own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Vec<u32>>,
    /// The leases every state write and offset commit of the engine depends on (the
    /// leases of the partitions it owns): a write after one of them was lost is refused
    /// by the backend ([`crate::LogError::Fenced`]). Empty: writes are not fenced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fences: Vec<crate::cluster::Fence>,
}

mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_f64(d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<f64>::deserialize(d)? {
            Some(v) => Duration::try_from_secs_f64(v)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            start: StartAt::Earliest,
            filter: Filter::default(),
            ordering: Ordering::Key,
            max_in_flight: 64,
            retry: RetryPolicy::default(),
            on_exhausted: OnExhausted::Skip,
            breaker: Some(BreakerPolicy::default()),
            read_ahead: 1024,
            dedupe_ttl: None,
            partitions: None,
            fences: Vec::new(),
        }
    }
}
