//! Appends: order and offsets, partitioning by key, several topics in one call, a large batch, concurrent appenders.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde_json::json;

use crmbus::{partition_for, Event, LogError, TopicSpec};

use super::harness::{contiguous, ev, read_all, topics, Check, Target};

pub(super) async fn append_read_order(f: &Target<'_>, name: &str) -> Result<(), String> {
    let log = f.open(name).await.check("open")?;
    log.create_topic(TopicSpec::new("deals", 1))
        .await
        .check("create")?;
    let mut sent = Vec::new();
    for b in 0..3u64 {
        let batch: Vec<Event> = (0..10)
            .map(|i| ev("deal.updated", &format!("deal-{i}"), b * 10 + i))
            .collect();
        let receipts = log
            .append(&topics(&["deals"]), &batch)
            .await
            .check("append")?;
        ensure!(
            receipts.len() == 10,
            "{} receipts for 10 events",
            receipts.len()
        );
        for (i, r) in receipts.iter().enumerate() {
            ensure!(
                r.offset == b * 10 + i as u64,
                "receipt {i} of batch {b} has offset {}",
                r.offset
            );
            ensure!(
                r.id == batch[i].id && r.topic == "deals" && !r.duplicate,
                "bad receipt {r:?}"
            );
        }
        sent.extend(batch);
    }
    let got = read_all(log.as_ref(), "deals", 0).await?;
    ensure!(got.len() == 30, "read {} of 30", got.len());
    for (i, s) in got.iter().enumerate() {
        ensure!(s.offset == i as u64, "event {i} at offset {}", s.offset);
        ensure!(
            s.event == sent[i],
            "event at {i} differs:\n got {:?}\nwant {:?}",
            s.event,
            sent[i]
        );
        ensure!(s.partition == 0, "partition {}", s.partition);
    }
    ensure!(
        got.windows(2).all(|w| w[0].timestamp <= w[1].timestamp),
        "timestamps go backwards"
    );
    let mid = log.read("deals", 0, 12, 5).await.check("read mid")?;
    ensure!(
        mid.len() == 5 && mid[0].offset == 12 && mid[4].offset == 16,
        "read(12, 5) gave {:?}",
        mid.iter().map(|s| s.offset).collect::<Vec<_>>()
    );
    ensure!(
        log.read("deals", 0, 30, 5)
            .await
            .check("read end")?
            .is_empty(),
        "read past end not empty"
    );
    ensure!(
        log.read("deals", 0, 1000, 5)
            .await
            .check("read far")?
            .is_empty(),
        "read far past end not empty"
    );
    let info = log.describe_topic("deals").await.check("describe")?;
    ensure!(
        info.partition_info[0].first_offset == 0 && info.partition_info[0].next_offset == 30,
        "info {info:?}"
    );
    log.close().await.check("close")
}

pub(super) async fn key_partition_stability(f: &Target<'_>, name: &str) -> Result<(), String> {
    let log = f.open(name).await.check("open")?;
    log.create_topic(TopicSpec::new("leads", 8))
        .await
        .check("create")?;
    let mut batch = Vec::new();
    for round in 0..4u64 {
        for k in 0..50 {
            batch.push(ev("lead.updated", &format!("lead-{k}"), round));
        }
    }
    let unkeyed: Vec<Event> = (0..20)
        .map(|i| {
            let mut e = ev("lead.created", "x", i);
            e.subject = None;
            e
        })
        .collect();
    batch.extend(unkeyed);
    let receipts = log
        .append(&topics(&["leads"]), &batch)
        .await
        .check("append")?;
    let mut used = HashSet::new();
    for (r, e) in receipts.iter().zip(&batch) {
        let want = partition_for(e, 8);
        ensure!(
            r.partition == want,
            "event {} went to {} but partition_for says {want}",
            e.id,
            r.partition
        );
        used.insert(r.partition);
    }
    ensure!(used.len() > 4, "50 keys used only partitions {used:?}");
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for p in 0..8 {
        for s in read_all(log.as_ref(), "leads", p).await? {
            if let Some(subject) = &s.event.subject {
                ensure!(
                    partition_for(&s.event, 8) == p,
                    "{subject} read from partition {p}"
                );
                let n = s
                    .event
                    .data_json()
                    .and_then(|d| d["n"].as_u64())
                    .unwrap_or(u64::MAX);
                per_key.entry(subject.clone()).or_default().push(n);
            }
        }
    }
    ensure!(per_key.len() == 50, "{} keys read back", per_key.len());
    for (k, ns) in per_key {
        ensure!(ns == [0, 1, 2, 3], "key {k} read in order {ns:?}");
    }
    log.close().await.check("close")
}

pub(super) async fn multi_topic_append(f: &Target<'_>, name: &str) -> Result<(), String> {
    let log = f.open(name).await.check("open")?;
    log.create_topic(TopicSpec::new("deals", 2))
        .await
        .check("create")?;
    log.create_topic(TopicSpec::new("notifications", 3))
        .await
        .check("create")?;
    let batch: Vec<Event> = (0..6)
        .map(|i| ev("deal.won", &format!("deal-{i}"), i))
        .collect();
    let receipts = log
        .append(&topics(&["deals", "notifications"]), &batch)
        .await
        .check("append")?;
    ensure!(
        receipts.len() == 12,
        "{} receipts for 6 events x 2 topics",
        receipts.len()
    );
    for (i, r) in receipts.iter().enumerate() {
        let (topic, n, e) = if i < 6 {
            ("deals", 2, &batch[i])
        } else {
            ("notifications", 3, &batch[i - 6])
        };
        ensure!(
            r.topic == topic && r.id == e.id,
            "receipt {i} is {r:?}, want topic {topic} id {}",
            e.id
        );
        ensure!(
            r.partition == partition_for(e, n),
            "receipt {i} partition {}",
            r.partition
        );
        let got = log
            .read(topic, r.partition, r.offset, 1)
            .await
            .check("read")?;
        ensure!(
            got.len() == 1 && got[0].event == *e,
            "event of receipt {i} not readable"
        );
    }
    // A missing topic anywhere in the list fails the whole call and writes nothing.
    let before = log
        .describe_topic("deals")
        .await
        .check("describe")?
        .event_count();
    match log
        .append(
            &topics(&["deals", "missing"]),
            &[ev("deal.won", "deal-9", 9)],
        )
        .await
    {
        Err(LogError::TopicNotFound(t)) => ensure!(t == "missing", "error names {t}"),
        other => {
            return Err(format!(
                "append with a missing topic: expected TopicNotFound, got {other:?}"
            ))
        }
    }
    let after = log
        .describe_topic("deals")
        .await
        .check("describe")?
        .event_count();
    ensure!(
        before == after,
        "failed multi-topic append wrote {} events",
        after - before
    );
    match log.append(&[], &[ev("deal.won", "deal-9", 9)]).await {
        Err(LogError::InvalidArgument(_)) => {}
        other => {
            return Err(format!(
                "append to no topic: expected InvalidArgument, got {other:?}"
            ))
        }
    }
    log.close().await.check("close")
}

pub(super) async fn large_batch(f: &Target<'_>, name: &str) -> Result<(), String> {
    let log = f.open(name).await.check("open")?;
    log.create_topic(TopicSpec::new("bulk", 2))
        .await
        .check("create")?;
    let pad = "x".repeat(200);
    let batch: Vec<Event> = (0..10_000u64)
        .map(|i| {
            Event::new(
                "contact.updated",
                json!({"contact_id": format!("c-{i}"), "n": i, "pad": pad}),
            )
            .subject(format!("contact-{}", i % 97))
            .source("urn:crmbus:conformance")
        })
        .collect();
    let receipts = log
        .append(&topics(&["bulk"]), &batch)
        .await
        .check("append")?;
    ensure!(receipts.len() == 10_000, "{} receipts", receipts.len());
    let mut total = 0;
    for p in 0..2 {
        let got = read_all(log.as_ref(), "bulk", p).await?;
        ensure!(contiguous(&got), "partition {p} not contiguous");
        let ns: Vec<u64> = got
            .iter()
            .filter_map(|s| s.event.data_json().and_then(|d| d["n"].as_u64()))
            .collect();
        ensure!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "partition {p} out of batch order"
        );
        total += got.len();
    }
    ensure!(total == 10_000, "read back {total} of 10000");
    log.close().await.check("close")
}

pub(super) async fn concurrent_appenders(f: &Target<'_>, name: &str) -> Result<(), String> {
    let log = f.open(name).await.check("open")?;
    log.create_topic(TopicSpec::new("tasks", 3))
        .await
        .check("create")?;
    let mut handles = Vec::new();
    for w in 0..8u64 {
        let log = Arc::clone(&log);
        handles.push(tokio::spawn(async move {
            let mut receipts = Vec::new();
            for b in 0..40u64 {
                let batch: Vec<Event> = (0..5)
                    .map(|i| ev("task.assigned", &format!("task-{w}"), b * 5 + i))
                    .collect();
                receipts.extend(log.append(&["tasks".to_string()], &batch).await?);
            }
            Ok::<_, LogError>(receipts)
        }));
    }
    let mut seen = HashSet::new();
    let mut n = 0;
    for h in handles {
        let receipts = h
            .await
            .map_err(|e| format!("appender panicked: {e}"))?
            .check("append")?;
        for r in receipts {
            ensure!(
                seen.insert((r.partition, r.offset)),
                "offset {}/{} given twice",
                r.partition,
                r.offset
            );
            n += 1;
        }
    }
    ensure!(n == 8 * 40 * 5, "{n} receipts");
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut total = 0;
    for p in 0..3 {
        let got = read_all(log.as_ref(), "tasks", p).await?;
        ensure!(
            contiguous(&got) && got.first().map(|s| s.offset).unwrap_or(0) == 0,
            "partition {p} has gaps"
        );
        total += got.len();
        for s in got {
            let n = s
                .event
                .data_json()
                .and_then(|d| d["n"].as_u64())
                .unwrap_or(u64::MAX);
            per_key
                .entry(s.event.subject.clone().unwrap_or_default())
                .or_default()
                .push(n);
        }
    }
    ensure!(total == 1600, "read {total} of 1600");
    for (k, ns) in per_key {
        ensure!(ns == (0..200).collect::<Vec<_>>(), "key {k} out of order");
    }
    log.close().await.check("close")
}
