//! Errors of the storage seam, and [`ErrorCode`]: the stable machine-readable codes of
//! every crmbus error.

use crate::event::InvalidEvent;

/// An error from an [`EventLog`](crate::EventLog) backend.
///
/// Each variant has a stable machine-readable [`code`](LogError::code) that the server maps
/// to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The topic does not exist.
    #[error("topic '{0}' does not exist")]
    TopicNotFound(String),
    /// A topic of that name already exists.
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    /// The partition number is outside the topic's partitions.
    #[error("topic '{topic}' has no partition {partition}")]
    PartitionNotFound {
        /// The topic asked for.
        topic: String,
        /// The partition asked for.
        partition: u32,
    },
    /// An offset past what a partition holds (a seek beyond its end): the request is well
    /// formed but does not fit the partition as it is now.
    #[error("offset out of range: {0}")]
    OffsetOutOfRange(String),
    /// The request itself is malformed (bad topic name, zero partitions, empty topic list…).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An event failed CloudEvents validation; nothing was written.
    #[error(transparent)]
    InvalidEvent(#[from] InvalidEvent),
    /// A stored record failed its checksum; it is never served as data.
    #[error(
        "corrupt record in topic '{topic}' partition {partition} near offset {offset}: {detail}"
    )]
    Corrupt {
        /// Topic of the corrupt record.
        topic: String,
        /// Partition of the corrupt record.
        partition: u32,
        /// The offset the corrupt record holds (or the offset expected there).
        offset: u64,
        /// What failed.
        detail: String,
    },
    /// The log can no longer accept writes (a failed fsync poisons it: data may be lost in
    /// the page cache, so continuing would acknowledge writes that are not durable).
    #[error("log is unavailable: {0}")]
    Unavailable(String),
    /// The disk is full: nothing of the request was written, and what was acknowledged
    /// before is safe. Writes succeed again once space is freed.
    #[error("storage is full: {0}")]
    StorageFull(String),
    /// An I/O error from the storage.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A write refused because the lease that fenced it is no longer held with that token
    /// (another server owns the partition now): nothing of the write was applied.
    #[error("fenced: {0}")]
    Fenced(String),
    /// An append stated its subject's version (`expectedversion`) and the subject is at
    /// another: nothing of the append was written.
    #[error(
        "subject '{subject}' of topic '{topic}' is at version {current}, not {expected}: \
         read its stream and try again"
    )]
    VersionConflict {
        /// The topic.
        topic: String,
        /// The subject.
        subject: String,
        /// The version the append stated.
        expected: u64,
        /// The subject's version now.
        current: u64,
    },
    /// The backend cannot do this (for example per-subject versions on a backend where
    /// they cannot be atomic with the append): refused rather than faked.
    #[error("not supported by the {backend} backend: {what}")]
    Unsupported {
        /// The backend's name.
        backend: &'static str,
        /// What it cannot do.
        what: String,
    },
    /// Any other backend failure (metadata store, network, protocol).
    #[error("backend error: {message}")]
    Backend {
        /// What failed (with the underlying error's text).
        message: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl LogError {
    /// A stable machine-readable code for this error, used by the HTTP API and the CLI.
    pub fn code(&self) -> ErrorCode {
        match self {
            LogError::TopicNotFound(_) => ErrorCode::TopicNotFound,
            LogError::TopicExists(_) => ErrorCode::TopicExists,
            LogError::PartitionNotFound { .. } => ErrorCode::PartitionNotFound,
            LogError::OffsetOutOfRange(_) => ErrorCode::OffsetOutOfRange,
            LogError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            LogError::InvalidEvent(_) => ErrorCode::InvalidEvent,
            LogError::Corrupt { .. } => ErrorCode::CorruptRecord,
            LogError::Unavailable(_) => ErrorCode::Unavailable,
            LogError::StorageFull(_) => ErrorCode::StorageFull,
            LogError::Io(_) => ErrorCode::IoError,
            LogError::Fenced(_) => ErrorCode::Fenced,
            LogError::VersionConflict { .. } => ErrorCode::VersionConflict,
            LogError::Unsupported { .. } => ErrorCode::Unsupported,
            LogError::Backend { .. } => ErrorCode::BackendError,
        }
    }

    /// A backend failure described by `message` alone.
    pub fn backend(message: impl Into<String>) -> LogError {
        LogError::Backend {
            message: message.into(),
            source: None,
        }
    }

    /// A backend failure while doing `what`, caused by `source` (kept as the error's
    /// source; its text is part of the message too).
    pub fn backend_from(
        what: impl std::fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> LogError {
        LogError::Backend {
            message: format!("{what}: {source}"),
            source: Some(Box::new(source)),
        }
    }
}

/// The stable machine-readable code of an error, as the HTTP API's problem documents carry
/// it (`code`) and the CLI shows it. One variant per code, so a misspelt code cannot
/// compile; the HTTP status of each is decided in one exhaustive match in the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No such topic.
    TopicNotFound,
    /// The topic already exists.
    TopicExists,
    /// No such partition.
    PartitionNotFound,
    /// An offset past a partition's end.
    OffsetOutOfRange,
    /// A malformed argument.
    InvalidArgument,
    /// An event that is not a valid CloudEvent.
    InvalidEvent,
    /// A damaged stored record.
    CorruptRecord,
    /// The storage cannot serve now.
    Unavailable,
    /// The disk is full.
    StorageFull,
    /// An I/O error.
    IoError,
    /// Any other backend failure.
    BackendError,
    /// A write by a server that no longer owns the partition it wrote for.
    Fenced,
    /// No process-wide default bus.
    NoDefaultBus,
    /// An event's data does not match its schema.
    SchemaViolation,
    /// A schema change the type's compatibility mode forbids.
    SchemaIncompatible,
    /// No such schema or version.
    SchemaNotFound,
    /// A document that is not a usable JSON Schema.
    InvalidSchema,
    /// A catalog file that cannot be read.
    CatalogError,
    /// The schema store failed.
    SchemaStoreError,
    /// No such subscription.
    SubscriptionNotFound,
    /// The subscription already exists.
    SubscriptionExists,
    /// No such dead letter.
    DlqEntryNotFound,
    /// No such route or resource.
    NotFound,
    /// A malformed request (body, parameter or header).
    InvalidRequest,
    /// A request body over the limit.
    PayloadTooLarge,
    /// A content type the route does not take.
    UnsupportedMediaType,
    /// The server is stopping.
    ShuttingDown,
    /// No API key, or one that is not valid (unknown, revoked, expired).
    Unauthorized,
    /// A valid API key without the scope the request needs.
    Forbidden,
    /// Over a rate limit (an API key's requests, a topic's events); try again later.
    RateLimited,
    /// A failure inside the server.
    Internal,
    /// An append's `expectedversion` is not its subject's version.
    VersionConflict,
    /// The backend cannot do what was asked.
    Unsupported,
}

impl ErrorCode {
    /// The code as text (`topic_not_found`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::TopicNotFound => "topic_not_found",
            ErrorCode::TopicExists => "topic_exists",
            ErrorCode::PartitionNotFound => "partition_not_found",
            ErrorCode::OffsetOutOfRange => "offset_out_of_range",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::InvalidEvent => "invalid_event",
            ErrorCode::CorruptRecord => "corrupt_record",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::IoError => "io_error",
            ErrorCode::BackendError => "backend_error",
            ErrorCode::Fenced => "fenced",
            ErrorCode::NoDefaultBus => "no_default_bus",
            ErrorCode::SchemaViolation => "schema_violation",
            ErrorCode::SchemaIncompatible => "schema_incompatible",
            ErrorCode::SchemaNotFound => "schema_not_found",
            ErrorCode::InvalidSchema => "invalid_schema",
            ErrorCode::CatalogError => "catalog_error",
            ErrorCode::SchemaStoreError => "schema_store_error",
            ErrorCode::SubscriptionNotFound => "subscription_not_found",
            ErrorCode::SubscriptionExists => "subscription_exists",
            ErrorCode::DlqEntryNotFound => "dlq_entry_not_found",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
            ErrorCode::VersionConflict => "version_conflict",
            ErrorCode::Unsupported => "unsupported",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_is_written_as_serde_writes_it() {
        for code in [
            ErrorCode::TopicNotFound,
            ErrorCode::TopicExists,
            ErrorCode::PartitionNotFound,
            ErrorCode::OffsetOutOfRange,
            ErrorCode::InvalidArgument,
            ErrorCode::InvalidEvent,
            ErrorCode::CorruptRecord,
            ErrorCode::Unavailable,
            ErrorCode::StorageFull,
            ErrorCode::IoError,
            ErrorCode::BackendError,
            ErrorCode::Fenced,
            ErrorCode::NoDefaultBus,
            ErrorCode::SchemaViolation,
            ErrorCode::SchemaIncompatible,
            ErrorCode::SchemaNotFound,
            ErrorCode::InvalidSchema,
            ErrorCode::CatalogError,
            ErrorCode::SchemaStoreError,
            ErrorCode::SubscriptionNotFound,
            ErrorCode::SubscriptionExists,
            ErrorCode::DlqEntryNotFound,
            ErrorCode::NotFound,
            ErrorCode::InvalidRequest,
            ErrorCode::PayloadTooLarge,
            ErrorCode::UnsupportedMediaType,
            ErrorCode::ShuttingDown,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::RateLimited,
            ErrorCode::Internal,
        ] {
            let v = serde_json::to_value(code).ok();
            assert_eq!(v, Some(serde_json::json!(code.as_str())), "{code:?}");
        }
    }

    #[test]
    fn a_backend_error_keeps_its_source() {
        let io = std::io::Error::other("connection reset");
        let e = LogError::backend_from("reading the stream", io);
        assert_eq!(
            e.to_string(),
            "backend error: reading the stream: connection reset"
        );
        let source = std::error::Error::source(&e).map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("connection reset"));
        assert_eq!(e.code(), ErrorCode::BackendError);
    }
}
