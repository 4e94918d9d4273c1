//! [`Relay`]: publishes committed outbox rows into the bus, in order, and marks them.
//!
//! Each step claims a batch of pending rows (oldest first, counting the attempt and
//! committing that before anything is published), publishes them — consecutive rows with
//! the same topics as one all-or-nothing batch — and marks them published. A relay that
//! dies between publishing and marking leaves rows whose attempt count is above one; when
//! they are claimed again the relay asks the bus which of them it already stores
//! ([`OutboxSink::stored_since`], looking back from the row's first attempt) and publishes
//! only the rest, so a crash yields no second copy however long the relay was down, as long
//! as the topic still holds the first copy (retention) and the bus's and the database's
//! clocks differ by less than [`CLOCK_SKEW_MARGIN`]; the bus's own dedupe window absorbs the
//! common case too. A row crmbus refuses (a schema violation, an invalid event, a missing
//! topic) is set aside (`failed_at`, `last_error`), and the later rows of its subject wait
//! for it, so a subject's events never go out of order; everything else is retried with
//! backoff.
//!
//! Only the relay holding the lock ([`crate::leader`]) publishes, and it claims and marks
//! rows through the very connection that holds the lock, so several relays on one
//! database never publish a row twice in the steady state and the rows of one subject
//! leave in id order, which the table's trigger makes their commit order. A step that takes
//! longer than [`STEP_TIMEOUT`] (a stalled bus or database) gives the lock up.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use crmbus::Event;
use serde_json::Value;
use tokio::sync::watch;
use tokio_postgres::GenericClient;

use crate::leader::Leader;
use crate::sink::{EventKey, OutboxSink, SinkError};
use crate::store::{connect_pool, OutboxRow, OutboxTable};
use crate::OutboxError;

/// How far before a row's first attempt the relay looks for an earlier publish of it: the
/// bus's clock and the database's may differ by up to this much.
pub const CLOCK_SKEW_MARGIN: Duration = Duration::from_secs(60);

/// The longest a step (claim, publish, mark) may take before the relay gives up the lock
/// and starts again; shorter than the bus's default dedupe window, so a publish from a step
/// given up this way is still absorbed if it lands late.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// After how many claims a row that still fails, while other rows are published, is set
/// aside instead of being retried forever (it would hold every row behind it).
pub const SUSPECT_ATTEMPTS: i32 = 5;

/// How a relay runs.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// The database (`postgres://user@host:port/db`).
    pub database_url: String,
    /// A name for logs and metrics (the `outbox` label); default `default`.
    pub name: String,
    /// Rows claimed per step (default 256).
    pub batch_size: i64,
    /// How often to look for rows when no notification arrives (default 1 s).
    pub poll_interval: Duration,
    /// How long published rows are kept before they are deleted (default 7 days).
    pub retention: Duration,
    /// The longest wait between retries after an error (default 30 s; the wait starts at
    /// 100 ms and doubles).
    pub max_backoff: Duration,
}

impl RelayOptions {
    /// Defaults for the database at `url`.
    pub fn new(database_url: impl Into<String>) -> RelayOptions {
        RelayOptions {
            database_url: database_url.into(),
            name: "default".into(),
            batch_size: 256,
            poll_interval: Duration::from_secs(1),
            retention: Duration::from_secs(7 * 24 * 3600),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// What one step did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StepReport {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows published now.
    pub published: usize,
    /// Rows found already stored by an earlier attempt (not published again).
    pub already_stored: usize,
    /// Rows marked failed.
    pub failed: usize,
}

/// The outbox relay for one database.
pub struct Relay {
    opts: RelayOptions,
    table: OutboxTable,
    sink: Arc<dyn OutboxSink>,
}

/// A row ready to publish: its id, topics still to publish to, and the event.
struct Ready {
    id: i64,
    topics: Vec<String>,
    event: Event,
    attempts: i32,
}

impl Ready {
    fn subject_in(&self, subjects: &HashSet<String>) -> bool {
        self.event
            .subject
            .as_ref()
            .is_some_and(|s| subjects.contains(s))
    }
}

impl Relay {
    /// A relay publishing the rows of `opts.database_url` into `sink`.
    pub fn new(opts: RelayOptions, sink: Arc<dyn OutboxSink>) -> Result<Relay, OutboxError> {
        let table = OutboxTable::new(connect_pool(&opts.database_url, 2)?);
        Ok(Relay { opts, table, sink })
    }

    /// The outbox table it relays.
    pub fn table(&self) -> &OutboxTable {
        &self.table
    }

    /// Runs until `stop` turns true (or its sender is dropped): waits for the relay lock,
    /// then relays; on any error (the database or the bus unreachable, the lock's
    /// connection lost, a step over [`STEP_TIMEOUT`]) backs off and starts again. The
    /// backoff starts again from 100 ms after every successful step.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        while !*stop.borrow() {
            match self.lead(&mut stop, &mut backoff).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(outbox = %self.opts.name, %error, retry_in = ?backoff, "outbox relay");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stopped(&mut stop) => return,
                    }
                    backoff = (backoff * 2).min(self.opts.max_backoff);
                }
            }
        }
    }

    /// Takes the lock (waiting while another relay holds it), then relays until stopped
    /// (Ok) or an error.
    async fn lead(
        &self,
        stop: &mut watch::Receiver<bool>,
        backoff: &mut Duration,
    ) -> Result<(), OutboxError> {
        let leader = Leader::connect(&self.opts.database_url).await?;
        while !leader.try_lock().await? {
            tokio::select! {
                _ = tokio::time::sleep(self.opts.poll_interval) => {}
                _ = leader.closed() => return Err(OutboxError::LeadershipLost),
                _ = stopped(stop) => return Ok(()),
            }
        }
        tracing::info!(outbox = %self.opts.name, "outbox relay: publishing (holds the relay lock)");
        let mut last_purge: Option<Instant> = None;
        let mut last_status: Option<Instant> = None;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            // No extra round trip: the step claims through this very connection, so a session
            // that is gone fails the claim before anything is published.
            if !leader.is_alive() {
                return Err(OutboxError::LeadershipLost);
            }
            let report = tokio::time::timeout(STEP_TIMEOUT, self.step_on(leader.client()))
                .await
                .map_err(|_| OutboxError::StepTimeout(STEP_TIMEOUT))??;
            *backoff = Duration::from_millis(100);
            if last_status.is_none_or(|t| t.elapsed() >= self.opts.poll_interval) {
                self.record_status().await;
                last_status = Some(Instant::now());
            }
            if last_purge.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                match self.table.purge(self.opts.retention, 10_000).await {
                    Ok(0) => {}
                    Ok(deleted) => {
                        tracing::debug!(outbox = %self.opts.name, deleted, "outbox rows past retention deleted")
                    }
                    Err(error) => {
                        tracing::warn!(outbox = %self.opts.name, %error, "outbox retention")
                    }
                }
                last_purge = Some(Instant::now());
            }
            if report.claimed < self.opts.batch_size as usize {
                tokio::select! {
                    _ = leader.woken() => {}
                    _ = tokio::time::sleep(self.opts.poll_interval) => {}
                    _ = stopped(stop) => return Ok(()),
                }
            }
        }
    }

    async fn record_status(&self) {
        match self.table.backlog().await {
            Ok((pending, oldest)) => {
                let name = self.opts.name.clone();
                metrics::gauge!("crmbus_outbox_pending", "outbox" => name.clone())
                    .set(pending as f64);
                metrics::gauge!("crmbus_outbox_oldest_pending_seconds", "outbox" => name)
                    .set(oldest);
            }
            Err(error) => tracing::debug!(%error, "outbox backlog"),
        }
    }

    /// One step on a connection from the pool: claim a batch, publish it, mark it. For
    /// tests and benchmarks that drive a relay by hand; it must not run beside
    /// [`Relay::run`] (which steps through the connection that holds the lock).
    pub async fn step(&self) -> Result<StepReport, OutboxError> {
        let client = self.table.pool().get().await?;
        self.step_on(&**client).await
    }

    /// One step, claiming and marking through `client`.
    async fn step_on<C: GenericClient>(&self, client: &C) -> Result<StepReport, OutboxError> {
        let rows = self.table.claim_with(client, self.opts.batch_size).await?;
        let mut report = StepReport {
            claimed: rows.len(),
            ..StepReport::default()
        };
        if rows.is_empty() {
            return Ok(report);
        }
        let stored = self.already_stored(&rows).await?;
        // Subjects with a row set aside in this step: their later rows wait (unmarked; the
        // next claim skips them until the set-aside row is fixed).
        let mut held: HashSet<String> = HashSet::new();
        let mut ready = Vec::with_capacity(rows.len());
        let mut done_before = Vec::new();
        for row in rows {
            let subject = subject_of(&row.event);
            if subject.as_ref().is_some_and(|s| held.contains(s)) {
                continue;
            }
            let topics: Vec<String> = row
                .topics
                .iter()
                .filter(|t| !stored.contains(&(row.id, (*t).clone())))
                .cloned()
                .collect();
            if topics.is_empty() {
                done_before.push(row.id);
                continue;
            }
            match event_of(&row.event) {
                Ok(event) => ready.push(Ready {
                    id: row.id,
                    topics,
                    event,
                    attempts: row.attempts,
                }),
                Err(reason) => {
                    self.fail(row.id, &reason).await?;
                    report.failed += 1;
                    held.extend(subject);
                }
            }
        }
        report.already_stored = done_before.len();
        self.table.mark_published_with(client, &done_before).await?;
        // A row of a subject set aside above, but queued before it was: drop it too.
        ready.retain(|r| !r.event.subject.as_ref().is_some_and(|s| held.contains(s)));

        // Runs of consecutive rows with the same topics go as one batch. When a batch is
        // refused, or keeps failing (a row claimed SUSPECT_ATTEMPTS times), its rows go one by
        // one, to set aside what crmbus refuses and find a row that fails while others pass.
        // `blocked`: subjects with a row left unpublished in this step; their later rows
        // wait for the next step, so a subject never goes out of order.
        let mut blocked: HashSet<String> = HashSet::new();
        let mut stuck: Vec<(&Ready, SinkError)> = Vec::new();
        let mut i = 0;
        while i < ready.len() {
            let mut j = i + 1;
            while j < ready.len() && ready[j].topics == ready[i].topics {
                j += 1;
            }
            let run: Vec<&Ready> = ready[i..j]
                .iter()
                .filter(|r| !r.subject_in(&held) && !r.subject_in(&blocked))
                .collect();
            i = j;
            if run.is_empty() {
                continue;
            }
            let events: Vec<Event> = run.iter().map(|r| r.event.clone()).collect();
            match self.sink.publish(events, &run[0].topics).await {
                Ok(()) => {
                    let ids: Vec<i64> = run.iter().map(|r| r.id).collect();
                    self.table.mark_published_with(client, &ids).await?;
                    report.published += run.len();
                }
                Err(e) if e.permanent || run.iter().any(|r| r.attempts >= SUSPECT_ATTEMPTS) => {
                    for r in run {
                        if r.subject_in(&held) || r.subject_in(&blocked) {
                            continue;
                        }
                        match self.sink.publish(vec![r.event.clone()], &r.topics).await {
                            Ok(()) => {
                                self.table.mark_published_with(client, &[r.id]).await?;
                                report.published += 1;
                            }
                            Err(e) if e.permanent => {
                                self.fail(r.id, &e.message).await?;
                                report.failed += 1;
                                held.extend(r.event.subject.clone());
                            }
                            Err(e) => {
                                blocked.extend(r.event.subject.clone());
                                stuck.push((r, e));
                            }
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !stuck.is_empty() {
            // Other rows went through in this very step, so the bus works and these rows do
            // not: after SUSPECT_ATTEMPTS tries they are set aside rather than wedge the
            // outbox. Otherwise (the bus is down) the step fails and is retried.
            let others_passed = report.published > 0;
            let mut waiting = None;
            for (r, e) in stuck {
                if others_passed && r.attempts >= SUSPECT_ATTEMPTS {
                    let reason = format!(
                        "failed {} times while other rows were published: {}",
                        r.attempts, e.message
                    );
                    self.fail(r.id, &reason).await?;
                    report.failed += 1;
                } else {
                    waiting.get_or_insert(e);
                }
            }
            if let Some(e) = waiting {
                metrics::counter!("crmbus_outbox_published_total", "outbox" => self.opts.name.clone())
                    .increment(report.published as u64);
                return Err(e.into());
            }
        }
        metrics::counter!("crmbus_outbox_published_total", "outbox" => self.opts.name.clone())
            .increment(report.published as u64);
        Ok(report)
    }

    async fn fail(&self, id: i64, reason: &str) -> Result<(), OutboxError> {
        tracing::warn!(outbox = %self.opts.name, row = id, %reason, "outbox row refused; marked failed");
        metrics::counter!("crmbus_outbox_failed_total", "outbox" => self.opts.name.clone())
            .increment(1);
        self.table.mark_failed(id, reason).await
    }

    /// For rows claimed before (attempts > 1): the (row id, topic) pairs the bus already
    /// stores.
    async fn already_stored(
        &self,
        rows: &[OutboxRow],
    ) -> Result<HashSet<(i64, String)>, OutboxError> {
        let mut by_topic: HashMap<&str, (chrono::DateTime<Utc>, HashMap<EventKey, i64>)> =
            HashMap::new();
        for row in rows.iter().filter(|r| r.attempts > 1) {
            let (Some(source), Some(id)) = (
                row.event.get("source").and_then(Value::as_str),
                row.event.get("id").and_then(Value::as_str),
            ) else {
                continue;
            };
            for topic in &row.topics {
                let entry = by_topic
                    .entry(topic.as_str())
                    .or_insert_with(|| (row.first_attempt_at, HashMap::new()));
                entry.0 = entry.0.min(row.first_attempt_at);
                entry.1.insert((source.to_string(), id.to_string()), row.id);
            }
        }
        let mut stored = HashSet::new();
        for (topic, (since, keys)) in by_topic {
            let since = since - chrono::Duration::from_std(CLOCK_SKEW_MARGIN).unwrap_or_default();
            let wanted: HashSet<EventKey> = keys.keys().cloned().collect();
            let found = self.sink.stored_since(topic, since, &wanted).await?;
            for key in found {
                if let Some(row) = keys.get(&key) {
                    stored.insert((*row, topic.to_string()));
                }
            }
        }
        Ok(stored)
    }
}

/// The row's `subject`, when it has one.
fn subject_of(event: &Value) -> Option<String> {
    event
        .get("subject")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Resolves when `stop` turns true or its sender is gone (nobody can stop the relay any
/// more, so it stops rather than spin).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The row's event as crmbus reads it (`specversion` defaults to 1.0), or why it is not
/// one.
fn event_of(value: &Value) -> Result<Event, String> {
    let mut value = value.clone();
    if let Value::Object(map) = &mut value {
        map.entry("specversion")
            .or_insert_with(|| Value::String("1.0".into()));
    }
    Event::from_json_value(value).map_err(|e| format!("not a valid CloudEvent: {e}"))
}
