//! # crmbus-nats
//!
//! crmbus on NATS JetStream: [`NatsLog`] implements [`crmbus::EventLog`], [`NatsStateStore`]
//! implements [`crmbus::StateStore`], [`open`] returns both (how the server opens
//! `backend = "nats"` with a URL), and [`NatsGroupConsumer`] is a consumer group on
//! JetStream's own durable pull consumers. Works with JetStream as of server 2.9 (no
//! stream metadata, no multi-message batches, no `sync_interval`).
//!
//! ## Names: one namespace per deployment
//!
//! Everything lives under a namespace prefix (`prefix`, 1–64 characters of
//! `A–Z a–z 0–9 _ -`; `"crmbus"` in production, a unique one per test run). With topic
//! `T` (each `.` in it written as `~`, a character topic names cannot hold) and partition
//! `P`:
//!
//! | what | JetStream name |
//! |---|---|
//! | events of T/P | stream `<prefix>~T~P`, subject `<prefix>.T.P` (e.g. `crmbus.deals.3`) |
//! | topic specs | KV bucket `<prefix>_topics`, key = topic (escaped, see below), value = the whole [`crmbus::TopicSpec`] as JSON |
//! | group offsets | KV bucket `<prefix>_offsets`, key `<topic>.<group>.<partition>`, value = the decimal offset |
//! | delivery state | KV bucket `<prefix>_state`, key `<namespace>.<key>`; journal stream `<prefix>-journal` |
//! | leases (servers sharing the namespace) | KV bucket `<prefix>_leases`, one key per lease (see [`NatsLeaseStore`]) and the token counter `=token` |
//! | native groups | durable consumer `<group>` on each partition stream |
//!
//! A stream name longer than 200 bytes becomes `<prefix>~h<hash>~P` (XXH3 of the topic).
//! KV keys and consumer names escape every byte outside `A–Z a–z 0–9 _ -` (and `/` in
//! keys) as `=XX`, so any group or state key is usable and no two names collide.
//!
//! ## Offsets: one stream per partition
//!
//! JetStream numbers messages per stream, and crmbus needs offsets 0, 1, 2… per partition,
//! so each partition is its own stream and **offset = stream sequence − 1**. The mapping
//! is exact in both directions, survives restarts, and retention removing the oldest
//! messages moves the first offset up without renumbering anything. A topic's partition
//! count is fixed, so its streams are created with it and deleted with it.
//!
//! ## Append: producer dedupe and what is atomic
//!
//! Each event is published to its partition's subject with the header `Nats-Msg-Id` =
//! 128 bits of XXH3 over its (`source`, `id`), and `Nats-Expected-Stream` naming the
//! partition stream. Every stream's `duplicate_window` is the log's dedupe window
//! ([`NatsOptions::dedupe_window`], default [`crmbus::DEFAULT_DEDUPE_WINDOW`], capped by
//! the topic's `max_age`); JetStream drops a message whose id it saw within the window and
//! answers with `duplicate: true` and the original sequence, which becomes the receipt
//! (the first receipt). Duplicates inside one call are resolved before publishing. With a
//! zero window no id is sent and nothing is deduplicated. The window is the server's, so
//! it holds across restarts of crmbus and is shared by every crmbus process of a namespace.
//!
//! JetStream 2.9 cannot store several messages atomically. An append therefore checks the
//! whole call first — every topic exists, every event is a valid CloudEvent, and every
//! event fits the server's `max_payload` — and publishes nothing if any check fails. Then
//! it publishes topic-major, in event order, up to 512 messages in flight, under a
//! per-topic lock so a batch stays contiguous within each partition against the other
//! appenders of the same process (appenders in other processes may interleave with it;
//! each event's own order is kept). An error or a crash part-way leaves a prefix of the
//! publishes stored; the call returns an error and the producer's retry is absorbed by
//! `Nats-Msg-Id` dedupe: the events that landed get their first receipts, the rest are
//! appended. A retry after the dedupe window would append them twice.
//!
//! ## Reads and time
//!
//! Reads use direct gets (the streams are created with `allow_direct`) by sequence, many in
//! flight, from `max(from, first)`; retention racing a read is seen as a gap at the start
//! (skipped) or later (the read stops there). [`crmbus::EventLog::offset_for_time`] uses
//! the stream's first and last timestamps when the time lies outside them, and otherwise an
//! ephemeral, in-memory consumer with the start-time deliver policy, whose first message
//! is the answer. Timestamps are the server's receive times.
//!
//! ## Group offsets and native groups
//!
//! The [`crmbus::EventLog`] group offsets (what the delivery engine commits: the next offset
//! to read, movable backwards for replay) are values in the `<prefix>_offsets` KV bucket;
//! JetStream's consumers cannot be moved to an arbitrary sequence without being recreated.
//! [`NatsGroupConsumer`] is the JetStream-native alternative for consumers that do not need
//! crmbus's per-key ordering: a durable pull consumer per partition, `AckWait`
//! redelivery to another member, `MaxDeliver`, NAK with delay.
//!
//! ## Retention
//!
//! A topic's [`crmbus::Retention`] becomes each partition stream's limits: `max_age` →
//! `max_age`, `max_bytes` → `max_bytes` (per partition, as in crmbus), with
//! `discard: old`. JetStream applies them itself, on every write and in the background;
//! its byte count includes per-message overhead (subject, headers), so a partition keeps
//! somewhat fewer event bytes than the limit. [`crmbus::EventLog::enforce_retention`] only
//! reports what the server removed since this log last looked (the first call in a
//! process counts everything below each first offset).
//!
//! ## Durability
//!
//! Streams and buckets use file storage with one replica. JetStream acknowledges a publish
//! once the message is written to its store; it does not fsync before acknowledging but
//! syncs periodically (`sync_interval`, two minutes by default on servers that have the
//! option). Server 2.10+ accepts `sync_interval: always` in its JetStream configuration,
//! which fsyncs every write before the acknowledgement; server 2.9 has no such option, so
//! on 2.9 an acknowledged event survives a crash of the server process but not
//! necessarily a power loss of its machine unless a replicated (R3) cluster is used.
//! [`durability_setting`] reports what a server offers.
//!
//! ## Topic lifecycle and crashes
//!
//! Creating a topic first claims its name in the topics bucket (an atomic create, so two
//! creators cannot both win), then creates its streams. Deleting removes the name first,
//! then the streams and the group offsets. Opening a [`NatsLog`] repairs what a crash
//! between those steps left: missing streams of a listed topic are created, streams of a
//! topic that is no longer listed are removed. [`purge`] deletes a whole namespace.
//!
//! ## Tests
//!
//! Every test of this crate needs a live JetStream server (`CRMBUS_NATS_URL`, default
//! `nats://127.0.0.1:4222`), so they build only with the `integration` feature:
//! `cargo test -p crmbus-nats --features integration`. They run crmbus-testkit's
//! conformance suite, state-store contract and delivery scenarios, and what is particular
//! to JetStream.

mod conn;
mod group;
mod lease;
mod log;
mod naming;
mod state;

use std::sync::Arc;

pub use conn::NatsOptions;
pub use group::{GroupBacklog, GroupConsumerOptions, GroupMessage, GroupStart, NatsGroupConsumer};
pub use lease::NatsLeaseStore;
pub use log::NatsLog;
pub use state::NatsStateStore;

use crmbus::{LogError, OpenedBackend};

/// Opens the NATS backend: connects to `url` (for example `nats://127.0.0.1:4222`) and
/// returns the [`NatsLog`] and [`NatsStateStore`] of namespace `prefix` over one
/// connection. An unreachable server or one without JetStream is an
/// [`LogError::Unavailable`] naming the URL.
pub async fn open(url: &str, prefix: &str) -> Result<OpenedBackend, LogError> {
    open_with(url, prefix, NatsOptions::default()).await
}

/// [`open`] with options.
pub async fn open_with(
    url: &str,
    prefix: &str,
    opts: NatsOptions,
) -> Result<OpenedBackend, LogError> {
    let conn = conn::Conn::connect(url, prefix).await?;
    let log = NatsLog::with_conn(conn.clone(), opts).await?;
    let state = NatsStateStore::with_conn(conn).await?;
    Ok(OpenedBackend {
        log: Arc::new(log),
        state: Arc::new(state),
    })
}

/// Deletes everything namespace `prefix` holds on the server at `url`: every partition
/// stream, the journal, and the KV buckets of topics, offsets and state. Returns how many
/// streams were deleted. For tests and for decommissioning; nothing asks twice. The same
/// verb as `crmbus_redis::purge`.
pub async fn purge(url: &str, prefix: &str) -> Result<usize, LogError> {
    use futures_util::TryStreamExt;
    let conn = conn::Conn::connect(url, prefix).await?;
    let names: Vec<String> = conn
        .js
        .stream_names()
        .try_collect()
        .await
        .map_err(|e| conn::backend("listing streams", e))?;
    let mut deleted = 0;
    for name in names.iter().filter(|n| naming::owns_stream(prefix, n)) {
        conn.js
            .delete_stream(name)
            .await
            .map_err(|e| conn::backend(&format!("deleting stream {name}"), e))?;
        deleted += 1;
    }
    Ok(deleted)
}

/// Describes, in one line, the durability the server at `url` gives an acknowledged
/// publish (server version, storage, whether per-write fsync is available) — for the
/// benchmark's report. Never fails: an unreachable server is described as such.
pub async fn durability_setting(url: &str) -> String {
    let client = match async_nats::ConnectOptions::new()
        .connection_timeout(std::time::Duration::from_secs(5))
        .connect(url)
        .await
    {
        Ok(c) => c,
        Err(e) => return format!("NATS at {url} is unreachable: {e}"),
    };
    let version = client.server_info().version;
    let jetstream = match conn::account_info(&client).await {
        Ok(a) => format!(
            "JetStream on (account file storage used: {} bytes)",
            a["storage"].as_u64().unwrap_or(0)
        ),
        Err(e) => return format!("NATS {version} at {url}: JetStream unavailable ({e})"),
    };
    let sync = if version_at_least(&version, 2, 10) {
        "acks after the write reaches the file store; fsync every sync_interval (default 2m) \
         unless the server sets `sync_interval: always` (not visible to clients)"
    } else {
        "acks after the write reaches the file store, before fsync; the server syncs \
         periodically and 2.9 has no `sync_interval: always` option"
    };
    format!("NATS {version}, {jetstream}, crmbus streams: file storage, 1 replica; {sync}")
}

/// True when a `major.minor.patch` version string is at least `major.minor`.
fn version_at_least(version: &str, major: u64, minor: u64) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let ma = parts.next().unwrap_or(0);
    let mi = parts.next().unwrap_or(0);
    (ma, mi) >= (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare() {
        assert!(version_at_least("2.10.1", 2, 10));
        assert!(!version_at_least("2.9.10", 2, 10));
        assert!(version_at_least("v3.0.0", 2, 10));
    }
}
