//! Where reading starts, one type for every reader: a subscription's start
//! (a stored [`crate::delivery::StartAt`] converts into it), a seek ([`crate::delivery::seek_group`])
//! and a live tail ([`crate::tail::Tailer`]). [`Position::offset_in`] is the one place a
//! position becomes an offset.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::error::LogError;
use crate::log::{EventLog, PartitionInfo, TopicInfo};

/// A position in every partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// The oldest event each partition keeps.
    Earliest,
    /// After the newest event: only events appended from now on.
    Latest,
    /// The first event of each partition appended at or after this time.
    Time(DateTime<Utc>),
    /// These offsets (partition → next offset to read); the reader keeps its own position
    /// in partitions not listed.
    Offsets(BTreeMap<u32, u64>),
}

impl Position {
    /// `earliest`, `latest`, or an RFC 3339 time; the error says which of these it is not.
    pub fn parse(text: &str) -> Result<Position, String> {
        match text {
            "earliest" => Ok(Position::Earliest),
            "latest" => Ok(Position::Latest),
            t => DateTime::parse_from_rfc3339(t)
                .map(|t| Position::Time(t.with_timezone(&Utc)))
                .map_err(|e| format!("'{t}' is not earliest, latest or an RFC 3339 time ({e})")),
        }
    }

    /// The offset this position names in partition `p` of `topic`; `None` for
    /// [`Position::Offsets`] not listing it. A listed offset below the oldest kept reads
    /// from the oldest; one past the end is [`LogError::OffsetOutOfRange`].
    pub async fn offset_in(
        &self,
        log: &dyn EventLog,
        topic: &str,
        p: &PartitionInfo,
    ) -> Result<Option<u64>, LogError> {
        Ok(Some(match self {
            Position::Earliest => p.first_offset,
            Position::Latest => p.next_offset,
            Position::Time(t) => log.offset_for_time(topic, p.partition, *t).await?,
            Position::Offsets(offsets) => match offsets.get(&p.partition) {
                None => return Ok(None),
                Some(&o) if o > p.next_offset => {
                    return Err(LogError::OffsetOutOfRange(format!(
                        "offset {o} is past the end of partition {} (next offset {})",
                        p.partition, p.next_offset
                    )))
                }
                Some(&o) => o.max(p.first_offset),
            },
        }))
    }

    /// [`Position::offset_in`] for every partition of `info`, in partition order, after
    /// checking that every partition [`Position::Offsets`] names exists.
    pub async fn resolve(
        &self,
        log: &dyn EventLog,
        info: &TopicInfo,
    ) -> Result<Vec<Option<u64>>, LogError> {
        if let Position::Offsets(offsets) = self {
            if let Some(&p) = offsets.keys().find(|p| **p >= info.spec.partitions) {
                return Err(LogError::PartitionNotFound {
                    topic: info.spec.name.clone(),
                    partition: p,
                });
            }
        }
        let mut out = Vec::with_capacity(info.partition_info.len());
        for p in &info.partition_info {
            out.push(self.offset_in(log, &info.spec.name, p).await?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, MemoryLog, TopicSpec};

    #[tokio::test]
    async fn each_position_names_its_offsets() {
        let log = MemoryLog::new();
        log.create_topic(TopicSpec::new("t", 2))
            .await
            .expect("topic");
        let events: Vec<Event> = (0..4)
            .map(|i| Event::new("x", serde_json::json!({})).subject(format!("k{i}")))
            .collect();
        log.append(&["t".to_string()], &events)
            .await
            .expect("append");
        let info = log.describe_topic("t").await.expect("describe");
        let ends: Vec<Option<u64>> = info
            .partition_info
            .iter()
            .map(|p| Some(p.next_offset))
            .collect();
        assert_eq!(
            Position::Earliest.resolve(&log, &info).await.expect("e"),
            [Some(0), Some(0)]
        );
        assert_eq!(
            Position::Latest.resolve(&log, &info).await.expect("l"),
            ends
        );
        let past = Position::Time(Utc::now() + chrono::Duration::hours(1));
        assert_eq!(past.resolve(&log, &info).await.expect("t"), ends);
        let one = Position::Offsets(BTreeMap::from([(1, 0)]));
        assert_eq!(one.resolve(&log, &info).await.expect("o"), [None, Some(0)]);
        let beyond = Position::Offsets(BTreeMap::from([(0, 99)]));
        assert!(matches!(
            beyond.resolve(&log, &info).await,
            Err(LogError::OffsetOutOfRange(_))
        ));
        let missing = Position::Offsets(BTreeMap::from([(2, 0)]));
        assert!(matches!(
            missing.resolve(&log, &info).await,
            Err(LogError::PartitionNotFound { partition: 2, .. })
        ));
    }

    #[test]
    fn positions_parse_from_their_names_and_times() {
        assert_eq!(Position::parse("earliest"), Ok(Position::Earliest));
        assert_eq!(Position::parse("latest"), Ok(Position::Latest));
        assert!(matches!(
            Position::parse("2026-01-02T03:04:05Z"),
            Ok(Position::Time(_))
        ));
        assert!(Position::parse("yesterday")
            .unwrap_err()
            .contains("yesterday"));
    }
}
