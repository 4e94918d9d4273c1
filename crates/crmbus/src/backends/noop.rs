//! [`NoopLog`]: a log that accepts everything and stores nothing.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::LogError;
use crate::event::Event;
use crate::log::{EventLog, PartitionInfo, Receipt, Retention, StoredEvent, TopicInfo, TopicSpec};

/// Accepts every append (valid events, any topic) and stores nothing: reads are empty,
/// offsets are always 0, group offsets are not kept. For development without storage, as
/// the seed's `NoOpEventBackend`.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopLog;

pub(crate) fn empty_info(name: &str, partitions: u32) -> TopicInfo {
    TopicInfo {
        name: name.to_string(),
        partitions,
        retention: Retention::default(),
        partition_info: (0..partitions)
            .map(|p| PartitionInfo {
                partition: p,
                first_offset: 0,
                next_offset: 0,
            })
            .collect(),
    }
}

pub(crate) fn unstored_receipts(topics: &[String], events: &[Event]) -> Vec<Receipt> {
    topics
        .iter()
        .flat_map(|t| {
            events.iter().map(move |e| Receipt {
                id: e.id.clone(),
                topic: t.clone(),
                partition: 0,
                offset: 0,
                duplicate: false,
            })
        })
        .collect()
}

pub(crate) fn check_append(topics: &[String], events: &[Event]) -> Result<(), LogError> {
    if topics.is_empty() {
        return Err(LogError::InvalidArgument("no topic given".into()));
    }
    for t in topics {
        crate::log::validate_topic_name(t)?;
    }
    for e in events {
        e.validate()?;
    }
    Ok(())
}

#[async_trait]
impl EventLog for NoopLog {
    fn backend_name(&self) -> &'static str {
        "noop"
    }

    async fn create_topic(&self, spec: TopicSpec) -> Result<TopicInfo, LogError> {
        spec.validate()?;
        Ok(empty_info(&spec.name, spec.partitions))
    }

    async fn delete_topic(&self, _name: &str) -> Result<(), LogError> {
        Ok(())
    }

    async fn list_topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        Ok(Vec::new())
    }

    async fn describe_topic(&self, name: &str) -> Result<TopicInfo, LogError> {
        crate::log::validate_topic_name(name)?;
        Ok(empty_info(name, 1))
    }

    async fn append(&self, topics: &[String], events: &[Event]) -> Result<Vec<Receipt>, LogError> {
        check_append(topics, events)?;
        Ok(unstored_receipts(topics, events))
    }

    async fn read(
        &self,
        _topic: &str,
        _partition: u32,
        _from: u64,
        _max: usize,
    ) -> Result<Vec<StoredEvent>, LogError> {
        Ok(Vec::new())
    }

    async fn offset_for_time(
        &self,
        _topic: &str,
        _partition: u32,
        _time: DateTime<Utc>,
    ) -> Result<u64, LogError> {
        Ok(0)
    }

    async fn commit_offset(
        &self,
        _group: &str,
        _topic: &str,
        _partition: u32,
        _offset: u64,
    ) -> Result<(), LogError> {
        Ok(())
    }

    async fn committed_offset(
        &self,
        _group: &str,
        _topic: &str,
        _partition: u32,
    ) -> Result<Option<u64>, LogError> {
        Ok(None)
    }

    async fn enforce_retention(&self) -> Result<u64, LogError> {
        Ok(0)
    }

    async fn close(&self) -> Result<(), LogError> {
        Ok(())
    }
}
