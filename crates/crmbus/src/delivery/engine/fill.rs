//! Reading: events from the log into their keys' queues (filtered, deduped, unreadable
//! records dead-lettered), and scheduling a key's head event.

use std::sync::Arc;

use futures_util::StreamExt;

use super::records::{encode, DeadLetter, UNREADABLE_TYPE};
use super::run::{Engine, Key, PrefetchedRead, Queued};
use crate::delivery::group_state::StateKind;
use crate::delivery::options::Ordering;
use crate::error::LogError;
use crate::event::Event;
use crate::log::EventLog;
use crate::state::StateOp;

/// Most partitions [`Engine::fill`] reads at the same time.
const READS_AT_ONCE: usize = 8;

/// Reads every plan of [`Engine::read_plans`] from `log`, [`READS_AT_ONCE`] at a time, so
/// that a backend that reads and decodes on threads of its own does so for several
/// partitions at once; gives each partition index and cursor with what the read got, in
/// the plans' order.
async fn read_all(
    log: Arc<dyn EventLog>,
    topic: Arc<str>,
    plans: Vec<(usize, u32, u64, usize)>,
) -> Vec<PrefetchedRead> {
    let log = &log;
    let topic = &topic;
    futures_util::stream::iter(plans)
        .map(|(i, p, from, max)| async move { (i, from, log.read(topic, p, from, max).await) })
        .buffered(READS_AT_ONCE)
        .collect()
        .await
}

impl Engine {
    fn key_for(&self, event: &Event, offset: u64) -> Key {
        match self.opts.ordering {
            Ordering::Key => Key::from(event.subject.as_deref().unwrap_or(&event.id)),
            Ordering::None => Key::Offset(offset),
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
        self.take_prefetched().await;
        let mut done = vec![false; self.parts.len()];
        loop {
            let plans = self.read_plans(&done);
            if plans.is_empty() {
                return Ok(());
            }
            let reads = read_all(
                Arc::clone(&self.log),
                Arc::clone(&self.topic),
                plans.clone(),
            )
            .await;
            for (&(i, _, _, max), (_, _, read)) in plans.iter().zip(reads) {
                match read {
                    Ok(batch) if batch.is_empty() => {
                        done[i] = true;
                        self.note_caught_up(i, true);
                    }
                    Ok(batch) => {
                        self.note_caught_up(i, batch.len() < max);
                        self.take_in(i, batch);
                    }
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

    /// What a fill reads next: for each partition with room (and not `done`), its index,
    /// id, cursor and how many events to ask for.
    fn read_plans(&self, done: &[bool]) -> Vec<(usize, u32, u64, usize)> {
        self.parts
            .iter()
            .enumerate()
            .filter(|(i, _)| !done.get(*i).copied().unwrap_or(false))
            .filter_map(|(i, part)| {
                let room = self.opts.read_ahead.saturating_sub(part.buffered);
                (room > 0).then(|| (i, part.id, part.next_read, room.min(512)))
            })
            .collect()
    }

    /// Records whether partition index `i`'s last read found the end of what it holds.
    fn note_caught_up(&mut self, i: usize, caught_up: bool) {
        if let Some(c) = self.caught_up.get_mut(i) {
            *c = caught_up;
        }
    }

    /// Starts the reads the next fill would make now, on a task of its own, so that the
    /// log reads and decodes them while this engine persists its state and waits for its
    /// handlers, instead of after. Nothing is started while earlier reads are pending, for
    /// a partition whose last read found the end of it (a caught-up group is not read
    /// twice per step), or where there is no room. The next fill takes what was read (see
    /// [`Engine::take_prefetched`]).
    pub(super) fn start_prefetch(&mut self) {
        if self.prefetch.is_some() || self.prefetched.is_some() {
            return;
        }
        let plans = self.read_plans(&self.caught_up);
        if plans.is_empty() {
            return;
        }
        self.prefetch = Some(tokio::spawn(read_all(
            Arc::clone(&self.log),
            Arc::clone(&self.topic),
            plans,
        )));
    }

    /// Takes in what the reads started ahead got, for each partition whose cursor is
    /// still where its read began (nothing but a fill moves it today; the check keeps a
    /// stale read out should anything else ever do so). A read
    /// that failed is left to the fill, which reads that partition again and handles the
    /// failure as it always does (an unreadable record is dead-lettered there).
    async fn take_prefetched(&mut self) {
        let reads = match (self.prefetched.take(), self.prefetch.take()) {
            (Some(reads), _) => reads,
            (None, Some(task)) => match task.await {
                Ok(reads) => reads,
                Err(_) => return,
            },
            (None, None) => return,
        };
        for (i, from, read) in reads {
            if self.parts.get(i).map(|p| p.next_read) != Some(from) {
                continue;
            }
            if let Ok(batch) = read {
                if !batch.is_empty() {
                    self.prefetched_batches += 1;
                    self.take_in(i, batch);
                }
            }
        }
    }

    /// Whether reads started ahead are still running.
    pub fn is_reading_ahead(&self) -> bool {
        self.prefetch.is_some()
    }

    /// Waits until the reads started ahead have finished, and keeps what they got for
    /// the next fill; returns at once when none are running. A subscription with nothing
    /// in flight waits for this, so that it takes in the events read ahead as soon as
    /// they are there instead of at its next poll. Cancel-safe.
    pub async fn read_ahead_finished(&mut self) {
        let Some(task) = self.prefetch.as_mut() else {
            return;
        };
        let reads = task.await;
        self.prefetch = None;
        // A read ahead that failed to run leaves nothing: the fill reads as usual.
        self.prefetched = reads.ok();
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
            let ks = self.key_state((p, key.clone()));
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
            serde_json::json!({"topic": &*self.topic, "partition": p, "offset": offset}),
        )
        .id(format!("{}-{id}", self.topic))
        .source("urn:crmbus:unreadable");
        let entry = DeadLetter {
            id: id.clone(),
            topic: self.topic.to_string(),
            group: self.group.to_string(),
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::super::test_engine::engine_over_deals;
    use crate::delivery::{handler_fn, Engine, Ordering, SubscribeOptions};

    /// An engine over a one-partition topic holding `events` events, reading ahead
    /// `read_ahead` at a time, whose handler records each offset it is given.
    async fn engine(events: usize, read_ahead: usize) -> (Engine, Arc<Mutex<Vec<u64>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let handler = handler_fn(move |d| {
            let record = Arc::clone(&record);
            async move {
                record.lock().expect("lock").push(d.offset);
                Ok(())
            }
        });
        let opts = SubscribeOptions {
            read_ahead,
            max_in_flight: read_ahead,
            ordering: Ordering::None,
            ..SubscribeOptions::default()
        };
        let engine = engine_over_deals(events, handler, opts).await;
        (engine, seen)
    }

    // One thread: the handlers and the reads ahead run when the test waits, the same way
    // every time.
    #[tokio::test(flavor = "current_thread")]
    async fn events_read_ahead_are_delivered_once_each() {
        let (mut engine, seen) = engine(40, 4).await;
        // Driven as a background subscription drives it.
        for _ in 0..1000 {
            engine.pump().await.expect("pump");
            if !engine.finish_one().await && seen.lock().expect("lock").len() == 40 {
                break;
            }
        }
        let mut offsets = seen.lock().expect("lock").clone();
        offsets.sort_unstable();
        assert_eq!(offsets, (0..40).collect::<Vec<u64>>());
        assert!(
            engine.prefetched_batches > 0,
            "no batch read ahead was taken in"
        );
        assert_eq!(
            engine.parts[0].committed, 40,
            "everything finished is committed"
        );
        // Each event was a key of its own (no key ordering): every key is gone once done,
        // and the queues of the finished ones were kept for the next keys, not one made
        // per event.
        assert!(engine.keys.is_empty(), "{} keys left", engine.keys.len());
        let spare = engine.spare_queues.len();
        assert!(
            (1..=4).contains(&spare),
            "{spare} spare queues, with at most 4 keys buffered at once (read_ahead)"
        );
        assert!(engine.spare_queues.iter().all(|q| q.is_empty()));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_read_ahead_from_where_the_cursor_no_longer_is_not_taken() {
        let (mut engine, seen) = engine(10, 2).await;
        // Read and deliver until a pump starts a read ahead (from the cursor then).
        let mut from = None;
        for _ in 0..10 {
            engine.pump().await.expect("pump");
            if engine.prefetch.is_some() {
                from = Some(engine.parts[0].next_read);
                break;
            }
            engine.finish_one().await;
        }
        let from = from.expect("a pump started a read ahead");
        assert!(from + 4 <= 10, "the read ahead started at {from}");
        while engine.finish_one().await {}
        // The cursor moves past what that read covers (nothing in the engine does so
        // today): the fill must read from the cursor, not take the stale read.
        engine.parts[0].next_read = from + 2;
        engine.fill().await.expect("fill");
        engine.dispatch();
        while engine.finish_one().await {}
        let offsets = seen.lock().expect("lock").clone();
        assert!(
            !offsets.contains(&from) && !offsets.contains(&(from + 1)),
            "a stale read was delivered: {offsets:?} (read ahead from {from})"
        );
        assert!(offsets.contains(&(from + 2)), "{offsets:?}");
    }
}
