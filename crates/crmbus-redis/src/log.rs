//! [`RedisLog`]: the [`EventLog`] implementation on Redis Streams.

use crmbus::sync::LockExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crmbus::{
    dedupe_hash, partition_for, Event, EventLog, LogError, PartitionInfo, Receipt, StateStore,
    StoredEvent, TopicInfo, TopicSpec,
};
use redis::{AsyncCommands, Value};

use crate::conn::{Conn, RedisOptions};
use crate::conv;
use crate::group::RedisGroupConsumer;
use crate::naming::{group_position, offset_of_position, stream_id, topics_key};
use crate::state::RedisStateStore;

/// crmbus's event log on Redis Streams: one stream per topic partition under a key prefix.
///
/// See the crate documentation for the key layout, the offset ↔ stream id mapping,
/// dedupe, retention and durability. Clones share one connection (which reconnects on
/// its own after a network failure).
#[derive(Clone)]
pub struct RedisLog {
    conn: Arc<Conn>,
    dedupe_window: Duration,
    /// Partition counts of topics appended to (checked by the append script every time).
    counts: Arc<Mutex<HashMap<String, u32>>>,
    closed: Arc<AtomicBool>,
}

/// Identity of an event for the dedupe check (length-prefixed, unambiguous).
fn identity(e: &Event) -> String {
    format!("{}:{}{}", e.source.len(), e.source, e.id)
}

impl RedisLog {
    /// Connects to the Redis at `url` (`redis://host:port/db`) and uses the keys under
    /// `prefix` with the default options.
    pub async fn open(url: &str, prefix: &str) -> Result<RedisLog, LogError> {
        Self::open_with(url, prefix, RedisOptions::default()).await
    }

    /// Connects to the Redis at `url` and uses the keys under `prefix`.
    pub async fn open_with(
        url: &str,
        prefix: &str,
        opts: RedisOptions,
    ) -> Result<RedisLog, LogError> {
        let conn = Conn::connect(url, prefix, &opts).await?;
        Ok(Self::with_conn(Arc::new(conn), &opts))
    }

    pub(crate) fn with_conn(conn: Arc<Conn>, opts: &RedisOptions) -> RedisLog {
        RedisLog {
            conn,
            dedupe_window: opts.dedupe_window,
            counts: Arc::default(),
            closed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The key prefix this log's data lives under.
    pub fn prefix(&self) -> &str {
        &self.conn.prefix
    }

    /// The state store kept under the same prefix on the same server.
    pub fn state_store(&self) -> Arc<dyn StateStore> {
        Arc::new(RedisStateStore::with_conn(Arc::clone(&self.conn)))
    }

    /// A member `consumer` of the native Redis consumer group `group` on every partition
    /// stream of `topic` (the group is created at the start of each stream if it does not
    /// exist). See [`RedisGroupConsumer`].
    pub async fn group_consumer(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
    ) -> Result<RedisGroupConsumer, LogError> {
        self.check_open()?;
        RedisGroupConsumer::open(Arc::clone(&self.conn), topic, group, consumer).await
    }

    fn check_open(&self) -> Result<(), LogError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Unavailable("redis log is closed".into()));
        }
        Ok(())
    }

    fn err(&self, e: redis::RedisError) -> LogError {
        self.conn.err(e)
    }

    async fn specs(&self) -> Result<Vec<(String, String)>, LogError> {
        let mut conn = self.conn.manager();
        let mut all: Vec<(String, String)> = conn
            .hgetall(topics_key(&self.conn.prefix))
            .await
            .map_err(|e| self.err(e))?;
        all.sort();
        Ok(all)
    }

    async fn spec(&self, name: &str) -> Result<TopicSpec, LogError> {
        let mut conn = self.conn.manager();
        let raw: Option<String> = conn
            .hget(topics_key(&self.conn.prefix), name)
            .await
            .map_err(|e| self.err(e))?;
        let raw = raw.ok_or_else(|| LogError::TopicNotFound(name.to_string()))?;
        parse_spec(name, &raw)
    }

    async fn info(&self, name: &str) -> Result<TopicInfo, LogError> {
        let mut conn = self.conn.manager();
        let reply: Value = self
            .conn
            .scripts
            .info
            .arg(&self.conn.prefix)
            .arg(name)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        let parts = conv::items(&reply);
        let raw = parts.first().and_then(conv::text).unwrap_or_default();
        let spec = parse_spec(name, &raw)?;
        let partition_info = parts[1..]
            .chunks(2)
            .enumerate()
            .map(|(p, c)| {
                let first = c.first().and_then(conv::int).unwrap_or(0).max(0) as u64;
                let next = c.get(1).and_then(conv::int).unwrap_or(0).max(0) as u64;
                PartitionInfo {
                    partition: p as u32,
                    first_offset: first.min(next),
                    next_offset: next,
                    corrupt: Vec::new(),
                }
            })
            .collect();
        Ok(TopicInfo {
            spec,
            partition_info,
        })
    }

    async fn describe_partition(&self, topic: &str, partition: u32) -> Result<(), LogError> {
        if partition >= self.spec(topic).await?.partitions {
            return Err(LogError::PartitionNotFound {
                topic: topic.to_string(),
                partition,
            });
        }
        Ok(())
    }

    /// The partition count of each topic, from the cache or the server.
    async fn partition_counts(&self, topics: &[String]) -> Result<Vec<u32>, LogError> {
        let mut counts = Vec::with_capacity(topics.len());
        for t in topics {
            let cached = self.counts.locked().get(t).copied();
            let n = match cached {
                Some(n) => n,
                None => {
                    let n = self.spec(t).await?.partitions;
                    self.counts.locked().insert(t.clone(), n);
                    n
                }
            };
            counts.push(n);
        }
        Ok(counts)
    }

    fn forget_counts(&self, topics: &[String]) {
        let mut cache = self.counts.locked();
        for t in topics {
            cache.remove(t);
        }
    }

    /// One attempt at an append with the partition counts read just before; `Ok(None)`
    /// when a topic was recreated with another partition count since the count was cached
    /// (the caller retries with fresh counts). The script itself checks every count, so a
    /// stale cache never places an event in the wrong partition.
    async fn try_append(
        &self,
        topics: &[String],
        events: &[Event],
        encoded: &[(Vec<u8>, String, String)],
    ) -> Result<Option<Vec<Receipt>>, LogError> {
        let counts = self.partition_counts(topics).await?;
        let window_ms = if self.dedupe_window.is_zero() {
            0
        } else {
            self.dedupe_window.as_millis().max(1) as u64
        };
        let script = &self.conn.scripts.append;
        let mut inv = script.prepare_invoke();
        inv.arg(&self.conn.prefix)
            .arg(window_ms)
            .arg(topics.len())
            .arg(events.len());
        for (t, n) in topics.iter().zip(&counts) {
            inv.arg(t).arg(*n);
        }
        for (json, hash, ident) in encoded {
            inv.arg(json.as_slice()).arg(hash).arg(ident);
        }
        for &n in &counts {
            for e in events {
                inv.arg(partition_for(e, n));
            }
        }
        let mut conn = self.conn.manager();
        let reply: Value = match inv.invoke_async(&mut conn).await {
            Ok(v) => v,
            Err(e) if conv::is_stale(&e) => {
                self.forget_counts(topics);
                return Ok(None);
            }
            Err(e) => {
                // A cached count may name a deleted topic; ask the server next time.
                self.forget_counts(topics);
                return Err(self.err(e));
            }
        };
        let flat = conv::items(&reply);
        if flat.len() != topics.len() * events.len() * 3 {
            return Err(LogError::backend(format!(
                "append script returned {} values for {} receipts",
                flat.len(),
                topics.len() * events.len()
            )));
        }
        let mut receipts = Vec::with_capacity(topics.len() * events.len());
        for (k, r) in flat.chunks(3).enumerate() {
            let (t, e) = (k / events.len(), k % events.len());
            let num = |v: &Value| conv::int(v).unwrap_or(0).max(0) as u64;
            receipts.push(Receipt {
                id: events[e].id.clone(),
                topic: topics[t].clone(),
                partition: num(&r[0]) as u32,
                offset: num(&r[1]),
                duplicate: num(&r[2]) == 1,
                version: None,
            });
        }
        Ok(Some(receipts))
    }
}

fn parse_spec(name: &str, raw: &str) -> Result<TopicSpec, LogError> {
    serde_json::from_str(raw).map_err(|e| {
        LogError::backend_from(format!("stored spec of topic '{name}' is unreadable"), e)
    })
}

#[async_trait]
impl EventLog for RedisLog {
    fn backend_name(&self) -> &'static str {
        "redis"
    }

    async fn create_topic(&self, spec: TopicSpec) -> Result<TopicInfo, LogError> {
        self.check_open()?;
        spec.validate()?;
        let json = serde_json::to_string(&spec)
            .map_err(|e| LogError::backend_from("encoding topic spec", e))?;
        let mut conn = self.conn.manager();
        let _: Value = self
            .conn
            .scripts
            .create
            .arg(&self.conn.prefix)
            .arg(&spec.name)
            .arg(json)
            .arg(spec.partitions)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        self.info(&spec.name).await
    }

    async fn delete_topic(&self, name: &str) -> Result<(), LogError> {
        self.check_open()?;
        let mut conn = self.conn.manager();
        let _: Value = self
            .conn
            .scripts
            .delete
            .arg(&self.conn.prefix)
            .arg(name)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        self.forget_counts(&[name.to_string()]);
        Ok(())
    }

    async fn list_topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        let mut out = Vec::new();
        for (name, _) in self.specs().await? {
            match self.info(&name).await {
                Ok(i) => out.push(i),
                // Deleted between the listing and the description.
                Err(LogError::TopicNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn describe_topic(&self, name: &str) -> Result<TopicInfo, LogError> {
        self.info(name).await
    }

    async fn append(&self, topics: &[String], events: &[Event]) -> Result<Vec<Receipt>, LogError> {
        self.check_open()?;
        if topics.is_empty() {
            return Err(LogError::InvalidArgument("no topic given".into()));
        }
        if events.is_empty() {
            for t in topics {
                self.spec(t).await?;
            }
            return Ok(Vec::new());
        }
        let mut encoded = Vec::with_capacity(events.len());
        for e in events {
            e.validate()?;
            encoded.push((
                e.to_json_vec(),
                format!("{:016x}", dedupe_hash(&e.source, &e.id)),
                identity(e),
            ));
        }
        for _ in 0..5 {
            if let Some(receipts) = self.try_append(topics, events, &encoded).await? {
                return Ok(receipts);
            }
        }
        Err(LogError::backend(
            "topics kept changing their partition count during the append",
        ))
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, LogError> {
        if max == 0 || from == u64::MAX {
            // Still report a missing topic or partition.
            self.describe_partition(topic, partition).await?;
            return Ok(Vec::new());
        }
        let mut conn = self.conn.manager();
        let reply: Value = self
            .conn
            .scripts
            .read
            .arg(&self.conn.prefix)
            .arg(topic)
            .arg(partition)
            .arg(stream_id(from))
            .arg(max.min(i64::MAX as usize))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in conv::entries(&reply) {
            let decoded = match &entry.body {
                Some((json, ts)) => conv::stored(topic, partition, entry.offset, json, *ts),
                None => Err(LogError::Corrupt {
                    topic: topic.to_string(),
                    partition,
                    offset: entry.offset,
                    detail: "stream entry has no event field".into(),
                }),
            };
            match decoded {
                Ok(s) => out.push(s),
                // Never serve a damaged entry: stop before it, or report it if first.
                Err(e) if out.is_empty() => return Err(e),
                Err(_) => break,
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
        let mut conn = self.conn.manager();
        let reply: i64 = self
            .conn
            .scripts
            .offset_for_time
            .arg(&self.conn.prefix)
            .arg(topic)
            .arg(partition)
            .arg(time.timestamp_micros())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(reply.max(0) as u64)
    }

    async fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), LogError> {
        self.commit_offset_fenced(&[], group, topic, partition, offset)
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
        self.check_open()?;
        if group.is_empty() {
            return Err(LogError::InvalidArgument("group name is empty".into()));
        }
        let mut conn = self.conn.manager();
        let mut inv = self.conn.scripts.commit.prepare_invoke();
        inv.arg(&self.conn.prefix)
            .arg(topic)
            .arg(partition)
            .arg(group)
            .arg(group_position(offset))
            .arg(fences.len());
        for f in fences {
            inv.arg(&f.lease).arg(f.token);
        }
        let _: Value = inv.invoke_async(&mut conn).await.map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError> {
        let mut conn = self.conn.manager();
        let reply: Option<String> = self
            .conn
            .scripts
            .committed
            .arg(&self.conn.prefix)
            .arg(topic)
            .arg(partition)
            .arg(group)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        match reply {
            None => Ok(None),
            Some(id) => offset_of_position(&id).map(Some).ok_or_else(|| {
                LogError::backend(format!(
                    "consumer group '{group}' of {topic}/{partition} is at '{id}', \
                     which is not a crmbus position"
                ))
            }),
        }
    }

    async fn enforce_retention(&self) -> Result<u64, LogError> {
        self.check_open()?;
        let mut removed = 0u64;
        for (name, raw) in self.specs().await? {
            let spec = parse_spec(&name, &raw)?;
            let r = spec.retention;
            if r.max_age.is_none() && r.max_bytes.is_none() {
                continue;
            }
            let max_bytes = r
                .max_bytes
                .map(|b| b.min(i64::MAX as u64) as i64)
                .unwrap_or(-1);
            let max_age = r
                .max_age
                .map(|d| d.as_micros().min(i64::MAX as u128) as i64)
                .unwrap_or(-1);
            let mut conn = self.conn.manager();
            let n: i64 = self
                .conn
                .scripts
                .retain
                .arg(&self.conn.prefix)
                .arg(&name)
                .arg(max_bytes)
                .arg(max_age)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| self.err(e))?;
            removed += n.max(0) as u64;
        }
        Ok(removed)
    }

    async fn close(&self) -> Result<(), LogError> {
        self.closed.store(true, Ordering::Release);
        Ok(())
    }
}
