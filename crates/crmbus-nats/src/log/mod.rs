//! [`NatsLog`]: the [`EventLog`] on JetStream. See the crate docs for the mapping.
//!
//! The trait's methods only hand over to `Inner`, whose methods live with their concern:
//! `topics.rs` (specs, partition streams, repair at open, retention), `append.rs`
//! (publishing with dedupe), `read.rs` (reads by offset and by time) and `offsets.rs`
//! (group offsets).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_nats::jetstream;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crmbus::{Event, EventLog, LogError, Receipt, StoredEvent, TopicInfo, TopicSpec};

use crate::conn::{backend, Conn, NatsOptions};
use crate::naming;

mod append;
mod offsets;
pub(crate) mod read;
mod topics;

/// What every clone of one [`NatsLog`] shares: the connection, the buckets, and the
/// process-local bookkeeping of appends and retention.
pub(crate) struct Inner {
    pub conn: Conn,
    opts: NatsOptions,
    topics: jetstream::kv::Store,
    offsets: jetstream::kv::Store,
    /// The namespace's leases (fenced commits check them first).
    leases: crate::lease::NatsLeaseStore,
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
        let leases = crate::lease::NatsLeaseStore::open(&conn).await?;
        let log = NatsLog {
            inner: Arc::new(Inner {
                leases,
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
        self.inner.stream_name(topic, partition)
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

    /// The stream of a topic partition in this namespace.
    fn stream_name(&self, topic: &str, partition: u32) -> String {
        naming::stream_name(self.prefix(), topic, partition)
    }
}

#[async_trait]
impl EventLog for NatsLog {
    fn backend_name(&self) -> &'static str {
        "nats"
    }

    async fn create_topic(&self, spec: TopicSpec) -> Result<TopicInfo, LogError> {
        self.inner.create_topic(spec).await
    }

    async fn delete_topic(&self, name: &str) -> Result<(), LogError> {
        self.inner.delete_topic(name).await
    }

    async fn list_topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        self.inner.list_topics().await
    }

    async fn describe_topic(&self, name: &str) -> Result<TopicInfo, LogError> {
        self.inner.describe_topic(name).await
    }

    async fn append(&self, topics: &[String], events: &[Event]) -> Result<Vec<Receipt>, LogError> {
        self.inner.append(topics, events).await
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, LogError> {
        self.inner.read(topic, partition, from, max).await
    }

    async fn offset_for_time(
        &self,
        topic: &str,
        partition: u32,
        time: DateTime<Utc>,
    ) -> Result<u64, LogError> {
        self.inner.offset_for_time(topic, partition, time).await
    }

    async fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), LogError> {
        self.inner
            .commit_offset(group, topic, partition, offset)
            .await
    }

    async fn commit_offset_fenced(
        &self,
        fences: &[crmbus::cluster::Fence],
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), LogError> {
        // Checked, then written (see the lease module).
        self.inner.leases.check(fences).await?;
        self.inner
            .commit_offset(group, topic, partition, offset)
            .await
    }

    async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError> {
        self.inner.committed_offset(group, topic, partition).await
    }

    async fn enforce_retention(&self) -> Result<u64, LogError> {
        self.inner.enforce_retention().await
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
