//! Following a topic live: [`Tailer`] reads every partition from a cursor, lets through
//! what a [`Filter`] matches, and waits for the next publish when it has read everything.
//! The server's Server-Sent Events and WebSocket routes are thin adapters over it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::delivery::Filter;
use crate::error::LogError;
use crate::log::{EventLog, StoredEvent};
use crate::position::Position;

/// Events read per partition per round.
const READ_BATCH: usize = 256;

/// How often a tail looks for events published by another process (its own bus's
/// publishes wake it at once).
const POLL: Duration = Duration::from_millis(500);

/// Where a tail starts and what it lets through.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Where every partition starts.
    pub from: Position,
    /// Resume after this event (`partition`, `offset`): that partition continues right
    /// after it, the others from one second before it was appended (so a resumed tail is
    /// at least once, and readers dedupe by event id). Overrides `from`.
    pub resume_after: Option<(u32, u64)>,
    /// Only matching events are returned.
    pub filter: Filter,
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions {
            from: Position::Latest,
            resume_after: None,
            filter: Filter::default(),
        }
    }
}

/// A live reader of one topic (see [`crate::EventBus::tail`]).
pub struct Tailer {
    log: Arc<dyn EventLog>,
    published: Arc<Notify>,
    topic: String,
    filter: Filter,
    cursors: Vec<u64>,
}

impl Tailer {
    /// Opens a tail of `topic`; `published` is notified on each publish.
    pub async fn open(
        log: Arc<dyn EventLog>,
        published: Arc<Notify>,
        topic: &str,
        opts: TailOptions,
    ) -> Result<Tailer, LogError> {
        let info = log.describe_topic(topic).await?;
        let mut cursors = Vec::with_capacity(info.partition_info.len());
        match opts.resume_after {
            None => {
                for (p, at) in info
                    .partition_info
                    .iter()
                    .zip(opts.from.resolve(log.as_ref(), &info).await?)
                {
                    cursors.push(at.unwrap_or(p.next_offset));
                }
            }
            Some((partition, offset)) => {
                if partition >= info.spec.partitions {
                    return Err(LogError::PartitionNotFound {
                        topic: topic.to_string(),
                        partition,
                    });
                }
                let at = log.read(topic, partition, offset, 1).await?;
                let since = at
                    .first()
                    .filter(|s| s.offset == offset)
                    .map(|s| Position::Time(s.timestamp - chrono::Duration::seconds(1)));
                for p in &info.partition_info {
                    cursors.push(if p.partition == partition {
                        offset + 1
                    } else if let Some(since) = &since {
                        since
                            .offset_in(log.as_ref(), topic, p)
                            .await?
                            .unwrap_or(p.first_offset)
                    } else {
                        p.first_offset
                    });
                }
            }
        }
        Ok(Tailer {
            log,
            published,
            topic: topic.to_string(),
            filter: opts.filter,
            cursors,
        })
    }

    /// The next matching events (at least one), waiting for a publish when there are
    /// none. Cancel-safe: a cancelled call loses nothing it has not returned.
    pub async fn next(&mut self) -> Result<Vec<StoredEvent>, LogError> {
        loop {
            let woken = self.published.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let mut out = Vec::new();
            // Cursors move only when the events are returned, so a cancelled call loses none.
            let mut cursors = self.cursors.clone();
            for (p, cursor) in cursors.iter_mut().enumerate() {
                let events = self
                    .log
                    .read(&self.topic, p as u32, *cursor, READ_BATCH)
                    .await?;
                for s in events {
                    *cursor = s.offset + 1;
                    if self.filter.matches(&s.event) {
                        out.push(s);
                    }
                }
            }
            self.cursors = cursors;
            if !out.is_empty() {
                return Ok(out);
            }
            tokio::select! {
                _ = &mut woken => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
}
