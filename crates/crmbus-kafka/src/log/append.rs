//! Appending: every check before the first record is produced, then each topic's events
//! produced in order to the partitions crmbus's own hash chooses, with producer dedupe.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crmbus::sync::LockExt;
use crmbus::{dedupe_hash, partition_for, Event, LogError, Receipt, TopicSpec};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureRecord};

use super::Inner;
use crate::conn::kafka_err;

/// What an append decided for one event in one topic.
enum Slot {
    /// Produced; index into the topic's produce list.
    Produced(usize),
    /// Appended before, within the dedupe window: (partition, offset).
    Seen(u32, u64),
    /// The same (source, id) as an earlier event of the batch.
    SameAs(usize),
}

impl Inner {
    pub(super) async fn append(
        &self,
        topics: &[String],
        events: &[Event],
    ) -> Result<Vec<Receipt>, LogError> {
        if topics.is_empty() {
            return Err(LogError::InvalidArgument("no topic given".into()));
        }
        // Everything is checked before anything is produced.
        let mut specs = Vec::with_capacity(topics.len());
        for t in topics {
            specs.push(self.record(t).await?.spec);
        }
        let max = self.conn.opts.max_event_bytes;
        let mut encoded = Vec::with_capacity(events.len());
        for e in events {
            e.validate()?;
            let json = e.to_json_vec();
            if json.len() > max {
                return Err(LogError::InvalidArgument(format!(
                    "event {} is {} bytes; this Kafka log accepts at most {max} bytes per event",
                    e.id,
                    json.len()
                )));
            }
            encoded.push((json, dedupe_hash(&e.source, &e.id)));
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
        encoded: &[(Vec<u8>, u64)],
        receipts: &mut Vec<Receipt>,
    ) -> Result<(), LogError> {
        let lock = self.append_lock(&spec.name);
        // Held from the dedupe lookup to the record, so this process never appends one
        // (source, id) twice, and its batches stay contiguous in each partition.
        let _guard = lock.lock().await;
        let n = spec.partitions;
        let hashes: Vec<u64> = encoded.iter().map(|(_, h)| *h).collect();
        let seen = self.dedupe.lookup(&spec.name, &hashes).await?;
        let mut slots = Vec::with_capacity(events.len());
        let mut first_of: HashMap<u64, usize> = HashMap::new();
        let mut to_produce: Vec<(usize, u32)> = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let h = encoded[i].1;
            if let Some(&(p, o)) = seen.get(&h) {
                slots.push(Slot::Seen(p, o));
                continue;
            }
            if self.dedupe.enabled() {
                if let Some(&first) = first_of.get(&h) {
                    if events[first].source == e.source && events[first].id == e.id {
                        slots.push(Slot::SameAs(first));
                        continue;
                    }
                }
                first_of.insert(h, i);
            }
            slots.push(Slot::Produced(to_produce.len()));
            to_produce.push((i, partition_for(e, n)));
        }
        let kafka_topic = self.kafka_topic(&spec.name);
        let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(to_produce.len());
        for &(i, p) in &to_produce {
            let e = &events[i];
            let key = e.subject.as_deref().unwrap_or(e.id.as_str());
            let headers = OwnedHeaders::new().insert(Header {
                key: "content-type",
                value: Some("application/cloudevents+json; charset=utf-8"),
            });
            let mut record = FutureRecord::to(&kafka_topic)
                .partition(p as i32)
                .key(key)
                .payload(encoded[i].0.as_slice())
                .headers(headers);
            // The producer's queue may be full: wait for the oldest delivery, then retry.
            loop {
                match self.conn.producer.send_result(record) {
                    Ok(fut) => {
                        pending.push(fut);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((e, _)) => {
                        return Err(kafka_err(&format!("producing to {kafka_topic}"), e))
                    }
                }
            }
        }
        // (partition, offset) of each produced event, in produce order.
        let mut acks: Vec<Option<(u32, u64)>> = Vec::with_capacity(pending.len());
        let mut failure = None;
        for fut in pending {
            match fut.await {
                Ok(Ok(d)) if d.offset >= 0 => {
                    acks.push(Some((d.partition as u32, d.offset as u64)))
                }
                Ok(Ok(d)) => {
                    acks.push(None);
                    failure.get_or_insert_with(|| LogError::Backend {
                        message: format!(
                            "producing to {kafka_topic}: the broker acknowledged without an \
                             offset (partition {})",
                            d.partition
                        ),
                        source: None,
                    });
                }
                Ok(Err((e, _))) => {
                    acks.push(None);
                    failure.get_or_insert_with(|| {
                        kafka_err(&format!("producing to {kafka_topic}"), e)
                    });
                }
                Err(_) => {
                    acks.push(None);
                    failure.get_or_insert_with(|| {
                        LogError::Unavailable(format!(
                            "producing to {kafka_topic}: the producer went away"
                        ))
                    });
                }
            }
        }
        // What landed is recorded even when something failed, so a retry absorbs it.
        let rows: Vec<(u64, u32, u64)> = to_produce
            .iter()
            .zip(&acks)
            .filter_map(|(&(i, _), a)| a.map(|(p, o)| (encoded[i].1, p, o)))
            .collect();
        let recorded = self.dedupe.record(&spec.name, &rows).await;
        if let Some(e) = failure {
            return Err(e);
        }
        recorded?;
        let mut placed: Vec<(u32, u64, bool)> = Vec::with_capacity(events.len());
        for slot in &slots {
            placed.push(match *slot {
                Slot::Produced(k) => {
                    let (p, o) = acks[k].ok_or_else(|| {
                        LogError::Unavailable(format!(
                            "producing to {kafka_topic}: a delivery report is missing"
                        ))
                    })?;
                    (p, o, false)
                }
                Slot::Seen(p, o) => (p, o, true),
                Slot::SameAs(first) => {
                    let (p, o, _) = placed[first];
                    (p, o, true)
                }
            });
        }
        for (e, (partition, offset, duplicate)) in events.iter().zip(placed) {
            receipts.push(Receipt {
                id: e.id.clone(),
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
