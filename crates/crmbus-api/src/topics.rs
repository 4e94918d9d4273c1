//! Topics: create, describe and list.

use serde::{Deserialize, Serialize};

use crate::whole;

/// How much history a topic keeps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateTopicRequest {
    /// 1–200 characters of `A–Z a–z 0–9 . _ -`.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._-]{1,200}$"))]
    pub name: String,
    /// Partition count (default: the server's `default_partitions`).
    #[serde(
        default,
        deserialize_with = "whole::opt_u32",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 4096))]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OffsetRangeView {
    /// The first offset.
    pub first: u64,
    /// How many offsets.
    pub count: u64,
}

/// A topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopicList {
    /// Every topic, by name.
    pub topics: Vec<TopicView>,
}
