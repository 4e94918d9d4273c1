//! Producer dedupe by topic, source and id, inside a batch and across a reopen.

use crmbus::TopicSpec;

use super::harness::{ev, reopen, topics, Check, Target};

pub(super) async fn producer_dedupe(f: &Target<'_>, name: &str) -> Result<(), String> {
    let log = f.open(name).await.check("open")?;
    log.create_topic(TopicSpec::new("deals", 4))
        .await
        .check("create")?;
    log.create_topic(TopicSpec::new("audit", 1))
        .await
        .check("create")?;
    let e = ev("deal.won", "deal-42", 1);
    let first = log
        .append(&topics(&["deals"]), std::slice::from_ref(&e))
        .await
        .check("append")?;
    let again = log
        .append(&topics(&["deals"]), std::slice::from_ref(&e))
        .await
        .check("append again")?;
    ensure!(!first[0].duplicate, "first append marked duplicate");
    ensure!(again[0].duplicate, "second append not marked duplicate");
    ensure!(
        again[0].partition == first[0].partition
            && again[0].offset == first[0].offset
            && again[0].id == e.id,
        "duplicate receipt {:?} differs from first {:?}",
        again[0],
        first[0]
    );
    let count = log
        .describe_topic("deals")
        .await
        .check("describe")?
        .event_count();
    ensure!(count == 1, "{count} events stored after a duplicate");
    // Same id from another source is another event.
    let other = e.clone().source("urn:crmbus:other");
    let r = log
        .append(&topics(&["deals"]), &[other])
        .await
        .check("append other source")?;
    ensure!(!r[0].duplicate, "same id, other source was deduped");
    // Duplicates inside one batch, and the same event in a topic it is new to.
    let fresh = ev("deal.won", "deal-43", 2);
    let r = log
        .append(
            &topics(&["deals", "audit"]),
            &[fresh.clone(), e.clone(), fresh.clone()],
        )
        .await
        .check("append batch")?;
    ensure!(r.len() == 6, "{} receipts", r.len());
    ensure!(
        !r[0].duplicate && r[1].duplicate && r[2].duplicate,
        "deals receipts {:?}",
        &r[..3]
    );
    ensure!(
        r[2].offset == r[0].offset && r[2].partition == r[0].partition,
        "in-batch duplicate got its own offset"
    );
    ensure!(
        !r[3].duplicate && !r[4].duplicate && r[5].duplicate,
        "audit receipts {:?}",
        &r[3..]
    );
    ensure!(
        log.describe_topic("deals")
            .await
            .check("describe")?
            .event_count()
            == 3,
        "deals count"
    );
    ensure!(
        log.describe_topic("audit")
            .await
            .check("describe")?
            .event_count()
            == 2,
        "audit count"
    );
    // The window survives a restart.
    let log = reopen(f, name, log).await?;
    let after = log
        .append(&topics(&["deals"]), std::slice::from_ref(&e))
        .await
        .check("append after reopen")?;
    ensure!(
        after[0].duplicate && after[0].offset == first[0].offset,
        "dedupe lost on reopen: {:?}",
        after[0]
    );
    ensure!(
        log.describe_topic("deals")
            .await
            .check("describe")?
            .event_count()
            == 3,
        "count after reopen"
    );
    log.close().await.check("close")
}
