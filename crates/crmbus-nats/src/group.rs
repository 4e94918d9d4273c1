//! [`NatsGroupConsumer`]: a consumer group on JetStream's own mechanism — one durable pull
//! consumer per partition stream, shared by every member of the group.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, AckKind};
use crmbus::{LogError, StoredEvent};
use futures_util::StreamExt;

use crate::conn::{backend, FETCH_EXPIRES};
use crate::log::read::stored_event;
use crate::log::NatsLog;
use crate::naming;

/// Where a new group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupStart {
    /// The oldest event still held.
    #[default]
    Earliest,
    /// Only events appended after the group is created.
    Latest,
}

/// How a [`NatsGroupConsumer`]'s durable consumers redeliver.
#[derive(Debug, Clone)]
pub struct GroupConsumerOptions {
    /// How long a fetched event may stay unacknowledged before JetStream delivers it again
    /// (to any member): a crashed member's events come back after this.
    pub ack_wait: Duration,
    /// Deliveries of one event before JetStream stops redelivering it (`-1`: no limit).
    pub max_deliver: i64,
    /// Where a group that does not exist yet starts.
    pub start: GroupStart,
}

impl Default for GroupConsumerOptions {
    fn default() -> Self {
        GroupConsumerOptions {
            ack_wait: Duration::from_secs(30),
            max_deliver: -1,
            start: GroupStart::Earliest,
        }
    }
}

/// One member of a consumer group over a topic, on JetStream durable pull consumers.
///
/// The group is the durable consumer named after the group (escaped, see the crate docs) on
/// every partition stream of the topic; every member that joins with the same group name
/// shares it, and JetStream hands each event to one member at a time. An event fetched and
/// not acknowledged within `ack_wait` — because its member crashed, hung or was dropped —
/// is delivered again to whichever member fetches next, up to `max_deliver` times. Order
/// per key is not kept across members; that is the delivery engine's job
/// ([`crmbus::delivery::Engine`]), which keeps its group offsets in the log instead.
pub struct NatsGroupConsumer {
    topic: String,
    group: String,
    consumers: Vec<(u32, consumer::PullConsumer)>,
    next: AtomicUsize,
    js: jetstream::Context,
}

/// What a group still owes, summed over the topic's partitions, as the server counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupBacklog {
    /// Events not yet delivered to any member.
    pub pending: u64,
    /// Events delivered and neither acknowledged nor given up on (`max_deliver` reached).
    pub ack_pending: u64,
    /// Events delivered more than once and not yet acknowledged.
    pub redelivered: u64,
}

/// An event fetched by a [`NatsGroupConsumer`], to acknowledge or refuse.
pub struct GroupMessage {
    /// The event, its partition and offset.
    pub event: StoredEvent,
    /// 1 for the first delivery, 2 for the first redelivery, and so on.
    pub delivery: u64,
    message: jetstream::Message,
}

impl GroupMessage {
    /// Acknowledges the event and waits until the server confirms it: it is not delivered
    /// again.
    pub async fn ack(&self) -> Result<(), LogError> {
        self.message
            .double_ack()
            .await
            .map_err(|e| backend("acknowledging", e))
    }

    /// Refuses the event: it is delivered again after `delay` (at once with `None`).
    pub async fn nak(&self, delay: Option<Duration>) -> Result<(), LogError> {
        self.message
            .ack_with(AckKind::Nak(delay))
            .await
            .map_err(|e| backend("refusing", e))
    }

    /// Tells the server work on the event goes on: its `ack_wait` starts again.
    pub async fn in_progress(&self) -> Result<(), LogError> {
        self.message
            .ack_with(AckKind::Progress)
            .await
            .map_err(|e| backend("extending the ack wait", e))
    }

    /// Stops redelivery of the event without acknowledging it as processed.
    pub async fn term(&self) -> Result<(), LogError> {
        self.message
            .ack_with(AckKind::Term)
            .await
            .map_err(|e| backend("terminating", e))
    }
}

impl NatsGroupConsumer {
    /// Joins `group` on `topic`: creates the group's durable consumers if they do not exist
    /// (with `opts`), or binds to the existing ones.
    pub async fn join(
        log: &NatsLog,
        topic: &str,
        group: &str,
        opts: GroupConsumerOptions,
    ) -> Result<NatsGroupConsumer, LogError> {
        if group.is_empty() {
            return Err(LogError::InvalidArgument("group name is empty".into()));
        }
        let spec = log.topic_spec(topic).await?;
        let js = &log.inner.conn.js;
        let name = naming::consumer_name(group);
        let mut consumers = Vec::with_capacity(spec.partitions as usize);
        for p in 0..spec.partitions {
            let stream_name = log.stream_name(topic, p);
            let stream = js
                .get_stream_no_info(&stream_name)
                .await
                .map_err(|e| backend(&format!("opening stream {stream_name}"), e))?;
            let config = consumer::pull::Config {
                durable_name: Some(name.clone()),
                description: Some(format!("crmbus group '{group}' on topic '{topic}'")),
                deliver_policy: match opts.start {
                    GroupStart::Earliest => consumer::DeliverPolicy::All,
                    GroupStart::Latest => consumer::DeliverPolicy::New,
                },
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: opts.ack_wait,
                max_deliver: opts.max_deliver,
                ..Default::default()
            };
            let c = stream
                .get_or_create_consumer(&name, config)
                .await
                .map_err(|e| backend(&format!("joining group '{group}' on {stream_name}"), e))?;
            consumers.push((p, c));
        }
        Ok(NatsGroupConsumer {
            topic: topic.to_string(),
            group: group.to_string(),
            consumers,
            next: AtomicUsize::new(0),
            js: js.clone(),
        })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Fetches up to `max` events available to this member, taking partitions in turn.
    /// Each partition's request is a no-wait fetch bounded to about a second on the server
    /// (an event about to become available, such as a NAK'd one whose delay ends, may be
    /// included); an empty result means none is available now.
    pub async fn fetch(&self, max: usize) -> Result<Vec<GroupMessage>, LogError> {
        let n = self.consumers.len();
        let mut out = Vec::new();
        if n == 0 || max == 0 {
            return Ok(out);
        }
        let first = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for k in 0..n {
            if out.len() >= max {
                break;
            }
            let (p, c) = &self.consumers[(first + k) % n];
            let mut batch = c
                .fetch()
                .max_messages(max - out.len())
                .expires(FETCH_EXPIRES)
                .messages()
                .await
                .map_err(|e| backend(&format!("fetching for group '{}'", self.group), e))?;
            while let Some(m) = batch.next().await {
                let m =
                    m.map_err(|e| backend(&format!("fetching for group '{}'", self.group), e))?;
                let info = m.info().map_err(|e| backend("reading message info", e))?;
                let (seq, time, delivery) = (
                    info.stream_sequence,
                    info.published,
                    info.delivered.max(1) as u64,
                );
                let event = stored_event(&self.topic, *p, seq, time, &m.payload)?;
                out.push(GroupMessage {
                    event,
                    delivery,
                    message: m,
                });
            }
        }
        Ok(out)
    }

    /// The group's backlog on the server: undelivered, unacknowledged and redelivered events.
    pub async fn backlog(&self) -> Result<GroupBacklog, LogError> {
        let mut total = GroupBacklog::default();
        for (p, c) in &self.consumers {
            let mut c = c.clone();
            let info = c.info().await.map_err(|e| {
                backend(
                    &format!("reading group '{}' on partition {p}", self.group),
                    e,
                )
            })?;
            total.pending += info.num_pending;
            total.ack_pending += info.num_ack_pending as u64;
            total.redelivered += info.num_redelivered as u64;
        }
        Ok(total)
    }

    /// Deletes the group's durable consumers (every member's, and their ack state).
    pub async fn delete(self) -> Result<(), LogError> {
        for (_, c) in self.consumers {
            let info = c.cached_info();
            let (stream, name) = (info.stream_name.clone(), info.name.clone());
            self.js
                .delete_consumer_from_stream(&name, &stream)
                .await
                .map_err(|e| backend(&format!("deleting group consumer {name}"), e))?;
        }
        Ok(())
    }
}
