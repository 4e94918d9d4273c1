//! A subscription's dead letters: list, show, redrive and discard.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::whole;

/// `GET /v1/subscriptions/{name}/dlq` parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams, utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct DlqQuery {
    /// Event type pattern (`deal.*`).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub ty: Option<String>,
    /// Text the last error contains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Dead-lettered at or after this RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(format = DateTime))]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub since: Option<String>,
    /// Dead-lettered before this RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(format = DateTime))]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub until: Option<String>,
}

/// A dead letter.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The last attempts' errors, oldest first (at most five; for a webhook each names
    /// the answer's status, its latency and the start of its body).
    #[serde(default)]
    pub recent_errors: Vec<String>,
    /// The key waits for this entry (`on_exhausted = hold`).
    pub held: bool,
    /// A redrive is under way.
    pub redriving: bool,
    /// The event, as a structured CloudEvent.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub event: Value,
}

/// `GET /v1/subscriptions/{name}/dlq`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DlqList {
    /// Entries by partition and offset.
    pub entries: Vec<DlqEntryView>,
}

/// `POST /v1/subscriptions/{name}/dlq/redrive`: exactly one of `entries`, `filter`, `all`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RedriveResponse {
    /// Entries redriven.
    pub redriven: usize,
}

/// One audited action on a dead letter or on the subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntryView {
    /// When (RFC 3339).
    pub at: String,
    /// Who: the `x-crmbus-actor` header of the request (or `http`), the CLI's `--actor`,
    /// or `crmbus` for what the server did itself (a webhook disabled on 410).
    pub who: String,
    /// `redrive` or `discard` (a dead letter); `disable`, `enable` or `rotate_secret` (the
    /// subscription's push target).
    pub action: String,
    /// The dead letter's id: `<partition>-<offset>` (empty for the subscription's actions).
    pub entry: String,
    /// The event's id.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// Why, in words, when the action says more than its name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// `GET /v1/subscriptions/{name}/audit`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditList {
    /// The actions, oldest first.
    pub entries: Vec<AuditEntryView>,
}
