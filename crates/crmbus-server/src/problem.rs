//! Errors of the HTTP API as RFC 9457 problem details (`application/problem+json`), and the
//! one place where each machine-readable error code gets its HTTP status.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use crmbus::{BusError, ErrorCode, InvalidEvent, LogError};
pub use crmbus_api::problem::{FieldError, Problem};

/// An error a handler returns; it renders as a problem document.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: ErrorCode,
    /// What happened.
    pub detail: String,
    /// Violations, for invalid requests.
    pub errors: Vec<FieldError>,
    /// When to try again (`Retry-After`, in whole seconds rounded up), if the error says.
    pub retry_after: Option<std::time::Duration>,
    /// A version conflict's current version.
    pub current_version: Option<u64>,
}

/// The HTTP status of an error code: the only mapping from codes to statuses, exhaustive
/// so that a new code must be given one.
pub fn status_for_code(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::TopicNotFound
        | ErrorCode::PartitionNotFound
        | ErrorCode::SubscriptionNotFound
        | ErrorCode::DlqEntryNotFound
        | ErrorCode::SchemaNotFound
        | ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::TopicExists
        | ErrorCode::SubscriptionExists
        | ErrorCode::SchemaIncompatible
        | ErrorCode::OffsetOutOfRange
        | ErrorCode::VersionConflict
        | ErrorCode::Fenced => StatusCode::CONFLICT,
        ErrorCode::Unsupported => StatusCode::NOT_IMPLEMENTED,
        ErrorCode::InvalidArgument
        | ErrorCode::InvalidEvent
        | ErrorCode::InvalidRequest
        | ErrorCode::SchemaViolation
        | ErrorCode::InvalidSchema => StatusCode::BAD_REQUEST,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::Unavailable | ErrorCode::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::CorruptRecord
        | ErrorCode::IoError
        | ErrorCode::BackendError
        | ErrorCode::NoDefaultBus
        | ErrorCode::CatalogError
        | ErrorCode::SchemaStoreError
        | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn title_for(status: StatusCode) -> String {
    status.canonical_reason().unwrap_or("Error").to_string()
}

impl ApiError {
    /// An error with a code (its status comes from [`status_for_code`]) and a detail.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            status: status_for_code(code),
            code,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
            current_version: None,
        }
    }

    /// The error answered with `Retry-After: <wait>` (whole seconds, rounded up).
    pub fn with_retry_after(mut self, wait: std::time::Duration) -> ApiError {
        self.retry_after = Some(wait);
        self
    }

    /// A 400 `invalid_request` naming one field.
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError::new(ErrorCode::InvalidRequest, format!("{field}: {message}")).with_errors(vec![
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
            ErrorCode::InvalidEvent,
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
            code: self.code.to_string(),
            errors: self.errors.clone(),
            current_version: self.current_version,
        }
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> ApiError {
        match &e {
            LogError::InvalidEvent(inv) => ApiError::invalid_event(inv, ""),
            LogError::TopicNotFound(topic) => ApiError::new(
                ErrorCode::TopicNotFound,
                format!(
                    "{e}: create it first (`crmbus topics create {topic}`, or POST /v1/topics), \
                     or start the server with server.auto_create_topics = true"
                ),
            ),
            LogError::VersionConflict { current, .. } => ApiError {
                current_version: Some(*current),
                ..ApiError::new(e.code(), e.to_string())
            },
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
                err.code = ErrorCode::SchemaViolation;
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
        // 501 is an answer about the backend, not a failure of the server.
        if self.status.is_server_error() && self.status != StatusCode::NOT_IMPLEMENTED {
            tracing::error!(code = %self.code, detail = %self.detail, "request failed");
        }
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        if self.code == ErrorCode::Unauthorized {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"crmbus\""),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_has_one_status() {
        assert_eq!(
            status_for_code(ErrorCode::TopicNotFound),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status_for_code(ErrorCode::TopicExists),
            StatusCode::CONFLICT
        );
        assert_eq!(
            status_for_code(ErrorCode::InvalidEvent),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_for_code(ErrorCode::PayloadTooLarge),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            status_for_code(ErrorCode::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status_for_code(ErrorCode::StorageFull),
            StatusCode::INSUFFICIENT_STORAGE
        );
        assert_eq!(
            status_for_code(ErrorCode::IoError),
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
