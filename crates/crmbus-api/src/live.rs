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
