//! What every case shares: the backend under test (its [`LogFactory`] and [`Features`], seen
//! by a case as a [`Target`]) and small helpers.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use crmbus::{Event, EventLog, LogError, StoredEvent};

/// Opens backends for the suite.
#[async_trait]
pub trait LogFactory: Send + Sync {
    /// Opens the backend storage called `name`. The suite gives every case a name of its
    /// own; opening the same name again (after [`EventLog::close`]) must open the same
    /// storage, as a process restart would (only asked of a [`Features::persistent`] backend).
    async fn open(&self, name: &str) -> Result<Arc<dyn EventLog>, LogError>;
}

/// What a backend supports, declared by its conformance run the way Watermill's pub/sub
/// test suite takes a feature list per implementation: the suite skips or adjusts exactly
/// what a field says, and nothing else. A field exists only where a backend differs, and
/// the struct has no `Default`, so a new field makes every backend's run decide.
///
/// | backend | `persistent` |
/// |---|---|
/// | memory (`MemoryLog`) | no |
/// | embedded, Redis, NATS | yes |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// What the log acknowledged survives [`EventLog::close`] and a new
    /// [`LogFactory::open`] of the same name, as across a process restart. Without it, a
    /// case that would reopen its log goes on with the log it has (what it checks after
    /// the reopen is still checked), and `reopen_keeps_everything` is skipped.
    pub persistent: bool,
}

/// A case's view of the backend under test: its factory and its [`Features`].
pub(super) struct Target<'a> {
    pub(super) factory: &'a dyn LogFactory,
    pub(super) features: Features,
}

impl Target<'_> {
    pub(super) async fn open(&self, name: &str) -> Result<Arc<dyn EventLog>, LogError> {
        self.factory.open(name).await
    }
}

pub(super) fn err(e: LogError) -> String {
    format!("{e} ({})", e.code())
}

pub(super) trait Check<T> {
    fn check(self, what: &str) -> Result<T, String>;
}

impl<T> Check<T> for Result<T, LogError> {
    fn check(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {}", err(e)))
    }
}

pub(super) fn ev(ty: &str, subject: &str, n: u64) -> Event {
    Event::new(
        ty,
        json!({ "deal_id": subject, "n": n, "amount": "1250.00", "currency": "EUR" }),
    )
    .subject(subject)
    .source("urn:crmbus:conformance")
    .extension("userid", "u-1")
}

pub(super) fn topics(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

pub(super) async fn read_all(
    log: &dyn EventLog,
    topic: &str,
    partition: u32,
) -> Result<Vec<StoredEvent>, String> {
    let mut out: Vec<StoredEvent> = Vec::new();
    let mut from = 0;
    loop {
        let batch = log.read(topic, partition, from, 1000).await.check("read")?;
        let Some(last) = batch.last() else {
            return Ok(out);
        };
        from = last.offset + 1;
        out.extend(batch);
    }
}

pub(super) fn contiguous(events: &[StoredEvent]) -> bool {
    events.windows(2).all(|w| w[1].offset == w[0].offset + 1)
}

/// Closes `log` and opens `name` again, as a process restart would; a backend that is not
/// [`Features::persistent`] keeps the log it has.
pub(super) async fn reopen(
    f: &Target<'_>,
    name: &str,
    log: Arc<dyn EventLog>,
) -> Result<Arc<dyn EventLog>, String> {
    if !f.features.persistent {
        return Ok(log);
    }
    log.close().await.check("close")?;
    drop(log);
    f.open(name).await.check("reopen")
}
