//! A fresh database per test on the machine's PostgreSQL (crmbus-testkit's), with the
//! outbox installed; and a bus on an
//! embedded log whose producer dedupe window is zero, so that nothing but the relay's own
//! check can absorb a republished row.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crmbus::{EventBus, StoredEvent};
use crmbus_embedded::{EmbeddedLog, EmbeddedOptions};

pub use crmbus_testkit::outbox::TestDb;

/// A fresh database with the outbox installed.
pub async fn outbox_db() -> TestDb {
    let db = TestDb::create().await;
    let mut client = db.client().await;
    crmbus_postgres::sql::install(&mut client)
        .await
        .expect("install the outbox");
    db
}

/// A bus on an embedded log in `dir` with no producer dedupe window.
pub fn bus(dir: &std::path::Path) -> EventBus {
    let log = EmbeddedLog::open(
        dir,
        EmbeddedOptions {
            dedupe_window: Duration::ZERO,
            retention_interval: None,
            ..EmbeddedOptions::default()
        },
    )
    .expect("open log");
    EventBus::builder()
        .log(Arc::new(log))
        .auto_create_topics(3)
        .build()
}

/// Every event of `topic`, partition by partition.
pub async fn all_events(bus: &EventBus, topic: &str) -> Vec<StoredEvent> {
    let info = bus.describe_topic(topic).await.expect("topic");
    let mut out = Vec::new();
    for p in 0..info.spec.partitions {
        let mut from = 0;
        loop {
            let chunk = bus.read(topic, p, from, 1000).await.expect("read");
            let Some(last) = chunk.last() else { break };
            from = last.offset + 1;
            out.extend(chunk);
        }
    }
    out
}

/// Inserts one outbox row in `tx`; returns its row id.
pub async fn insert_row(
    tx: &tokio_postgres::Transaction<'_>,
    topics: &[&str],
    event: &serde_json::Value,
) -> i64 {
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    tx.query_one(
        "INSERT INTO crmbus_outbox (topics, event) VALUES ($1, $2) RETURNING id",
        &[&topics, event],
    )
    .await
    .expect("insert")
    .get(0)
}

/// The checks every relay test ends with (see [`crmbus_testkit::outbox::check_published`]).
pub async fn check_topic(
    bus: &EventBus,
    topic: &str,
    committed: &BTreeMap<String, i64>,
    rolled_back: &HashSet<String>,
) {
    let published: Vec<_> = all_events(bus, topic)
        .await
        .into_iter()
        .map(|e| (e.event.id, e.event.subject))
        .collect();
    crmbus_testkit::outbox::check_published(&published, committed, rolled_back);
}
