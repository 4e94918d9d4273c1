//! [`OutboxSink`]: where the relay publishes — the bus in the same process
//! ([`EventBus`]'s impl, used inside `crmbus serve`), or a crmbus server over HTTP (the
//! CLI's `crmbus outbox relay --url`).

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crmbus::{BusError, Event, EventBus, LogError};

/// (source, id): an event's identity, the bus's dedupe key.
pub type EventKey = (String, String);

/// A publish the sink could not do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// True when publishing the same events again cannot succeed (a schema violation, an
    /// invalid event, a topic that does not exist): the relay marks such a row failed
    /// instead of retrying it. False for everything that may pass later (the bus is down
    /// or busy).
    pub permanent: bool,
    /// What went wrong.
    pub message: String,
}

impl SinkError {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> SinkError {
        SinkError {
            permanent: false,
            message: message.into(),
        }
    }

    /// A failure that a retry repeats.
    pub fn permanent(message: impl Into<String>) -> SinkError {
        SinkError {
            permanent: true,
            message: message.into(),
        }
    }
}

/// Where the relay publishes.
#[async_trait]
pub trait OutboxSink: Send + Sync {
    /// Publishes `events` to every one of `topics`, all or nothing, and returns once they
    /// are stored durably. An event whose (source, id) the bus already holds is absorbed
    /// as a duplicate.
    async fn publish(&self, events: Vec<Event>, topics: &[String]) -> Result<(), SinkError>;

    /// Which of `keys` are stored in `topic` among the events appended at or after
    /// `since` (none when the topic does not exist). The relay asks this about rows whose
    /// earlier publish may have succeeded before it could mark them, so a republish after
    /// any downtime is not a second copy. Any error is returned: the relay then retries
    /// rather than guess.
    async fn stored_since(
        &self,
        topic: &str,
        since: DateTime<Utc>,
        keys: &HashSet<EventKey>,
    ) -> Result<HashSet<EventKey>, SinkError>;
}

fn bus_error(e: BusError) -> SinkError {
    match e {
        BusError::Validation(_)
        | BusError::Log(
            LogError::TopicNotFound(_) | LogError::InvalidArgument(_) | LogError::InvalidEvent(_),
        ) => SinkError::permanent(e.to_string()),
        other => SinkError::transient(other.to_string()),
    }
}

/// How many events a scan reads at a time.
const SCAN_CHUNK: usize = 1000;

#[async_trait]
impl OutboxSink for EventBus {
    async fn publish(&self, events: Vec<Event>, topics: &[String]) -> Result<(), SinkError> {
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        self.publish_batch(events, &topics)
            .await
            .map(|_| ())
            .map_err(bus_error)
    }

    async fn stored_since(
        &self,
        topic: &str,
        since: DateTime<Utc>,
        keys: &HashSet<EventKey>,
    ) -> Result<HashSet<EventKey>, SinkError> {
        let info = match self.describe_topic(topic).await {
            Ok(info) => info,
            Err(LogError::TopicNotFound(_)) => return Ok(HashSet::new()),
            Err(e) => return Err(bus_error(e.into())),
        };
        let mut found = HashSet::new();
        for partition in 0..info.spec.partitions {
            let mut from = self
                .offset_for_time(topic, partition, since)
                .await
                .map_err(|e| bus_error(e.into()))?;
            loop {
                let chunk = self
                    .read(topic, partition, from, SCAN_CHUNK)
                    .await
                    .map_err(|e| bus_error(e.into()))?;
                let Some(last) = chunk.last() else { break };
                from = last.offset + 1;
                for stored in &chunk {
                    let key = (stored.event.source.clone(), stored.event.id.clone());
                    if keys.contains(&key) {
                        found.insert(key);
                    }
                }
                // A short read is not the end (a read may stop early); an empty one is.
                if found.len() == keys.len() {
                    break;
                }
            }
            if found.len() == keys.len() {
                break;
            }
        }
        Ok(found)
    }
}
