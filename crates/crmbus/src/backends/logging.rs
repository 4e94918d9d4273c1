//! [`LoggingLog`]: one `tracing` line per appended event, nothing stored.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::noop::{check_append, empty_info, unstored_receipts};
use crate::error::LogError;
use crate::event::{Event, EventData};
use crate::log::{EventLog, Receipt, StoredEvent, TopicInfo, TopicSpec};

/// Logs every appended event at INFO on the `crmbus::events` target — type, topics,
/// subject, id and data size — and stores nothing, as the seed's `LoggingEventBackend`.
/// Reads are empty.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoggingLog;

fn data_bytes(e: &Event) -> usize {
    match &e.data {
        Some(EventData::Json(v)) => serde_json::to_vec(v).map(|b| b.len()).unwrap_or(0),
        Some(EventData::Binary(b)) => b.len(),
        None => 0,
    }
}

#[async_trait]
impl EventLog for LoggingLog {
    fn backend_name(&self) -> &'static str {
        "logging"
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
        let joined = topics.join(",");
        for e in events {
            tracing::info!(
                target: "crmbus::events",
                event_type = %e.ty,
                topics = %joined,
                subject = e.subject.as_deref().unwrap_or("-"),
                id = %e.id,
                data_bytes = data_bytes(e),
                "event"
            );
        }
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
