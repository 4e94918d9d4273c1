//! The storage seam: the [`EventLog`] trait every backend implements, and its value types.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::LogError;
use crate::event::Event;

/// How long a producer dedupe entry is remembered when a backend is not told otherwise.
pub const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(120);

/// How much history a topic keeps. Both limits are optional; `None` keeps everything.
///
/// Backends apply retention in their own unit (the embedded log deletes whole segments),
/// so a topic may hold somewhat more than a limit, never less than the newest events
/// within it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Events older than this (by append time) may be deleted.
    #[serde(
        rename = "max_age_ms",
        default,
        with = "opt_millis",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_age: Option<Duration>,
    /// When a partition holds more bytes than this, its oldest events may be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

/// What to create: a topic's name, its partition count and its retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSpec {
    /// Topic name: 1–200 characters of `A–Z a–z 0–9 . _ -`.
    pub name: String,
    /// Number of partitions, at least 1. Fixed for the topic's life.
    pub partitions: u32,
    /// How much history to keep.
    #[serde(default)]
    pub retention: Retention,
    /// When set, every event published to the topic must have a registered schema for its
    /// type (see the schema registry); otherwise types without one pass unchecked.
    #[serde(default)]
    pub require_schemas: bool,
}

impl TopicSpec {
    /// A spec with `partitions` partitions and unlimited retention.
    pub fn new(name: impl Into<String>, partitions: u32) -> Self {
        TopicSpec {
            name: name.into(),
            partitions,
            retention: Retention::default(),
            require_schemas: false,
        }
    }

    /// The same spec with the given retention.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Checks the name and the partition count.
    pub fn validate(&self) -> Result<(), LogError> {
        validate_topic_name(&self.name)?;
        if self.partitions == 0 || self.partitions > 4096 {
            return Err(LogError::InvalidArgument(format!(
                "partitions must be between 1 and 4096, got {}",
                self.partitions
            )));
        }
        Ok(())
    }
}

/// Checks that `name` is a usable topic name (it also names directories and keys).
pub fn validate_topic_name(name: &str) -> Result<(), LogError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > 200 || !ok_chars || name == "." || name == ".." {
        return Err(LogError::InvalidArgument(format!(
            "topic name '{name}' must be 1-200 characters of A-Z a-z 0-9 . _ -"
        )));
    }
    Ok(())
}

/// The state of one partition: the offsets it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// Partition number.
    pub partition: u32,
    /// Offset of the oldest event still held (equal to `next_offset` when empty).
    pub first_offset: u64,
    /// Offset the next appended event will get.
    pub next_offset: u64,
    /// Offsets whose records are known damaged: never served, never given out again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub corrupt: Vec<OffsetRange>,
}

/// A run of offsets: `first` and the `count` after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRange {
    /// The first offset.
    pub first: u64,
    /// How many offsets.
    pub count: u64,
}

/// A topic as it stands: its spec and the offsets of each partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// The topic's spec, as it was created: name, partitions, retention and whether it
    /// requires schemas (the members of this object, when written as JSON).
    #[serde(flatten)]
    pub spec: TopicSpec,
    /// One entry per partition, in partition order.
    pub partition_info: Vec<PartitionInfo>,
}

impl TopicInfo {
    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Number of events held across all partitions.
    pub fn event_count(&self) -> u64 {
        self.partition_info
            .iter()
            .map(|p| p.next_offset - p.first_offset)
            .sum()
    }
}

/// What an append returns for one event in one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The event's `id`.
    pub id: String,
    /// The topic it was appended to.
    pub topic: String,
    /// The partition its key hashed to.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: u64,
    /// True when the same `source` + `id` was already in the topic within the dedupe window:
    /// nothing was appended and this is the first append's receipt.
    pub duplicate: bool,
    /// The event's version in its subject's stream (1, 2, 3 …), on backends that keep
    /// versions ([`EventLog::supports_versions`]) for an event with a `subject`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// The CloudEvents extension attribute by which a publish states the version its event's
/// subject must be at (an Integer): the append is written only if it is, atomically. It is
/// a condition of the append, not stored with the event.
pub const EXPECTED_VERSION: &str = "expectedversion";

/// The version `event` states in its [`EXPECTED_VERSION`] extension, if it has one.
/// Fails for a value that is not a whole number from 0 up, or for an event without a
/// `subject` (only a subject has versions).
pub fn expected_version(event: &Event) -> Result<Option<u64>, LogError> {
    let Some(value) = event.extensions.get(EXPECTED_VERSION) else {
        return Ok(None);
    };
    let version = match value {
        crate::event::ExtensionValue::Number(n) => n.as_u64(),
        crate::event::ExtensionValue::String(s) => s.parse::<u64>().ok(),
        crate::event::ExtensionValue::Bool(_) => None,
    };
    let Some(version) = version else {
        return Err(LogError::InvalidArgument(format!(
            "event {}: {EXPECTED_VERSION} must be a whole number from 0 up (the subject's \
             current version; 0 for a subject without events)",
            event.id
        )));
    };
    if event.subject.is_none() {
        return Err(LogError::InvalidArgument(format!(
            "event {}: {EXPECTED_VERSION} needs a subject: versions are kept per subject",
            event.id
        )));
    }
    Ok(Some(version))
}

/// One event of a subject's stream, with its version.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectEvent {
    /// Its version in the subject's stream.
    pub version: u64,
    /// The event with its partition, offset and append time.
    pub stored: StoredEvent,
}

/// What [`EventLog::read_subject`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectRead {
    /// The subject's current version (of its newest durable event; 0 before its first):
    /// what an append's `expectedversion` is compared with.
    pub version: u64,
    /// The events asked for, oldest first.
    pub events: Vec<SubjectEvent>,
}

/// An event as read back from a partition.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Partition it was read from.
    pub partition: u32,
    /// Its offset there.
    pub offset: u64,
    /// When the log appended it (the clock of the backend; never decreases in a partition).
    pub timestamp: DateTime<Utc>,
    /// The event, exactly as appended.
    pub event: Event,
    /// The event's structured JSON as the backend stored it, when the backend gives it
    /// (the embedded log's [`EventLog::read`] does; `None` from the other backends and
    /// reads). It reads as the same JSON value as `event` serialized, so a reader may
    /// send it as it is instead of serializing `event` again (the pull route does). Code
    /// that changes `event` must set this to `None`. Not compared by `==`, which compares
    /// the stored event.
    pub stored_json: Option<bytes::Bytes>,
}

impl PartialEq for StoredEvent {
    fn eq(&self, other: &StoredEvent) -> bool {
        self.partition == other.partition
            && self.offset == other.offset
            && self.timestamp == other.timestamp
            && self.event == other.event
    }
}

/// The storage seam of crmbus: a set of named, partitioned, append-only logs plus the
/// consumer-group offsets kept beside them.
///
/// The contract every backend keeps (and that `crmbus_testkit::conformance` checks):
///
/// - **Topics** are created with a fixed partition count and a [`Retention`];
///   creating an existing topic fails with [`LogError::TopicExists`], using a missing one
///   with [`LogError::TopicNotFound`].
/// - **Append** places each event in partition [`crate::partition_for`]`(event, n)` — the
///   stable hash of its `subject`, or of its `id` without one — and gives it the next offset
///   there. One call appends every event to every listed topic. It is atomic per topic in
///   this sense: the whole call is checked first (topics exist, events valid) and any error
///   writes nothing; a batch's events are contiguous and in order within each partition.
///   Whether a crash in the middle can leave a batch in some partitions and not others is
///   the backend's to say (the embedded log completes such a batch on open; see its docs).
///   The call returns only when every appended event is durable under the backend's
///   configured durability; an error means the caller must assume nothing was acknowledged
///   (a retry is safe: dedupe absorbs what did land).
/// - **Receipts** come topic-major: all receipts of `topics[0]` in event order, then
///   `topics[1]`, and so on.
/// - **Producer dedupe**: appending an event whose (`topic`, `source`, `id`) was appended
///   within the backend's dedupe window appends nothing and returns the first receipt with
///   `duplicate: true`. This also holds inside one batch.
/// - **Read** returns events of one partition in offset order, starting at `from` (or at the
///   partition's first offset if `from` is older than retention kept), at most `max`,
///   and only events that are durable. An empty result means nothing at or after `from`.
///   A record that fails its checksum, or passes it but does not decode as an event, is
///   never returned as data: the read stops before it, or fails with [`LogError::Corrupt`]
///   if it is the first one asked for; that error's `offset` is the unreadable offset, so
///   a consumer can pass over that record alone (the delivery engine dead-letters it).
///   A backend that can only fail a whole batch names the bad record's offset all the
///   same; the engine then reads up to it first.
/// - **Time**: [`EventLog::offset_for_time`] gives the first offset whose append timestamp
///   is at or after a time (the next offset if none is).
/// - **Group offsets**: a committed offset is the next offset the group will read; it is
///   kept per (group, topic, partition), durably, independently of other groups.
/// - **Retention** is applied by [`EventLog::enforce_retention`] (backends may also apply
///   it in the background); it removes only the oldest events of a partition.
/// - **Reopen**: everything acknowledged survives closing and opening the backend again.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// A short name of the backend kind, like `"embedded"` or `"memory"`.
    fn backend_name(&self) -> &'static str;

    /// Creates a topic.
    async fn create_topic(&self, spec: TopicSpec) -> Result<TopicInfo, LogError>;

    /// Deletes a topic and all its events and group offsets.
    async fn delete_topic(&self, name: &str) -> Result<(), LogError>;

    /// Lists every topic, sorted by name.
    async fn list_topics(&self) -> Result<Vec<TopicInfo>, LogError>;

    /// Describes one topic.
    async fn describe_topic(&self, name: &str) -> Result<TopicInfo, LogError>;

    /// Appends every event to every topic; see the trait's contract for ordering,
    /// atomicity, durability and dedupe.
    async fn append(&self, topics: &[String], events: &[Event]) -> Result<Vec<Receipt>, LogError>;

    /// Reads up to `max` durable events of one partition from offset `from`.
    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, LogError>;

    /// The first offset of a partition whose append timestamp is at or after `time`.
    async fn offset_for_time(
        &self,
        topic: &str,
        partition: u32,
        time: DateTime<Utc>,
    ) -> Result<u64, LogError>;

    /// Durably records that `group` will next read `offset` of `topic`/`partition`.
    async fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), LogError>;

    /// Durably records, for `group` on `topic`, the next offset of each partition in
    /// `offsets` (`(partition, offset)` pairs). A backend that can writes them all at once,
    /// all or nothing (the embedded log: one transaction, one sync); the default commits
    /// them one by one in order, so a failure may leave the ones before it committed.
    async fn commit_offsets(
        &self,
        group: &str,
        topic: &str,
        offsets: &[(u32, u64)],
    ) -> Result<(), LogError> {
        for &(partition, offset) in offsets {
            self.commit_offset(group, topic, partition, offset).await?;
        }
        Ok(())
    }

    /// [`EventLog::commit_offset`], applied only while every one of `fences` is still held
    /// with its token, checked atomically with the write ([`LogError::Fenced`] otherwise).
    /// With no fences it is a plain commit. Backends without leases (the default) refuse
    /// fenced commits.
    async fn commit_offset_fenced(
        &self,
        fences: &[crate::cluster::Fence],
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), LogError> {
        if fences.is_empty() {
            return self.commit_offset(group, topic, partition, offset).await;
        }
        Err(LogError::InvalidArgument(
            "this backend has no leases: a fenced commit is not possible".into(),
        ))
    }

    /// The offset `group` committed for `topic`/`partition`, if any.
    async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError>;

    /// Whether this backend keeps a version per subject, checks an append's
    /// [`EXPECTED_VERSION`] atomically with it, and serves [`EventLog::read_subject`].
    /// Backends that cannot (the default) must not be given events with that extension:
    /// [`crate::EventBus`] refuses them with [`LogError::Unsupported`].
    fn supports_versions(&self) -> bool {
        false
    }

    /// Up to `max` events of one subject of `topic` from version `from_version` on, in
    /// order, with their versions, served from an index (not a scan of the partition).
    async fn read_subject(
        &self,
        topic: &str,
        subject: &str,
        from_version: u64,
        max: usize,
    ) -> Result<SubjectRead, LogError> {
        let _ = (topic, subject, from_version, max);
        Err(LogError::Unsupported {
            backend: self.backend_name(),
            what: "per-subject streams and versions".into(),
        })
    }

    /// Applies every topic's retention now; returns how many events were removed.
    async fn enforce_retention(&self) -> Result<u64, LogError>;

    /// Flushes and releases the backend's resources; later calls may fail.
    async fn close(&self) -> Result<(), LogError>;
}

mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_u64(d.as_millis() as u64),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}
