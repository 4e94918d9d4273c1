//! [`RedisGroupConsumer`]: a member of a native Redis Streams consumer group.
//!
//! This is Redis's own at-least-once mechanism, exposed as is: `XREADGROUP` hands new
//! entries to one member and records them in the group's pending entries list (PEL) until
//! the member acknowledges them with `XACK`; when a member dies, another member takes its
//! pending entries over with `XAUTOCLAIM` once they have been idle long enough.
//!
//! The group is the same Redis consumer group that [`crate::RedisLog`] commits crmbus
//! group offsets to (its `last-delivered-id` is the committed position), so use one group
//! name either with the crmbus delivery engine or with this consumer, not with both.

use std::sync::Arc;
use std::time::Duration;

use crmbus::{LogError, StoredEvent};
use redis::Value;

use crate::conn::Conn;
use crate::conv;
use crate::naming::{stream_id, stream_key};

/// One member (`consumer`) of the native consumer group `group` on every partition stream
/// of a topic.
pub struct RedisGroupConsumer {
    conn: Arc<Conn>,
    topic: String,
    group: String,
    consumer: String,
    partitions: u32,
}

impl RedisGroupConsumer {
    pub(crate) async fn open(
        conn: Arc<Conn>,
        topic: &str,
        group: &str,
        consumer: &str,
    ) -> Result<RedisGroupConsumer, LogError> {
        if group.is_empty() || consumer.is_empty() {
            return Err(LogError::InvalidArgument(
                "group and consumer names must not be empty".into(),
            ));
        }
        let mut manager = conn.manager();
        let partitions: i64 = conn
            .scripts
            .ensure_group
            .arg(&conn.prefix)
            .arg(topic)
            .arg(group)
            .invoke_async(&mut manager)
            .await
            .map_err(|e| conn.err(e))?;
        Ok(RedisGroupConsumer {
            conn,
            topic: topic.to_string(),
            group: group.to_string(),
            consumer: consumer.to_string(),
            partitions: partitions.max(0) as u32,
        })
    }

    /// The consumer's name within its group.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    fn key(&self, partition: u32) -> String {
        stream_key(&self.conn.prefix, &self.topic, partition)
    }

    fn decode(&self, partition: u32, reply: &Value, out: &mut Vec<StoredEvent>) {
        for entry in conv::entries(reply) {
            // An entry trimmed away while pending has no body: nothing to deliver.
            if let Some((json, ts)) = entry.body {
                match conv::stored(&self.topic, partition, entry.offset, &json, ts) {
                    Ok(s) => out.push(s),
                    Err(e) => tracing::error!(error = %e, "skipping an unreadable entry"),
                }
            }
        }
    }

    /// Reads entries no member of the group has been given yet (`XREADGROUP ... >`), up
    /// to `max` per partition, without waiting. They stay pending for this consumer until
    /// [`ack`](Self::ack)ed.
    pub async fn read(&self, max: usize) -> Result<Vec<StoredEvent>, LogError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(max.max(1))
            .arg("STREAMS");
        for p in 0..self.partitions {
            cmd.arg(self.key(p));
        }
        for _ in 0..self.partitions {
            cmd.arg(">");
        }
        let mut conn = self.conn.manager();
        let reply: Value = cmd
            .query_async(&mut conn)
            .await
            .map_err(|e| self.conn.err(e))?;
        let mut out = Vec::new();
        // RESP2: [[key, entries], ...]; RESP3 may give a map.
        let streams: Vec<(Value, Value)> = match &reply {
            Value::Map(m) => m.clone(),
            other => conv::items(other)
                .iter()
                .filter_map(|s| match conv::items(s) {
                    [k, v] => Some((k.clone(), v.clone())),
                    _ => None,
                })
                .collect(),
        };
        for (k, entries) in streams {
            let Some(key) = conv::text(&k) else { continue };
            let Some(p) = key.rsplit(':').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            self.decode(p, &entries, &mut out);
        }
        Ok(out)
    }

    /// Acknowledges processed entries (`XACK`): they leave the group's pending list and
    /// are never delivered again. Returns how many were pending.
    pub async fn ack(&self, done: &[(u32, u64)]) -> Result<u64, LogError> {
        let mut pipe = redis::pipe();
        for (p, offset) in done {
            pipe.cmd("XACK")
                .arg(self.key(*p))
                .arg(&self.group)
                .arg(stream_id(*offset));
        }
        let mut conn = self.conn.manager();
        let counts: Vec<i64> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| self.conn.err(e))?;
        Ok(counts.into_iter().map(|c| c.max(0) as u64).sum())
    }

    /// Takes over entries that other members (typically a crashed one) were given and have
    /// not acknowledged for at least `min_idle` (`XAUTOCLAIM`), up to `max` per partition.
    /// The claimed entries are pending for this consumer now.
    pub async fn claim_idle(
        &self,
        min_idle: Duration,
        max: usize,
    ) -> Result<Vec<StoredEvent>, LogError> {
        let mut out = Vec::new();
        let mut conn = self.conn.manager();
        for p in 0..self.partitions {
            let mut cursor = "0-0".to_string();
            let mut taken = 0usize;
            loop {
                let reply: Value = redis::cmd("XAUTOCLAIM")
                    .arg(self.key(p))
                    .arg(&self.group)
                    .arg(&self.consumer)
                    .arg(min_idle.as_millis() as u64)
                    .arg(&cursor)
                    .arg("COUNT")
                    .arg((max - taken).max(1))
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| self.conn.err(e))?;
                let parts = conv::items(&reply);
                if let Some(entries) = parts.get(1) {
                    taken += conv::items(entries).len();
                    self.decode(p, entries, &mut out);
                }
                cursor = parts
                    .first()
                    .and_then(conv::text)
                    .unwrap_or_else(|| "0-0".into());
                if cursor == "0-0" || taken >= max {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// How many entries the group has given out and not had acknowledged (all members).
    pub async fn pending(&self) -> Result<u64, LogError> {
        let mut pipe = redis::pipe();
        for p in 0..self.partitions {
            pipe.cmd("XPENDING").arg(self.key(p)).arg(&self.group);
        }
        let mut conn = self.conn.manager();
        let replies: Vec<Value> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| self.conn.err(e))?;
        Ok(replies
            .iter()
            .filter_map(|r| conv::items(r).first().and_then(conv::int))
            .map(|n| n.max(0) as u64)
            .sum())
    }
}
