//! Topic administration: specs in the topics bucket, one stream per partition, the repair
//! at open of what a crash between those steps left, and retention as the server applied it.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use crmbus::sync::LockExt;
use crmbus::{validate_topic_name, LogError, PartitionInfo, TopicInfo, TopicSpec};
use futures_util::{StreamExt, TryStreamExt};

use super::Inner;
use crate::conn::{backend, bucket_keys, riding_over_store_races};
use crate::naming;

/// How many stream requests (create, delete, info) run at once for a many-partition topic.
const ADMIN_CONCURRENCY: usize = 16;

fn stream_not_found(e: &async_nats::jetstream::Error) -> bool {
    e.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND
}

impl Inner {
    pub(super) async fn spec(&self, topic: &str) -> Result<TopicSpec, LogError> {
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

    pub(super) async fn spec_partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<TopicSpec, LogError> {
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
        // A deleted topic's key is listed too; its spec then reads as not found.
        let keys = bucket_keys(&self.topics, "listing topics").await?;
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
                riding_over_store_races(&format!("creating stream {name}"), || {
                    self.conn.js.create_stream(config.clone())
                })
                .await
                .map(|_| ())
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
    pub(super) async fn recover(&self) -> Result<(), LogError> {
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
                    riding_over_store_races(&format!("creating stream {name}"), || {
                        self.conn.js.create_stream(config.clone())
                    })
                    .await?;
                }
            }
        }
        Ok(())
    }

    pub(super) async fn stream(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<stream::Stream, LogError> {
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

    pub(super) async fn state(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<stream::State, LogError> {
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
            spec: spec.clone(),
            partition_info,
        })
    }

    pub(super) async fn create_topic(&self, spec: TopicSpec) -> Result<TopicInfo, LogError> {
        self.check_open()?;
        spec.validate()?;
        let json = serde_json::to_vec(&spec).map_err(|e| backend("encoding a topic spec", e))?;
        match self
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
        if let Err(e) = self.create_streams(&spec).await {
            let _ = self.delete_streams(&spec.name, spec.partitions).await;
            let _ = self.topics.purge(naming::topic_key(&spec.name)).await;
            return Err(e);
        }
        Ok(TopicInfo {
            spec: spec.clone(),
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

    pub(super) async fn delete_topic(&self, name: &str) -> Result<(), LogError> {
        self.check_open()?;
        let spec = self.spec(name).await?;
        self.topics
            .purge(naming::topic_key(name))
            .await
            .map_err(|e| backend(&format!("unregistering topic '{name}'"), e))?;
        self.delete_streams(name, spec.partitions).await?;
        let prefix = format!("{}.", naming::key_part(name));
        // Purging a key purged before does no harm.
        let keys = bucket_keys(&self.offsets, "listing group offsets").await?;
        for k in keys.into_iter().filter(|k| k.starts_with(&prefix)) {
            self.offsets
                .purge(&k)
                .await
                .map_err(|e| backend("removing a group offset", e))?;
        }
        self.seen_first
            .locked()
            .retain(|s, _| !(0..spec.partitions).any(|p| *s == self.stream_name(name, p)));
        Ok(())
    }

    pub(super) async fn list_topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        let mut out = Vec::new();
        for name in self.topic_names().await? {
            match self.spec(&name).await {
                Ok(spec) => out.push(self.info(&spec).await?),
                Err(LogError::TopicNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub(super) async fn describe_topic(&self, name: &str) -> Result<TopicInfo, LogError> {
        let spec = self.spec(name).await?;
        self.info(&spec).await
    }

    pub(super) async fn enforce_retention(&self) -> Result<u64, LogError> {
        self.check_open()?;
        let mut removed = 0;
        for t in self.list_topics().await? {
            for p in &t.partition_info {
                let name = self.stream_name(&t.spec.name, p.partition);
                let mut seen = self.seen_first.locked();
                let before = seen.insert(name, p.first_offset).unwrap_or(0);
                removed += p.first_offset.saturating_sub(before);
            }
        }
        Ok(removed)
    }
}

pub(super) fn partition_info(partition: u32, state: &stream::State) -> PartitionInfo {
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
