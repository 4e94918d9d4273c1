//! Topic admin: create, describe, list, delete, and their errors.

use crmbus::{LogError, TopicSpec};

use super::harness::{ev, topics, Check, Target};

pub(super) async fn topic_lifecycle(f: &Target<'_>, name: &str) -> Result<(), String> {
    let log = f.open(name).await.check("open")?;
    let info = log
        .create_topic(TopicSpec::new("deals", 3))
        .await
        .check("create")?;
    ensure!(
        info.spec.partitions == 3 && info.partition_info.len() == 3,
        "bad info {info:?}"
    );
    ensure!(info.event_count() == 0, "new topic not empty");
    match log.create_topic(TopicSpec::new("deals", 3)).await {
        Err(LogError::TopicExists(t)) => ensure!(t == "deals", "wrong topic in error {t}"),
        other => {
            return Err(format!(
                "second create: expected TopicExists, got {other:?}"
            ))
        }
    }
    for bad in ["", "has space", "a/b", ".."] {
        match log.create_topic(TopicSpec::new(bad, 1)).await {
            Err(LogError::InvalidArgument(_)) => {}
            other => {
                return Err(format!(
                    "name {bad:?}: expected InvalidArgument, got {other:?}"
                ))
            }
        }
    }
    match log.create_topic(TopicSpec::new("zero", 0)).await {
        Err(LogError::InvalidArgument(_)) => {}
        other => {
            return Err(format!(
                "0 partitions: expected InvalidArgument, got {other:?}"
            ))
        }
    }
    let mut accounts = TopicSpec::new("accounts", 1);
    accounts.require_schemas = true;
    let created = log.create_topic(accounts).await.check("create accounts")?;
    ensure!(created.spec.require_schemas, "create lost require_schemas");
    let listed: Vec<(String, bool)> = log
        .list_topics()
        .await
        .check("list")?
        .into_iter()
        .map(|t| (t.spec.name, t.spec.require_schemas))
        .collect();
    ensure!(
        listed == [("accounts".to_string(), true), ("deals".to_string(), false)],
        "list gave {listed:?} (name, require_schemas)"
    );
    ensure!(
        log.describe_topic("accounts")
            .await
            .check("describe accounts")?
            .spec
            .require_schemas,
        "describe lost require_schemas"
    );
    match log.describe_topic("nope").await {
        Err(LogError::TopicNotFound(_)) => {}
        other => {
            return Err(format!(
                "describe missing: expected TopicNotFound, got {other:?}"
            ))
        }
    }
    match log.read("deals", 3, 0, 10).await {
        Err(LogError::PartitionNotFound { partition: 3, .. }) => {}
        other => {
            return Err(format!(
                "read partition 3: expected PartitionNotFound, got {other:?}"
            ))
        }
    }
    log.append(&topics(&["deals"]), &[ev("deal.won", "deal-1", 0)])
        .await
        .check("append")?;
    log.delete_topic("deals").await.check("delete")?;
    match log.delete_topic("deals").await {
        Err(LogError::TopicNotFound(_)) => {}
        other => {
            return Err(format!(
                "second delete: expected TopicNotFound, got {other:?}"
            ))
        }
    }
    match log
        .append(&topics(&["deals"]), &[ev("deal.won", "deal-1", 0)])
        .await
    {
        Err(LogError::TopicNotFound(_)) => {}
        other => {
            return Err(format!(
                "append to deleted: expected TopicNotFound, got {other:?}"
            ))
        }
    }
    let again = log
        .create_topic(TopicSpec::new("deals", 2))
        .await
        .check("recreate")?;
    ensure!(
        again.event_count() == 0 && again.spec.partitions == 2,
        "recreated topic kept data: {again:?}"
    );
    log.close().await.check("close")
}
