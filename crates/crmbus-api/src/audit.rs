//! The server's audit log: who changed what (topics, subscriptions, schemas, keys), who
//! redrove or discarded dead letters, and from where requests were refused in bursts.

use serde::{Deserialize, Serialize};

/// One audited action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditLogEntry {
    /// The entry's id: ordered by time, and what `after` takes to read on from it.
    pub id: String,
    /// When (RFC 3339).
    pub at: String,
    /// Who: the key's name (with the name the caller gave in `x-crmbus-actor`, if any),
    /// `anonymous` when no key was needed, `offline` for what the CLI did on a data
    /// directory, `crmbus` for what the server did itself.
    pub actor: String,
    /// The id of the key the request was let through with, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// What was done: the route (`POST /v1/topics/{topic}/subscriptions`), `keys.create`
    /// (offline), or `auth.failures` (a burst of refused requests).
    pub action: String,
    /// The request's path (the names it acted on); no query, no body.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// The answer's HTTP status (the last one, for a burst).
    pub status: u16,
    /// The address the request came from, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// More, in words (a burst: how many were refused, and why).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// `GET /v1/audit`: entries, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditLogPage {
    /// Up to `limit` entries after `after`, oldest first.
    pub entries: Vec<AuditLogEntry>,
    /// The `after` that reads on from here; absent when this page reached the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// `GET /v1/audit`'s query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams, utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct AuditLogQuery {
    /// Entries after this entry id (a page's `next_after`); from the oldest when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// At most this many entries (1–1000, default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub limit: Option<u64>,
}
