//! Delivery engine scenarios, shared by the backends: `crmbus/tests/delivery.rs`
//! (MemoryLog + MemoryStateStore) and each backend's `tests/delivery_scenarios.rs` (its
//! log and its state store) run them all with [`delivery_scenarios!`](crate::delivery_scenarios),
//! giving a [`MakeBackend`]. Time is driven by a ManualClock: no sleeps, assertions on state.
//!
//! By concern: [`property`] (per-key order under random failures), [`retry`] (retries,
//! restarts, exhaustion, the breaker), [`dlq_and_dedupe`] and [`options`] (filters,
//! ordering, nack delays, start positions).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crmbus::delivery::{
    handler_fn, BreakerPolicy, Delivery, Engine, HandlerError, OnExhausted, RetryPolicy,
    SubscribeOptions,
};
use crmbus::{Clock, Event, EventLog, ManualClock, StateStore, TopicSpec};
use proptest::prelude::*;
use serde_json::json;

pub mod dlq_and_dedupe;
pub mod options;
pub mod property;
pub mod retry;

type Calls = Arc<Mutex<Vec<(String, u64, u32, bool)>>>;

fn ev(key: &str, n: u64) -> Event {
    Event::new("deal.updated", json!({"deal_id": key, "n": n}))
        .subject(key)
        .source("urn:test")
}

fn n_of(d: &Delivery) -> u64 {
    n_of_event(&d.event)
}

fn n_of_event(e: &Event) -> u64 {
    e.data_json()
        .and_then(|v| v["n"].as_u64())
        .unwrap_or(u64::MAX)
}

/// What a backend gives the scenarios: a log, its state store, and whatever must live as
/// long as they do (a temporary directory).
pub struct Backend {
    /// The event log.
    pub log: Arc<dyn EventLog>,
    /// Its state store.
    pub state: Arc<dyn StateStore>,
    /// Kept alive with the log and store (a temporary directory, a cleanup guard).
    pub keep: Box<dyn std::any::Any + Send + Sync>,
}

/// Opens a fresh, empty backend whose log keeps producer ids for the given dedupe window.
/// Called synchronously from inside a multi-threaded tokio runtime (a backend that must
/// connect can use `tokio::task::block_in_place`).
pub type MakeBackend = fn(Duration) -> Backend;

struct World {
    log: Arc<dyn EventLog>,
    state: Arc<dyn StateStore>,
    clock: ManualClock,
    _keep: Box<dyn std::any::Any + Send + Sync>,
}

impl World {
    async fn new(make: MakeBackend, partitions: u32) -> World {
        Self::with_dedupe_window(make, partitions, Duration::from_secs(120)).await
    }

    async fn with_dedupe_window(make: MakeBackend, partitions: u32, window: Duration) -> World {
        let b = make(window);
        b.log
            .create_topic(TopicSpec::new("deals", partitions))
            .await
            .expect("create");
        World {
            log: b.log,
            state: b.state,
            clock: ManualClock::new(1_700_000_000_000_000),
            _keep: b.keep,
        }
    }

    async fn engine(
        &self,
        handler: Arc<dyn crmbus::delivery::Handler>,
        opts: SubscribeOptions,
    ) -> Engine {
        Engine::open(
            Arc::clone(&self.log),
            Arc::clone(&self.state),
            Arc::new(self.clock.clone()),
            "deals",
            "crm-sync",
            handler,
            opts,
        )
        .await
        .expect("open engine")
    }

    async fn publish(&self, events: Vec<Event>) {
        self.log
            .append(&["deals".to_string()], &events)
            .await
            .expect("append");
    }

    /// Runs until nothing is left: after each idle point, jumps the clock to the next due retry.
    async fn run_to_end(&self, engine: &mut Engine, max_rounds: usize) {
        for _ in 0..max_rounds {
            engine.run_until_idle().await.expect("run");
            match engine.next_due_us() {
                Some(due) => {
                    let now = self.clock.now_micros();
                    self.clock
                        .advance(Duration::from_micros((due - now).max(0) as u64 + 1));
                }
                None => return,
            }
        }
        panic!("engine did not finish in {max_rounds} rounds");
    }
}

fn quick_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(5),
        multiplier: 2.0,
        max_age: None,
        schedule: Vec::new(),
    }
}

fn recording_handler(
    calls: Calls,
    fail: impl Fn(&Delivery) -> Option<HandlerError> + Send + Sync + 'static,
) -> Arc<dyn crmbus::delivery::Handler> {
    let fail = Arc::new(fail);
    handler_fn(move |d: Delivery| {
        let calls = Arc::clone(&calls);
        let fail = Arc::clone(&fail);
        async move {
            let key = d.event.subject.clone().unwrap_or_default();
            // Yield so deliveries of different keys interleave.
            tokio::task::yield_now().await;
            let outcome = fail(&d);
            calls
                .lock()
                .expect("calls")
                .push((key, n_of(&d), d.attempt, outcome.is_none()));
            match outcome {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
    })
}

fn successes_per_key(calls: &Calls) -> HashMap<String, Vec<u64>> {
    let mut out: HashMap<String, Vec<u64>> = HashMap::new();
    for (k, n, _, ok) in calls.lock().expect("calls").iter() {
        if *ok {
            out.entry(k.clone()).or_default().push(*n);
        }
    }
    out
}

/// Generates one test per delivery scenario, named as the scenario (those of
/// [`dlq_and_dedupe`] and [`options`] in modules of those names). The argument is the
/// backend's [`MakeBackend`]: a function, or a closure that captures nothing.
#[macro_export]
macro_rules! delivery_scenarios {
    ($make:expr $(,)?) => {
        const DELIVERY_BACKEND: $crate::delivery::MakeBackend = $make;

        #[test]
        fn per_key_order_holds_under_random_failures() {
            $crate::delivery::property::per_key_order_holds_under_random_failures(
                DELIVERY_BACKEND,
            );
        }

        $crate::delivery_scenarios!(@async DELIVERY_BACKEND; retry;
            one_poisoned_key_does_not_hold_back_a_thousand_healthy_ones,
            restart_continues_the_retry_schedule_and_does_not_redeliver_acked_events,
            exhaustion_dead_letters_and_hold_parks_the_key,
            permanent_errors_skip_retries_and_open_breaker_spends_no_attempts);

        mod dlq_and_dedupe {
            $crate::delivery_scenarios!(@async super::DELIVERY_BACKEND; dlq_and_dedupe;
                held_key_is_released_by_redrive_and_audited,
                discard_moves_a_held_key_on_and_is_audited,
                skipped_dead_letters_redrive_in_their_original_order_by_filter,
                consumer_dedupe_holds_across_a_restart);
        }

        mod options {
            $crate::delivery_scenarios!(@async super::DELIVERY_BACKEND; options;
                filters_pass_over_events_and_still_commit,
                ordering_none_does_not_park_a_key_behind_its_failure,
                a_nack_may_name_its_delay,
                new_groups_start_at_earliest_latest_or_a_time);
        }
    };
    (@async $make:expr; $module:ident; $($scenario:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                $crate::delivery::$module::$scenario($make).await;
            }
        )*
    };
}
