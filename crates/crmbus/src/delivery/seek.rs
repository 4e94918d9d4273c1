//! Replay: moving a consumer group's cursor to the earliest or latest event, to a point in
//! time, or to given offsets. Events are never re-published to replay them.

use super::group_state::{GroupState, StateKind};
use crate::error::LogError;
use crate::log::EventLog;
use crate::position::Position;
use crate::state::StateStore;

/// Where [`seek_group`] moves a group: a [`Position`] (partitions an
/// [`Position::Offsets`] does not list stay where they are).
pub type SeekTo = Position;

/// Moves `group`'s cursor on `topic` and returns the new committed offset of each
/// partition. The group's retry schedule and done markers describe positions of the old
/// cursor, so they are removed; its dead letters stay. Call it while no engine runs for the
/// group (the server stops the subscription, seeks, and starts it again).
pub async fn seek_group(
    log: &dyn EventLog,
    state: &dyn StateStore,
    topic: &str,
    group: &str,
    to: &SeekTo,
) -> Result<Vec<u64>, LogError> {
    seek_group_fenced(log, state, topic, group, to, &[]).await
}

/// [`seek_group`] with every write fenced by `fences` (servers sharing a backend: the
/// leases of every partition of the group, held by the server that seeks).
pub async fn seek_group_fenced(
    log: &dyn EventLog,
    state: &dyn StateStore,
    topic: &str,
    group: &str,
    to: &SeekTo,
    fences: &[crate::cluster::Fence],
) -> Result<Vec<u64>, LogError> {
    let info = log.describe_topic(topic).await?;
    let targets = to.resolve(log, &info).await?;
    let mut positions = Vec::with_capacity(info.partition_info.len());
    for (p, target) in info.partition_info.iter().zip(targets) {
        let target = match target {
            Some(t) => t,
            None => log
                .committed_offset(group, topic, p.partition)
                .await?
                .unwrap_or(p.first_offset),
        };
        positions.push((p.partition, target));
    }
    let ops = GroupState::new(topic, group)
        .purge_ops(
            state,
            &[StateKind::Retry, StateKind::Done, StateKind::Dispatched],
        )
        .await?;
    if !ops.is_empty() {
        state.apply_fenced(fences, ops).await?;
    }
    for (partition, offset) in &positions {
        log.commit_offset_fenced(fences, group, topic, *partition, *offset)
            .await?;
    }
    Ok(positions.into_iter().map(|(_, o)| o).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::log::TopicSpec;
    use crate::memory::MemoryLog;
    use crate::state::MemoryStateStore;
    use chrono::Utc;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[tokio::test]
    async fn seek_moves_every_partition_and_forgets_retry_state() {
        let log = MemoryLog::new();
        let state = MemoryStateStore::new();
        log.create_topic(TopicSpec::new("deals", 2))
            .await
            .expect("create");
        let events: Vec<Event> = (0..20)
            .map(|i| Event::new("deal.won", json!({"n": i})).subject(format!("deal-{i}")))
            .collect();
        log.append(&["deals".to_string()], &events)
            .await
            .expect("append");
        let info = log.describe_topic("deals").await.expect("describe");
        let ns = GroupState::new("deals", "g").namespace(StateKind::Retry);
        state
            .put(&ns, "0000000000/00000000000000000001", b"{}".to_vec())
            .await
            .expect("put");

        let latest = seek_group(&log, &state, "deals", "g", &SeekTo::Latest)
            .await
            .expect("seek");
        let next: Vec<u64> = info.partition_info.iter().map(|p| p.next_offset).collect();
        assert_eq!(latest, next);
        assert!(state.scan(&ns, "").await.expect("scan").is_empty());
        for p in 0..2 {
            assert_eq!(
                log.committed_offset("g", "deals", p).await.expect("c"),
                Some(next[p as usize])
            );
        }

        let earliest = seek_group(&log, &state, "deals", "g", &SeekTo::Earliest)
            .await
            .expect("seek");
        assert_eq!(earliest, vec![0, 0]);

        let to = SeekTo::Offsets(BTreeMap::from([(1, 1)]));
        assert_eq!(
            seek_group(&log, &state, "deals", "g", &to)
                .await
                .expect("seek"),
            vec![0, 1]
        );

        let past = SeekTo::Offsets(BTreeMap::from([(0, next[0] + 1)]));
        let err = seek_group(&log, &state, "deals", "g", &past)
            .await
            .expect_err("past end");
        assert_eq!(err.code(), "offset_out_of_range");
        let bad = SeekTo::Offsets(BTreeMap::from([(7, 0)]));
        let err = seek_group(&log, &state, "deals", "g", &bad)
            .await
            .expect_err("no partition");
        assert_eq!(err.code(), "partition_not_found");
        let err = seek_group(&log, &state, "nope", "g", &SeekTo::Latest)
            .await
            .expect_err("topic");
        assert_eq!(err.code(), "topic_not_found");

        let future = Utc::now() + chrono::Duration::hours(1);
        assert_eq!(
            seek_group(&log, &state, "deals", "g", &SeekTo::Time(future))
                .await
                .expect("seek"),
            next
        );
    }
}
