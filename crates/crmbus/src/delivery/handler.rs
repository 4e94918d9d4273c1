//! What a subscription calls for each event: the [`Handler`] trait, the [`Delivery`] it
//! receives and the [`HandlerError`] it may return.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::event::Event;

/// One delivery of an event to a handler.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Topic the event was read from (shared by every delivery of the subscription: a
    /// delivery allocates no name).
    pub topic: Arc<str>,
    /// The consumer group (shared as `topic` is).
    pub group: Arc<str>,
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
///
/// A handler that only hands deliveries on to be answered later (the server's pull queue,
/// whose clients ack over HTTP) may also take them without a call that waits:
/// [`Handler::hands_over`] says so, and the engine then gives each delivery to
/// [`Handler::hand_over`] with the [`Outcome`] to settle, instead of running `handle` on a
/// task of its own until it returns.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one delivery; `Ok` acknowledges it.
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError>;

    /// Whether the engine gives deliveries to [`Handler::hand_over`] instead of `handle`.
    /// Asked once, when a subscription opens. Default: no.
    fn hands_over(&self) -> bool {
        false
    }

    /// Takes `deliveries` without waiting for their results; the handler settles each
    /// outcome with its delivery's result later (dropping one unsettled counts as an
    /// interrupted delivery: see [`HandlerError::interrupted`]). The engine hands over
    /// what one dispatch starts in one call, in delivery order. Called only when
    /// [`Handler::hands_over`] is true, on the engine's task, so it must return at once.
    /// The default settles each outcome as a failure that names the mistake.
    fn hand_over(&self, deliveries: Vec<(Delivery, Outcome)>) {
        for (_, outcome) in deliveries {
            outcome.settle(Err(HandlerError::transient(
                "this handler says it takes deliveries handed over but does not implement hand_over",
            )));
        }
    }
}

/// What a finished delivery reports to its engine: where the event is, what was tried,
/// and the result.
pub(crate) struct Completion {
    pub(crate) partition: u32,
    pub(crate) offset: u64,
    /// The key the engine queued the event under.
    pub(crate) key: crate::delivery::key::Key,
    pub(crate) attempt: u32,
    pub(crate) redrive: bool,
    pub(crate) appended_us: i64,
    /// The event's (source, id) digest for consumer dedupe; 0 when dedupe is off (then
    /// nothing reads it).
    pub(crate) dedupe_hash: u64,
    pub(crate) result: Result<(), HandlerError>,
}

/// One engine's share of [`Outcome::settle_all`]: its channel, the completions for it,
/// and their places among the outcomes settled.
type EngineBatch = (
    mpsc::UnboundedSender<Vec<Completion>>,
    Vec<Completion>,
    Vec<usize>,
);

/// The answer a delivery handed over ([`Handler::hand_over`]) is waited for with: settle it
/// once with the delivery's result. Dropped unsettled, it answers
/// [`HandlerError::interrupted`] (or, dropped by a panic, a transient failure), so a
/// delivery is never left without an answer.
pub struct Outcome(Option<Answer>);

enum Answer {
    /// To the engine that handed the delivery over, with its attempt's span.
    Engine {
        to: mpsc::UnboundedSender<Vec<Completion>>,
        completion: Completion,
        span: tracing::Span,
    },
    /// To a caller waiting on the other end ([`Outcome::waiter`]).
    Waiter(oneshot::Sender<Result<(), HandlerError>>),
}

impl Outcome {
    /// An outcome whose result comes out of the receiver: for a `handle` that hands the
    /// delivery over itself and waits. Dropped unsettled, the outcome sends the receiver
    /// its interrupted answer.
    pub fn waiter() -> (Outcome, oneshot::Receiver<Result<(), HandlerError>>) {
        let (tx, rx) = oneshot::channel();
        (Outcome(Some(Answer::Waiter(tx))), rx)
    }

    /// The outcome of a delivery an engine handed over.
    pub(crate) fn to_engine(
        to: mpsc::UnboundedSender<Vec<Completion>>,
        completion: Completion,
        span: tracing::Span,
    ) -> Outcome {
        Outcome(Some(Answer::Engine {
            to,
            completion,
            span,
        }))
    }

    /// Settles the delivery with `result`; false when nobody waits for it any more (its
    /// engine stopped, or the waiter went away).
    pub fn settle(mut self, result: Result<(), HandlerError>) -> bool {
        match self.0.take() {
            Some(answer) => answer.send(result),
            None => false,
        }
    }

    /// Settles many outcomes, each with its result, in their order. What goes to one
    /// engine goes in one message, so the engine takes a whole ack in one step instead of
    /// waking for its first answers and stepping again for the rest. One flag per
    /// outcome: whether anybody took it (see [`Outcome::settle`]).
    pub fn settle_all(outcomes: Vec<(Outcome, Result<(), HandlerError>)>) -> Vec<bool> {
        let mut taken = vec![false; outcomes.len()];
        // Per engine: its channel, the completions for it, and their places in `taken`.
        let mut batches: Vec<EngineBatch> = Vec::new();
        for (i, (mut outcome, result)) in outcomes.into_iter().enumerate() {
            match outcome.0.take() {
                Some(Answer::Engine {
                    to,
                    mut completion,
                    span,
                }) => {
                    if result.is_err() {
                        span.record("otel.status_code", "ERROR");
                    }
                    completion.result = result;
                    match batches.iter_mut().find(|(t, _, _)| t.same_channel(&to)) {
                        Some((_, completions, places)) => {
                            completions.push(completion);
                            places.push(i);
                        }
                        None => batches.push((to, vec![completion], vec![i])),
                    }
                }
                Some(waiter @ Answer::Waiter(_)) => taken[i] = waiter.send(result),
                None => {}
            }
        }
        for (to, completions, places) in batches {
            if to.send(completions).is_ok() {
                for i in places {
                    taken[i] = true;
                }
            }
        }
        taken
    }

    /// Whether nobody waits for this outcome any more: settling it would change nothing.
    pub fn is_closed(&self) -> bool {
        match &self.0 {
            Some(Answer::Engine { to, .. }) => to.is_closed(),
            Some(Answer::Waiter(tx)) => tx.is_closed(),
            None => true,
        }
    }
}

impl Answer {
    fn send(self, result: Result<(), HandlerError>) -> bool {
        match self {
            Answer::Engine {
                to,
                mut completion,
                span,
            } => {
                if result.is_err() {
                    span.record("otel.status_code", "ERROR");
                }
                completion.result = result;
                to.send(vec![completion]).is_ok()
            }
            Answer::Waiter(tx) => tx.send(result).is_ok(),
        }
    }
}

impl Drop for Outcome {
    /// Unsettled: interrupted, unless a panic is unwinding through the handler that held
    /// it, which fails the attempt as a panic in `handle` does (an interrupted answer
    /// would stop the engine's deliveries until a restart).
    fn drop(&mut self) {
        if let Some(answer) = self.0.take() {
            let error = if std::thread::panicking() {
                HandlerError::transient("the handler panicked holding the delivery")
            } else {
                HandlerError::interrupted("the handler let go of the delivery without settling it")
            };
            answer.send(Err(error));
        }
    }
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.0 {
            Some(Answer::Engine { .. }) => "to the engine",
            Some(Answer::Waiter(_)) => "to a waiter",
            None => "settled",
        };
        f.debug_tuple("Outcome").field(&state).finish()
    }
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
