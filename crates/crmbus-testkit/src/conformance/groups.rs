//! Consumer-group offsets: commit, resume after a reopen, groups kept apart.

use crmbus::{Event, LogError, TopicSpec};

use super::harness::{ev, reopen, topics, Check, Target};

pub(super) async fn group_commit_resume(f: &Target<'_>, name: &str) -> Result<(), String> {
    let log = f.open(name).await.check("open")?;
    log.create_topic(TopicSpec::new("deals", 2))
        .await
        .check("create")?;
    let batch: Vec<Event> = (0..20)
        .map(|i| ev("deal.won", &format!("deal-{i}"), i))
        .collect();
    log.append(&topics(&["deals"]), &batch)
        .await
        .check("append")?;
    ensure!(
        log.committed_offset("crm-sync", "deals", 0)
            .await
            .check("fetch")?
            .is_none(),
        "offset before any commit"
    );
    log.commit_offset("crm-sync", "deals", 0, 3)
        .await
        .check("commit")?;
    log.commit_offset("crm-sync", "deals", 1, 7)
        .await
        .check("commit")?;
    let log = reopen(f, name, log).await?;
    ensure!(
        log.committed_offset("crm-sync", "deals", 0)
            .await
            .check("fetch")?
            == Some(3),
        "p0 offset lost"
    );
    ensure!(
        log.committed_offset("crm-sync", "deals", 1)
            .await
            .check("fetch")?
            == Some(7),
        "p1 offset lost"
    );
    // Resume: read from the committed offset gives the rest.
    let rest = log.read("deals", 0, 3, 1000).await.check("read")?;
    ensure!(
        rest.first().map(|s| s.offset) == Some(3),
        "resume did not start at 3"
    );
    log.commit_offset("crm-sync", "deals", 0, 5)
        .await
        .check("commit")?;
    ensure!(
        log.committed_offset("crm-sync", "deals", 0)
            .await
            .check("fetch")?
            == Some(5),
        "commit did not move"
    );
    // Several partitions in one call.
    log.commit_offsets("crm-sync", "deals", &[(0, 6), (1, 9)])
        .await
        .check("commit several")?;
    for (partition, want) in [(0, 6), (1, 9)] {
        ensure!(
            log.committed_offset("crm-sync", "deals", partition)
                .await
                .check("fetch")?
                == Some(want),
            "commit_offsets did not set partition {partition} to {want}"
        );
    }
    // Seek backwards is allowed (replay).
    log.commit_offset("crm-sync", "deals", 0, 1)
        .await
        .check("commit")?;
    ensure!(
        log.committed_offset("crm-sync", "deals", 0)
            .await
            .check("fetch")?
            == Some(1),
        "seek back failed"
    );
    match log.commit_offset("crm-sync", "missing", 0, 1).await {
        Err(LogError::TopicNotFound(_)) => {}
        other => {
            return Err(format!(
                "commit on missing topic: expected TopicNotFound, got {other:?}"
            ))
        }
    }
    log.close().await.check("close")
}

pub(super) async fn two_groups_independent(f: &Target<'_>, name: &str) -> Result<(), String> {
    let log = f.open(name).await.check("open")?;
    log.create_topic(TopicSpec::new("deals", 1))
        .await
        .check("create")?;
    log.commit_offset("notifier", "deals", 0, 10)
        .await
        .check("commit")?;
    log.commit_offset("dashboard", "deals", 0, 2)
        .await
        .check("commit")?;
    ensure!(
        log.committed_offset("notifier", "deals", 0)
            .await
            .check("fetch")?
            == Some(10),
        "notifier"
    );
    ensure!(
        log.committed_offset("dashboard", "deals", 0)
            .await
            .check("fetch")?
            == Some(2),
        "dashboard"
    );
    ensure!(
        log.committed_offset("erp", "deals", 0)
            .await
            .check("fetch")?
            .is_none(),
        "erp has an offset"
    );
    log.commit_offset("dashboard", "deals", 0, 4)
        .await
        .check("commit")?;
    ensure!(
        log.committed_offset("notifier", "deals", 0)
            .await
            .check("fetch")?
            == Some(10),
        "notifier moved with dashboard"
    );
    log.close().await.check("close")
}
