//! Dispatching: starting deliveries for ready keys (due retries, the breaker, consumer
//! dedupe), each on a task whose panic fails only its own attempt, or handed over to a
//! handler that settles them later ([`Handler::hand_over`](crate::delivery::Handler::hand_over)).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;

use super::records::pos_key;
use super::run::{Engine, Queued};
use crate::delivery::group_state::StateKind;
use crate::delivery::handler::{Completion, Delivery, HandlerError};
use crate::state::StateOp;

/// The message of a panic payload (a `&str` or a `String`; anything else is unnamed).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

impl Engine {
    /// Starts deliveries for ready keys, up to `max_in_flight`.
    pub(super) fn dispatch(&mut self) {
        if self.interrupted {
            return;
        }
        let now = self.clock.now_micros();
        while let Some(first) = self.timers.iter().next().cloned() {
            if first.0 > now {
                break;
            }
            self.timers.remove(&first);
            self.ready.push_back((first.1, first.2));
        }
        // Deliveries for a handler that takes them handed over, given to it in one call.
        let mut handed = Vec::new();
        while self.in_flight.len() < self.opts.max_in_flight {
            let Some((p, key)) = self.ready.pop_front() else {
                break;
            };
            let Some(ks) = self.keys.get(&(p, key.clone())) else {
                continue;
            };
            let Some(Queued {
                offset,
                event,
                stored_json,
                redrive,
                appended_us,
            }) = ks.queue.front()
            else {
                continue;
            };
            let (offset, redrive, appended_us) = (*offset, *redrive, *appended_us);
            if ks.in_flight || self.held.contains(&(p, offset)) {
                continue;
            }
            if self
                .retries
                .get(&(p, offset))
                .is_some_and(|r| r.next_due_us > now)
            {
                continue;
            }
            if let Some(b) = self.breaker.as_mut() {
                if !b.try_acquire(now) {
                    self.ready.push_front((p, key));
                    break;
                }
            }
            if !redrive && self.opts.dedupe_ttl.is_some() {
                let h = crate::partition::dedupe_hash(&event.source, &event.id);
                if self.processed.get(&h).is_some_and(|exp| *exp > now) {
                    // Processed already (a duplicate read before its twin was acked).
                    self.count_deduped();
                    self.pop_head(p, &key);
                    if self.retries.remove(&(p, offset)).is_some() {
                        self.ops.push(StateOp::Delete {
                            namespace: self.stored.namespace(StateKind::Retry),
                            key: pos_key(p, offset),
                        });
                    }
                    self.finish_offset(p, offset);
                    self.schedule(p, key);
                    continue;
                }
            }
            let mut attempt = self
                .retries
                .get(&(p, offset))
                .map(|r| r.attempts + 1)
                .unwrap_or(1);
            // Only a fenced engine (servers sharing a backend) tracks what it handed out.
            if !self.opts.fences.is_empty() {
                if let Some(part) = self.parts.iter_mut().find(|c| c.id == p) {
                    if !redrive && attempt == 1 && offset < part.attempted_below {
                        attempt = 2;
                    }
                    part.dispatched_to = part.dispatched_to.max(offset + 1);
                }
            }
            let delivery = Delivery {
                topic: Arc::clone(&self.topic),
                group: Arc::clone(&self.group),
                partition: p,
                offset,
                attempt,
                event: Arc::clone(event),
                stored_json: stored_json.clone(),
            };
            if let Some(ks) = self.keys.get_mut(&(p, key.clone())) {
                ks.in_flight = true;
            }
            self.count_delivered();
            let dedupe_hash = if self.opts.dedupe_ttl.is_some() {
                crate::partition::dedupe_hash(&delivery.event.source, &delivery.event.id)
            } else {
                0
            };
            // One span per attempt, a child of the trace the event carries.
            let span = tracing::info_span!(
                "crmbus.deliver",
                topic = %delivery.topic,
                group = %delivery.group,
                partition = delivery.partition,
                offset = delivery.offset,
                attempt = delivery.attempt,
                event_id = %delivery.event.id,
                otel.status_code = tracing::field::Empty,
            );
            crate::trace::follow(&span, &delivery.event);
            let mut completion = Completion {
                partition: p,
                offset,
                key,
                attempt,
                redrive,
                appended_us,
                dedupe_hash,
                result: Ok(()),
            };
            if self.hands_over {
                // No task: the handler settles the outcome, which comes back to
                // `in_flight` with the result (or, dropped unsettled, as interrupted).
                let outcome = self.in_flight.hand_over(completion, span);
                handed.push((delivery, outcome));
                continue;
            }
            let handler = Arc::clone(&self.handler);
            self.in_flight.spawn(tracing::Instrument::instrument(
                async move {
                    // A handler that panics fails this attempt like a transient error, with the
                    // panic's message: its completion must come back, or its key and its
                    // partition's commit would wait for ever.
                    let result = match AssertUnwindSafe(handler.handle(delivery))
                        .catch_unwind()
                        .await
                    {
                        Ok(result) => result,
                        Err(panic) => Err(HandlerError::transient(format!(
                            "the handler panicked: {}",
                            panic_message(panic.as_ref())
                        ))),
                    };
                    if result.is_err() {
                        tracing::Span::current().record("otel.status_code", "ERROR");
                    }
                    completion.result = result;
                    completion
                },
                span,
            ));
        }
        if !handed.is_empty() {
            let handler = &self.handler;
            if let Err(panic) =
                std::panic::catch_unwind(AssertUnwindSafe(|| handler.hand_over(handed)))
            {
                // The outcomes not yet kept were dropped as the panic unwound: those
                // deliveries come back as failed attempts, and are retried.
                tracing::error!(
                    topic = %self.topic,
                    group = %self.group,
                    panic = %panic_message(panic.as_ref()),
                    "the handler panicked taking deliveries handed over"
                );
            }
        }
    }
}
