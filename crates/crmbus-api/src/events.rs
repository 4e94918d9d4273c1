//! Publishing and reading events.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where one event landed in one topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The event's version in its subject's stream (1, 2, 3 …): on the embedded log, for
    /// an event with a `subject`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// The answer to a publish: one receipt per event and topic (topic-major).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublishResponse {
    /// The receipts.
    pub receipts: Vec<ReceiptView>,
}

/// `GET /v1/topics/{topic}/events` parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct ReadQuery {
    /// Partition to read (default: every partition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// First offset to read (default: the oldest kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// Read from the first event appended at or after this RFC 3339 time.
    #[cfg_attr(feature = "openapi", param(format = DateTime))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_time: Option<String>,
    /// Events at most (default 100, at most 1000).
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// `GET /v1/topics/{topic}/subjects/{subject}/events` parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct SubjectReadQuery {
    /// First version to return (default 1: the whole stream the topic keeps).
    #[cfg_attr(feature = "openapi", param(minimum = 1))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_version: Option<u64>,
    /// Events at most (default 100, at most 1000).
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// One event of a subject's stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubjectEventView {
    /// Its version in the subject's stream (1 for the subject's first event).
    pub version: u64,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// When the log appended it (RFC 3339).
    pub appended_at: String,
    /// The event, as a structured CloudEvent.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub event: Value,
}

/// `GET /v1/topics/{topic}/subjects/{subject}/events`: one subject's events in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubjectEventsResponse {
    /// The topic.
    pub topic: String,
    /// The subject.
    pub subject: String,
    /// The subject's current version (0 before its first event): state it as
    /// `expectedversion` to append only if nothing was appended since.
    pub version: u64,
    /// Events from `from_version` on, oldest first (fewer than `limit` when the stream
    /// ends; retention may have removed a subject's oldest events, whose versions are then
    /// absent).
    pub events: Vec<SubjectEventView>,
    /// The version to continue from (`?from_version=next_version`).
    pub next_version: u64,
}

/// A stored event.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StoredView {
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// When the log appended it (RFC 3339).
    pub appended_at: String,
    /// The event, as a structured CloudEvent.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub event: Value,
}

/// `GET /v1/topics/{topic}/events`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadResponse {
    /// Events in offset order per partition.
    pub events: Vec<StoredView>,
    /// For each partition read, the offset to continue from (`?partition=p&from=next[p]`).
    pub next: BTreeMap<String, u64>,
}

/// A CloudEvent in the structured JSON format, as documentation of the publish body
/// (the server parses and validates events with `crmbus::Event`). Extension attributes
/// are further top-level members: lower-case letters and digits, at most 20 characters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CloudEventDoc {
    /// Always `1.0`.
    #[cfg_attr(feature = "openapi", schema(pattern = "^1\\.0$"))]
    pub specversion: String,
    /// Unique per `source`; with it, the dedupe key.
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub id: String,
    /// Where the event happened, a URI-reference such as `urn:acme:crm`.
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub source: String,
    /// The event type, such as `deal.won`.
    #[serde(rename = "type")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub ty: String,
    /// The business key (`deal-42`): it decides the partition and the ordering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub subject: Option<String>,
    /// When it happened (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub time: Option<String>,
    /// The media type of `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub datacontenttype: Option<String>,
    /// The schema version `data` follows (an absolute URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub dataschema: Option<String>,
    /// The payload: any JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub data: Option<Value>,
    /// Binary payload, base64 (instead of `data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = Byte))]
    pub data_base64: Option<String>,
}
