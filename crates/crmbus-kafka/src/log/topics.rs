//! Topic administration: topic records in the state store, one Kafka topic per crmbus
//! topic, the repair at open of what a crash between those steps left, and retention.

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

/// A topic as the state store keeps it: the spec, and per partition the retention floor
/// (events below it are removed from crmbus's view; see the crate docs on retention).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TopicRecord {
    #[serde(flatten)]
    pub spec: TopicSpec,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub floors: Vec<u64>,
}

impl TopicRecord {
    pub fn floor(&self, partition: u32) -> u64 {
        self.floors.get(partition as usize).copied().unwrap_or(0)
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

    /// The topic's record, [`LogError::TopicNotFound`] when there is none.
    pub(crate) async fn record(&self, topic: &str) -> Result<TopicRecord, LogError> {
        if validate_topic_name(topic).is_err() {
            return Err(LogError::TopicNotFound(topic.to_string()));
        }
        match self.state.get(naming::TOPICS_NS, topic).await? {
            None => Err(LogError::TopicNotFound(topic.to_string())),
            Some(b) => serde_json::from_slice(&b).map_err(|e| decode_err(topic, e)),
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

    async fn put_record(&self, rec: &TopicRecord) -> Result<(), LogError> {
        let value = serde_json::to_vec(rec).map_err(|e| decode_err(&rec.spec.name, e))?;
        self.state
            .put(naming::TOPICS_NS, &rec.spec.name, value)
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
        if let Some(r) = spec.retention.max_bytes {
            if r == 0 {
                return Err(LogError::InvalidArgument(
                    "retention max_bytes must be at least 1".into(),
                ));
            }
        }
        if self
            .state
            .get(naming::TOPICS_NS, &spec.name)
            .await?
            .is_some()
        {
            return Err(LogError::TopicExists(spec.name.clone()));
        }
        // The Kafka topic's creation is the claim on the name: of two creators, one wins.
        // A Kafka topic without a record is one being deleted (or another creator's, a
        // moment from writing its record): wait for either.
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            if self.create_kafka_topic(&spec).await? {
                break;
            }
            if self
                .state
                .get(naming::TOPICS_NS, &spec.name)
                .await?
                .is_some()
                || started.elapsed() > DELETION_WAIT
            {
                return Err(LogError::TopicExists(spec.name.clone()));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
        let rec = TopicRecord {
            spec,
            floors: Vec::new(),
        };
        self.put_record(&rec).await?;
        self.wait_for_partitions(&rec.spec).await?;
        self.info(&rec).await
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
                    if ready || started.elapsed() > timeout {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
            .await
    }

    pub(super) async fn delete_topic(&self, name: &str) -> Result<(), LogError> {
        self.record(name).await?;
        // The name goes first: from here the topic does not exist for anyone.
        self.state.delete(naming::TOPICS_NS, name).await?;
        self.delete_kafka_topic(name).await?;
        self.forget_offsets(name).await?;
        self.dedupe.forget_topic(name).await?;
        self.seen_first.locked().retain(|(t, _), _| t != name);
        self.ends.locked().retain(|(t, _), _| t != name);
        Ok(())
    }

    pub(super) async fn list_topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        let mut out = Vec::new();
        for (name, value) in self.state.scan(naming::TOPICS_NS, "").await? {
            let rec: TopicRecord =
                serde_json::from_slice(&value).map_err(|e| decode_err(&name, e))?;
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

    /// Repairs what a crash left between the steps of creating or deleting a topic: a
    /// Kafka topic of this namespace without a record is deleted (its creation or its
    /// deletion was cut short); a record whose Kafka topic is missing gets it again.
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
        for t in &kafka_topics {
            if !records.iter().any(|(name, _)| name == t) {
                tracing::warn!(topic = %t, "removing a Kafka topic of this namespace that has no crmbus topic record (a creation or deletion was cut short)");
                self.delete_kafka_topic(t).await?;
            }
        }
        for (name, value) in &records {
            if !kafka_topics.iter().any(|t| t == name) {
                let rec: TopicRecord =
                    serde_json::from_slice(value).map_err(|e| decode_err(name, e))?;
                tracing::warn!(topic = %name, "creating the missing Kafka topic of a crmbus topic");
                self.create_kafka_topic(&rec.spec).await?;
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
                if let Some(age) = rec.spec.retention.max_age {
                    let cut = chrono::Utc::now()
                        - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
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
                self.put_record(&rec).await?;
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
