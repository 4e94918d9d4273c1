//! # crmbus-kafka
//!
//! crmbus on Kafka: [`KafkaLog`] implements [`crmbus::EventLog`] on any Kafka-protocol
//! broker through librdkafka (bundled, built from source), and [`open`] returns it with
//! the [`crmbus_postgres::PgStateStore`] that holds what Kafka has no place for (how the
//! server opens `backend = "kafka"`). [`KafkaGroupConsumer`] is a Kafka consumer group
//! for consumers that want Kafka's own group protocol.
//!
//! ## Names: one namespace per deployment
//!
//! Everything lives under a namespace prefix (`prefix`, 1–48 characters of
//! `A–Z a–z 0–9 _ -`; `"crmbus"` in production, a unique one per test run):
//!
//! | what | where |
//! |---|---|
//! | events of crmbus topic `T` | Kafka topic `<prefix>.T`, with the same partition count |
//! | topic records (spec, retention floors) | state store, namespace `kafka/topics`, key `T` |
//! | group offsets | state store, namespace `kafka/offsets/T`, key `<partition>/<group>` |
//! | producer dedupe | PostgreSQL table `crmbus_kafka_dedupe` |
//! | delivery state, audit, keys, leases | the [`crmbus_postgres::PgStateStore`] of `prefix` |
//! | native groups ([`KafkaGroupConsumer`]) | Kafka consumer group `<prefix>.<group>` |
//!
//! ## Partitions and offsets
//!
//! Each event goes to the partition [`crmbus::partition_for`] picks (the stable hash of its
//! `subject`, or of its `id` without one), set explicitly on the record, so per-key order
//! and placement are the same as on every other backend; librdkafka's partitioner is not
//! used. The record's key is the subject (the id without one), its value the structured
//! CloudEvent JSON, with a `content-type` header: Kafka-native consumers read the events
//! as they are. **Offsets are Kafka offsets.**
//!
//! ## Append: the idempotent producer and dedupe
//!
//! The producer is idempotent (`enable.idempotence`, `acks=all`): its own retries neither
//! duplicate nor reorder records. An append checks the whole call first (every topic
//! exists, every event is valid and within [`KafkaOptions::max_event_bytes`]) and produces
//! nothing if a check fails; then it produces each topic's events in order and returns
//! once every record is acknowledged by the brokers. Kafka stores records of different
//! partitions independently, so an error part-way can leave some of a batch stored; the
//! call fails and a retry is absorbed by dedupe for what landed.
//!
//! Kafka has no dedupe by (`source`, `id`) across producers, so crmbus keeps its own index
//! in PostgreSQL (see the `dedupe` module): looked up before producing, written after the
//! acknowledgement, remembered for [`KafkaOptions::dedupe_window`] (120 s by default) and
//! shared by every server of the namespace. Its limits: an append cut short between the
//! brokers' acknowledgement and the index write appends those events again on retry, and
//! two servers appending the same new event at the same instant may both append it. One
//! process serializes appends per topic, so within a process neither happens.
//!
//! ## Reads and time
//!
//! A read assigns a pooled consumer (never in a group, `check.crcs=true`) to the one
//! partition at the offset and reads up to the high watermark. A record that fails its
//! CRC or does not decode as an event is never served (the read stops before it, or fails
//! with [`crmbus::LogError::Corrupt`] naming its offset). Topics are created with
//! `message.timestamp.type=LogAppendTime`, so timestamps are the broker's clock where the
//! broker honours it (Kafka does; tansu 0.6 keeps the producer's time, which is the crmbus
//! server's clock). [`crmbus::EventLog::offset_for_time`] is a binary search over the
//! records' timestamps, not Kafka's offsets-for-times, which tansu answers wrongly.
//!
//! ## Retention
//!
//! A topic's `max_age` and `max_bytes` become its Kafka `retention.ms` and
//! `retention.bytes` (per partition, as in crmbus; `-1` when unlimited, since Kafka's own
//! default would delete after seven days), so the brokers reclaim space themselves,
//! segment by segment. [`crmbus::EventLog::enforce_retention`] also applies both limits
//! exactly to crmbus's view: it raises each partition's floor (kept in the topic record)
//! past the events the limits no longer keep, and reads start there. Records are not
//! deleted with DeleteRecords (tansu does not support it); brokers remove them by their
//! retention settings. `max_bytes` counts the events' JSON.
//!
//! ## Group offsets and fencing
//!
//! The delivery engine's group offsets (the next offset to read, movable backwards for
//! replay) are kept in the state store, so a fenced commit checks its leases in the same
//! PostgreSQL transaction as the write. Consumers that want Kafka's own consumer groups —
//! rebalancing by the broker, offsets in `__consumer_offsets`, visible to Kafka tools —
//! use [`KafkaGroupConsumer`], which commits the contiguous low-water mark of what its
//! caller acknowledged.
//!
//! ## Durability
//!
//! An append returns once the brokers acknowledged every record with `acks=all`: every
//! in-sync replica has it. Kafka writes to the page cache and relies on replication, not
//! fsync, unless the brokers set `flush.messages=1`; so on a single broker an
//! acknowledged event survives a crash of the broker process but not a power loss. Topics
//! are created with the brokers' default replication factor. The state store is as
//! durable as PostgreSQL's commit. [`durability_setting`] describes what the brokers say.
//!
//! ## Topic lifecycle and crashes
//!
//! Creating a topic first creates the Kafka topic (Kafka's answer is the claim on the
//! name: of two creators one wins), then writes its record. Deleting removes the record
//! first, then the Kafka topic, its group offsets and dedupe rows. Opening a [`KafkaLog`]
//! repairs what a crash between those steps left: a Kafka topic of the namespace without
//! a record is deleted; a record whose Kafka topic is missing gets it created again.
//! [`purge`] deletes a whole namespace.
//!
//! ## Tests
//!
//! Every test of this crate needs a live Kafka-protocol broker (`CRMBUS_KAFKA_BOOTSTRAP`,
//! default `127.0.0.1:9092`: the tansu broker `scripts/services.sh` starts) and PostgreSQL
//! (`CRMBUS_POSTGRES_URL`), so they build only with the `integration` feature:
//! `cargo test -p crmbus-kafka --features integration`.

mod conn;
mod dedupe;
mod group;
mod log;
mod naming;

use std::sync::Arc;

pub use conn::{KafkaOptions, RESERVED_SETTINGS};
pub use group::{GroupConsumerOptions, GroupMessage, GroupStart, KafkaGroupConsumer};
pub use log::KafkaLog;
pub use naming::MAX_PREFIX;

use crmbus::{LogError, OpenedBackend};
use crmbus_postgres::PgStateStore;

/// Opens the Kafka backend: connects to the brokers at `bootstrap` and to the state
/// database at `state_url`, and returns the [`KafkaLog`] and the [`PgStateStore`] of
/// namespace `prefix`. An unreachable broker or database is [`LogError::Unavailable`].
pub async fn open(
    bootstrap: &str,
    state_url: &str,
    prefix: &str,
    opts: KafkaOptions,
) -> Result<OpenedBackend, LogError> {
    naming::check_prefix(prefix)?;
    let state = PgStateStore::connect(state_url, prefix).await?;
    let log = KafkaLog::connect(bootstrap, state.clone(), opts).await?;
    Ok(OpenedBackend {
        log: Arc::new(log),
        state: Arc::new(state),
    })
}

/// Deletes everything namespace `prefix` holds: its Kafka topics, and its state, leases
/// and dedupe rows in the database. Returns how many Kafka topics were deleted. For tests
/// and decommissioning; nothing asks twice. The same verb as `crmbus_redis::purge`.
pub async fn purge(bootstrap: &str, state_url: &str, prefix: &str) -> Result<usize, LogError> {
    naming::check_prefix(prefix)?;
    let state = PgStateStore::connect(state_url, prefix).await?;
    let opts = KafkaOptions::default();
    let dedupe =
        dedupe::DedupeIndex::open(state.pool().clone(), prefix, opts.dedupe_window).await?;
    let conn = conn::Conn::connect(bootstrap, prefix, opts).await?;
    let n = log::purge_topics(&conn).await?;
    state.purge().await?;
    dedupe.purge().await?;
    Ok(n)
}

/// Describes, in one line, the durability the brokers at `bootstrap` give an acknowledged
/// append — for the benchmark's report. Never fails: unreachable brokers are described as
/// such.
pub async fn durability_setting(bootstrap: &str) -> String {
    match conn::Conn::connect(bootstrap, "crmbus", KafkaOptions::default()).await {
        Ok(c) => log::describe_brokers(&c).await,
        Err(e) => format!("Kafka at {bootstrap} is unreachable: {e}"),
    }
}
