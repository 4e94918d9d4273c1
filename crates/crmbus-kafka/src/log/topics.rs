//! Topic administration: topic records in the state store, one Kafka topic per crmbus
//! topic, the repair at open of what a crash between those steps left, and retention.
//!
//! A topic's record moves through phases, each change a conditional write, so that every
//! step can be finished by whoever comes next after a crash:
//!
//! - **creating**: the name is claimed (an insert that only one creator wins), stale group
//!   offsets and dedupe rows of the name are cleared, then the Kafka topic is created;
//! - **ready**: the only phase in which the topic exists for readers and writers;
//! - **deleting**: the name is gone for everyone; the Kafka topic, group offsets and dedupe
//!   rows are removed, then the record.
//!
//! A record left `deleting` by a crash is finished at the next open (or by the next create
//! of the name); one left `creating` for longer than [`ABANDONED`] is removed (nothing can
//! have been appended to it). A Kafka topic of the namespace that has no record is never
//! deleted on a guess: it is reported, and a create of its name fails until it is gone.

use std::time::{Duration, Instant};

use crmbus::sync::LockExt;
use crmbus::{
    validate_topic_name, LogError, PartitionInfo, StateOp, StateStore, TopicInfo, TopicSpec,
};
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};

use super::Inner;
use crate::conn::kafka_err;
use crate::naming;

/// How long a create waits for a Kafka topic of the same name to finish being deleted.
const DELETION_WAIT: Duration = Duration::from_secs(15);

/// A `creating` record older than this was left by a creator that died.
const ABANDONED: Duration = Duration::from_secs(60);

/// Where a topic's record is in its life (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Phase {
    /// Being created since `since_ms`.
    Creating,
    /// In use.
    #[default]
    Ready,
    /// Being deleted.
    Deleting,
}

/// A topic as the state store keeps it: the spec, its phase, and per partition the
/// retention floor (events below it are removed from crmbus's view; see the crate docs on
/// retention).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TopicRecord {
    #[serde(flatten)]
    pub spec: TopicSpec,
    #[serde(default, skip_serializing_if = "is_ready")]
    pub phase: Phase,
    /// When the phase began (ms since the epoch, the server's clock).
    #[serde(default)]
    pub since_ms: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub floors: Vec<u64>,
}

fn is_ready(p: &Phase) -> bool {
    *p == Phase::Ready
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl TopicRecord {
    pub fn floor(&self, partition: u32) -> u64 {
        self.floors.get(partition as usize).copied().unwrap_or(0)
    }

    fn encode(&self) -> Result<Vec<u8>, LogError> {
        serde_json::to_vec(self).map_err(|e| decode_err(&self.spec.name, e))
    }

    fn in_phase(&self, phase: Phase) -> TopicRecord {
        TopicRecord {
            phase,
            since_ms: now_ms(),
            ..self.clone()
        }
    }

    /// A `creating` record whose creator is presumed dead.
    fn abandoned(&self) -> bool {
        self.phase == Phase::Creating
            && now_ms().saturating_sub(self.since_ms) > ABANDONED.as_millis() as i64
    }
}

fn decode_err(topic: &str, e: serde_json::Error) -> LogError {
    LogError::Backend {
        message: format!("decoding the record of topic '{topic}': {e}"),
        source: None,
    }
}

/// The Kafka topic settings of a crmbus topic: its retention (`-1` keeps everything, as
/// crmbus does by default; Kafka's own default would delete after seven days) and the
/// broker's clock for timestamps.
fn topic_configs(spec: &TopicSpec) -> Vec<(&'static str, String)> {
    let ms = spec
        .retention
        .max_age
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1))
        .unwrap_or(-1);
    let bytes = spec
        .retention
        .max_bytes
        .map(|b| i64::try_from(b).unwrap_or(i64::MAX))
        .unwrap_or(-1);
    vec![
        ("retention.ms", ms.to_string()),
        ("retention.bytes", bytes.to_string()),
        ("message.timestamp.type", "LogAppendTime".to_string()),
    ]
}

impl Inner {
    fn admin_options(&self) -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(self.conn.opts.request_timeout))
            .operation_timeout(Some(self.conn.opts.request_timeout))
    }

    /// The record of `topic` in whatever phase, with its stored bytes (for conditional
    /// writes); `None` when there is none.
    async fn raw_record(&self, topic: &str) -> Result<Option<(TopicRecord, Vec<u8>)>, LogError> {
        match self.state.get(naming::TOPICS_NS, topic).await? {
            None => Ok(None),
            Some(b) => {
                let rec = serde_json::from_slice(&b).map_err(|e| decode_err(topic, e))?;
                Ok(Some((rec, b)))
            }
        }
    }

    /// The topic's record when it is ready; [`LogError::TopicNotFound`] otherwise.
    pub(crate) async fn record(&self, topic: &str) -> Result<TopicRecord, LogError> {
        if validate_topic_name(topic).is_err() {
            return Err(LogError::TopicNotFound(topic.to_string()));
        }
        match self.raw_record(topic).await? {
            Some((rec, _)) if rec.phase == Phase::Ready => Ok(rec),
            _ => Err(LogError::TopicNotFound(topic.to_string())),
        }
    }

    /// The record, checked to have `partition`.
    pub(super) async fn record_partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<TopicRecord, LogError> {
        let rec = self.record(topic).await?;
        if partition >= rec.spec.partitions {
            return Err(LogError::PartitionNotFound {
                topic: topic.to_string(),
                partition,
            });
        }
        Ok(rec)
    }

    /// Replaces the record whose stored bytes are `old` with `new`: false when someone
    /// changed or removed it meanwhile.
    async fn swap_record(&self, old: &[u8], new: &TopicRecord) -> Result<bool, LogError> {
        self.state
            .compare_and_swap(naming::TOPICS_NS, &new.spec.name, old, &new.encode()?)
            .await
    }

    /// Creates the Kafka topic of `spec`. `Ok(false)` when one of that name exists.
    async fn create_kafka_topic(&self, spec: &TopicSpec) -> Result<bool, LogError> {
        let name = self.kafka_topic(&spec.name);
        let configs = topic_configs(spec);
        let mut new = NewTopic::new(&name, spec.partitions as i32, TopicReplication::Fixed(-1));
        for (k, v) in &configs {
            new = new.set(k, v);
        }
        let results = self
            .conn
            .admin
            .create_topics([&new], &self.admin_options())
            .await
            .map_err(|e| kafka_err(&format!("creating Kafka topic {name}"), e))?;
        match results.into_iter().next() {
            Some(Ok(_)) => Ok(true),
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(false),
            Some(Err((_, code))) => Err(LogError::Backend {
                message: format!("Kafka refused to create topic {name}: {code}"),
                source: None,
            }),
            None => Err(LogError::Backend {
                message: format!("Kafka gave no answer for creating topic {name}"),
                source: None,
            }),
        }
    }

    async fn delete_kafka_topic(&self, topic: &str) -> Result<(), LogError> {
        let name = self.kafka_topic(topic);
        let results = self
            .conn
            .admin
            .delete_topics(&[&name], &self.admin_options())
            .await
            .map_err(|e| kafka_err(&format!("deleting Kafka topic {name}"), e))?;
        match results.into_iter().next() {
            Some(Ok(_)) | Some(Err((_, RDKafkaErrorCode::UnknownTopicOrPartition))) | None => {
                Ok(())
            }
            Some(Err((_, code))) => Err(LogError::Backend {
                message: format!("Kafka refused to delete topic {name}: {code}"),
                source: None,
            }),
        }
    }

    pub(super) async fn create_topic(&self, spec: TopicSpec) -> Result<TopicInfo, LogError> {
        spec.validate()?;
        if spec.retention.max_bytes == Some(0) {
            return Err(LogError::InvalidArgument(
                "retention max_bytes must be at least 1".into(),
            ));
        }
        let name = spec.name.clone();
        let claim = TopicRecord {
            spec,
            phase: Phase::Creating,
            since_ms: now_ms(),
            floors: Vec::new(),
        };
        // Claim the name: of two creators, one inserts the record. A record in the way
        // that is being deleted is finished first; one abandoned mid-creation is removed.
        let mut claimed = claim.encode()?;
        let mut tries = 0;
        loop {
            if self
                .state
                .insert_new(naming::TOPICS_NS, &name, &claimed)
                .await?
            {
                break;
            }
            tries += 1;
            let Some((existing, bytes)) = self.raw_record(&name).await? else {
                continue;
            };
            match existing.phase {
                Phase::Deleting if tries < 5 => self.finish_delete(&existing, &bytes).await?,
                Phase::Creating if existing.abandoned() && tries < 5 => {
                    self.abandon(&existing, &bytes).await?
                }
                _ => return Err(LogError::TopicExists(name)),
            }
            claimed = claim.in_phase(Phase::Creating).encode()?;
        }
        match self.build_topic(&claim, &claimed).await {
            Ok(rec) => {
                self.wait_for_partitions(&rec.spec).await?;
                self.info(&rec).await
            }
            Err(e) => {
                // Give the name back, unless someone took the claim over meanwhile.
                let _ = self
                    .state
                    .delete_if(naming::TOPICS_NS, &name, &claimed)
                    .await;
                Err(e)
            }
        }
    }

    /// The steps of a claimed creation: a clean slate for the name (group offsets and
    /// dedupe rows a crash left behind), the Kafka topic, then the record made ready.
    async fn build_topic(
        &self,
        claim: &TopicRecord,
        claimed: &[u8],
    ) -> Result<TopicRecord, LogError> {
        let name = &claim.spec.name;
        self.forget_offsets(name).await?;
        self.dedupe.forget_topic(name).await?;
        // A Kafka topic of that name may still be on its way out (Kafka deletes in the
        // background): wait for it.
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        while !self.create_kafka_topic(&claim.spec).await? {
            if started.elapsed() > DELETION_WAIT {
                return Err(LogError::Backend {
                    message: format!(
                        "a Kafka topic {} exists without a crmbus topic record (still being \
                         deleted, or made outside crmbus); delete it or use another name",
                        self.kafka_topic(name)
                    ),
                    source: None,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
        let ready = claim.in_phase(Phase::Ready);
        if !self.swap_record(claimed, &ready).await? {
            // Our claim was taken over as abandoned (we took longer than ABANDONED).
            return Err(LogError::Unavailable(format!(
                "creating topic '{name}' took too long and was abandoned; try again"
            )));
        }
        Ok(ready)
    }

    /// Removes a creation its creator abandoned: its Kafka topic (empty: nothing is
    /// appended to a topic that is not ready) and its record.
    async fn abandon(&self, rec: &TopicRecord, bytes: &[u8]) -> Result<(), LogError> {
        tracing::warn!(topic = %rec.spec.name, "removing a topic creation that was abandoned");
        self.delete_kafka_topic(&rec.spec.name).await?;
        self.state
            .delete_if(naming::TOPICS_NS, &rec.spec.name, bytes)
            .await?;
        Ok(())
    }

    /// The steps of a deletion, from a record already `deleting` (whose stored bytes are
    /// `bytes`): the Kafka topic, the group offsets and dedupe rows, then the record.
    async fn finish_delete(&self, rec: &TopicRecord, bytes: &[u8]) -> Result<(), LogError> {
        let name = &rec.spec.name;
        self.delete_kafka_topic(name).await?;
        self.forget_offsets(name).await?;
        self.dedupe.forget_topic(name).await?;
        self.state.delete_if(naming::TOPICS_NS, name, bytes).await?;
        self.seen_first.locked().retain(|(t, _), _| t != name);
        self.ends.locked().retain(|(t, _), _| t != name);
        Ok(())
    }

    /// Waits until the brokers' metadata shows every partition of a new topic (creation
    /// is asynchronous in Kafka: the first produce could otherwise fail).
    async fn wait_for_partitions(&self, spec: &TopicSpec) -> Result<(), LogError> {
        let name = self.kafka_topic(&spec.name);
        let want = spec.partitions as usize;
        self.conn
            .with_reader("waiting for a new topic", move |c, timeout| {
                let started = Instant::now();
                loop {
                    let md = c.fetch_metadata(Some(&name), timeout)?;
                    let ready = md.topics().iter().any(|t| {
                        t.name() == name && t.error().is_none() && t.partitions().len() == want
                    });
                    if ready {
                        return Ok(());
                    }
                    if started.elapsed() > timeout {
                        tracing::warn!(topic = %name, "the brokers' metadata does not show every partition of the new topic yet");
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
            .await
    }

    pub(super) async fn delete_topic(&self, name: &str) -> Result<(), LogError> {
        if validate_topic_name(name).is_err() {
            return Err(LogError::TopicNotFound(name.to_string()));
        }
        // The name goes first: from here the topic does not exist for anyone. The record
        // may change under us (its floors move): read it again and retry.
        for _ in 0..5 {
            let Some((rec, bytes)) = self.raw_record(name).await? else {
                return Err(LogError::TopicNotFound(name.to_string()));
            };
            if rec.phase != Phase::Ready {
                return Err(LogError::TopicNotFound(name.to_string()));
            }
            let deleting = rec.in_phase(Phase::Deleting);
            if self.swap_record(&bytes, &deleting).await? {
                return self.finish_delete(&deleting, &deleting.encode()?).await;
            }
        }
        Err(LogError::Unavailable(format!(
            "topic '{name}' kept changing while being deleted; try again"
        )))
    }

    pub(super) async fn list_topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        let mut out = Vec::new();
        for (name, value) in self.state.scan(naming::TOPICS_NS, "").await? {
            let rec: TopicRecord =
                serde_json::from_slice(&value).map_err(|e| decode_err(&name, e))?;
            if rec.phase != Phase::Ready {
                continue;
            }
            match self.info(&rec).await {
                Ok(info) => out.push(info),
                // Deleted while we listed.
                Err(LogError::TopicNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        Ok(out)
    }

    pub(super) async fn describe_topic(&self, name: &str) -> Result<TopicInfo, LogError> {
        let rec = self.record(name).await?;
        self.info(&rec).await
    }

    /// Each partition's (first, end) offsets, as the brokers answer now.
    pub(super) async fn watermarks(
        &self,
        topic: &str,
        partitions: u32,
    ) -> Result<Vec<(u64, u64)>, LogError> {
        let name = self.kafka_topic(topic);
        let topic_owned = topic.to_string();
        let marks = self
            .conn
            .with_reader_log("reading watermarks", move |c, timeout| {
                let mut out = Vec::with_capacity(partitions as usize);
                for p in 0..partitions {
                    match super::read::watermarks(c, timeout, &name, p) {
                        Ok(marks) => out.push(marks),
                        Err(e)
                            if e.rdkafka_error_code()
                                == Some(RDKafkaErrorCode::UnknownTopicOrPartition) =>
                        {
                            return Err(LogError::TopicNotFound(topic_owned.clone()));
                        }
                        Err(e) => {
                            return Err(kafka_err(&format!("reading the offsets of {name}/{p}"), e))
                        }
                    }
                }
                Ok(out)
            })
            .await?;
        for (p, &(_, end)) in marks.iter().enumerate() {
            self.note_end(topic, p as u32, end);
        }
        Ok(marks)
    }

    async fn info(&self, rec: &TopicRecord) -> Result<TopicInfo, LogError> {
        let marks = self.watermarks(&rec.spec.name, rec.spec.partitions).await?;
        let partition_info = marks
            .iter()
            .enumerate()
            .map(|(p, &(lo, hi))| {
                let first = lo.max(rec.floor(p as u32)).min(hi);
                PartitionInfo {
                    partition: p as u32,
                    first_offset: first,
                    next_offset: hi,
                    corrupt: Vec::new(),
                }
            })
            .collect();
        Ok(TopicInfo {
            spec: rec.spec.clone(),
            partition_info,
        })
    }

    /// Repairs what a crash left between the steps of creating or deleting a topic (see
    /// the module docs): deletions are finished, abandoned creations removed, a ready
    /// topic whose Kafka topic is missing gets it again; Kafka topics of the namespace
    /// without a record are reported, never deleted.
    pub(super) async fn recover(&self) -> Result<(), LogError> {
        let prefix = self.prefix().to_string();
        let kafka_topics: Vec<String> = self
            .conn
            .with_reader("listing Kafka topics", move |c, timeout| {
                let md = c.fetch_metadata(None, timeout)?;
                Ok(md
                    .topics()
                    .iter()
                    .filter_map(|t| naming::crmbus_topic(&prefix, t.name()).map(str::to_string))
                    .collect())
            })
            .await?;
        let records = self.state.scan(naming::TOPICS_NS, "").await?;
        for (name, bytes) in &records {
            let rec: TopicRecord =
                serde_json::from_slice(bytes).map_err(|e| decode_err(name, e))?;
            match rec.phase {
                Phase::Deleting => {
                    tracing::warn!(topic = %name, "finishing a topic deletion that was cut short");
                    self.finish_delete(&rec, bytes).await?;
                }
                Phase::Creating if rec.abandoned() => self.abandon(&rec, bytes).await?,
                Phase::Creating => {}
                Phase::Ready => {
                    if !kafka_topics.iter().any(|t| t == name) {
                        tracing::warn!(topic = %name, "creating the missing Kafka topic of a crmbus topic");
                        self.create_kafka_topic(&rec.spec).await?;
                    }
                }
            }
        }
        for t in &kafka_topics {
            if !records.iter().any(|(name, _)| name == t) {
                tracing::warn!(
                    kafka_topic = %self.kafka_topic(t),
                    "a Kafka topic of this namespace has no crmbus topic record; it is left \
                     alone (delete it by hand if nothing else uses it)"
                );
            }
        }
        Ok(())
    }

    /// Applies each topic's retention to crmbus's view: raises the partitions' floors past
    /// what `max_age` and `max_bytes` no longer keep, then reports how many events left the
    /// view since this log last looked (floors raised here or elsewhere, and what the
    /// brokers removed themselves). Also prunes expired dedupe rows.
    pub(super) async fn enforce_retention(&self) -> Result<u64, LogError> {
        let mut removed = 0u64;
        for (name, value) in self.state.scan(naming::TOPICS_NS, "").await? {
            let mut rec: TopicRecord =
                serde_json::from_slice(&value).map_err(|e| decode_err(&name, e))?;
            if rec.phase != Phase::Ready {
                continue;
            }
            let marks = match self.watermarks(&name, rec.spec.partitions).await {
                Ok(m) => m,
                Err(LogError::TopicNotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let mut raised = false;
            let mut floors = Vec::with_capacity(marks.len());
            for (p, &(lo, hi)) in marks.iter().enumerate() {
                let p = p as u32;
                let old = rec.floor(p).max(lo).min(hi);
                let mut floor = old;
                let cut = rec.spec.retention.max_age.and_then(|age| {
                    chrono::Duration::from_std(age)
                        .ok()
                        .and_then(|d| chrono::Utc::now().checked_sub_signed(d))
                });
                if let Some(cut) = cut {
                    floor = floor.max(self.time_search(&name, p, old, hi, cut).await?);
                }
                if let Some(max_bytes) = rec.spec.retention.max_bytes {
                    floor = floor.max(self.bytes_floor(&name, p, old, hi, max_bytes).await?);
                }
                raised |= floor > rec.floor(p);
                floors.push(floor.max(rec.floor(p)));
            }
            if raised {
                rec.floors = floors.clone();
                // Only over the record as read: a topic deleted or changed meanwhile is
                // left alone (the next round looks again).
                if !self.swap_record(&value, &rec).await? {
                    continue;
                }
            }
            let mut seen = self.seen_first.locked();
            for (p, f) in floors.iter().enumerate() {
                let last = seen.entry((name.clone(), p as u32)).or_insert(0);
                if *f > *last {
                    removed += *f - *last;
                    *last = *f;
                }
            }
        }
        self.dedupe.prune().await?;
        Ok(removed)
    }

    /// Flushes the producer (on close).
    pub(super) async fn flush(&self) -> Result<(), LogError> {
        use rdkafka::producer::Producer;
        let producer = self.conn.producer.clone();
        let timeout = self.conn.opts.request_timeout;
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| crate::conn::join_err("flushing", e))?
            .map_err(|e| kafka_err("flushing the producer", e))
    }

    /// Removes every group offset of `topic`.
    async fn forget_offsets(&self, topic: &str) -> Result<(), LogError> {
        let ns = naming::offsets_ns(topic);
        let ops: Vec<StateOp> = self
            .state
            .scan(&ns, "")
            .await?
            .into_iter()
            .map(|(key, _)| StateOp::Delete {
                namespace: ns.clone(),
                key,
            })
            .collect();
        self.state.apply(ops).await
    }
}

/// Deletes every Kafka topic of `conn`'s namespace: how many.
pub(crate) async fn purge_topics(conn: &crate::conn::Conn) -> Result<usize, LogError> {
    let prefix = conn.prefix.clone();
    let names: Vec<String> = conn
        .with_reader("listing Kafka topics", move |c, timeout| {
            let md = c.fetch_metadata(None, timeout)?;
            Ok(md
                .topics()
                .iter()
                .filter(|t| naming::crmbus_topic(&prefix, t.name()).is_some())
                .map(|t| t.name().to_string())
                .collect())
        })
        .await?;
    if names.is_empty() {
        return Ok(0);
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let opts = AdminOptions::new().request_timeout(Some(conn.opts.request_timeout));
    let results = conn
        .admin
        .delete_topics(&refs, &opts)
        .await
        .map_err(|e| kafka_err("deleting the namespace's topics", e))?;
    Ok(results.iter().filter(|r| r.is_ok()).count())
}

/// One line on the brokers behind `conn`: how many, and what an acknowledged append means
/// there.
pub(crate) async fn describe_brokers(conn: &crate::conn::Conn) -> String {
    let brokers = conn
        .with_reader("reading broker metadata", |c, timeout| {
            let md = c.fetch_metadata(None, timeout)?;
            Ok(md
                .brokers()
                .iter()
                .map(|b| format!("{}:{}", b.host(), b.port()))
                .collect::<Vec<_>>())
        })
        .await;
    match brokers {
        Ok(b) => format!(
            "Kafka protocol, {} broker(s) ({}); idempotent producer, acks=all (every in-sync \
             replica has the record; brokers write to the page cache and fsync only per their \
             flush.messages/flush.ms, by default never before the ack)",
            b.len(),
            b.join(", ")
        ),
        Err(e) => format!("Kafka at {}: {e}", conn.bootstrap),
    }
}
