//! Size retention removes the oldest events only, and says how many.

use crmbus::{Event, Retention, TopicSpec};

use super::harness::{contiguous, ev, read_all, topics, Check, Target};

pub(super) async fn retention(f: &Target<'_>, name: &str) -> Result<(), String> {
    let log = f.open(name).await.check("open")?;
    let spec = TopicSpec::new("deals", 1).with_retention(Retention {
        max_age: None,
        max_bytes: Some(32 * 1024),
    });
    log.create_topic(spec).await.check("create")?;
    let mut last = None;
    for b in 0..20u64 {
        let batch: Vec<Event> = (0..50)
            .map(|i| ev("deal.updated", &format!("deal-{i}"), b * 50 + i))
            .collect();
        last = batch.last().cloned();
        log.append(&topics(&["deals"]), &batch)
            .await
            .check("append")?;
    }
    let removed = log.enforce_retention().await.check("enforce")?;
    let info = log.describe_topic("deals").await.check("describe")?;
    let p = &info.partition_info[0];
    ensure!(
        p.next_offset == 1000,
        "next offset {} after retention",
        p.next_offset
    );
    ensure!(
        p.first_offset > 0,
        "nothing removed from ~300 KiB with a 32 KiB limit"
    );
    // Nothing but this call removed anything, so it removed exactly the events before the
    // first kept offset.
    ensure!(
        removed == p.first_offset,
        "enforce_retention reported {removed} removed, but the first kept offset is {}",
        p.first_offset
    );
    let again = log.enforce_retention().await.check("enforce again")?;
    let info = log.describe_topic("deals").await.check("describe")?;
    let p = &info.partition_info[0];
    ensure!(
        again == 0 && p.first_offset == removed,
        "a second enforce_retention with nothing new removed {again} more (first kept offset {})",
        p.first_offset
    );
    let got = read_all(log.as_ref(), "deals", 0).await?;
    ensure!(
        got.first().map(|s| s.offset) == Some(p.first_offset),
        "read from 0 did not start at the first kept offset"
    );
    ensure!(
        contiguous(&got) && got.len() as u64 == 1000 - p.first_offset,
        "kept events not a contiguous suffix"
    );
    ensure!(
        got.last().map(|s| &s.event) == last.as_ref(),
        "newest event was removed"
    );
    log.close().await.check("close")
}
