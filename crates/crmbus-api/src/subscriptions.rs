//! Subscriptions: create, describe, pull, ack, nack and seek, and the targets (pull,
//! webhook, Redis Pub/Sub) deliveries go to.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::whole;

/// A retry policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RetryBody {
    /// Deliveries at most, the first included (default 5).
    #[serde(
        default,
        deserialize_with = "whole::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
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
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub multiplier: Option<f64>,
    /// Give up this long after the first failure, ms (default one day).
    #[serde(
        default,
        deserialize_with = "whole::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_age_ms: Option<u64>,
    /// A fixed schedule instead of the exponential backoff: the delay after the first
    /// failure, the second, … (the last repeats), ms. Webhook targets default to
    /// `[5000, 300000, 1800000, 7200000, 18000000, 36000000, 36000000]` with 8 attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_ms: Option<Vec<u64>>,
}

/// Where a subscription's deliveries go: `{"kind": "pull"}` (the default: clients pull),
/// `{"kind": "webhook", …}` or `{"kind": "redis_pubsub", …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SubscriptionTarget {
    /// Clients pull deliveries (`POST /v1/subscriptions/{name}/pull`) and ack them. (A
    /// struct variant, so that a member beside `kind` is refused.)
    Pull {},
    /// Each delivery is POSTed to a URL, signed per the Standard Webhooks spec.
    Webhook(WebhookTarget),
    /// Each delivery is PUBLISHed on a Redis Pub/Sub channel.
    RedisPubsub(RedisPubsubTarget),
}

/// A webhook target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WebhookTarget {
    /// `http://` or `https://` URL the structured CloudEvent is POSTed to.
    pub url: String,
    /// Signing secret, `whsec_` + base64 of 24 to 64 bytes. Generated when absent and
    /// shown in full only in the answer to the create (or to a rotation); masked after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Secrets replaced by a rotation, still signing until their time (RFC 3339).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_secrets: Vec<PreviousSecret>,
    /// How long one attempt may take, ms (default 15000, at most 300000).
    #[serde(
        default,
        deserialize_with = "whole::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 300000))]
    pub timeout_ms: Option<u64>,
    /// Extra request headers (for example an API key the receiver wants).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Set when the receiver answered 410 Gone: no more deliveries until re-enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<DisabledTarget>,
}

/// A signing secret kept through a rotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PreviousSecret {
    /// The secret (masked when shown).
    pub secret: String,
    /// Until when it still signs, RFC 3339.
    pub until: String,
}

/// Why and when a target was disabled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DisabledTarget {
    /// When, RFC 3339.
    pub at: String,
    /// Why (for example `the receiver answered 410 Gone`).
    pub reason: String,
}

/// A Redis Pub/Sub target (a mirror for listeners of the old in-process bus).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RedisPubsubTarget {
    /// `redis://[user:password@]host:port[/db]` (a password is masked when shown).
    pub url: String,
    /// Channel; `{topic}` is replaced by the topic's name (default `crm:events:{topic}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// `PUT /v1/subscriptions/{name}/secret`: rotates a webhook's signing secret.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RotateSecretRequest {
    /// The new secret (`whsec_…`); generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// How long the old secret keeps signing beside the new one, ms (default 24 h).
    #[serde(
        default,
        deserialize_with = "whole::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub overlap_ms: Option<u64>,
}

/// `POST /v1/topics/{topic}/subscriptions`: a subscription (consumer group) and where its
/// deliveries go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateSubscriptionRequest {
    /// Name, also the consumer group: 1–200 characters of `A–Z a–z 0–9 . _ -`.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._-]{1,200}$"))]
    pub name: String,
    /// `{"types": ["deal.*"], "where": [{"field": "data.amount", "op": "gt", "value": 1000}]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub filter: Option<Value>,
    /// `"earliest"` (default), `"latest"`, or `{"time": "<RFC 3339>"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
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
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 3600000))]
    pub ack_timeout_ms: Option<u64>,
    /// Deliveries queued or leased at once (default 256).
    #[serde(
        default,
        deserialize_with = "whole::opt_usize",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub max_in_flight: Option<usize>,
    /// Where deliveries go (default `{"kind": "pull"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<SubscriptionTarget>,
    /// What the target receives instead of the CloudEvent: a JSON template in which a
    /// string `"{{ $.data.deal_id }}"` becomes the value at that path of the event, and
    /// `"Deal {{ $.subject }} won"` text with it written in (see the README). A webhook's
    /// body and a Redis message are the shaped JSON; a pulled delivery carries it as
    /// `body` beside the event. The log and the DLQ keep the original event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub transform: Option<Value>,
}

/// One partition of a subscription's cursor.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The circuit breaker: `closed`, `open` or `half-open` (`closed` without a breaker).
    #[serde(default = "closed")]
    pub breaker: String,
    /// The first parked keys by partition and offset (at most 100; `parked_keys` counts
    /// them all), each with the event it waits on. Only in `GET /v1/subscriptions/{name}`
    /// (empty in the list, which any key may read).
    #[serde(default)]
    pub parked: Vec<ParkedKeyView>,
}

fn closed() -> String {
    "closed".to_string()
}

/// A key whose next event waits on a retry or on a dead letter held in the DLQ.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParkedKeyView {
    /// Partition of the event.
    pub partition: u32,
    /// The ordering key.
    pub key: String,
    /// Offset of the event the key waits on.
    pub offset: u64,
    /// Events of the key queued, the waiting one included.
    pub queued: u64,
    /// `retry` or `dead_letter`.
    pub waiting_on: String,
    /// Deliveries made so far (a retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// When the next delivery is due, RFC 3339 (a retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// The last failure's message (a retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubscriptionList {
    /// Every subscription, by name.
    pub subscriptions: Vec<SubscriptionView>,
}

/// `POST /v1/subscriptions/{name}/pull`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// Deliveries at most (default 10, at most 1000).
    #[serde(
        default,
        deserialize_with = "whole::opt_usize",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub max_events: Option<usize>,
    /// Wait up to this long for the first delivery, ms (default 0, at most 30000).
    #[serde(
        default,
        deserialize_with = "whole::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 30000))]
    pub wait_ms: Option<u64>,
}

/// One pulled delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryView {
    /// Ack (or nack) it with this id before the ack timeout. Opaque and unguessable: it
    /// names this lease of the subscription's queue on the server that handed it out, and
    /// nothing once that queue is made again (a restart of the server or of the
    /// subscription's engine: an ack then reports it `unknown`).
    pub ack_id: String,
    /// 1 for the first delivery, then one more each time.
    pub attempt: u32,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// The event, as a structured CloudEvent.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub event: Value,
    /// The event shaped by the subscription's `transform` (absent without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub body: Option<Value>,
}

/// The answer to a pull.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PullResponse {
    /// The deliveries (possibly none).
    pub deliveries: Vec<DeliveryView>,
}

/// `POST /v1/subscriptions/{name}/ack`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// Ack ids from a pull.
    pub ack_ids: Vec<String>,
}

/// `POST /v1/subscriptions/{name}/nack`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SeekRequest {
    /// `"earliest"`, `"latest"`, `{"time": "<RFC 3339>"}` or `{"offsets": {"0": 12}}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub to: Value,
}

/// The answer to a seek: the new cursor.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SeekResponse {
    /// Per partition.
    pub partitions: Vec<CursorView>,
}
