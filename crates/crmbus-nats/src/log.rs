//! [`NatsLog`]: the [`EventLog`] on JetStream. See the crate docs for the mapping.

use crmbus::sync::LockExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, message::PublishMessage as Publish, stream};
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use crmbus::{
    partition_for, validate_topic_name, Event, EventLog, LogError, PartitionInfo, Receipt,
    StoredEvent, TopicInfo, TopicSpec, DEFAULT_DEDUPE_WINDOW,
};
use futures_util::{StreamExt, TryStreamExt};

use crate::conn::{backend, Conn, FETCH_EXPIRES};
use crate::naming;

/// How many publishes of one append are in flight (sent, ack not yet received) at once.
const PUBLISH_WINDOW: usize = 512;
/// How many direct gets a read keeps in flight.
const READ_CONCURRENCY: usize = 64;
/// How many stream requests (create, delete, info) run at once for a many-partition topic.
const ADMIN_CONCURRENCY: usize = 16;
/// Room kept for the headers (`Nats-Msg-Id`, `Nats-Expected-Stream`) below `max_payload`.
const HEADER_ROOM: usize = 512;

/// Options of a [`NatsLog`].
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Producer dedupe window: the `duplicate_window` of every partition stream (capped by
    /// the topic's `max_age`). Zero turns producer dedupe off: no `Nats-Msg-Id` is sent.
    pub dedupe_window: Duration,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            dedupe_window: DEFAULT_DEDUPE_WINDOW,
        }
    }
}

pub(crate) struct Inner {
    pub conn: Conn,
    opts: NatsOptions,
    topics: jetstream::kv::Store,
    offsets: jetstream::kv::Store,
    /// One lock per topic, held while an append sends: keeps a batch contiguous in each
    /// partition against other appenders of this process.
    append_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// First offset of each partition stream when `enforce_retention` last looked.
    seen_first: Mutex<HashMap<String, u64>>,
    closed: AtomicBool,
}

/// The crmbus event log on a NATS JetStream server: one file-storage stream per topic
/// partition, topic specs and group offsets in KV buckets. Cheap to clone.
#[derive(Clone)]
pub struct NatsLog {
    pub(crate) inner: Arc<Inner>,
}

fn stream_not_found(e: &async_nats::jetstream::Error) -> bool {
    e.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND
}

/// What an append decided for one event in one topic.
enum Slot {
    /// Published; index into the batch's publish list.
    Published(usize),
    /// The same (source, id) as an earlier event of the batch.
    SameAs(usize),
}

impl NatsLog {
    /// Connects to the server at `url` and opens (creating if needed) the namespace
    /// `prefix`: its KV buckets, and the partition streams of every topic it lists (a
    /// topic whose creation was cut short gets its missing streams; streams of topics that
    /// no longer exist are removed).
    pub async fn connect(url: &str, prefix: &str, opts: NatsOptions) -> Result<NatsLog, LogError> {
        let conn = Conn::connect(url, prefix).await?;
        Self::with_conn(conn, opts).await
    }

    pub(crate) async fn with_conn(conn: Conn, opts: NatsOptions) -> Result<NatsLog, LogError> {
        let topics = conn
            .bucket(&naming::topics_bucket(&conn.prefix), "topic specs")
            .await?;
        let offsets = conn
            .bucket(&naming::offsets_bucket(&conn.prefix), "group offsets")
            .await?;
        let log = NatsLog {
            inner: Arc::new(Inner {
                conn,
                opts,
                topics,
                offsets,
                append_locks: Mutex::new(HashMap::new()),
                seen_first: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
            }),
        };
        log.inner.recover().await?;
        Ok(log)
    }

    /// The server URL this log is connected to.
    pub fn url(&self) -> &str {
        &self.inner.conn.url
    }

    /// The namespace prefix of every stream, subject and bucket this log uses.
    pub fn prefix(&self) -> &str {
        &self.inner.conn.prefix
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &NatsOptions {
        &self.inner.opts
    }

    /// The JetStream stream name of a topic partition (see the crate docs).
    pub fn stream_name(&self, topic: &str, partition: u32) -> String {
        naming::stream_name(self.prefix(), topic, partition)
    }

    /// The subject a topic partition's events are published on (see the crate docs).
    pub fn subject(&self, topic: &str, partition: u32) -> String {
        naming::subject(self.prefix(), topic, partition)
    }

    /// The topic's spec as stored (every field, including `require_schemas`).
    pub async fn topic_spec(&self, topic: &str) -> Result<TopicSpec, LogError> {
        self.inner.spec(topic).await
    }
}

impl Inner {
    fn check_open(&self) -> Result<(), LogError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Unavailable("log is closed".into()));
        }
        Ok(())
    }

    fn prefix(&self) -> &str {
        &self.conn.prefix
    }

    async fn spec(&self, topic: &str) -> Result<TopicSpec, LogError> {
        if validate_topic_name(topic).is_err() {
            return Err(LogError::TopicNotFound(topic.to_string()));
        }
        let raw = self
            .topics
            .get(naming::topic_key(topic))
            .await
            .map_err(|e| backend(&format!("reading the spec of topic '{topic}'"), e))?;
        match raw {
            None => Err(LogError::TopicNotFound(topic.to_string())),
            Some(b) => serde_json::from_slice(&b)
                .map_err(|e| backend(&format!("decoding the spec of topic '{topic}'"), e)),
        }
    }

    async fn spec_partition(&self, topic: &str, partition: u32) -> Result<TopicSpec, LogError> {
        let spec = self.spec(topic).await?;
        if partition >= spec.partitions {
            return Err(LogError::PartitionNotFound {
                topic: topic.to_string(),
                partition,
            });
        }
        Ok(spec)
    }

    async fn topic_names(&self) -> Result<Vec<String>, LogError> {
        let keys: Vec<String> = self
            .topics
            .keys()
            .await
            .map_err(|e| backend("listing topics", e))?
            .try_collect()
            .await
            .map_err(|e| backend("listing topics", e))?;
        let mut names: Vec<String> = keys
            .iter()
            .filter_map(|k| naming::decode_key_part(k))
            .collect();
        names.sort();
        Ok(names)
    }

    fn stream_config(&self, spec: &TopicSpec, partition: u32) -> stream::Config {
        let max_age = spec.retention.max_age.unwrap_or(Duration::ZERO);
        let mut dup = self.opts.dedupe_window;
        if !max_age.is_zero() && dup > max_age {
            dup = max_age;
        }
        stream::Config {
            name: naming::stream_name(self.prefix(), &spec.name, partition),
            description: Some(format!(
                "crmbus topic '{}' partition {partition} of {} (offset = sequence - 1)",
                spec.name, spec.partitions
            )),
            subjects: vec![naming::subject(self.prefix(), &spec.name, partition)],
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            num_replicas: 1,
            max_age,
            max_bytes: spec
                .retention
                .max_bytes
                .map(|b| i64::try_from(b).unwrap_or(i64::MAX))
                .unwrap_or(-1),
            max_messages: -1,
            max_messages_per_subject: -1,
            max_consumers: -1,
            max_message_size: -1,
            duplicate_window: dup,
            allow_direct: true,
            ..Default::default()
        }
    }

    /// Creates the partition streams of `spec`, replacing any stale stream of the same name
    /// (left by a delete that was cut short).
    async fn create_streams(&self, spec: &TopicSpec) -> Result<(), LogError> {
        futures_util::stream::iter(0..spec.partitions)
            .map(|p| async move {
                let config = self.stream_config(spec, p);
                let name = config.name.clone();
                let _ = self.conn.js.delete_stream(&name).await;
                self.conn
                    .js
                    .create_stream(config)
                    .await
                    .map(|_| ())
                    .map_err(|e| backend(&format!("creating stream {name}"), e))
            })
            .buffer_unordered(ADMIN_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }

    /// Deletes the partition streams of a topic of `partitions` partitions.
    async fn delete_streams(&self, topic: &str, partitions: u32) -> Result<(), LogError> {
        futures_util::stream::iter(0..partitions)
            .map(|p| async move {
                let name = naming::stream_name(self.prefix(), topic, p);
                match self.conn.js.delete_stream(&name).await {
                    Ok(_) => Ok(()),
                    Err(e) => match e.kind() {
                        jetstream::context::DeleteStreamErrorKind::JetStream(j)
                            if stream_not_found(&j) =>
                        {
                            Ok(())
                        }
                        _ => Err(backend(&format!("deleting stream {name}"), e)),
                    },
                }
            })
            .buffer_unordered(ADMIN_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }

    /// At open: gives every listed topic its streams, and removes streams of this
    /// namespace that belong to no listed topic.
    async fn recover(&self) -> Result<(), LogError> {
        let mut expected = std::collections::HashSet::new();
        let mut specs = Vec::new();
        for name in self.topic_names().await? {
            match self.spec(&name).await {
                Ok(spec) => {
                    for p in 0..spec.partitions {
                        expected.insert(naming::stream_name(self.prefix(), &name, p));
                    }
                    specs.push(spec);
                }
                Err(LogError::TopicNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let existing: Vec<String> = self
            .conn
            .js
            .stream_names()
            .try_collect()
            .await
            .map_err(|e| backend("listing streams", e))?;
        for s in &existing {
            if naming::is_partition_stream(self.prefix(), s) && !expected.contains(s) {
                tracing::warn!(stream = %s, "removing a stream of a topic that does not exist");
                let _ = self.conn.js.delete_stream(s).await;
            }
        }
        for spec in specs {
            for p in 0..spec.partitions {
                let config = self.stream_config(&spec, p);
                if !existing.contains(&config.name) {
                    tracing::warn!(stream = %config.name, "creating a missing partition stream");
                    let name = config.name.clone();
                    self.conn
                        .js
                        .create_stream(config)
                        .await
                        .map_err(|e| backend(&format!("creating stream {name}"), e))?;
                }
            }
        }
        Ok(())
    }

    async fn stream(&self, topic: &str, partition: u32) -> Result<stream::Stream, LogError> {
        let name = naming::stream_name(self.prefix(), topic, partition);
        self.conn
            .js
            .get_stream(&name)
            .await
            .map_err(|e| match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(j) if stream_not_found(&j) => {
                    LogError::TopicNotFound(topic.to_string())
                }
                _ => backend(&format!("reading stream {name}"), e),
            })
    }

    async fn state(&self, topic: &str, partition: u32) -> Result<stream::State, LogError> {
        let s = self.stream(topic, partition).await?;
        Ok(s.cached_info().state.clone())
    }

    async fn info(&self, spec: &TopicSpec) -> Result<TopicInfo, LogError> {
        let partition_info = futures_util::stream::iter(0..spec.partitions)
            .map(|p| async move {
                let state = self.state(&spec.name, p).await?;
                Ok::<_, LogError>(partition_info(p, &state))
            })
            .buffered(ADMIN_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(TopicInfo {
            name: spec.name.clone(),
            partitions: spec.partitions,
            retention: spec.retention,
            require_schemas: spec.require_schemas,
            partition_info,
        })
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

fn partition_info(partition: u32, state: &stream::State) -> PartitionInfo {
    let next_offset = state.last_sequence;
    let first_offset = if state.messages == 0 {
        next_offset
    } else {
        state.first_sequence.saturating_sub(1).min(next_offset)
    };
    PartitionInfo {
        partition,
        first_offset,
        next_offset,
        corrupt: Vec::new(),
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
    })
}

#[async_trait]
impl EventLog for NatsLog {
    fn backend_name(&self) -> &'static str {
        "nats"
    }

    async fn create_topic(&self, spec: TopicSpec) -> Result<TopicInfo, LogError> {
        let inner = &self.inner;
        inner.check_open()?;
        spec.validate()?;
        let json = serde_json::to_vec(&spec).map_err(|e| backend("encoding a topic spec", e))?;
        match inner
            .topics
            .create(naming::topic_key(&spec.name), json.into())
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind() == jetstream::kv::CreateErrorKind::AlreadyExists => {
                return Err(LogError::TopicExists(spec.name));
            }
            Err(e) => return Err(backend(&format!("registering topic '{}'", spec.name), e)),
        }
        if let Err(e) = inner.create_streams(&spec).await {
            let _ = inner.delete_streams(&spec.name, spec.partitions).await;
            let _ = inner.topics.purge(naming::topic_key(&spec.name)).await;
            return Err(e);
        }
        Ok(TopicInfo {
            name: spec.name.clone(),
            partitions: spec.partitions,
            retention: spec.retention,
            require_schemas: spec.require_schemas,
            partition_info: (0..spec.partitions)
                .map(|p| PartitionInfo {
                    partition: p,
                    first_offset: 0,
                    next_offset: 0,
                    corrupt: Vec::new(),
                })
                .collect(),
        })
    }

    async fn delete_topic(&self, name: &str) -> Result<(), LogError> {
        let inner = &self.inner;
        inner.check_open()?;
        let spec = inner.spec(name).await?;
        inner
            .topics
            .purge(naming::topic_key(name))
            .await
            .map_err(|e| backend(&format!("unregistering topic '{name}'"), e))?;
        inner.delete_streams(name, spec.partitions).await?;
        let prefix = format!("{}.", naming::key_part(name));
        let keys: Vec<String> = inner
            .offsets
            .keys()
            .await
            .map_err(|e| backend("listing group offsets", e))?
            .try_collect()
            .await
            .map_err(|e| backend("listing group offsets", e))?;
        for k in keys.into_iter().filter(|k| k.starts_with(&prefix)) {
            inner
                .offsets
                .purge(&k)
                .await
                .map_err(|e| backend("removing a group offset", e))?;
        }
        inner
            .seen_first
            .locked()
            .retain(|s, _| !(0..spec.partitions).any(|p| *s == self.stream_name(name, p)));
        Ok(())
    }

    async fn list_topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        let inner = &self.inner;
        let mut out = Vec::new();
        for name in inner.topic_names().await? {
            match inner.spec(&name).await {
                Ok(spec) => out.push(inner.info(&spec).await?),
                Err(LogError::TopicNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn describe_topic(&self, name: &str) -> Result<TopicInfo, LogError> {
        let spec = self.inner.spec(name).await?;
        self.inner.info(&spec).await
    }

    async fn append(&self, topics: &[String], events: &[Event]) -> Result<Vec<Receipt>, LogError> {
        let inner = &self.inner;
        inner.check_open()?;
        if topics.is_empty() {
            return Err(LogError::InvalidArgument("no topic given".into()));
        }
        // Everything is checked before anything is published.
        let mut specs = Vec::with_capacity(topics.len());
        for t in topics {
            specs.push(inner.spec(t).await?);
        }
        let max_payload = inner.conn.client.server_info().max_payload;
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
            inner
                .append_topic(spec, events, &encoded, &mut receipts)
                .await?;
        }
        Ok(receipts)
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, LogError> {
        let inner = &self.inner;
        inner.spec_partition(topic, partition).await?;
        let stream = inner.stream(topic, partition).await?;
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

    async fn offset_for_time(
        &self,
        topic: &str,
        partition: u32,
        time: DateTime<Utc>,
    ) -> Result<u64, LogError> {
        let inner = &self.inner;
        inner.spec_partition(topic, partition).await?;
        let stream = inner.stream(topic, partition).await?;
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
                None => Ok(inner.state(topic, partition).await?.last_sequence),
            }
        }
        .await;
        let name = consumer.cached_info().name.clone();
        let _ = stream.delete_consumer(&name).await;
        result
    }

    async fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), LogError> {
        let inner = &self.inner;
        inner.check_open()?;
        if group.is_empty() {
            return Err(LogError::InvalidArgument("group name is empty".into()));
        }
        inner.spec_partition(topic, partition).await?;
        inner
            .offsets
            .put(
                naming::offset_key(topic, group, partition),
                offset.to_string().into(),
            )
            .await
            .map_err(|e| backend(&format!("committing the offset of group '{group}'"), e))?;
        Ok(())
    }

    async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError> {
        let inner = &self.inner;
        inner.spec_partition(topic, partition).await?;
        let raw = inner
            .offsets
            .get(naming::offset_key(topic, group, partition))
            .await
            .map_err(|e| backend(&format!("reading the offset of group '{group}'"), e))?;
        match raw {
            None => Ok(None),
            Some(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or_else(|| backend("decoding a group offset", "not a number")),
        }
    }

    async fn enforce_retention(&self) -> Result<u64, LogError> {
        let inner = &self.inner;
        inner.check_open()?;
        let mut removed = 0;
        for t in self.list_topics().await? {
            for p in &t.partition_info {
                let name = self.stream_name(&t.name, p.partition);
                let mut seen = inner.seen_first.locked();
                let before = seen.insert(name, p.first_offset).unwrap_or(0);
                removed += p.first_offset.saturating_sub(before);
            }
        }
        Ok(removed)
    }

    async fn close(&self) -> Result<(), LogError> {
        self.inner.closed.store(true, Ordering::Release);
        self.inner
            .conn
            .client
            .flush()
            .await
            .map_err(|e| backend("flushing the connection", e))
    }
}
