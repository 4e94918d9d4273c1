//! [`KafkaLog`]: the [`EventLog`] on Kafka. See the crate docs for the mapping.
//!
//! The trait's methods only hand over to `Inner`, whose methods live with their concern:
//! `topics.rs` (topic records, Kafka topics, repair at open, retention), `append.rs`
//! (producing with dedupe), `read.rs` (reads by offset and by time) and `offsets.rs`
//! (group offsets).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crmbus::{Event, EventLog, LogError, Receipt, StoredEvent, TopicInfo, TopicSpec};
use crmbus_postgres::PgStateStore;

use crate::conn::{Conn, KafkaOptions};
use crate::dedupe::DedupeIndex;

mod append;
mod offsets;
pub(crate) mod read;
mod topics;

pub(crate) use topics::{describe_brokers, purge_topics};

/// What every clone of one [`KafkaLog`] shares: the brokers' clients, the state store, the
/// dedupe index, and the process-local bookkeeping of appends and retention.
pub(crate) struct Inner {
    pub conn: Conn,
    pub state: PgStateStore,
    dedupe: DedupeIndex,
    /// One lock per topic, held while an append produces: keeps a batch contiguous in each
    /// partition against other appenders of this process, and its dedupe lookup and record
    /// together.
    append_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The highest end (high watermark) seen of each partition: a read from at most this
    /// offset has something to fetch or meets the end at once; one from further needs the
    /// end looked up first (brokers differ on answering a fetch past the end).
    ends: Mutex<HashMap<(String, u32), u64>>,
    /// First offset of each partition when `enforce_retention` last looked.
    seen_first: Mutex<HashMap<(String, u32), u64>>,
    closed: AtomicBool,
}

/// The crmbus event log on Kafka: one Kafka topic per crmbus topic, topic records, group
/// offsets and producer dedupe in PostgreSQL. Cheap to clone.
#[derive(Clone)]
pub struct KafkaLog {
    pub(crate) inner: Arc<Inner>,
}

impl KafkaLog {
    /// Connects to the brokers at `bootstrap` (`host:port[,host:port…]`) and to the state
    /// database through `state`, and opens namespace `prefix` (the same prefix as
    /// `state`'s): repairs what a crash between the steps of a topic's creation or
    /// deletion left.
    pub async fn connect(
        bootstrap: &str,
        state: PgStateStore,
        opts: KafkaOptions,
    ) -> Result<KafkaLog, LogError> {
        let prefix = state.prefix().to_string();
        let dedupe = DedupeIndex::open(state.pool().clone(), &prefix, opts.dedupe_window).await?;
        let conn = Conn::connect(bootstrap, &prefix, opts).await?;
        let log = KafkaLog {
            inner: Arc::new(Inner {
                conn,
                state,
                dedupe,
                append_locks: Mutex::new(HashMap::new()),
                ends: Mutex::new(HashMap::new()),
                seen_first: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
            }),
        };
        log.inner.recover().await?;
        if let Some(every) = log.inner.conn.opts.retention_interval {
            tokio::spawn(retention_loop(Arc::downgrade(&log.inner), every));
        }
        Ok(log)
    }

    /// The brokers this log is connected to.
    pub fn bootstrap_servers(&self) -> &str {
        &self.inner.conn.bootstrap
    }

    /// The namespace prefix of every Kafka topic and state entry this log uses.
    pub fn prefix(&self) -> &str {
        &self.inner.conn.prefix
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &KafkaOptions {
        &self.inner.conn.opts
    }

    /// The Kafka topic that holds crmbus topic `topic` (see the crate docs).
    pub fn kafka_topic(&self, topic: &str) -> String {
        crate::naming::kafka_topic(self.prefix(), topic)
    }

    /// The topic's spec as stored (every field, including `require_schemas`).
    pub async fn topic_spec(&self, topic: &str) -> Result<TopicSpec, LogError> {
        Ok(self.inner.record(topic).await?.spec)
    }
}

/// Applies retention (and prunes the dedupe index) every `every` until the log is closed
/// or dropped.
async fn retention_loop(inner: std::sync::Weak<Inner>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = inner.enforce_retention().await {
            tracing::warn!(error = %e, "Kafka log: applying retention failed; trying again later");
        }
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

    fn kafka_topic(&self, topic: &str) -> String {
        crate::naming::kafka_topic(self.prefix(), topic)
    }
}

#[async_trait]
impl EventLog for KafkaLog {
    fn backend_name(&self) -> &'static str {
        "kafka"
    }

    async fn create_topic(&self, spec: TopicSpec) -> Result<TopicInfo, LogError> {
        self.inner.check_open()?;
        self.inner.create_topic(spec).await
    }

    async fn delete_topic(&self, name: &str) -> Result<(), LogError> {
        self.inner.check_open()?;
        self.inner.delete_topic(name).await
    }

    async fn list_topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        self.inner.check_open()?;
        self.inner.list_topics().await
    }

    async fn describe_topic(&self, name: &str) -> Result<TopicInfo, LogError> {
        self.inner.check_open()?;
        self.inner.describe_topic(name).await
    }

    async fn append(&self, topics: &[String], events: &[Event]) -> Result<Vec<Receipt>, LogError> {
        self.inner.check_open()?;
        // On a task of its own: a caller that goes away (a client that disconnects) does
        // not cut an append between the brokers' acknowledgement and the dedupe record.
        let inner = Arc::clone(&self.inner);
        let (topics, events) = (topics.to_vec(), events.to_vec());
        tokio::spawn(async move { inner.append(&topics, &events).await })
            .await
            .map_err(|e| crate::conn::join_err("appending", e))?
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, LogError> {
        self.inner.check_open()?;
        self.inner.read(topic, partition, from, max).await
    }

    async fn offset_for_time(
        &self,
        topic: &str,
        partition: u32,
        time: DateTime<Utc>,
    ) -> Result<u64, LogError> {
        self.inner.check_open()?;
        self.inner.offset_for_time(topic, partition, time).await
    }

    async fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), LogError> {
        self.inner.check_open()?;
        self.inner
            .commit_offset(&[], group, topic, partition, offset)
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
        self.inner.check_open()?;
        self.inner
            .commit_offset(fences, group, topic, partition, offset)
            .await
    }

    async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError> {
        self.inner.check_open()?;
        self.inner.committed_offset(group, topic, partition).await
    }

    async fn enforce_retention(&self) -> Result<u64, LogError> {
        self.inner.check_open()?;
        self.inner.enforce_retention().await
    }

    async fn close(&self) -> Result<(), LogError> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.flush().await
    }
}
