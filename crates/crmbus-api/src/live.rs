//! Following a topic live: `GET /v1/topics/{topic}/stream` (Server-Sent Events) and
//! `/ws` (WebSocket). Each message is a [`crate::StoredView`].

use serde::{Deserialize, Serialize};

/// Where a live stream starts and what it lets through.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveQuery {
    /// `latest` (default), `earliest`, or an RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Type patterns (`deal.*`); an event matching any of them passes. Sent as one
    /// `type` parameter each.
    #[serde(default, rename = "type", skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// A subscription filter, as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Resume after this `<partition>-<offset>` (what the `Last-Event-ID` header carries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_id: Option<String>,
}

/// `POST /v1/topics/{topic}/stream-token`: a short-lived token that opens the topic's
/// live streams, for browsers (an `EventSource` or a WebSocket cannot send an
/// `Authorization` header, and a key does not belong in a URL).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StreamTokenRequest {
    /// How long the token opens streams, in seconds: 1–3600, default 300. A stream
    /// opened in time runs on while its key works.
    #[serde(
        default,
        deserialize_with = "crate::whole::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 3600))]
    pub ttl_seconds: Option<u64>,
}

/// A live-stream token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamToken {
    /// The token: send it as `?token=…` on the stream's URL. It holds no secret of the
    /// key it was made with, and stops opening streams at `expires_at` or when that key is
    /// revoked.
    pub token: String,
    /// Until when it opens streams (RFC 3339).
    pub expires_at: String,
    /// The Server-Sent Events URL with the token (a path on this server).
    pub stream_url: String,
    /// The WebSocket URL with the token (a path on this server).
    pub ws_url: String,
}
