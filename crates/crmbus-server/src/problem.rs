//! Errors of the HTTP API as RFC 9457 problem details (`application/problem+json`), and the
//! one place where each machine-readable error code gets its HTTP status.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use crmbus::{BusError, InvalidEvent, LogError};
pub use crmbus_api::problem::{FieldError, Problem};

/// An error a handler returns; it renders as a problem document.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: String,
    /// What happened.
    pub detail: String,
    /// Violations, for invalid requests.
    pub errors: Vec<FieldError>,
}

/// The HTTP status of an error code: the only mapping from codes to statuses.
pub fn status_for_code(code: &str) -> StatusCode {
    match code {
        "topic_not_found"
        | "partition_not_found"
        | "subscription_not_found"
        | "dlq_entry_not_found"
        | "schema_not_found"
        | "not_found" => StatusCode::NOT_FOUND,
        "topic_exists"
        | "subscription_exists"
        | "schema_incompatible"
        | "conflict"
        | "offset_out_of_range" => StatusCode::CONFLICT,
        "invalid_argument" | "invalid_event" | "invalid_request" | "schema_violation"
        | "invalid_schema" => StatusCode::BAD_REQUEST,
        "payload_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "unsupported_media_type" => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unavailable" | "shutting_down" => StatusCode::SERVICE_UNAVAILABLE,
        "storage_full" => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn title_for(status: StatusCode) -> String {
    status.canonical_reason().unwrap_or("Error").to_string()
}

impl ApiError {
    /// An error with a code (its status comes from [`status_for_code`]) and a detail.
    pub fn new(code: &str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status: status_for_code(code),
            code: code.to_string(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// A 400 `invalid_request` naming one field.
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError::new("invalid_request", format!("{field}: {message}")).with_errors(vec![
            FieldError {
                field: field.to_string(),
                message,
            },
        ])
    }

    /// The same error listing these violations.
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> ApiError {
        self.errors = errors;
        self
    }

    /// An invalid event; each violation's field is prefixed with `prefix` (for batches).
    pub fn invalid_event(e: &InvalidEvent, prefix: &str) -> ApiError {
        let errors: Vec<FieldError> = e
            .violations
            .iter()
            .map(|v| FieldError {
                field: format!("{prefix}{}", v.attribute),
                message: v.message.clone(),
            })
            .collect();
        let fields: Vec<&str> = errors.iter().map(|f| f.field.as_str()).collect();
        ApiError::new(
            "invalid_event",
            format!("the event is not valid: {}", fields.join(", ")),
        )
        .with_errors(errors)
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        Problem {
            ty: format!("urn:crmbus:problem:{}", self.code),
            title: title_for(self.status),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.clone(),
            errors: self.errors.clone(),
        }
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> ApiError {
        match &e {
            LogError::InvalidEvent(inv) => ApiError::invalid_event(inv, ""),
            _ => ApiError::new(e.code(), e.to_string()),
        }
    }
}

impl From<BusError> for ApiError {
    fn from(e: BusError) -> ApiError {
        match e {
            BusError::Log(l) => l.into(),
            BusError::Validation(inv) => {
                let mut err = ApiError::invalid_event(&inv, "");
                err.code = "schema_violation".to_string();
                err.detail = format!(
                    "the event does not match its schema: {}",
                    err.errors
                        .iter()
                        .map(|f| f.field.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                err
            }
            other => ApiError::new(other.code(), other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = %self.code, detail = %self.detail, "request failed");
        }
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_has_one_status() {
        assert_eq!(status_for_code("topic_not_found"), StatusCode::NOT_FOUND);
        assert_eq!(status_for_code("topic_exists"), StatusCode::CONFLICT);
        assert_eq!(status_for_code("invalid_event"), StatusCode::BAD_REQUEST);
        assert_eq!(
            status_for_code("payload_too_large"),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            status_for_code("unavailable"),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status_for_code("storage_full"),
            StatusCode::INSUFFICIENT_STORAGE
        );
        assert_eq!(
            status_for_code("io_error"),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn invalid_event_lists_every_violation_with_prefix() {
        let inv = InvalidEvent {
            violations: vec![
                crmbus::Violation {
                    attribute: "id".into(),
                    message: "missing".into(),
                },
                crmbus::Violation {
                    attribute: "type".into(),
                    message: "empty".into(),
                },
            ],
        };
        let p = ApiError::invalid_event(&inv, "events[3].").problem();
        assert_eq!(p.status, 400);
        let fields: Vec<&str> = p.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["events[3].id", "events[3].type"]);
        assert!(p.detail.contains("events[3].id"));
    }
}
