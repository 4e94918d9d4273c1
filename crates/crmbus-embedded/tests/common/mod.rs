//! Helpers shared by the batch journal tests (`batch_journal.rs`, `batch_rollback.rs`) and
//! the commit file's (`commit_file.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use crmbus::clock::ManualClock;
use crmbus::{Event, EventLog, TopicSpec};
use crmbus_embedded::batch_journal::FILE_NAME;
use crmbus_embedded::{Durability, EmbeddedLog, EmbeddedOptions};
use serde_json::json;

pub fn opts(clock: &ManualClock, durability: Durability) -> EmbeddedOptions {
    EmbeddedOptions {
        durability,
        retention_interval: None,
        clock: Arc::new(clock.clone()),
        ..EmbeddedOptions::default()
    }
}

pub fn deal(n: u64) -> Event {
    Event::new(
        "deal.won",
        json!({"deal_id": format!("deal-{n}"), "amount": n * 100}),
    )
    .id(format!("evt-{n}"))
    .subject(format!("deal-{n}"))
    .source("urn:crm:deals")
}

pub async fn ids_by_partition(log: &EmbeddedLog, topic: &str) -> BTreeMap<u32, Vec<String>> {
    let info = log.describe_topic(topic).await.expect("describe");
    let mut out = BTreeMap::new();
    for p in info.partition_info {
        let events = log.read(topic, p.partition, 0, 10_000).await.expect("read");
        out.insert(
            p.partition,
            events.into_iter().map(|s| s.event.id).collect::<Vec<_>>(),
        );
    }
    out
}

/// Writes `frame` after the journal's last frame, as the log would (the file is grown
/// in zero-filled steps, and zeros read as its end).
pub fn append_to_journal(dir: &std::path::Path, frame: &[u8]) {
    use std::os::unix::fs::FileExt;
    let path = dir.join(FILE_NAME);
    let bytes = std::fs::read(&path).unwrap_or_default();
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(body) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if len < 9 || crc32c::crc32c(body) != crc {
            break;
        }
        at += 8 + len;
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .expect("open journal");
    f.write_all_at(frame, at as u64).expect("write journal");
    f.sync_all().expect("sync journal");
}

/// The state a crash can leave of a publish to two topics: topics `crm` and `erp` of two
/// partitions, and the event (returned) stored in `crm` only.
pub async fn two_topics_with_an_event_in_one(dir: &std::path::Path, clock: &ManualClock) -> Event {
    let e = deal(1);
    let log = EmbeddedLog::open(dir, opts(clock, Durability::Fsync)).expect("open");
    for t in ["crm", "erp"] {
        log.create_topic(TopicSpec::new(t, 2))
            .await
            .expect("create");
    }
    log.append(&["crm".to_string()], std::slice::from_ref(&e))
        .await
        .expect("append to one topic");
    e
}
