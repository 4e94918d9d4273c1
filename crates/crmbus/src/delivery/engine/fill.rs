//! Reading: events from the log into their keys' queues (filtered, deduped, unreadable
//! records dead-lettered), and scheduling a key's head event.

use std::sync::Arc;

use futures_util::StreamExt;

use super::records::{encode, DeadLetter, UNREADABLE_TYPE};
use super::run::{Engine, Key, Queued};
use crate::delivery::group_state::StateKind;
use crate::delivery::options::Ordering;
use crate::error::LogError;
use crate::event::Event;
use crate::state::StateOp;

/// Most partitions [`Engine::fill`] reads at the same time.
const READS_AT_ONCE: usize = 8;

impl Engine {
    fn key_for(&self, event: &Event, offset: u64) -> Key {
        match self.opts.ordering {
            Ordering::Key => Key::from(event.subject.as_deref().unwrap_or(&event.id)),
            Ordering::None => Key::from(format!("#{offset}")),
        }
    }

    /// Reads more events into the key queues, up to `read_ahead` per partition.
    ///
    /// The partitions with room are read side by side (one read each, up to
    /// [`READS_AT_ONCE`] at the same time),
    /// so a backend that reads and decodes on threads of its own (the embedded log) does
    /// so for several partitions at once, instead of one partition after another while
    /// the engine waits. Rounds of reads go on until no partition has room or anything
    /// more to read.
    ///
    /// A record the log cannot serve ([`LogError::Corrupt`]) costs only itself: that
    /// partition is read on its own from there (see [`Engine::fill_one`]).
    pub(super) async fn fill(&mut self) -> Result<(), LogError> {
        let mut done = vec![false; self.parts.len()];
        loop {
            let plans: Vec<(usize, u32, u64, usize)> = self
                .parts
                .iter()
                .enumerate()
                .filter(|(i, _)| !done[*i])
                .filter_map(|(i, part)| {
                    let room = self.opts.read_ahead.saturating_sub(part.buffered);
                    (room > 0).then(|| (i, part.id, part.next_read, room.min(512)))
                })
                .collect();
            if plans.is_empty() {
                return Ok(());
            }
            let mut pending = Vec::with_capacity(plans.len());
            for &(_, p, from, max) in &plans {
                pending.push(self.log.read(&self.topic, p, from, max));
            }
            let reads: Vec<_> = futures_util::stream::iter(pending)
                .buffered(READS_AT_ONCE)
                .collect()
                .await;
            for (&(i, _, _, _), read) in plans.iter().zip(reads) {
                match read {
                    Ok(batch) if batch.is_empty() => done[i] = true,
                    Ok(batch) => self.take_in(i, batch),
                    Err(LogError::Corrupt { .. }) => {
                        // Read again on its own, where unreadable records are handled.
                        self.fill_one(i).await?;
                        done[i] = true;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Reads partition index `i` on its own until it has no room or nothing more to
    /// read. A record the log cannot serve ([`LogError::Corrupt`]) costs only itself:
    /// when the error names an offset past `from` (a backend that fails a whole batch),
    /// the events before it are read first; the record is then dead-lettered with the
    /// reason (see [`DeadLetter::unreadable`]) and the group moves past it.
    async fn fill_one(&mut self, i: usize) -> Result<(), LogError> {
        // An unreadable offset met in this partition: read only up to it.
        let mut stop_at: Option<u64> = None;
        loop {
            let part = &self.parts[i];
            let room = self.opts.read_ahead.saturating_sub(part.buffered);
            if room == 0 {
                break;
            }
            let (p, from) = (part.id, part.next_read);
            let mut max = room.min(512);
            if let Some(bad) = stop_at.filter(|b| *b > from) {
                max = max.min(usize::try_from(bad - from).unwrap_or(usize::MAX));
            }
            let batch = match self.log.read(&self.topic, p, from, max).await {
                Ok(b) => b,
                Err(LogError::Corrupt { offset, detail, .. }) => {
                    let bad = offset.max(from);
                    if bad > from && stop_at != Some(bad) {
                        // Deliver up to it first.
                        stop_at = Some(bad);
                        continue;
                    }
                    let bad = if bad > from {
                        // Even the offsets before it cannot be read: those that
                        // retention removed are gone; any other is unreadable too.
                        let first = self
                            .log
                            .describe_topic(&self.topic)
                            .await?
                            .partition_info
                            .iter()
                            .find(|x| x.partition == p)
                            .map(|x| x.first_offset)
                            .unwrap_or(0);
                        if first > from {
                            let part = &mut self.parts[i];
                            part.done.insert_range(from, first.min(bad));
                            part.dirty = true;
                            part.next_read = first.min(bad);
                            continue;
                        }
                        from
                    } else {
                        bad
                    };
                    self.dead_letter_unreadable(i, bad, &detail).await?;
                    stop_at = None;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if batch.is_empty() {
                break;
            }
            self.take_in(i, batch);
        }
        Ok(())
    }

    /// Takes a batch read from partition index `i` into the key queues: filtered, deduped,
    /// and offsets the log skipped (removed by retention) counted as done.
    fn take_in(&mut self, i: usize, batch: Vec<crate::log::StoredEvent>) {
        let p = self.parts[i].id;
        for stored in batch {
            let offset = stored.offset;
            let part = &mut self.parts[i];
            if offset > part.next_read {
                // The log served nothing in between: retention removed those
                // offsets before the group read them. Nothing can deliver them,
                // so they count as done, or the commit would wait for ever.
                if part.next_read == part.committed && part.buffered == 0 {
                    part.committed = offset;
                } else {
                    part.done.insert_range(part.next_read, offset);
                    part.dirty = true;
                }
            }
            part.next_read = offset + 1;
            if offset < part.committed || part.done.contains(offset) {
                continue;
            }
            if self.opts.dedupe_ttl.is_some() {
                let h = crate::partition::dedupe_hash(&stored.event.source, &stored.event.id);
                if self
                    .processed
                    .get(&h)
                    .is_some_and(|exp| *exp > self.clock.now_micros())
                {
                    part.mark_done(offset);
                    self.count_deduped();
                    continue;
                }
            }
            if !self.opts.filter.matches(&stored.event) {
                part.mark_done(offset);
                self.count_filtered();
                continue;
            }
            part.buffered += 1;
            let key = self.key_for(&stored.event, offset);
            let ks = self.keys.entry((p, key.clone())).or_default();
            let was_idle = ks.queue.is_empty() && !ks.in_flight;
            ks.queue.push_back(Queued {
                offset,
                event: Arc::new(stored.event),
                stored_json: stored.stored_json,
                appended_us: stored.timestamp.timestamp_micros(),
                redrive: false,
            });
            if was_idle {
                self.schedule(p, key);
            }
        }
    }

    /// Dead-letters the record at `offset` of partition index `i`, which the log cannot
    /// serve, with the reason; the group moves past it.
    async fn dead_letter_unreadable(
        &mut self,
        i: usize,
        offset: u64,
        detail: &str,
    ) -> Result<(), LogError> {
        let p = self.parts[i].id;
        let now = self.clock.now_micros();
        let id = format!("{p}-{offset}");
        let ns = self.stored.namespace(StateKind::DeadLetter);
        // A crash before the commit reads it again: the entry is then already there.
        let existed = self.state.get(&ns, &id).await?.is_some();
        let event = Event::new(
            UNREADABLE_TYPE,
            serde_json::json!({"topic": self.topic, "partition": p, "offset": offset}),
        )
        .id(format!("{}-{id}", self.topic))
        .source("urn:crmbus:unreadable");
        let entry = DeadLetter {
            id: id.clone(),
            topic: self.topic.clone(),
            group: self.group.clone(),
            partition: p,
            offset,
            key: String::new(),
            event,
            attempts: 0,
            first_failure_us: now,
            last_failure_us: now,
            last_error: format!("the log cannot serve this record: {detail}"),
            recent_errors: Vec::new(),
            held: false,
            redriving: false,
            unreadable: true,
        };
        self.ops.push(StateOp::Put {
            namespace: ns,
            key: id,
            value: encode(&entry)?,
        });
        if !existed {
            self.dlq_count += 1;
        }
        self.count_dead_lettered();
        tracing::error!(topic = %self.topic, group = %self.group, partition = p, offset, %detail,
            "an unreadable record was dead-lettered");
        let part = &mut self.parts[i];
        part.mark_done(offset);
        part.next_read = part.next_read.max(offset + 1);
        Ok(())
    }

    /// Puts a key with a queued head event in the ready queue, on a timer, or nowhere
    /// (held by a dead letter).
    pub(super) fn schedule(&mut self, p: u32, key: Key) {
        let Some(ks) = self.keys.get(&(p, key.clone())) else {
            return;
        };
        let Some(Queued { offset, .. }) = ks.queue.front() else {
            return;
        };
        if ks.in_flight || self.held.contains(&(p, *offset)) {
            return;
        }
        match self.retries.get(&(p, *offset)) {
            Some(r) if r.next_due_us > self.clock.now_micros() => {
                self.timers.insert((r.next_due_us, p, key));
            }
            _ => self.ready.push_back((p, key)),
        }
    }
}
