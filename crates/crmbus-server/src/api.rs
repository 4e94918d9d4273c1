//! The request and response bodies of the HTTP API, shared by the handlers, the OpenAPI
//! document and the CLI's client.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// How much history a topic keeps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionBody {
    /// Events older than this many milliseconds may be deleted.
    #[serde(
        default,
        deserialize_with = "whole::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_age_ms: Option<u64>,
    /// A partition holding more bytes than this may lose its oldest events.
    #[serde(
        default,
        deserialize_with = "whole::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_bytes: Option<u64>,
}

/// `POST /v1/topics`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTopicRequest {
    /// 1–200 characters of `A–Z a–z 0–9 . _ -`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,200}$")]
    pub name: String,
    /// Partition count (default: the server's `default_partitions`).
    #[serde(
        default,
        deserialize_with = "whole::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1, maximum = 4096)]
    pub partitions: Option<u32>,
    /// Retention (default: keep everything).
    #[serde(
        default,
        deserialize_with = "whole::opt_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub retention: Option<RetentionBody>,
    /// Every event must have a registered schema for its type.
    #[serde(default)]
    pub require_schemas: bool,
}

/// One partition of a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PartitionView {
    /// Partition number.
    pub partition: u32,
    /// Oldest offset kept.
    pub first_offset: u64,
    /// Offset the next event will get.
    pub next_offset: u64,
    /// Events kept.
    pub events: u64,
    /// Offsets whose records are damaged: never served, never given out again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub corrupt: Vec<OffsetRangeView>,
}

/// A run of offsets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OffsetRangeView {
    /// The first offset.
    pub first: u64,
    /// How many offsets.
    pub count: u64,
}

/// A topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TopicView {
    /// Name.
    pub name: String,
    /// Partition count.
    pub partitions: u32,
    /// Every event must have a registered schema for its type.
    pub require_schemas: bool,
    /// Retention.
    pub retention: RetentionBody,
    /// Events kept, over all partitions.
    pub events: u64,
    /// Each partition's offsets.
    pub partition_info: Vec<PartitionView>,
}

/// `GET /v1/topics`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TopicList {
    /// Every topic, by name.
    pub topics: Vec<TopicView>,
}

/// Where one event landed in one topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReceiptView {
    /// The event's id.
    pub id: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// True when the same `source` + `id` was already stored: nothing new was written and
    /// this is the first receipt.
    pub duplicate: bool,
}

/// The answer to a publish: one receipt per event and topic (topic-major).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PublishResponse {
    /// The receipts.
    pub receipts: Vec<ReceiptView>,
}

/// `GET /v1/topics/{topic}/events` parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// Partition to read (default: every partition).
    pub partition: Option<u32>,
    /// First offset to read (default: the oldest kept).
    pub from: Option<u64>,
    /// Read from the first event appended at or after this RFC 3339 time.
    #[param(format = DateTime)]
    pub from_time: Option<String>,
    /// Events at most (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// A stored event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StoredView {
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// When the log appended it (RFC 3339).
    pub appended_at: String,
    /// The event, as a structured CloudEvent.
    #[schema(value_type = Object)]
    pub event: Value,
}

/// `GET /v1/topics/{topic}/events`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReadResponse {
    /// Events in offset order per partition.
    pub events: Vec<StoredView>,
    /// For each partition read, the offset to continue from (`?partition=p&from=next[p]`).
    pub next: BTreeMap<String, u64>,
}

/// A retry policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBody {
    /// Deliveries at most, the first included (default 5).
    #[serde(
        default,
        deserialize_with = "whole::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1)]
    pub max_attempts: Option<u32>,
    /// Backoff before the first retry, ms (default 1000).
    #[serde(
        default,
        deserialize_with = "whole::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub initial_backoff_ms: Option<u64>,
    /// Backoff cap, ms (default 300000).
    #[serde(
        default,
        deserialize_with = "whole::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_backoff_ms: Option<u64>,
    /// Backoff growth per attempt (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub multiplier: Option<f64>,
    /// Give up this long after the first failure, ms (default one day).
    #[serde(
        default,
        deserialize_with = "whole::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_age_ms: Option<u64>,
}

/// `POST /v1/topics/{topic}/subscriptions`: a pull subscription (consumer group).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscriptionRequest {
    /// Name, also the consumer group: 1–200 characters of `A–Z a–z 0–9 . _ -`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,200}$")]
    pub name: String,
    /// `{"types": ["deal.*"], "where": [{"field": "data.amount", "op": "gt", "value": 1000}]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    /// `"earliest"` (default), `"latest"`, or `{"time": "<RFC 3339>"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub start: Option<Value>,
    /// Retry policy.
    #[serde(
        default,
        deserialize_with = "whole::opt_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry: Option<RetryBody>,
    /// `"key"` (default: per-subject order) or `"none"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<String>,
    /// `"skip"` (default) or `"hold"` (the key waits for an operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_exhausted: Option<String>,
    /// How long a pulled delivery is leased before it is delivered again, ms (default 30000).
    #[serde(
        default,
        deserialize_with = "whole::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1, maximum = 3600000)]
    pub ack_timeout_ms: Option<u64>,
    /// Deliveries queued or leased at once (default 256).
    #[serde(
        default,
        deserialize_with = "whole::opt_usize",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1, maximum = 10000)]
    pub max_in_flight: Option<usize>,
}

/// One partition of a subscription's cursor.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CursorView {
    /// Partition.
    pub partition: u32,
    /// Next offset the group will finish.
    pub committed: u64,
    /// The partition's next offset.
    pub next_offset: u64,
    /// Events not yet finished.
    pub lag: u64,
}

/// A subscription's live state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SubscriptionStatus {
    /// Events behind the end of the topic, summed over partitions.
    pub lag: u64,
    /// Per partition.
    pub partitions: Vec<CursorView>,
    /// Deliveries started and not finished (queued, leased or waiting).
    pub in_flight: u64,
    /// Deliveries pulled and not yet acked.
    pub leased: u64,
    /// Keys waiting on a retry or a held dead letter.
    pub parked_keys: u64,
    /// Dead letters.
    pub dlq_size: u64,
    /// Deliveries since the server started.
    pub delivered: u64,
    /// Acks since the server started.
    pub acked: u64,
    /// Retries scheduled since the server started.
    pub retried: u64,
    /// Dead letters since the server started.
    pub dead_lettered: u64,
}

/// A subscription.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SubscriptionView {
    /// Name (and consumer group).
    pub name: String,
    /// Topic.
    pub topic: String,
    /// The request it was created with, defaults filled in.
    pub config: CreateSubscriptionRequest,
    /// Live state.
    pub status: SubscriptionStatus,
}

/// `GET /v1/subscriptions`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SubscriptionList {
    /// Every subscription, by name.
    pub subscriptions: Vec<SubscriptionView>,
}

/// `POST /v1/subscriptions/{name}/pull`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// Deliveries at most (default 10, at most 1000).
    #[serde(
        default,
        deserialize_with = "whole::opt_usize",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_events: Option<usize>,
    /// Wait up to this long for the first delivery, ms (default 0, at most 30000).
    #[serde(
        default,
        deserialize_with = "whole::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 0, maximum = 30000)]
    pub wait_ms: Option<u64>,
}

/// One pulled delivery.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    /// Ack (or nack) it with this id before the ack timeout.
    pub ack_id: String,
    /// 1 for the first delivery, then one more each time.
    pub attempt: u32,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// The event, as a structured CloudEvent.
    #[schema(value_type = Object)]
    pub event: Value,
}

/// The answer to a pull.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PullResponse {
    /// The deliveries (possibly none).
    pub deliveries: Vec<DeliveryView>,
}

/// `POST /v1/subscriptions/{name}/ack`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// Ack ids from a pull.
    pub ack_ids: Vec<String>,
}

/// `POST /v1/subscriptions/{name}/nack`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NackRequest {
    /// Ack ids from a pull.
    pub ack_ids: Vec<String>,
    /// Deliver again after this long, ms (default: the retry policy's backoff).
    #[serde(
        default,
        deserialize_with = "whole::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub delay_ms: Option<u64>,
    /// Why it failed; kept as the dead letter's last error if retries run out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer to an ack or nack.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AckResponse {
    /// How many ack ids were settled.
    pub settled: usize,
    /// Ack ids that settled nothing: unknown, already settled, or whose lease had
    /// expired.
    pub unknown: Vec<String>,
    /// Those of `unknown` whose lease had expired before this call: the event was (or
    /// will be) delivered again as a later `attempt`, which a late answer never settles.
    /// A sink that must not apply an event twice fences its side effects by partition,
    /// offset and attempt.
    pub stale: Vec<String>,
}

/// `POST /v1/subscriptions/{name}/seek`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeekRequest {
    /// `"earliest"`, `"latest"`, `{"time": "<RFC 3339>"}` or `{"offsets": {"0": 12}}`.
    #[schema(value_type = Object)]
    pub to: Value,
}

/// The answer to a seek: the new cursor.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SeekResponse {
    /// Per partition.
    pub partitions: Vec<CursorView>,
}

/// `GET /v1/subscriptions/{name}/dlq` parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DlqQuery {
    /// Event type pattern (`deal.*`).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub ty: Option<String>,
    /// Text the last error contains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Dead-lettered at or after this RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(format = DateTime)]
    #[schema(format = DateTime)]
    pub since: Option<String>,
    /// Dead-lettered before this RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(format = DateTime)]
    #[schema(format = DateTime)]
    pub until: Option<String>,
}

/// A dead letter.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DlqEntryView {
    /// Entry id: `<partition>-<offset>`.
    pub id: String,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// The business key.
    pub key: String,
    /// Deliveries tried.
    pub attempts: u32,
    /// First failure (RFC 3339).
    pub first_failure: String,
    /// Last failure (RFC 3339).
    pub last_failure: String,
    /// The last error.
    pub last_error: String,
    /// The key waits for this entry (`on_exhausted = hold`).
    pub held: bool,
    /// A redrive is under way.
    pub redriving: bool,
    /// The event, as a structured CloudEvent.
    #[schema(value_type = Object)]
    pub event: Value,
}

/// `GET /v1/subscriptions/{name}/dlq`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DlqList {
    /// Entries by partition and offset.
    pub entries: Vec<DlqEntryView>,
}

/// `POST /v1/subscriptions/{name}/dlq/redrive`: exactly one of `entries`, `filter`, `all`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// Entry ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<String>>,
    /// Every entry this filter selects.
    #[serde(
        default,
        deserialize_with = "whole::opt_object",
        skip_serializing_if = "Option::is_none"
    )]
    pub filter: Option<DlqQuery>,
    /// Every entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
}

/// The answer to a redrive.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RedriveResponse {
    /// Entries redriven.
    pub redriven: usize,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or what is wrong.
    pub status: String,
    /// The storage backend.
    pub backend: String,
}

/// A CloudEvent in the structured JSON format, as documentation of the publish body
/// (the server parses and validates events with `crmbus::Event`). Extension attributes
/// are further top-level members: lower-case letters and digits, at most 20 characters.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CloudEventDoc {
    /// Always `1.0`.
    #[schema(pattern = "^1\\.0$")]
    pub specversion: String,
    /// Unique per `source`; with it, the dedupe key.
    #[schema(min_length = 1)]
    pub id: String,
    /// Where the event happened, a URI-reference such as `urn:acme:crm`.
    #[schema(min_length = 1)]
    pub source: String,
    /// The event type, such as `deal.won`.
    #[serde(rename = "type")]
    #[schema(min_length = 1)]
    pub ty: String,
    /// The business key (`deal-42`): it decides the partition and the ordering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1)]
    pub subject: Option<String>,
    /// When it happened (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub time: Option<String>,
    /// The media type of `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1)]
    pub datacontenttype: Option<String>,
    /// The schema version `data` follows (an absolute URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1)]
    pub dataschema: Option<String>,
    /// The payload: any JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
    /// Binary payload, base64 (instead of `data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = Byte)]
    pub data_base64: Option<String>,
}

/// Reading JSON integers the way JSON Schema counts them: `5` and `5.0` are both the
/// integer 5 (a number with a zero fractional part), so an integral float is taken where
/// the document says `integer`; `5.5`, a negative number or one out of range is not.
pub mod whole {
    use serde::de::{Deserialize, Deserializer, Error};
    use serde_json::Number;

    /// `n` as a `u64` if it is a whole number from 0 to `u64::MAX`, written either way.
    pub fn number_u64(n: &Number) -> Option<u64> {
        match n.as_u64() {
            Some(v) => Some(v),
            // 2^64 is the first float above u64::MAX; every integral float below it is exact.
            None => n
                .as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 18_446_744_073_709_551_616.0)
                .map(|f| f as u64),
        }
    }

    fn read<'de, D: Deserializer<'de>>(d: D, max: u64) -> Result<Option<u64>, D::Error> {
        let Some(n) = Option::<Number>::deserialize(d)? else {
            return Ok(None);
        };
        match number_u64(&n) {
            Some(v) if v <= max => Ok(Some(v)),
            _ => Err(D::Error::custom(format!(
                "invalid value: {n}, expected an integer between 0 and {max}"
            ))),
        }
    }

    /// An optional `u64`.
    pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        read(d, u64::MAX)
    }

    /// An optional `u32`.
    pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        read(d, u64::from(u32::MAX)).map(|v| v.map(|v| v as u32))
    }

    /// An optional member that must be a JSON object (or `null`): serde would also read a
    /// struct from an array, member by position.
    pub fn opt_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: serde::de::DeserializeOwned,
    {
        match Option::<serde_json::Value>::deserialize(d)? {
            None => Ok(None),
            Some(v @ serde_json::Value::Object(_)) => serde_json::from_value(v)
                .map(Some)
                .map_err(D::Error::custom),
            Some(_) => Err(D::Error::custom("invalid type: expected a JSON object")),
        }
    }

    /// An optional `usize`.
    pub fn opt_usize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        read(d, usize::MAX as u64).map(|v| v.map(|v| v as usize))
    }
}
