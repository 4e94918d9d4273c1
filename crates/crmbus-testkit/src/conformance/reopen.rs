//! Everything survives a close and reopen, and appends continue where they stopped.

use std::time::Duration;

use crmbus::{partition_for, Event, Retention, TopicSpec};

use super::harness::{ev, read_all, reopen, topics, Check, Target};

pub(super) async fn reopen_keeps_everything(f: &Target<'_>, name: &str) -> Result<(), String> {
    let log = f.open(name).await.check("open")?;
    let spec = TopicSpec::new("deals", 3).with_retention(Retention {
        max_age: Some(Duration::from_secs(86_400)),
        max_bytes: Some(1 << 30),
    });
    log.create_topic(spec.clone()).await.check("create")?;
    log.create_topic(TopicSpec::new("leads", 1))
        .await
        .check("create")?;
    let batch: Vec<Event> = (0..300)
        .map(|i| ev("deal.stage_changed", &format!("deal-{}", i % 17), i))
        .collect();
    log.append(&topics(&["deals", "leads"]), &batch)
        .await
        .check("append")?;
    log.commit_offset("g", "deals", 2, 4)
        .await
        .check("commit")?;
    let mut before = Vec::new();
    for p in 0..3 {
        before.push(read_all(log.as_ref(), "deals", p).await?);
    }
    let infos = log.list_topics().await.check("list")?;
    let log = reopen(f, name, log).await?;
    ensure!(
        log.list_topics().await.check("list")? == infos,
        "topics differ after reopen"
    );
    for p in 0..3u32 {
        let after = read_all(log.as_ref(), "deals", p).await?;
        ensure!(
            after == before[p as usize],
            "partition {p} differs after reopen"
        );
    }
    ensure!(
        read_all(log.as_ref(), "leads", 0).await?.len() == 300,
        "leads lost events"
    );
    ensure!(
        log.committed_offset("g", "deals", 2).await.check("fetch")? == Some(4),
        "offset lost"
    );
    let e = ev("deal.won", "deal-1", 1000);
    let p = partition_for(&e, 3);
    let r = log
        .append(&topics(&["deals"]), std::slice::from_ref(&e))
        .await
        .check("append after reopen")?;
    ensure!(
        r[0].offset == before[p as usize].len() as u64,
        "append after reopen got offset {} in partition {p}",
        r[0].offset
    );
    log.close().await.check("close")
}
