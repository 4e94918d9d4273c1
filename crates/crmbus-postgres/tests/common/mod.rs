//! A fresh database per test on the machine's PostgreSQL (CRMBUS_POSTGRES_URL, default
//! postgres://postgres@127.0.0.1:5432/test), with the outbox installed; and a bus on an
//! embedded log whose producer dedupe window is zero, so that nothing but the relay's own
//! check can absorb a republished row.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crmbus::{EventBus, StoredEvent};
use crmbus_embedded::{EmbeddedLog, EmbeddedOptions};
use tokio_postgres::NoTls;

pub fn admin_url() -> String {
    std::env::var("CRMBUS_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let name = format!("crmbus_t_{}", uuid::Uuid::now_v7().simple());
        let (admin, conn) = tokio_postgres::connect(&admin_url(), NoTls)
            .await
            .expect("the machine's PostgreSQL (scripts/services.sh starts it)");
        tokio::spawn(conn);
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let mut config: tokio_postgres::Config = admin_url().parse().expect("url");
        config.dbname(&name);
        let url = format!(
            "postgres://{}@{}:{}/{}",
            config.get_user().unwrap_or("postgres"),
            match &config.get_hosts()[0] {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                #[allow(unreachable_patterns)]
                _ => "127.0.0.1".into(),
            },
            config.get_ports().first().copied().unwrap_or(5432),
            name
        );
        let db = TestDb { name, url };
        let mut client = db.client().await;
        crmbus_postgres::sql::install(&mut client)
            .await
            .expect("install the outbox");
        db
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
    }

    pub async fn drop_db(self) {
        let (admin, conn) = tokio_postgres::connect(&admin_url(), NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .expect("drop database");
    }
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

/// The checks every relay test ends with: each committed row's event is in `topic`
/// exactly once, no rolled-back one is, and per subject the events are in row-id order.
pub async fn check_topic(
    bus: &EventBus,
    topic: &str,
    committed: &BTreeMap<String, i64>,
    rolled_back: &HashSet<String>,
) {
    let events = all_events(bus, topic).await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut last_row_of_subject: BTreeMap<String, i64> = BTreeMap::new();
    for stored in &events {
        let id = &stored.event.id;
        *seen.entry(id.clone()).or_default() += 1;
        assert!(
            !rolled_back.contains(id),
            "{id} was rolled back but published"
        );
        let row = *committed
            .get(id)
            .unwrap_or_else(|| panic!("{id} published but never committed"));
        let subject = stored.event.subject.clone().unwrap_or_default();
        if let Some(prev) = last_row_of_subject.insert(subject.clone(), row) {
            assert!(prev < row, "{subject}: row {row} stored after row {prev}");
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let missing: Vec<_> = committed
        .keys()
        .filter(|id| !seen.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "committed but not published: {missing:?}"
    );
}
