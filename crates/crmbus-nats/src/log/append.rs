//! Appending: every check before the first publish, then the events of each topic
//! published in order with `Nats-Msg-Id` for producer dedupe.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream::{self, message::PublishMessage as Publish};
use bytes::Bytes;
use crmbus::sync::LockExt;
use crmbus::{partition_for, Event, LogError, Receipt, TopicSpec};

use super::Inner;
use crate::conn::backend;
use crate::naming;

/// How many publishes of one append are in flight (sent, ack not yet received) at once.
const PUBLISH_WINDOW: usize = 512;
/// Room kept for the headers (`Nats-Msg-Id`, `Nats-Expected-Stream`) below `max_payload`.
const HEADER_ROOM: usize = 512;

/// What an append decided for one event in one topic.
enum Slot {
    /// Published; index into the batch's publish list.
    Published(usize),
    /// The same (source, id) as an earlier event of the batch.
    SameAs(usize),
}

impl Inner {
    pub(super) async fn append(
        &self,
        topics: &[String],
        events: &[Event],
    ) -> Result<Vec<Receipt>, LogError> {
        self.check_open()?;
        if topics.is_empty() {
            return Err(LogError::InvalidArgument("no topic given".into()));
        }
        // Everything is checked before anything is published.
        let mut specs = Vec::with_capacity(topics.len());
        for t in topics {
            specs.push(self.spec(t).await?);
        }
        let max_payload = self.conn.client.server_info().max_payload;
        let mut encoded = Vec::with_capacity(events.len());
        for e in events {
            e.validate()?;
            let json = e.to_json_vec();
            if json.len() + HEADER_ROOM > max_payload {
                return Err(LogError::InvalidArgument(format!(
                    "event {} is {} bytes; the NATS server accepts at most {} bytes per event",
                    e.id,
                    json.len(),
                    max_payload.saturating_sub(HEADER_ROOM)
                )));
            }
            encoded.push((Bytes::from(json), naming::msg_id(&e.source, &e.id)));
        }
        let mut receipts = Vec::with_capacity(events.len() * topics.len());
        for spec in &specs {
            self.append_topic(spec, events, &encoded, &mut receipts)
                .await?;
        }
        Ok(receipts)
    }

    fn append_lock(&self, topic: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.append_locks.locked();
        Arc::clone(locks.entry(topic.to_string()).or_default())
    }

    async fn append_topic(
        &self,
        spec: &TopicSpec,
        events: &[Event],
        encoded: &[(Bytes, String)],
        receipts: &mut Vec<Receipt>,
    ) -> Result<(), LogError> {
        let lock = self.append_lock(&spec.name);
        // Held while this append's messages are sent (one connection keeps them in order),
        // not while their acks come back, so concurrent appenders pipeline.
        let mut guard = Some(lock.lock().await);
        let n = spec.partitions;
        let dedupe = !self.opts.dedupe_window.is_zero();
        let mut slots = Vec::with_capacity(events.len());
        let mut first_of: HashMap<&str, usize> = HashMap::new();
        let mut to_publish: Vec<(usize, u32)> = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let id = encoded[i].1.as_str();
            if let Some(&first) = first_of.get(id) {
                if events[first].source == e.source && events[first].id == e.id {
                    slots.push(Slot::SameAs(first));
                    continue;
                }
            }
            first_of.insert(id, i);
            slots.push(Slot::Published(to_publish.len()));
            to_publish.push((i, partition_for(e, n)));
        }
        // (partition, offset, duplicate) of each published event.
        let mut acks: Vec<(u32, u64, bool)> = Vec::with_capacity(to_publish.len());
        let chunks = to_publish.len().div_ceil(PUBLISH_WINDOW);
        for (c, chunk) in to_publish.chunks(PUBLISH_WINDOW).enumerate() {
            let mut pending = Vec::with_capacity(chunk.len());
            for &(i, p) in chunk {
                let mut msg = Publish::build()
                    .payload(encoded[i].0.clone())
                    .expected_stream(naming::stream_name(self.prefix(), &spec.name, p));
                if dedupe {
                    msg = msg.message_id(&encoded[i].1);
                }
                let subject = naming::subject(self.prefix(), &spec.name, p);
                let fut = self
                    .conn
                    .js
                    .send_publish(subject, msg)
                    .await
                    .map_err(|e| publish_error(&spec.name, e))?;
                pending.push((p, fut));
            }
            if c + 1 == chunks {
                guard.take();
            }
            for (p, fut) in pending {
                let ack = fut.await.map_err(|e| publish_error(&spec.name, e))?;
                acks.push((p, ack.sequence.saturating_sub(1), ack.duplicate));
            }
        }
        let published_at = |slot: &Slot| -> Option<(u32, u64, bool)> {
            match slot {
                Slot::Published(k) => acks.get(*k).copied(),
                Slot::SameAs(_) => None,
            }
        };
        for (i, slot) in slots.iter().enumerate() {
            let (partition, offset, duplicate) = match slot {
                Slot::Published(_) => published_at(slot),
                Slot::SameAs(first) => slots
                    .get(*first)
                    .and_then(published_at)
                    .map(|(p, o, _)| (p, o, true)),
            }
            .ok_or_else(|| backend("append", "a publish has no acknowledgement"))?;
            receipts.push(Receipt {
                id: events[i].id.clone(),
                topic: spec.name.clone(),
                partition,
                offset,
                duplicate,
                version: None,
            });
        }
        Ok(())
    }
}

fn publish_error(topic: &str, e: jetstream::context::PublishError) -> LogError {
    match e.kind() {
        jetstream::context::PublishErrorKind::StreamNotFound => {
            LogError::TopicNotFound(topic.to_string())
        }
        _ => backend(&format!("publishing to topic '{topic}'"), e),
    }
}
