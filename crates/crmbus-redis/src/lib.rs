//! # crmbus-redis
//!
//! crmbus on Redis Streams (Redis 7.0 or newer): [`RedisLog`] implements
//! [`crmbus::EventLog`], [`RedisStateStore`] implements [`crmbus::StateStore`], and
//! [`open`] returns both as the backend the server chooses with `backend = "redis"`.
//!
//! ## Key layout
//!
//! Everything lives under a key prefix given at open (`<prefix>:`), so several crmbus
//! namespaces (or test runs) share one server without meeting; [`purge`] removes one.
//! Topic metadata is a hash `<prefix>:topics` of topic name → the whole
//! [`crmbus::TopicSpec`] as JSON (fields added to the spec later round-trip); each
//! partition `p` of topic `t` is the stream `<prefix>:stream:<t>:<p>`, whose entries have
//! the fields `event` (the structured CloudEvent JSON, exactly as appended) and `ts` (the
//! append time in µs from the Redis server's clock, never decreasing in a partition);
//! `<prefix>:seq:<t>` keeps each partition's next offset, last timestamp and byte count.
//! The full table is in [`naming`].
//!
//! ## Offsets and stream ids
//!
//! Offset `n` is the stream id `0-<n+1>`, added with an explicit id so offsets are
//! contiguous; `0-<s>` reads back as offset `s - 1`. The next offset is allocated inside
//! the append script, which Redis runs atomically, so concurrent appenders (in one process
//! or many) never share or skip an offset.
//!
//! ## Group offsets
//!
//! A committed crmbus group offset *is* the Redis consumer group of that name on the
//! partition stream: committing offset `n` runs `XGROUP CREATE <stream> <group> 0-<n>
//! MKSTREAM` or, if the group exists, `XGROUP SETID` (so `XINFO GROUPS` shows crmbus
//! groups and their lag to operators), and reading it back takes the group's
//! `last-delivered-id`. Deleting a topic deletes its streams and with them their groups.
//! The same groups serve native consumers: [`RedisGroupConsumer`] reads with
//! `XREADGROUP`, acknowledges with `XACK` and takes over a dead member's pending entries
//! with `XAUTOCLAIM`.
//!
//! ## Producer dedupe and atomic appends
//!
//! One call of [`crmbus::EventLog::append`] is one Lua script: it first checks that every
//! topic exists (with the partition count the caller hashed with), then, per topic and
//! event, looks up `<prefix>:dedupe:<t>:<xxh3 of source+id>`; a hit for the same
//! `source` + `id` (and the same incarnation of the topic) returns the first receipt with
//! `duplicate: true`, otherwise the event is `XADD`ed and its receipt stored under that key
//! with a TTL of the dedupe window ([`RedisOptions::dedupe_window`]). Since the script
//! validates before it writes, and Redis refuses a script with a `#!lua` shebang (ours
//! all have one) when it is out of memory *before* running it, an append writes all of its
//! events to all of its topics or nothing. Redis propagates a script's writes to the AOF
//! and to replicas wrapped in `MULTI`/`EXEC`, and on load discards a transaction cut short
//! at the end of the AOF, so a crash does not split an append either; if in doubt, the
//! producer's retry is absorbed by dedupe. A script runs alone on the server: a batch of
//! 10,000 events holds other clients for the few milliseconds its `XADD`s take.
//!
//! ## Retention
//!
//! [`crmbus::EventLog::enforce_retention`] walks each partition from its oldest entry and
//! removes, with `XTRIM <stream> MINID = <id>`, the entries older than `max_age` and the
//! oldest entries while the partition holds more than `max_bytes` of event JSON (it never
//! removes a partition's newest entry for size). Only a prefix is removed, so the events
//! kept stay contiguous; a read from an offset that was trimmed starts at the oldest kept.
//!
//! ## Durability
//!
//! Redis acknowledges a write once it is in memory; what survives a crash is decided by
//! the server's persistence, which crmbus cannot make stronger:
//!
//! - `appendonly yes` with `appendfsync always`: each write is fsynced to the AOF before
//!   the reply, so an acknowledged append survives a crash or power loss.
//! - `appendonly yes` with `appendfsync everysec` (Redis's default AOF policy): up to about
//!   one second of acknowledged appends can be lost.
//! - no AOF: everything since the last RDB snapshot is lost on a restart (with no
//!   snapshots configured, everything).
//!
//! Replication is asynchronous too: a failover may lose writes a replica had not received.
//! [`durability_setting`] reports the server's setting (the benchmark prints it).
//!
//! This backend does not support Redis Cluster (the scripts touch keys of several slots).
//!
//! ## Tests
//!
//! Every test of this crate needs a live Redis (`CRMBUS_REDIS_URL`, default
//! `redis://127.0.0.1:6379`), so they build only with the `integration` feature:
//! `cargo test -p crmbus-redis --features integration`. They run crmbus-testkit's
//! conformance suite, state-store contract and delivery scenarios, and what is particular
//! to Redis.

mod conn;
mod conv;
mod group;
mod lease;
mod log;
pub mod naming;
mod scripts;
mod state;

use std::sync::Arc;

pub use conn::RedisOptions;
pub use crmbus::OpenedBackend;
pub use group::RedisGroupConsumer;
pub use lease::RedisLeaseStore;
pub use log::RedisLog;
pub use state::RedisStateStore;

/// The former name of [`naming`] (the key layout and the offset ↔ stream id mapping),
/// kept so that code written against it still builds.
#[deprecated(note = "renamed to `crmbus_redis::naming`, the name crmbus-nats uses too")]
pub mod keys {
    pub use crate::conn::redact_url;
    pub use crate::naming::*;
}

use crmbus::LogError;

/// Opens the Redis backend: the event log and the state store at `url`
/// (`redis://host:port/db`) under the key `prefix`. An unreachable server is
/// [`LogError::Unavailable`] naming the URL.
pub async fn open(url: &str, prefix: &str) -> Result<OpenedBackend, LogError> {
    open_with(url, prefix, RedisOptions::default()).await
}

/// [`open`] with explicit options.
pub async fn open_with(
    url: &str,
    prefix: &str,
    opts: RedisOptions,
) -> Result<OpenedBackend, LogError> {
    let conn = Arc::new(conn::Conn::connect(url, prefix, &opts).await?);
    let log = RedisLog::with_conn(Arc::clone(&conn), &opts);
    let state = RedisStateStore::with_conn(conn);
    Ok(OpenedBackend {
        log: Arc::new(log),
        state: Arc::new(state),
    })
}

/// The persistence setting of the Redis at `url` in words, for example
/// `"appendonly=yes appendfsync=everysec (an acknowledged write may be lost: up to ~1 s)"`;
/// says so when the server cannot be asked (unreachable, or `CONFIG` disabled).
pub async fn durability_setting(url: &str) -> String {
    let shown = conn::redact_url(url);
    let mut conn = match conn::connect(url, &RedisOptions::default()).await {
        Ok((c, _)) => c,
        Err(e) => return format!("unknown ({e})"),
    };
    let aof = config_get(&mut conn, "appendonly").await;
    let fsync = config_get(&mut conn, "appendfsync").await;
    let (aof, fsync) = match (aof, fsync) {
        (Ok(a), Ok(f)) => (a, f),
        (Err(e), _) | (_, Err(e)) => {
            return format!("unknown (CONFIG GET failed on redis at {shown}: {e})")
        }
    };
    let meaning = match (aof.as_str(), fsync.as_str()) {
        ("yes", "always") => "each write fsynced before the reply",
        ("yes", "everysec") => "an acknowledged write may be lost: up to ~1 s",
        ("yes", _) => "fsync left to the OS: acknowledged writes may be lost",
        _ => "no AOF: everything since the last RDB snapshot is lost on a restart",
    };
    format!("appendonly={aof} appendfsync={fsync} ({meaning})")
}

async fn config_get(
    conn: &mut redis::aio::ConnectionManager,
    name: &str,
) -> redis::RedisResult<String> {
    let pair: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(conn)
        .await?;
    Ok(pair.get(1).cloned().unwrap_or_default())
}

/// Deletes every key under `prefix` (`SCAN MATCH <prefix>:*` + `UNLINK`): a namespace's
/// topics, events, group offsets, dedupe entries and state. Returns how many keys went.
pub async fn purge(url: &str, prefix: &str) -> Result<u64, LogError> {
    let (mut conn, shown) = conn::connect(url, &RedisOptions::default()).await?;
    let pattern = format!("{}:*", naming::glob_escape(prefix));
    let mut cursor: u64 = 0;
    let mut removed = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .map_err(|e| conv::redis_err(&shown, e))?;
        if !batch.is_empty() {
            let n: u64 = redis::cmd("UNLINK")
                .arg(&batch)
                .query_async(&mut conn)
                .await
                .map_err(|e| conv::redis_err(&shown, e))?;
            removed += n;
        }
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}
