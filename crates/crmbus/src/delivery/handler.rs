//! What a subscription calls for each event: the [`Handler`] trait, the [`Delivery`] it
//! receives and the [`HandlerError`] it may return.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::event::Event;

/// One delivery of an event to a handler.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Topic the event was read from.
    pub topic: String,
    /// The consumer group.
    pub group: String,
    /// Partition of the event.
    pub partition: u32,
    /// Offset of the event.
    pub offset: u64,
    /// 1 for the first delivery, 2 for the first retry, and so on.
    pub attempt: u32,
    /// The event, shared with the engine's queue (a delivery never copies it).
    pub event: Arc<Event>,
    /// The event's structured JSON as the log stored it, when the log gave it
    /// ([`StoredEvent::stored_json`](crate::log::StoredEvent::stored_json)): the same JSON
    /// value as `event` serialized, for a handler that sends the event on as JSON without
    /// serializing it again. `None` for a redrive and from logs that do not give it.
    /// Code that replaces `event` must set this to `None`.
    pub stored_json: Option<bytes::Bytes>,
}

/// A failed delivery: a message, and optionally a delay the handler wants before the
/// retry, or the mark that retrying cannot help (the event goes straight to the DLQ).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    /// What went wrong (kept in the DLQ entry).
    pub message: String,
    /// Retry after exactly this long instead of the policy's backoff.
    pub retry_after: Option<Duration>,
    /// Do not retry: dead-letter now.
    pub permanent: bool,
    /// The handler is stopping and did not finish the delivery: not a failed attempt.
    /// The event stays where it is, uncounted, and is delivered again (as the same
    /// attempt) when the subscription runs next; the engine starts no new delivery.
    pub interrupted: bool,
}

impl HandlerError {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            retry_after: None,
            permanent: false,
            interrupted: false,
        }
    }

    /// The handler is stopping before it finished the delivery (a clean shutdown): not an
    /// attempt, so it never brings an event nearer its dead letter.
    pub fn interrupted(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            retry_after: None,
            permanent: false,
            interrupted: true,
        }
    }

    /// A failure retrying cannot fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            retry_after: None,
            permanent: true,
            interrupted: false,
        }
    }

    /// The same error asking for a retry after `delay`.
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }
}

/// Processes deliveries. Implement it, or wrap an async closure with [`handler_fn`].
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one delivery; `Ok` acknowledges it.
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError>;
}

struct FnHandler<F>(F);

#[async_trait]
impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        (self.0)(delivery).await
    }
}

/// A handler from an async closure: `handler_fn(|d| async move { ...; Ok(()) })`.
pub fn handler_fn<F, Fut>(f: F) -> Arc<dyn Handler>
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    Arc::new(FnHandler(f))
}
