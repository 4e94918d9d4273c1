//! Pulled deliveries with each event left as the JSON text the server sent.
//!
//! `Client::pull` parses every event into a [`serde_json::Value`] tree. A consumer
//! that hands events on (to a queue, a file, another service) without looking inside, or
//! that parses them into types of its own, does not need that tree:
//! `Client::pull_raw` gives it the text instead, as the Redis and NATS clients
//! give a message's bytes.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One pulled delivery, its event unparsed (`Client::pull_raw`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RawDelivery {
    /// Ack (or nack) it with this id before the ack timeout.
    pub ack_id: String,
    /// 1 for the first delivery, then one more each time.
    pub attempt: u32,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// The event, a structured CloudEvent, as JSON text (`event.get()`; parse it with
    /// `serde_json::from_str` into the type wanted).
    pub event: Box<RawValue>,
    /// The event shaped by the subscription's `transform`, as JSON text (absent without
    /// one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Box<RawValue>>,
}

/// The answer to a pull, its events unparsed (`Client::pull_raw`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RawPullResponse {
    /// The deliveries (possibly none).
    pub deliveries: Vec<RawDelivery>,
}
