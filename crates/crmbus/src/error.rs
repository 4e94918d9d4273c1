//! Errors of the storage seam.

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
    /// Any other backend failure (metadata store, network, protocol).
    #[error("backend error: {0}")]
    Backend(String),
}

impl LogError {
    /// A stable machine-readable code for this error, used by the HTTP API and the CLI.
    pub fn code(&self) -> &'static str {
        match self {
            LogError::TopicNotFound(_) => "topic_not_found",
            LogError::TopicExists(_) => "topic_exists",
            LogError::PartitionNotFound { .. } => "partition_not_found",
            LogError::OffsetOutOfRange(_) => "offset_out_of_range",
            LogError::InvalidArgument(_) => "invalid_argument",
            LogError::InvalidEvent(_) => "invalid_event",
            LogError::Corrupt { .. } => "corrupt_record",
            LogError::Unavailable(_) => "unavailable",
            LogError::StorageFull(_) => "storage_full",
            LogError::Io(_) => "io_error",
            LogError::Backend(_) => "backend_error",
        }
    }
}
