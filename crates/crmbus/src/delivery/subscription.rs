//! [`Subscription`]: an [`Engine`] running in the background, with a handle to query and
//! steer it (stats, DLQ) and to stop it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use super::engine::{AuditRecord, DeadLetter, DlqFilter, Engine, StatsSnapshot};
use crate::clock::Clock;
use crate::error::LogError;

/// How often a subscription looks for new events when nothing wakes it sooner (events
/// published through the same [`crate::EventBus`] wake it at once).
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

enum Command {
    Stats(oneshot::Sender<StatsSnapshot>),
    DeadLetters(
        DlqFilter,
        oneshot::Sender<Result<Vec<DeadLetter>, LogError>>,
    ),
    Redrive {
        ids: Option<Vec<String>>,
        filter: DlqFilter,
        who: String,
        reply: oneshot::Sender<Result<usize, LogError>>,
    },
    Discard {
        id: String,
        who: String,
        reply: oneshot::Sender<Result<bool, LogError>>,
    },
    Audit(oneshot::Sender<Result<Vec<AuditRecord>, LogError>>),
    Stop(oneshot::Sender<Result<(), LogError>>),
}

/// A running subscription. Dropping the handle stops the subscription after the
/// deliveries in flight finish; [`Subscription::unsubscribe`] waits for that.
pub struct Subscription {
    topic: String,
    group: String,
    commands: mpsc::Sender<Command>,
    task: Option<JoinHandle<()>>,
}

fn stopped() -> LogError {
    LogError::Unavailable("the subscription has stopped".into())
}

impl Subscription {
    /// Starts running `engine` in a background task. `wake` is notified when events are
    /// published (the bus does it); the task also polls every [`POLL_INTERVAL`].
    pub fn start(engine: Engine, clock: Arc<dyn Clock>, wake: Arc<Notify>) -> Subscription {
        let (tx, rx) = mpsc::channel(64);
        let topic = engine.topic().to_string();
        let group = engine.group().to_string();
        let task = tokio::spawn(run(engine, clock, wake, rx));
        Subscription {
            topic,
            group,
            commands: tx,
            task: Some(task),
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, LogError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }

    /// Counters and current state.
    pub async fn stats(&self) -> Result<StatsSnapshot, LogError> {
        self.ask(Command::Stats).await
    }

    /// Dead letters matching `filter`.
    pub async fn dead_letters(&self, filter: DlqFilter) -> Result<Vec<DeadLetter>, LogError> {
        self.ask(|tx| Command::DeadLetters(filter, tx)).await?
    }

    /// The audit log of dead-letter actions (redrives and discards, with who did them),
    /// oldest first.
    pub async fn audit_log(&self) -> Result<Vec<AuditRecord>, LogError> {
        self.ask(Command::Audit).await?
    }

    /// Redrives dead letters (`ids`, or every entry `filter` selects); audited as `who`.
    pub async fn redrive(
        &self,
        ids: Option<Vec<String>>,
        filter: DlqFilter,
        who: &str,
    ) -> Result<usize, LogError> {
        let who = who.to_string();
        self.ask(|reply| Command::Redrive {
            ids,
            filter,
            who,
            reply,
        })
        .await?
    }

    /// Discards a dead letter; audited as `who`. False if there is no such entry.
    pub async fn discard(&self, id: &str, who: &str) -> Result<bool, LogError> {
        let (id, who) = (id.to_string(), who.to_string());
        self.ask(|reply| Command::Discard { id, who, reply })
            .await?
    }

    /// Stops the subscription: no new deliveries start, those in flight finish, state is
    /// persisted and offsets committed.
    pub async fn unsubscribe(mut self) -> Result<(), LogError> {
        let result = self.ask(Command::Stop).await?;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        result
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.task.is_some() {
            let (tx, _rx) = oneshot::channel();
            let _ = self.commands.try_send(Command::Stop(tx));
        }
    }
}

async fn run(
    mut engine: Engine,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    mut rx: mpsc::Receiver<Command>,
) {
    let mut last_metrics = std::time::Instant::now();
    loop {
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if let Err(e) = engine.pump().await {
            tracing::error!(topic = engine.topic(), group = engine.group(), error = %e, "delivery step failed; retrying");
        }
        if last_metrics.elapsed() >= Duration::from_secs(1) {
            if let Err(e) = engine.export_metrics().await {
                tracing::debug!(error = %e, "cannot export subscription metrics");
            }
            last_metrics = std::time::Instant::now();
        }
        let mut wait = POLL_INTERVAL;
        if let Some(due) = engine.next_due_us() {
            let until = Duration::from_micros(due.saturating_sub(clock.now_micros()).max(0) as u64);
            wait = wait.min(until);
        }
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => {
                    let _ = engine.drain().await;
                    return;
                }
                Some(Command::Stop(reply)) => {
                    let _ = reply.send(engine.drain().await);
                    return;
                }
                Some(Command::Stats(reply)) => {
                    let _ = reply.send(engine.stats());
                }
                Some(Command::DeadLetters(filter, reply)) => {
                    let _ = reply.send(engine.dead_letters(&filter).await);
                }
                Some(Command::Audit(reply)) => {
                    let _ = reply.send(engine.audit_log().await);
                }
                Some(Command::Redrive { ids, filter, who, reply }) => {
                    let _ = reply.send(engine.redrive(ids.as_deref(), &filter, &who).await);
                }
                Some(Command::Discard { id, who, reply }) => {
                    let _ = reply.send(engine.discard(&id, &who).await);
                }
            },
            true = engine.next_step(), if engine.has_in_flight() || engine.is_reading_ahead() => {}
            _ = &mut woken => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
