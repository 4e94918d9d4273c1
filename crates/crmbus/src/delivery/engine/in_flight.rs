//! [`InFlight`]: the deliveries an engine started and has not taken the result of yet,
//! whether each runs on a task of its own (a handler's `handle`) or was handed over to be
//! settled later ([`Handler::hand_over`](crate::delivery::Handler::hand_over)).
//!
//! A delivery handed over costs no task: its [`Outcome`] sends the result straight to the
//! engine's channel. For the server's pull queue that spares, per event, a spawned task, a
//! oneshot channel and the task's two polls, all of which ran on the engine's one task or
//! woke it (a pull read-back's profile: the spawns alone were a tenth of the engine's time).

use std::collections::VecDeque;
use std::future::Future;

use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};

use crate::delivery::handler::{Completion, Outcome};

/// Deliveries in flight: tasks, and deliveries handed over whose outcome has not come back.
pub(crate) struct InFlight {
    tasks: JoinSet<Completion>,
    /// Handed over and not yet taken back (through `outcomes`, then `received`). Every
    /// outcome sends exactly once (settled, or dropped unsettled), so this comes back to
    /// zero.
    handed_over: usize,
    to_engine: mpsc::UnboundedSender<Vec<Completion>>,
    /// Outcomes come in batches (an ack of many deliveries is one message).
    outcomes: mpsc::UnboundedReceiver<Vec<Completion>>,
    /// Completions received and not yet taken.
    received: VecDeque<Completion>,
}

impl InFlight {
    pub(crate) fn new() -> InFlight {
        let (to_engine, outcomes) = mpsc::unbounded_channel();
        InFlight {
            tasks: JoinSet::new(),
            handed_over: 0,
            to_engine,
            outcomes,
            received: VecDeque::new(),
        }
    }

    /// Deliveries in flight.
    pub(crate) fn len(&self) -> usize {
        self.tasks.len() + self.handed_over
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs a delivery on a task of its own; its completion comes back when it ends.
    pub(crate) fn spawn<F>(&mut self, delivery: F)
    where
        F: Future<Output = Completion> + Send + 'static,
    {
        self.tasks.spawn(delivery);
    }

    /// The outcome of a delivery about to be handed over: `completion` (whose result the
    /// outcome fills in) comes back through it, with `span` ended then.
    pub(crate) fn hand_over(&mut self, completion: Completion, span: tracing::Span) -> Outcome {
        self.handed_over += 1;
        Outcome::to_engine(self.to_engine.clone(), completion, span)
    }

    /// A finished delivery, if one is there now.
    pub(crate) fn try_join_next(&mut self) -> Option<Result<Completion, JoinError>> {
        if self.received.is_empty() && self.handed_over > 0 {
            if let Ok(batch) = self.outcomes.try_recv() {
                self.received.extend(batch);
            }
        }
        if let Some(c) = self.take_received() {
            return Some(Ok(c));
        }
        self.tasks.try_join_next()
    }

    /// Waits for a delivery to finish; `None` at once when none is in flight.
    /// Cancel-safe: nothing is taken until it is returned.
    pub(crate) async fn join_next(&mut self) -> Option<Result<Completion, JoinError>> {
        if let Some(c) = self.take_received() {
            return Some(Ok(c));
        }
        if self.handed_over == 0 {
            return self.tasks.join_next().await;
        }
        let tasks_running = !self.tasks.is_empty();
        loop {
            tokio::select! {
                biased;
                // The engine holds a sender, so the channel never closes under it.
                Some(batch) = self.outcomes.recv() => {
                    self.received.extend(batch);
                    // (An empty batch, which nothing sends, is no answer: wait on.)
                    if let Some(c) = self.take_received() {
                        return Some(Ok(c));
                    }
                }
                Some(joined) = self.tasks.join_next(), if tasks_running => return Some(joined),
            }
        }
    }

    fn take_received(&mut self) -> Option<Completion> {
        let c = self.received.pop_front()?;
        self.handed_over -= 1;
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;

    use super::super::test_engine::engine_over_deals;
    use crate::delivery::{
        Delivery, Engine, Handler, HandlerError, Ordering, Outcome, SubscribeOptions,
    };

    /// A handler that keeps each delivery handed over with its outcome, for the test to
    /// settle.
    #[derive(Default)]
    struct Keeper {
        kept: Mutex<Vec<(Delivery, Outcome)>>,
        /// How many deliveries each hand-over gave, in order.
        handovers: Mutex<Vec<usize>>,
        /// Events the test watches, and at each hand-over whether all of them were alive.
        watched: Mutex<Vec<std::sync::Weak<crate::Event>>>,
        alive_at_handover: Mutex<Vec<bool>>,
    }

    #[async_trait]
    impl Handler for Keeper {
        async fn handle(&self, _: Delivery) -> Result<(), HandlerError> {
            Err(HandlerError::permanent(
                "a handler that hands over is never called",
            ))
        }

        fn hands_over(&self) -> bool {
            true
        }

        fn hand_over(&self, deliveries: Vec<(Delivery, Outcome)>) {
            self.handovers.lock().expect("lock").push(deliveries.len());
            let watched = self.watched.lock().expect("lock");
            let alive = watched.iter().all(|e| e.upgrade().is_some());
            self.alive_at_handover.lock().expect("lock").push(alive);
            self.kept.lock().expect("lock").extend(deliveries);
        }
    }

    impl Keeper {
        fn take(&self) -> Vec<(Delivery, Outcome)> {
            std::mem::take(&mut *self.kept.lock().expect("lock"))
        }
    }

    /// Acks `outcomes` in one settlement; whether each was taken.
    fn ack_all(outcomes: impl Iterator<Item = Outcome>) -> Vec<bool> {
        Outcome::settle_all(outcomes.map(|o| (o, Ok(()))).collect())
    }

    async fn engine(events: usize, keeper: Arc<Keeper>) -> Engine {
        let opts = SubscribeOptions {
            read_ahead: 8,
            max_in_flight: 4,
            ordering: Ordering::None,
            ..SubscribeOptions::default()
        };
        engine_over_deals(events, keeper, opts).await
    }

    #[tokio::test(flavor = "current_thread")]
    async fn deliveries_handed_over_run_no_task_and_come_back_as_they_are_settled() {
        let keeper = Arc::new(Keeper::default());
        let mut engine = engine(6, Arc::clone(&keeper)).await;
        engine.pump().await.expect("pump");
        let kept = keeper.take();
        let offsets: Vec<u64> = kept.iter().map(|(d, _)| d.offset).collect();
        assert_eq!(
            offsets,
            vec![0, 1, 2, 3],
            "max_in_flight deliveries handed over"
        );
        assert_eq!(engine.in_flight.len(), 4);
        assert!(engine.in_flight.tasks.is_empty(), "a task was spawned");

        // 0 and 1 acked in one batch, 2 failed, 3 still out.
        let mut outcomes = kept.into_iter().map(|(_, o)| o);
        assert_eq!(ack_all(outcomes.by_ref().take(2)), vec![true, true]);
        let failed = outcomes.next().expect("the third outcome");
        assert!(failed.settle(Err(HandlerError::transient("CRM down"))));
        let last = outcomes.next().expect("the fourth outcome");
        for _ in 0..3 {
            assert!(engine.finish_one().await, "a settled outcome came back");
        }
        assert_eq!(engine.in_flight.len(), 1, "the fourth is still out");
        assert!(engine.in_flight.try_join_next().is_none());
        let retries = engine.pending_retries();
        assert_eq!(
            retries.get(&(0, 2)).map(|r| r.attempts),
            Some(1),
            "the failure is a counted attempt: {retries:?}"
        );
        // The ack of 0 and 1 let the next two go out.
        engine.pump().await.expect("pump");
        let next: Vec<u64> = keeper.take().iter().map(|(d, _)| d.offset).collect();
        assert_eq!(next, vec![4, 5]);
        assert_eq!(engine.parts[0].lwm(), 2, "0 and 1 are finished, 2 is not");

        // Dropped unsettled: the delivery comes back interrupted, not as an attempt.
        drop(last);
        assert!(engine.finish_one().await);
        assert!(
            engine.interrupted,
            "an outcome dropped unsettled interrupts"
        );
        assert!(
            !engine.pending_retries().contains_key(&(0, 3)),
            "an interruption is no attempt"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_step_frees_the_events_it_took_answers_for_once_it_has_handed_the_next_over() {
        let keeper = Arc::new(Keeper::default());
        let mut engine = engine(8, Arc::clone(&keeper)).await;
        engine.pump().await.expect("pump");
        let kept = keeper.take();
        assert_eq!(kept.len(), 4);
        // Only the engine's queue holds the events once the deliveries are let go.
        let events: Vec<std::sync::Weak<crate::Event>> =
            kept.iter().map(|(d, _)| Arc::downgrade(&d.event)).collect();
        keeper.watched.lock().expect("lock").clone_from(&events);
        assert_eq!(ack_all(kept.into_iter().map(|(_, o)| o)), vec![true; 4]);
        assert!(
            events.iter().all(|e| e.upgrade().is_some()),
            "held until the engine takes the answers in"
        );
        engine.pump().await.expect("pump");
        let next: Vec<u64> = keeper.take().iter().map(|(d, _)| d.offset).collect();
        assert_eq!(
            next,
            vec![4, 5, 6, 7],
            "the answers let the next four go out"
        );
        assert_eq!(
            *keeper.alive_at_handover.lock().expect("lock"),
            vec![true, true],
            "the acked events were freed before the next deliveries were handed over"
        );
        assert!(
            events.iter().all(|e| e.upgrade().is_none()),
            "the step that took the answers in freed their events"
        );
        assert!(engine.finished_events.is_empty());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_step_after_an_ack_hands_the_room_it_made_over_in_one_go() {
        // A subscription's loop wakes for the first answer of an ack (`next_step`) and then
        // steps: the step must take the rest of the ack in before it dispatches, or a pull
        // waiting for deliveries is woken for the first one alone and answers with it.
        let keeper = Arc::new(Keeper::default());
        let mut engine = engine(8, Arc::clone(&keeper)).await;
        engine.pump().await.expect("pump");
        let kept = keeper.take();
        assert_eq!(*keeper.handovers.lock().expect("lock"), vec![4]);
        assert_eq!(ack_all(kept.into_iter().map(|(_, o)| o)), vec![true; 4]);
        assert!(engine.next_step().await, "woken by the ack");
        engine.pump().await.expect("pump");
        let next: Vec<u64> = keeper.take().iter().map(|(d, _)| d.offset).collect();
        assert_eq!(next, vec![4, 5, 6, 7]);
        assert_eq!(
            *keeper.handovers.lock().expect("lock"),
            vec![4, 4],
            "the four freed slots were handed over together"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_outcome_settled_after_its_engine_stopped_reports_nobody_took_it() {
        let keeper = Arc::new(Keeper::default());
        let mut engine = engine(2, Arc::clone(&keeper)).await;
        engine.pump().await.expect("pump");
        let mut kept = keeper.take();
        assert_eq!(kept.len(), 2);
        let (_, first) = kept.remove(0);
        assert!(!first.is_closed());
        drop(engine);
        assert!(first.is_closed(), "its engine is gone");
        assert!(!first.settle(Ok(())), "nobody took the answer");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiter_gets_the_settled_result_or_the_interruption_of_a_drop() {
        let (outcome, rx) = Outcome::waiter();
        assert!(outcome.settle(Err(HandlerError::permanent("bad payload"))));
        let got = rx.await.expect("an answer");
        assert_eq!(got, Err(HandlerError::permanent("bad payload")));

        let (outcome, rx) = Outcome::waiter();
        drop(outcome);
        let got = rx.await.expect("an answer");
        assert!(
            matches!(&got, Err(e) if e.interrupted),
            "dropped unsettled: {got:?}"
        );

        let (outcome, rx) = Outcome::waiter();
        drop(rx);
        assert!(outcome.is_closed());
        assert!(!outcome.settle(Ok(())));
    }
}
