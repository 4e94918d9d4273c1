//! Errors as RFC 9457 problem documents (`application/problem+json`).

use serde::{Deserialize, Serialize};

/// One violation inside a problem: which field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// The field concerned (`id`, `events[2].type`, `data/amount`, a query parameter…).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:crmbus:problem:<code>`.
    #[serde(rename = "type")]
    pub ty: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened in this case.
    pub detail: String,
    /// The stable machine-readable code (`topic_not_found`, `invalid_event`, …).
    pub code: String,
    /// Every violation found, when the request was invalid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// With `version_conflict`: the subject's version now (read its stream from the
    /// version you had, then publish again stating this one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
}
