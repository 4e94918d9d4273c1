//! Completions: acknowledgements, retries on the persisted schedule, dead-lettering, and
//! the consumer dedupe records of processed events.

use std::time::Duration;

use super::records::{encode, pos_key, DeadLetter, RetryRecord, RECENT_ERRORS};
use super::run::{Engine, Key};
use crate::delivery::group_state::StateKind;
use crate::delivery::handler::Completion;
use crate::delivery::options::OnExhausted;
use crate::event::Event;
use crate::state::StateOp;

impl Engine {
    fn random(&mut self) -> f64 {
        // xorshift64*: jitter only needs to be spread, not unpredictable.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(super) fn finish_offset(&mut self, p: u32, offset: u64) {
        if let Some(part) = self.parts.iter_mut().find(|c| c.id == p) {
            part.mark_done(offset);
            part.buffered = part.buffered.saturating_sub(1);
        }
    }

    /// Takes in a finished delivery's outcome, as of `now` (µs, the engine's clock): the
    /// caller reads the clock once for the outcomes it takes in together.
    pub(super) fn complete(&mut self, c: Completion, now: i64) {
        let (p, offset, key) = (c.partition, c.offset, c.key.clone());
        if let Some(ks) = self.keys.get_mut(&(p, key.clone())) {
            ks.in_flight = false;
        }
        if matches!(&c.result, Err(e) if e.interrupted) {
            // Not an attempt: nothing is recorded, the offset stays unfinished (so the
            // commit stops below it), and the key waits at its head for the next run.
            self.interrupted = true;
            return;
        }
        if let Some(b) = self.breaker.as_mut() {
            b.record(c.result.is_ok(), now);
        }
        match c.result {
            Ok(()) => {
                self.count_acked();
                if !c.redrive && c.appended_us > 0 {
                    self.record_latency(now - c.appended_us);
                }
                self.pop_head(p, &key);
                if self.retries.remove(&(p, offset)).is_some() {
                    // The namespace is built only when a retry is there to delete: an ack
                    // of an event that never failed writes nothing here.
                    self.ops.push(StateOp::Delete {
                        namespace: self.stored.namespace(StateKind::Retry),
                        key: pos_key(p, offset),
                    });
                }
                self.remember_processed(c.dedupe_hash, now);
                if c.redrive {
                    // Unless it was discarded while the redrive was under way.
                    if self.redriving_pos.remove(&(p, offset)) {
                        self.ops.push(StateOp::Delete {
                            namespace: self.stored.namespace(StateKind::DeadLetter),
                            key: format!("{p}-{offset}"),
                        });
                        self.dlq_count = self.dlq_count.saturating_sub(1);
                    }
                } else {
                    self.finish_offset(p, offset);
                }
            }
            Err(e) => {
                let mut rec = self
                    .retries
                    .get(&(p, offset))
                    .cloned()
                    .unwrap_or(RetryRecord {
                        key: key.to_string(),
                        attempts: 0,
                        first_failure_us: now,
                        next_due_us: now,
                        last_error: String::new(),
                        recent_errors: Vec::new(),
                    });
                rec.attempts = c.attempt;
                rec.last_error = e.message.clone();
                rec.recent_errors.push(e.message.clone());
                let extra = rec.recent_errors.len().saturating_sub(RECENT_ERRORS);
                rec.recent_errors.drain(..extra);
                let age =
                    Duration::from_micros(now.saturating_sub(rec.first_failure_us).max(0) as u64);
                if e.permanent || self.opts.retry.exhausted(rec.attempts, age) {
                    self.dead_letter(p, offset, &key, &rec, now);
                } else {
                    let r = self.random();
                    let delay = self.opts.retry.next_delay(rec.attempts, r, e.retry_after);
                    // `next_delay` caps the delay; convert without truncating all the same.
                    let delay_us = i64::try_from(delay.as_micros()).unwrap_or(i64::MAX);
                    rec.next_due_us = now.saturating_add(delay_us);
                    match encode(&rec) {
                        Ok(bytes) => self.ops.push(StateOp::Put {
                            namespace: self.stored.namespace(StateKind::Retry),
                            key: pos_key(p, offset),
                            value: bytes,
                        }),
                        Err(err) => tracing::error!(error = %err, "cannot record a retry"),
                    }
                    self.retries.insert((p, offset), rec);
                    self.count_retried();
                }
            }
        }
        self.schedule(p, key);
    }

    /// Records a processed event for consumer dedupe (when enabled).
    fn remember_processed(&mut self, hash: u64, now: i64) {
        let Some(ttl) = self.opts.dedupe_ttl else {
            return;
        };
        let ttl_us = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
        let expiry = now.saturating_add(ttl_us);
        self.processed.insert(hash, expiry);
        self.expiries.push_back((expiry, hash));
        match encode(&expiry) {
            Ok(value) => self.ops.push(StateOp::Put {
                namespace: self.stored.namespace(StateKind::Dedupe),
                key: format!("{hash:016x}"),
                value,
            }),
            Err(err) => tracing::error!(error = %err, "cannot record a processed event"),
        }
    }

    pub(super) fn pop_head(&mut self, p: u32, key: &Key) {
        let k = (p, Key::clone(key));
        if let Some(ks) = self.keys.get_mut(&k) {
            if let Some(finished) = ks.queue.pop_front() {
                // Freed by the step, after it dispatched (see `Engine::pump`).
                self.finished_events.push(finished);
            }
            if ks.queue.is_empty() && !ks.in_flight {
                self.forget_key(&k);
            }
        }
    }

    fn dead_letter(&mut self, p: u32, offset: u64, key: &Key, rec: &RetryRecord, now: i64) {
        let Some(event) = self
            .keys
            .get(&(p, Key::clone(key)))
            .and_then(|ks| ks.queue.front())
            .map(|q| Event::clone(&q.event))
        else {
            return;
        };
        let held = self.opts.on_exhausted == OnExhausted::Hold;
        let entry = DeadLetter {
            id: format!("{p}-{offset}"),
            topic: self.topic.to_string(),
            group: self.group.to_string(),
            partition: p,
            offset,
            key: key.to_string(),
            event,
            attempts: rec.attempts,
            first_failure_us: rec.first_failure_us,
            last_failure_us: now,
            last_error: rec.last_error.clone(),
            recent_errors: rec.recent_errors.clone(),
            held,
            redriving: false,
            unreadable: false,
        };
        match encode(&entry) {
            Ok(bytes) => self.ops.push(StateOp::Put {
                namespace: self.stored.namespace(StateKind::DeadLetter),
                key: entry.id.clone(),
                value: bytes,
            }),
            Err(err) => tracing::error!(error = %err, "cannot record a dead letter"),
        }
        if self.retries.remove(&(p, offset)).is_some() {
            self.ops.push(StateOp::Delete {
                namespace: self.stored.namespace(StateKind::Retry),
                key: pos_key(p, offset),
            });
        }
        self.count_dead_lettered();
        tracing::info!(topic = %self.topic, group = %self.group, partition = p, offset, key = %key,
            attempts = rec.attempts, error = %rec.last_error, held, "event dead-lettered");
        let redriven = self
            .keys
            .get(&(p, Key::clone(key)))
            .and_then(|ks| ks.queue.front())
            .is_some_and(|q| q.redrive);
        // A redriven event's entry is still there (it is put back), unless a discard took
        // it out meanwhile.
        if !(redriven && self.redriving_pos.remove(&(p, offset))) {
            self.dlq_count += 1;
        }
        if held {
            self.held.insert((p, offset));
        } else {
            self.pop_head(p, key);
            if !redriven {
                self.finish_offset(p, offset);
            }
        }
    }
}
