//! Reading: events by offset (direct gets, many in flight) and the offset for a time.

use std::time::Duration;

use async_nats::jetstream::{consumer, stream};
use chrono::{DateTime, Utc};
use crmbus::{Event, LogError, StoredEvent};
use futures_util::{StreamExt, TryStreamExt};

use super::topics::partition_info;
use super::Inner;
use crate::conn::{backend, FETCH_EXPIRES};

/// How many direct gets a read keeps in flight.
const READ_CONCURRENCY: usize = 64;

impl Inner {
    pub(super) async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, LogError> {
        self.spec_partition(topic, partition).await?;
        let stream = self.stream(topic, partition).await?;
        let state = stream.cached_info().state.clone();
        if max == 0 || state.messages == 0 {
            return Ok(Vec::new());
        }
        let start = from.saturating_add(1).max(state.first_sequence.max(1));
        let end = state
            .last_sequence
            .min(start.saturating_add(max as u64 - 1));
        if start > end {
            return Ok(Vec::new());
        }
        let stream = &stream;
        let got: Vec<Option<async_nats::jetstream::message::StreamMessage>> =
            futures_util::stream::iter(start..=end)
                .map(|seq| async move {
                    match stream.direct_get(seq).await {
                        Ok(m) => Ok(Some(m)),
                        Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
                        Err(e) => Err(backend(
                            &format!("reading offset {} of {topic}/{partition}", seq - 1),
                            e,
                        )),
                    }
                })
                .buffered(READ_CONCURRENCY)
                .try_collect()
                .await?;
        // Retention may remove the head while we read: skip what is gone at the start,
        // stop at the first hole after that.
        let mut out = Vec::with_capacity(got.len());
        for m in got {
            match m {
                Some(m) => match stored_event(topic, partition, m.sequence, m.time, &m.payload) {
                    Ok(s) => out.push(s),
                    Err(e) if out.is_empty() => return Err(e),
                    Err(_) => break,
                },
                None if out.is_empty() => continue,
                None => break,
            }
        }
        Ok(out)
    }

    pub(super) async fn offset_for_time(
        &self,
        topic: &str,
        partition: u32,
        time: DateTime<Utc>,
    ) -> Result<u64, LogError> {
        self.spec_partition(topic, partition).await?;
        let stream = self.stream(topic, partition).await?;
        let state = stream.cached_info().state.clone();
        let info = partition_info(partition, &state);
        if state.messages == 0 || time > state.last_timestamp {
            return Ok(info.next_offset);
        }
        if time <= state.first_timestamp {
            return Ok(info.first_offset);
        }
        // The server finds the first message at or after `time` for a consumer started
        // by time; an ephemeral, in-memory one is enough.
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: time },
                ack_policy: consumer::AckPolicy::None,
                memory_storage: true,
                inactive_threshold: Duration::from_secs(30),
                description: Some("crmbus offset_for_time".into()),
                ..Default::default()
            })
            .await
            .map_err(|e| backend("creating a by-time consumer", e))?;
        let result = async {
            let mut batch = consumer
                .fetch()
                .max_messages(1)
                .expires(FETCH_EXPIRES)
                .messages()
                .await
                .map_err(|e| backend("fetching by time", e))?;
            match batch.next().await {
                Some(Ok(m)) => {
                    let info = m.info().map_err(|e| backend("reading message info", e))?;
                    Ok(info.stream_sequence.saturating_sub(1))
                }
                Some(Err(e)) => Err(backend("fetching by time", e)),
                None => Ok(self.state(topic, partition).await?.last_sequence),
            }
        }
        .await;
        let name = consumer.cached_info().name.clone();
        let _ = stream.delete_consumer(&name).await;
        result
    }
}

/// Decodes a stored message into a [`StoredEvent`].
pub(crate) fn stored_event(
    topic: &str,
    partition: u32,
    sequence: u64,
    time: DateTime<Utc>,
    payload: &[u8],
) -> Result<StoredEvent, LogError> {
    let offset = sequence.saturating_sub(1);
    let event = Event::from_json_slice(payload).map_err(|e| LogError::Corrupt {
        topic: topic.to_string(),
        partition,
        offset,
        detail: e.to_string(),
    })?;
    Ok(StoredEvent {
        partition,
        offset,
        timestamp: time,
        event,
        stored_json: None,
    })
}
