//! [`NoopLog`] and [`LoggingLog`]: logs that accept everything and store nothing; the
//! logging one writes one `tracing` line per event — never the event's data, unless told
//! which of its fields to show ([`DiscardingLog::showing_data_fields`]; every other field
//! is written as `[redacted]`).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::LogError;
use crate::event::{Event, EventData};
use crate::log::{EventLog, PartitionInfo, Receipt, StoredEvent, TopicInfo, TopicSpec};

/// Accepts every append (valid events, any topic) and stores nothing: reads are empty,
/// offsets are always 0, group offsets are not kept. With `LOG = true` it also logs each
/// event; use it through [`NoopLog`] and [`LoggingLog`].
#[derive(Debug, Default, Clone)]
pub struct DiscardingLog<const LOG: bool> {
    /// The top-level fields of an event's JSON data its log line shows; empty: no data.
    data_fields: Arc<[String]>,
}

impl<const LOG: bool> DiscardingLog<LOG> {
    /// The log, writing the values of these top-level fields of each event's JSON `data`
    /// in its line (`data = {"deal_id":"d-1","email":"[redacted]"}`); every other field
    /// shows as `[redacted]`, and data that is not a JSON object shows as `[redacted]`.
    /// With no fields (the default) no data is written at all.
    pub fn showing_data_fields(fields: Vec<String>) -> Self {
        DiscardingLog {
            data_fields: fields.into(),
        }
    }
}

/// What an event's log line shows of its data: the allowed fields' values, every other
/// field `[redacted]`.
fn shown_data(e: &Event, fields: &[String]) -> String {
    const REDACTED: &str = "[redacted]";
    match e.data_json() {
        Some(serde_json::Value::Object(map)) => {
            let shown: serde_json::Map<String, serde_json::Value> = map
                .iter()
                .map(|(k, v)| {
                    let v = if fields.iter().any(|f| f == k) {
                        v.clone()
                    } else {
                        serde_json::Value::String(REDACTED.to_string())
                    };
                    (k.clone(), v)
                })
                .collect();
            serde_json::Value::Object(shown).to_string()
        }
        Some(_) => REDACTED.to_string(),
        None if e.data.is_some() => REDACTED.to_string(),
        None => "-".to_string(),
    }
}

/// Accepts and forgets, for development without storage, as the seed's `NoOpEventBackend`.
pub type NoopLog = DiscardingLog<false>;

/// Logs every appended event at INFO on the `crmbus::events` target — type, topics,
/// subject, id and data size — and stores nothing, as the seed's `LoggingEventBackend`.
pub type LoggingLog = DiscardingLog<true>;

fn data_bytes(e: &Event) -> usize {
    match &e.data {
        Some(EventData::Json(v)) => serde_json::to_vec(v).map(|b| b.len()).unwrap_or(0),
        Some(EventData::JsonText(t)) => t.as_str().len(),
        Some(EventData::Binary(b)) => b.len(),
        None => 0,
    }
}

fn log_events(topics: &[String], events: &[Event], data_fields: &[String]) {
    let joined = topics.join(",");
    for e in events {
        // Absent (not even the field) unless fields are listed.
        let data = (!data_fields.is_empty()).then(|| shown_data(e, data_fields));
        tracing::info!(
            target: "crmbus::events",
            event_type = %e.ty,
            topics = %joined,
            subject = e.subject.as_deref().unwrap_or("-"),
            id = %e.id,
            data_bytes = data_bytes(e),
            data = data.as_deref(),
            "event"
        );
    }
}

fn empty_info(name: &str, partitions: u32) -> TopicInfo {
    TopicInfo {
        spec: TopicSpec::new(name, partitions),
        partition_info: (0..partitions)
            .map(|p| PartitionInfo {
                partition: p,
                first_offset: 0,
                next_offset: 0,
                corrupt: Vec::new(),
            })
            .collect(),
    }
}

fn unstored_receipts(topics: &[String], events: &[Event]) -> Vec<Receipt> {
    topics
        .iter()
        .flat_map(|t| {
            events.iter().map(move |e| Receipt {
                id: e.id.clone(),
                topic: t.clone(),
                partition: 0,
                offset: 0,
                duplicate: false,
                version: None,
            })
        })
        .collect()
}

fn check_append(topics: &[String], events: &[Event]) -> Result<(), LogError> {
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
impl<const LOG: bool> EventLog for DiscardingLog<LOG> {
    fn backend_name(&self) -> &'static str {
        if LOG {
            "logging"
        } else {
            "noop"
        }
    }

    async fn create_topic(&self, spec: TopicSpec) -> Result<TopicInfo, LogError> {
        spec.validate()?;
        let mut info = empty_info(&spec.name, spec.partitions);
        info.spec.require_schemas = spec.require_schemas;
        Ok(info)
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
        if LOG {
            log_events(topics, events, &self.data_fields);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_data(data: serde_json::Value) -> Event {
        Event::new("deal.won", data)
    }

    #[test]
    fn only_the_listed_fields_of_data_are_shown() {
        let e = with_data(serde_json::json!({"deal_id": "d-1", "email": "a@b.c", "amount": 10}));
        let fields = vec!["deal_id".to_string(), "amount".to_string()];
        let shown: serde_json::Value =
            serde_json::from_str(&shown_data(&e, &fields)).expect("json");
        assert_eq!(
            shown,
            serde_json::json!({"deal_id": "d-1", "email": "[redacted]", "amount": 10})
        );
        // Not an object: nothing of it is shown.
        let list = with_data(serde_json::json!(["a@b.c"]));
        assert_eq!(shown_data(&list, &fields), "[redacted]");
        let binary = Event::new("file.added", serde_json::Value::Null)
            .binary_data(b"secret".to_vec(), "application/octet-stream");
        assert_eq!(shown_data(&binary, &fields), "[redacted]");
    }
}
