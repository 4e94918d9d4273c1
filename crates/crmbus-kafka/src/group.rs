//! [`KafkaGroupConsumer`]: a member of a Kafka consumer group over one crmbus topic — the
//! broker assigns partitions and moves them when members come and go; offsets live in
//! Kafka (`__consumer_offsets`), where Kafka's tools see them.
//!
//! Commits are manual: an [`GroupMessage::ack`] commits the partition's **contiguous
//! low-water mark** — the offset before which every fetched event is acknowledged — never
//! an offset past an event still in hand. A member that dies (or hangs past
//! `max.poll.interval.ms`) loses its partitions once its session times out, and the member
//! that gets them reads from the last committed offset: every event the dead member had
//! not acknowledged (and the acknowledged ones above the first unacknowledged) is
//! delivered again, to the survivor.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crmbus::sync::LockExt;
use crmbus::{Event, LogError, StoredEvent};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Message, Timestamp};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::conn::{join_err, kafka_err};
use crate::log::KafkaLog;
use crate::naming;

/// Where a group that has no committed offset for a partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupStart {
    /// The oldest event still held.
    #[default]
    Earliest,
    /// Only events appended after the member first reads the partition.
    Latest,
}

/// How a [`KafkaGroupConsumer`] takes part in its group.
#[derive(Debug, Clone)]
pub struct GroupConsumerOptions {
    /// How long the broker waits for a member's heartbeat before it declares the member
    /// dead and moves its partitions (`session.timeout.ms`; brokers allow 6 s at least by
    /// default). Heartbeats go every third of it.
    pub session_timeout: Duration,
    /// How long a member may go without fetching before it leaves the group on its own
    /// (`max.poll.interval.ms`): a member stuck in its handler gives its partitions up.
    pub max_poll_interval: Duration,
    /// Where a partition without a committed offset starts.
    pub start: GroupStart,
}

impl Default for GroupConsumerOptions {
    fn default() -> Self {
        GroupConsumerOptions {
            session_timeout: Duration::from_secs(10),
            max_poll_interval: Duration::from_secs(300),
            start: GroupStart::Earliest,
        }
    }
}

/// What one member tracks per assigned partition: the offsets handed out and not yet
/// acknowledged, the offset after the last one handed out, and the assignment it belongs
/// to (an acknowledgement from before the partition moved away commits nothing).
#[derive(Debug, Default)]
struct Held {
    epoch: u64,
    outstanding: BTreeSet<u64>,
    next: u64,
    committed: u64,
}

#[derive(Debug, Default)]
struct Tracker {
    epoch: u64,
    parts: HashMap<u32, Held>,
}

impl Tracker {
    /// Notes that `offset` of `partition` was handed out; the assignment epoch it belongs
    /// to.
    fn handed_out(&mut self, partition: u32, offset: u64) -> u64 {
        let epoch = self.epoch;
        let held = self.parts.entry(partition).or_insert_with(|| Held {
            epoch,
            next: offset,
            committed: offset,
            ..Held::default()
        });
        held.outstanding.insert(offset);
        held.next = held.next.max(offset + 1);
        held.epoch
    }

    /// Marks `offset` acknowledged: the new low-water mark to commit, if it moved.
    fn acked(&mut self, partition: u32, epoch: u64, offset: u64) -> Option<u64> {
        let held = self.parts.get_mut(&partition)?;
        if held.epoch != epoch || !held.outstanding.remove(&offset) {
            return None;
        }
        let low = held.outstanding.first().copied().unwrap_or(held.next);
        if low > held.committed {
            held.committed = low;
            Some(low)
        } else {
            None
        }
    }
}

/// The consumer's context: forgets revoked partitions, so acknowledgements that arrive
/// after a partition moved commit nothing over its new owner's progress.
struct GroupContext {
    tracker: Arc<Mutex<Tracker>>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut t = self.tracker.locked();
        t.epoch += 1;
        if let Rebalance::Revoke(list) = rebalance {
            for e in list.elements() {
                t.parts.remove(&(e.partition().max(0) as u32));
            }
        }
    }
}

/// One member of a Kafka consumer group over a crmbus topic (see the module docs).
pub struct KafkaGroupConsumer {
    consumer: Arc<StreamConsumer<GroupContext>>,
    tracker: Arc<Mutex<Tracker>>,
    commits: Arc<tokio::sync::Mutex<()>>,
    topic: String,
    kafka_topic: String,
}

/// An event fetched by a [`KafkaGroupConsumer`], to acknowledge.
pub struct GroupMessage {
    /// The event, its partition and offset.
    pub event: StoredEvent,
    epoch: u64,
    consumer: Arc<StreamConsumer<GroupContext>>,
    tracker: Arc<Mutex<Tracker>>,
    /// One commit at a time per member, so commits reach the broker in the order of
    /// their low-water marks and never move a partition's offset back.
    commits: Arc<tokio::sync::Mutex<()>>,
    kafka_topic: String,
}

impl GroupMessage {
    /// Acknowledges the event. When every event before it in its partition is
    /// acknowledged too, the partition's new low-water mark is committed to Kafka and
    /// this returns once the broker confirms it. An acknowledgement that arrives after
    /// the partition moved to another member commits nothing (the new owner reads the
    /// event again); one whose commit is under way while the partition moves may still
    /// land, which can only make the new owner read events again (at-least-once).
    pub async fn ack(&self) -> Result<(), LogError> {
        let partition = self.event.partition;
        let _serial = self.commits.lock().await;
        let Some(low) = self
            .tracker
            .locked()
            .acked(partition, self.epoch, self.event.offset)
        else {
            return Ok(());
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.kafka_topic,
            partition as i32,
            Offset::Offset(low as i64),
        )
        .map_err(|e| kafka_err("committing", e))?;
        let consumer = Arc::clone(&self.consumer);
        tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|e| join_err("committing", e))?
            .map_err(|e| kafka_err("committing the group's offset", e))
    }
}

impl KafkaGroupConsumer {
    /// Joins group `group` (Kafka group `<prefix>.<group>`) over crmbus topic `topic` of
    /// `log`'s namespace. The partitions come with the broker's first assignment, on the
    /// first [`KafkaGroupConsumer::fetch`].
    pub async fn join(
        log: &KafkaLog,
        topic: &str,
        group: &str,
        opts: GroupConsumerOptions,
    ) -> Result<KafkaGroupConsumer, LogError> {
        if group.is_empty() {
            return Err(LogError::InvalidArgument(
                "group name must not be empty".into(),
            ));
        }
        log.topic_spec(topic).await?;
        let conn = &log.inner.conn;
        let kafka_topic = naming::kafka_topic(&conn.prefix, topic);
        let session = opts.session_timeout.as_millis().max(1);
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &conn.bootstrap)
            .set("socket.nagle.disable", "true")
            .set("group.id", naming::kafka_group(&conn.prefix, group))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                match opts.start {
                    GroupStart::Earliest => "earliest",
                    GroupStart::Latest => "latest",
                },
            )
            .set("session.timeout.ms", session.to_string())
            .set("heartbeat.interval.ms", (session / 3).max(1).to_string())
            .set(
                "max.poll.interval.ms",
                opts.max_poll_interval.as_millis().max(1).to_string(),
            )
            .set("check.crcs", "true")
            // Some brokers (tansu) hold every fetch for the whole wait, records or not.
            .set("fetch.wait.max.ms", "10");
        for (k, v) in &conn.opts.client_settings {
            config.set(k, v);
        }
        let tracker = Arc::new(Mutex::new(Tracker::default()));
        let consumer: StreamConsumer<GroupContext> = config
            .create_with_context(GroupContext {
                tracker: Arc::clone(&tracker),
            })
            .map_err(|e| LogError::InvalidArgument(format!("Kafka group consumer: {e}")))?;
        consumer
            .subscribe(&[&kafka_topic])
            .map_err(|e| kafka_err(&format!("subscribing to {kafka_topic}"), e))?;
        Ok(KafkaGroupConsumer {
            consumer: Arc::new(consumer),
            tracker,
            commits: Arc::new(tokio::sync::Mutex::new(())),
            topic: topic.to_string(),
            kafka_topic,
        })
    }

    /// Fetches up to `max` events from the partitions this member holds, waiting up to
    /// `wait` for the first (an empty result when none came). Records that are not events
    /// are passed over (logged, never returned) and count as acknowledged.
    pub async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<GroupMessage>, LogError> {
        let mut out = Vec::new();
        let started = Instant::now();
        while out.len() < max {
            // After the first event, take only what is already here.
            let left = if out.is_empty() {
                wait.saturating_sub(started.elapsed())
            } else {
                Duration::from_millis(1)
            };
            let m = match tokio::time::timeout(left, self.consumer.recv()).await {
                Err(_) => break,
                // Events already in hand are returned (they are tracked and must be
                // acknowledged); the error comes back on the next call if it lasts.
                Ok(Err(e)) if !out.is_empty() => {
                    tracing::warn!(topic = %self.topic, error = %e, "fetch interrupted");
                    break;
                }
                Ok(Err(e)) => {
                    return Err(kafka_err(&format!("fetching from {}", self.kafka_topic), e))
                }
                Ok(Ok(m)) => m,
            };
            let partition = m.partition().max(0) as u32;
            let offset = m.offset().max(0) as u64;
            let epoch = self.tracker.locked().handed_out(partition, offset);
            let ms = match m.timestamp() {
                Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => t,
                Timestamp::NotAvailable => 0,
            };
            match Event::from_json_slice(m.payload().unwrap_or_default()) {
                Ok(event) => out.push(GroupMessage {
                    event: StoredEvent {
                        partition,
                        offset,
                        timestamp: chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default(),
                        event,
                        stored_json: None,
                    },
                    epoch,
                    consumer: Arc::clone(&self.consumer),
                    tracker: Arc::clone(&self.tracker),
                    commits: Arc::clone(&self.commits),
                    kafka_topic: self.kafka_topic.clone(),
                }),
                Err(e) => {
                    tracing::warn!(topic = %self.topic, partition, offset, error = %e, "passing over a record that is not an event");
                    self.tracker.locked().acked(partition, epoch, offset);
                }
            }
        }
        Ok(out)
    }

    /// The partitions this member holds now (empty before the first assignment).
    pub fn partitions(&self) -> Result<Vec<u32>, LogError> {
        let list = self
            .consumer
            .assignment()
            .map_err(|e| kafka_err("reading the assignment", e))?;
        let mut parts: Vec<u32> = list
            .elements()
            .iter()
            .map(|e| e.partition().max(0) as u32)
            .collect();
        parts.sort_unstable();
        Ok(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_point_is_the_contiguous_low_water_mark() {
        let mut t = Tracker::default();
        let e = t.handed_out(0, 10);
        for o in 11..15 {
            t.handed_out(0, o);
        }
        // Acks out of order: nothing to commit until offset 10 is acknowledged.
        assert_eq!(t.acked(0, e, 12), None);
        assert_eq!(t.acked(0, e, 11), None);
        assert_eq!(t.acked(0, e, 10), Some(13));
        assert_eq!(t.acked(0, e, 14), None);
        assert_eq!(t.acked(0, e, 13), Some(15));
        // A second ack of the same offset changes nothing.
        assert_eq!(t.acked(0, e, 13), None);
    }

    #[test]
    fn acks_from_before_a_partition_moved_commit_nothing() {
        let mut t = Tracker::default();
        let e = t.handed_out(2, 0);
        // The partition is revoked (and maybe given back): a new epoch, no held state.
        t.epoch += 1;
        t.parts.remove(&2);
        assert_eq!(t.acked(2, e, 0), None);
        let e2 = t.handed_out(2, 5);
        assert_ne!(e, e2);
        assert_eq!(t.acked(2, e, 5), None, "an old epoch's ack of a new offset");
        assert_eq!(t.acked(2, e2, 5), Some(6));
    }
}
