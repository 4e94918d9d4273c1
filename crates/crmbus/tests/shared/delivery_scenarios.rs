//! Delivery engine scenarios, shared by the backends: this file is included by
//! `crmbus/tests/delivery.rs` (MemoryLog + MemoryStateStore) and by
//! `crmbus-embedded/tests/delivery_scenarios.rs` (the embedded log and its state store).
//! The including file provides `backend(partitions, dedupe_window)`. Time is driven by a
//! ManualClock: no sleeps, assertions on state.

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
    pub log: Arc<dyn EventLog>,
    pub state: Arc<dyn StateStore>,
    pub keep: Box<dyn std::any::Any + Send + Sync>,
}

struct World {
    log: Arc<dyn EventLog>,
    state: Arc<dyn StateStore>,
    clock: ManualClock,
    _keep: Box<dyn std::any::Any + Send + Sync>,
}

impl World {
    async fn new(partitions: u32) -> World {
        Self::with_dedupe_window(partitions, Duration::from_secs(120)).await
    }

    async fn with_dedupe_window(partitions: u32, window: Duration) -> World {
        let b = super::backend(window);
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

/// One generated scenario of [`per_key_order_holds_under_random_failures`].
#[derive(Debug, Clone)]
struct OrderCase {
    partitions: u32,
    keys: usize,
    per_key: u64,
    /// Chance (percent) that a delivery of a healthy event fails transiently.
    fail_percent: u64,
    /// Chance (percent) that an event is poisoned: it fails on every attempt until the
    /// downstream is fixed (phase 2).
    poison_percent: u64,
    /// Whether poisoned events may fail with a permanent error (no retries).
    permanent: bool,
    max_attempts: u32,
    hold: bool,
    /// (consecutive failures that open it, open period in ms).
    breaker: Option<(u32, u64)>,
    /// Rounds of phase 1 after which the consumer is stopped and opened again.
    restart_rounds: Vec<usize>,
    /// Whether the consumer restarts between the redrive and its delivery.
    restart_after_redrive: bool,
    max_in_flight: usize,
    seed: u64,
}

fn order_case() -> impl Strategy<Value = OrderCase> {
    (
        (1u32..=3, 1usize..16, 1u64..16, 0u64..60),
        (
            prop_oneof![Just(0u64), 1u64..20],
            any::<bool>(),
            1u32..6,
            any::<bool>(),
        ),
        (
            prop::option::weighted(0.6, (2u32..6, 100u64..5_000)),
            prop::collection::vec(0usize..8, 0..3),
            any::<bool>(),
            // One in flight at a time half the time: then the breaker is checked
            // against a model of it (see `check_breaker`).
            prop_oneof![Just(1usize), 2usize..16],
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (partitions, keys, per_key, fail_percent),
                (poison_percent, permanent, max_attempts, hold),
                (breaker, restart_rounds, restart_after_redrive, max_in_flight, seed),
            )| OrderCase {
                partitions,
                keys,
                per_key,
                fail_percent,
                poison_percent,
                permanent,
                max_attempts,
                hold,
                breaker,
                restart_rounds,
                restart_after_redrive,
                max_in_flight,
                seed,
            },
        )
}

/// How often a run of the property reached each engine feature, over all its cases.
#[derive(Debug, Default, Clone, Copy)]
struct Reach {
    cases: u64,
    events: u64,
    retries: u64,
    /// Dead letters after `max_attempts` transient failures.
    exhausted: u64,
    /// Dead letters of a permanent error before `max_attempts`.
    permanent: u64,
    /// Held dead letters with later events of their key waiting behind them.
    held_behind: u64,
    redriven_skip: u64,
    redriven_held: u64,
    /// Times a round ended with the breaker open (and nothing got through while open).
    breaker_open: u64,
    /// Restarts while retries were scheduled or dead letters parked keys.
    restarts_with_work: u64,
    /// Restarts between a redrive and its delivery.
    restarts_after_redrive: u64,
    /// Breaker openings replayed by the model in `check_breaker`.
    breaker_modelled: u64,
}

impl Reach {
    fn add(&mut self, o: &Reach) {
        self.cases += o.cases;
        self.events += o.events;
        self.retries += o.retries;
        self.exhausted += o.exhausted;
        self.permanent += o.permanent;
        self.held_behind += o.held_behind;
        self.redriven_skip += o.redriven_skip;
        self.redriven_held += o.redriven_held;
        self.breaker_open += o.breaker_open;
        self.restarts_with_work += o.restarts_with_work;
        self.restarts_after_redrive += o.restarts_after_redrive;
        self.breaker_modelled += o.breaker_modelled;
    }
}

fn mix(a: u64, b: u64) -> u64 {
    // splitmix64 of the pair
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got '{v}'"))
    })
}

/// Phase 1 (downstream broken): poisoned events fail on every attempt, healthy ones fail
/// at random. Phase 2 (fixed): only transient failures below `max_attempts`, so nothing
/// is dead-lettered again and one redrive drains the DLQ.
fn order_handler(
    c: &OrderCase,
    calls: Calls,
    phase: Arc<std::sync::atomic::AtomicU8>,
    timeline: Timeline,
    clock: ManualClock,
) -> Arc<dyn crmbus::delivery::Handler> {
    let c = c.clone();
    recording_handler(calls, move |d| {
        let outcome = order_outcome(&c, &phase, d);
        timeline
            .lock()
            .expect("timeline")
            .push(Some((clock.now_micros(), outcome.is_none())));
        outcome
    })
}

/// Handler calls in order, (clock time, success), and `None` where the consumer restarted.
type Timeline = Arc<Mutex<Vec<Option<(i64, bool)>>>>;

/// What a case's handler answers to `d`.
fn order_outcome(
    c: &OrderCase,
    phase: &std::sync::atomic::AtomicU8,
    d: &Delivery,
) -> Option<HandlerError> {
    {
        let key: u64 = d
            .event
            .subject
            .as_deref()
            .and_then(|s| s.strip_prefix("deal-"))
            .and_then(|k| k.parse().ok())
            .unwrap_or(u64::MAX);
        let event = mix(mix(c.seed, key), n_of(d));
        let healed = phase.load(std::sync::atomic::Ordering::SeqCst) == 2;
        let roll = mix(
            event,
            u64::from(d.attempt) + if healed { 1 << 32 } else { 0 },
        ) % 100;
        if healed {
            return (roll < c.fail_percent && d.attempt < c.max_attempts)
                .then(|| HandlerError::transient("flaky"));
        }
        if event % 100 < c.poison_percent {
            return Some(if c.permanent && (event >> 40).is_multiple_of(2) {
                HandlerError::permanent("poison")
            } else {
                HandlerError::transient("poison")
            });
        }
        (roll < c.fail_percent).then(|| HandlerError::transient("flaky"))
    }
}

/// With one delivery in flight at a time, calls complete in the order they are made, so
/// the breaker's state follows from the timeline: it opens after `consecutive` failures in
/// a row (or a failed probe) for `open_for`; no call may start before that has passed; the
/// first call after it is the probe, which closes it on success; a restart closes it.
/// Returns how many times it opened.
fn check_breaker(
    timeline: &Timeline,
    consecutive: u32,
    open_for: Duration,
) -> Result<u64, TestCaseError> {
    let open_for = open_for.as_micros() as i64;
    let (mut failures, mut open_until, mut probing, mut opened) = (0u32, None::<i64>, false, 0);
    for (i, entry) in timeline.lock().expect("timeline").iter().enumerate() {
        let Some((t, ok)) = *entry else {
            (failures, open_until, probing) = (0, None, false);
            continue;
        };
        if let Some(until) = open_until.take() {
            prop_assert!(
                t >= until,
                "call {} at {} µs went through a breaker open until {} µs",
                i,
                t,
                until
            );
            probing = true;
        }
        if ok {
            (failures, probing) = (0, false);
        } else {
            failures += 1;
            if probing || failures >= consecutive {
                open_until = Some(t + open_for);
                (failures, probing) = (0, false);
                opened += 1;
            }
        }
    }
    Ok(opened)
}

/// Drives `engine` until nothing is left to do now or later: after each idle point it
/// jumps the clock to the next due retry, or past the breaker's open period when the
/// breaker is open. Restarts the consumer (a new engine over the same log and state)
/// after the rounds in `restart_rounds`. Checks that an open breaker lets nothing through.
async fn drive_case(
    world: &World,
    engine: &mut Engine,
    run: &CaseRun,
    restart_rounds: &[usize],
    reach: &mut Reach,
) -> Result<(), TestCaseError> {
    let (opts, calls) = (&run.opts, &run.calls);
    let open_for = opts.breaker.map(|b| b.open_for).unwrap_or(Duration::ZERO);
    let n_calls = || calls.lock().expect("calls").len();
    let mut waited_out_breaker = false;
    for round in 0..20_000usize {
        let before = n_calls();
        engine.run_until_idle().await.expect("run");
        let progressed = n_calls() > before;
        if restart_rounds.contains(&round) {
            if !engine.pending_retries().is_empty() || engine.stats().parked_keys > 0 {
                reach.restarts_with_work += 1;
            }
            *engine = run.restart(world).await;
            waited_out_breaker = false;
            // A new engine knows its retry times only once it has read its partitions.
            continue;
        }
        // 1 = open. A breaker whose open period is over stays "open" until a delivery
        // asks it; if nothing asked after waiting it out, nothing was waiting for it.
        if engine.stats().breaker == 1 && (progressed || !waited_out_breaker) {
            reach.breaker_open += 1;
            let n = n_calls();
            engine.run_until_idle().await.expect("run while open");
            prop_assert_eq!(n_calls(), n, "a delivery got through an open breaker");
            world.clock.advance(open_for + Duration::from_micros(1));
            waited_out_breaker = true;
            continue;
        }
        waited_out_breaker = false;
        match engine.next_due_us() {
            Some(due) => {
                let now = world.clock.now_micros();
                world
                    .clock
                    .advance(Duration::from_micros((due - now).max(0) as u64 + 1));
            }
            None => return Ok(()),
        }
    }
    Err(TestCaseError::fail(
        "the engine did not finish in 20000 rounds",
    ))
}

/// What the rounds of a case share: its handler, options and records.
struct CaseRun {
    handler: Arc<dyn crmbus::delivery::Handler>,
    opts: SubscribeOptions,
    calls: Calls,
    timeline: Timeline,
}

impl CaseRun {
    /// A new engine over the same log and state (the consumer restarted).
    async fn restart(&self, world: &World) -> Engine {
        self.timeline.lock().expect("timeline").push(None);
        world
            .engine(Arc::clone(&self.handler), self.opts.clone())
            .await
    }
}

/// Successful handler calls per key, from `calls[from..]`.
fn successes_since(calls: &Calls, from: usize) -> HashMap<String, Vec<u64>> {
    let mut out: HashMap<String, Vec<u64>> = HashMap::new();
    for (k, n, _, ok) in calls.lock().expect("calls")[from..].iter() {
        if *ok {
            out.entry(k.clone()).or_default().push(*n);
        }
    }
    out
}

/// The attempts of each (key, event) in `calls[from..]`, in call order.
fn attempts_since(calls: &Calls, from: usize) -> HashMap<(String, u64), Vec<u32>> {
    let mut out: HashMap<(String, u64), Vec<u32>> = HashMap::new();
    for (k, n, a, _) in calls.lock().expect("calls")[from..].iter() {
        out.entry((k.clone(), *n)).or_default().push(*a);
    }
    out
}

/// One case: phase 1 publishes every key's events, delivers them against a broken
/// downstream (random transient failures, poisoned events, permanent errors) with
/// restarts of the consumer, and checks the state it leaves: per key, the successes in
/// publish order; with `Skip`, every other event in the DLQ; with `Hold`, the key parked
/// behind its first dead letter with nothing after it delivered. Phase 2 fixes the
/// downstream, redrives the whole DLQ (possibly restarting in between) and checks the
/// end state: DLQ empty, every partition committed to its end, and per key the
/// successes are — with `Hold` — exactly the events in publish order, or — with `Skip`
/// (a redriven event is delivered after what its key delivered before) — the
/// undead-lettered events in order, then the redriven ones in order.
async fn per_key_order_case(c: OrderCase) -> Result<Reach, TestCaseError> {
    let mut reach = Reach {
        cases: 1,
        events: c.keys as u64 * c.per_key,
        ..Reach::default()
    };
    let world = World::new(c.partitions).await;
    let mut batch = Vec::new();
    for n in 0..c.per_key {
        for k in 0..c.keys {
            batch.push(ev(&format!("deal-{k}"), n));
        }
    }
    world.publish(batch).await;
    let calls: Calls = Arc::default();
    let phase = Arc::new(std::sync::atomic::AtomicU8::new(1));
    let timeline: Timeline = Arc::default();
    let handler = order_handler(
        &c,
        Arc::clone(&calls),
        Arc::clone(&phase),
        Arc::clone(&timeline),
        world.clock.clone(),
    );
    let opts = SubscribeOptions {
        retry: quick_retry(c.max_attempts),
        on_exhausted: if c.hold {
            OnExhausted::Hold
        } else {
            OnExhausted::Skip
        },
        max_in_flight: c.max_in_flight,
        breaker: c
            .breaker
            .map(|(consecutive_failures, open_ms)| BreakerPolicy {
                consecutive_failures,
                failure_rate: 1.1,
                min_requests: u32::MAX,
                window: Duration::from_secs(60),
                open_for: Duration::from_millis(open_ms),
            }),
        ..SubscribeOptions::default()
    };
    let mut engine = world.engine(Arc::clone(&handler), opts.clone()).await;
    let run = CaseRun {
        handler,
        opts,
        calls: Arc::clone(&calls),
        timeline: Arc::clone(&timeline),
    };
    drive_case(&world, &mut engine, &run, &c.restart_rounds, &mut reach).await?;

    // Phase 1's end state.
    let phase1 = calls.lock().expect("calls").len();
    let first = successes_since(&calls, 0);
    for ((k, n), attempts) in attempts_since(&calls, 0) {
        // Restarts and an open breaker neither repeat nor skip an attempt.
        prop_assert_eq!(
            &attempts,
            &(1..=attempts.len() as u32).collect::<Vec<_>>(),
            "attempts of {} #{}",
            k,
            n
        );
        reach.retries += attempts.len() as u64 - 1;
    }
    let dlq = engine
        .dead_letters(&crmbus::delivery::DlqFilter::default())
        .await
        .expect("dead letters");
    prop_assert!(engine.pending_retries().is_empty(), "retries left over");
    let mut dead: HashMap<String, Vec<u64>> = HashMap::new();
    for d in &dlq {
        let n = n_of_event(&d.event);
        prop_assert_eq!(d.held, c.hold, "dead letter {} held", &d.id);
        prop_assert!(
            d.attempts >= 1 && d.attempts <= c.max_attempts,
            "{} attempts",
            d.attempts
        );
        if d.attempts < c.max_attempts {
            prop_assert_eq!(
                d.last_error.as_str(),
                "poison",
                "only a permanent error stops early"
            );
            reach.permanent += 1;
        } else {
            reach.exhausted += 1;
        }
        dead.entry(d.key.clone()).or_default().push(n);
    }
    for k in 0..c.keys {
        let key = format!("deal-{k}");
        let ok = first.get(&key).cloned().unwrap_or_default();
        let dl = dead.get(&key).cloned().unwrap_or_default();
        if c.hold {
            // At most one dead letter per key; the key stops there.
            prop_assert!(dl.len() <= 1, "key {} holds {:?}", key, dl);
            let stop = dl.first().copied().unwrap_or(c.per_key);
            prop_assert_eq!(
                &ok,
                &(0..stop).collect::<Vec<_>>(),
                "key {} before its hold",
                &key
            );
            if stop + 1 < c.per_key {
                reach.held_behind += 1;
            }
        } else {
            let mut all: Vec<u64> = ok.iter().chain(&dl).copied().collect();
            all.sort_unstable();
            prop_assert!(
                ok.windows(2).all(|w| w[0] < w[1]),
                "key {} out of order: {:?}",
                &key,
                &ok
            );
            prop_assert_eq!(
                all,
                (0..c.per_key).collect::<Vec<_>>(),
                "key {}: delivered {:?}, dead-lettered {:?}",
                &key,
                &ok,
                &dl
            );
        }
    }

    // Phase 2: the downstream is fixed; redrive everything.
    phase.store(2, std::sync::atomic::Ordering::SeqCst);
    let redriven = engine
        .redrive(None, &crmbus::delivery::DlqFilter::default(), "prop")
        .await
        .expect("redrive");
    prop_assert_eq!(redriven, dlq.len());
    if c.hold {
        reach.redriven_held += redriven as u64;
    } else {
        reach.redriven_skip += redriven as u64;
    }
    if c.restart_after_redrive {
        if redriven > 0 {
            reach.restarts_after_redrive += 1;
        }
        engine = run.restart(&world).await;
    }
    drive_case(&world, &mut engine, &run, &[], &mut reach).await?;
    let second = successes_since(&calls, phase1);
    for ((k, n), attempts) in attempts_since(&calls, phase1) {
        prop_assert_eq!(
            &attempts,
            &(1..=attempts.len() as u32).collect::<Vec<_>>(),
            "phase 2 attempts of {} #{}",
            k,
            n
        );
        reach.retries += attempts.len() as u64 - 1;
    }
    for k in 0..c.keys {
        let key = format!("deal-{k}");
        let ok1 = first.get(&key).cloned().unwrap_or_default();
        let ok2 = second.get(&key).cloned().unwrap_or_default();
        let dl = dead.get(&key).cloned().unwrap_or_default();
        let expected2: Vec<u64> = if c.hold {
            (ok1.len() as u64..c.per_key).collect()
        } else {
            dl.clone()
        };
        prop_assert_eq!(
            &ok2,
            &expected2,
            "key {} after the redrive (first {:?}, dead {:?})",
            &key,
            &ok1,
            &dl
        );
    }
    prop_assert!(
        engine
            .dead_letters(&crmbus::delivery::DlqFilter::default())
            .await
            .expect("dead letters")
            .is_empty(),
        "the DLQ did not drain"
    );
    prop_assert!(engine.pending_retries().is_empty(), "retries left over");
    prop_assert_eq!(engine.stats().parked_keys, 0);
    let info = world.log.describe_topic("deals").await.expect("describe");
    for p in &info.partition_info {
        let committed = world
            .log
            .committed_offset("crm-sync", "deals", p.partition)
            .await
            .expect("committed");
        prop_assert_eq!(
            committed,
            Some(p.next_offset),
            "partition {} committed",
            p.partition
        );
    }
    prop_assert_eq!(
        engine.audit_log().await.expect("audit").len(),
        redriven,
        "one audit record per redrive"
    );
    if let (1, Some((consecutive, open_ms))) = (c.max_in_flight, c.breaker) {
        reach.breaker_modelled +=
            check_breaker(&timeline, consecutive, Duration::from_millis(open_ms))?;
    }
    Ok(reach)
}

/// Per key, the handler sees events in publish order and none is lost, whatever fails:
/// random transient failures, retries to exhaustion, permanent errors, dead letters that
/// skip or hold their key, the circuit breaker, consumer restarts, and a redrive (see
/// [`per_key_order_case`]). The run counts how often it reached each of those and fails
/// if one was never reached.
///
/// `CRMBUS_PROP_CASES` sets the number of cases (default 48: about 1 s in memory, 20 s on
/// the embedded log, 7 s on Redis and 35 s on NATS on a 2-core machine — a minute across
/// the backends; the README gives a long run);
/// `CRMBUS_PROP_SEED` replays a run (its seed is printed first).
#[test]
fn per_key_order_holds_under_random_failures() {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let cases = env_u64("CRMBUS_PROP_CASES").unwrap_or(48) as u32;
    let seed = env_u64("CRMBUS_PROP_SEED").unwrap_or_else(rand_seed);
    eprintln!(
        "per_key_order_holds_under_random_failures: {cases} cases, seed {seed} \
         (CRMBUS_PROP_SEED={seed} CRMBUS_PROP_CASES={cases} replays it)"
    );
    let mut seed_bytes = [0u8; 32];
    for (i, chunk) in seed_bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&mix(seed, i as u64).to_le_bytes());
    }
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let total = Arc::new(Mutex::new(Reach::default()));
    let started = std::time::Instant::now();
    let sum = Arc::clone(&total);
    let result = runner.run(&order_case(), move |c| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let reach = rt.block_on(per_key_order_case(c))?;
        sum.lock().expect("reach").add(&reach);
        Ok(())
    });
    if let Err(e) = result {
        panic!("seed {seed}: {e}");
    }
    let r = *total.lock().expect("reach");
    eprintln!("seed {seed}: {:?} in {:?}", r, started.elapsed());
    // Shrinking re-runs cases, so the counts cover at least `cases` of them.
    for (what, n) in [
        ("a retry", r.retries),
        ("a dead letter after retries to exhaustion", r.exhausted),
        ("a dead letter of a permanent error", r.permanent),
        ("a key held behind its dead letter", r.held_behind),
        ("a redrive of skipped dead letters", r.redriven_skip),
        ("a redrive of a held dead letter", r.redriven_held),
        ("an open breaker", r.breaker_open),
        (
            "a breaker opening checked against its model",
            r.breaker_modelled,
        ),
        (
            "a restart with retries or holds pending",
            r.restarts_with_work,
        ),
        (
            "a restart between a redrive and its delivery",
            r.restarts_after_redrive,
        ),
    ] {
        assert!(
            n > 0,
            "seed {seed}: {cases} cases never reached {what}: raise CRMBUS_PROP_CASES ({r:?})"
        );
    }
}

fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_poisoned_key_does_not_hold_back_a_thousand_healthy_ones() {
    let world = World::new(4).await;
    let mut batch = vec![ev("deal-poison", 0)];
    for k in 0..1000 {
        batch.push(ev(&format!("deal-{k}"), 0));
        batch.push(ev(&format!("deal-{k}"), 1));
    }
    batch.push(ev("deal-poison", 1));
    world.publish(batch).await;
    let calls: Calls = Arc::default();
    let handler = recording_handler(Arc::clone(&calls), |d| {
        (d.event.subject.as_deref() == Some("deal-poison"))
            .then(|| HandlerError::transient("crm down for this deal"))
    });
    let opts = SubscribeOptions {
        retry: quick_retry(10),
        max_in_flight: 32,
        breaker: None,
        ..SubscribeOptions::default()
    };
    let mut engine = world.engine(handler, opts).await;
    engine.run_until_idle().await.expect("run");
    let per = successes_per_key(&calls);
    assert_eq!(per.len(), 1000, "every healthy key delivered");
    assert!(per.values().all(|ns| ns == &[0, 1]));
    let stats = engine.stats();
    assert_eq!(stats.acked, 2000);
    assert_eq!(stats.parked_keys, 1, "only the poisoned key is parked");
    let retries = engine.pending_retries();
    assert_eq!(retries.len(), 1);
    let rec = retries.values().next().expect("retry record");
    assert_eq!((rec.key.as_str(), rec.attempts), ("deal-poison", 1));
    // The poisoned key's second event waits behind its first.
    let poisoned_calls: Vec<u64> = calls
        .lock()
        .expect("calls")
        .iter()
        .filter(|c| c.0 == "deal-poison")
        .map(|c| c.1)
        .collect();
    assert_eq!(poisoned_calls, [0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_continues_the_retry_schedule_and_does_not_redeliver_acked_events() {
    let world = World::new(1).await;
    world
        .publish(vec![
            ev("deal-a", 0),
            ev("deal-b", 0),
            ev("deal-b", 1),
            ev("deal-a", 1),
        ])
        .await;
    let calls: Calls = Arc::default();
    let failing = Arc::new(Mutex::new(true));
    let f = Arc::clone(&failing);
    let handler = recording_handler(Arc::clone(&calls), move |d| {
        (d.event.subject.as_deref() == Some("deal-a") && *f.lock().expect("flag"))
            .then(|| HandlerError::transient("timeout"))
    });
    let opts = SubscribeOptions {
        retry: quick_retry(10),
        breaker: None,
        ..SubscribeOptions::default()
    };
    let mut engine = world.engine(Arc::clone(&handler), opts.clone()).await;
    engine.run_until_idle().await.expect("run");
    // Two more failed attempts.
    for _ in 0..2 {
        let due = engine.next_due_us().expect("a retry is due");
        world.clock.advance(Duration::from_micros(
            (due - world.clock.now_micros()).max(0) as u64 + 1,
        ));
        engine.run_until_idle().await.expect("run");
    }
    assert_eq!(
        engine.pending_retries().values().next().map(|r| r.attempts),
        Some(3)
    );
    drop(engine);

    // "Restart": a new engine over the same log and state.
    *failing.lock().expect("flag") = false;
    let mut engine = world.engine(handler, opts).await;
    let recovered = engine.pending_retries();
    assert_eq!(
        recovered.values().next().map(|r| r.attempts),
        Some(3),
        "attempts restarted from scratch"
    );
    engine.run_until_idle().await.expect("run before due");
    let a_calls = |calls: &Calls| {
        calls
            .lock()
            .expect("calls")
            .iter()
            .filter(|c| c.0 == "deal-a")
            .count()
    };
    assert_eq!(a_calls(&calls), 3, "a retry ran before its due time");
    let due = engine.next_due_us().expect("schedule kept");
    world.clock.advance(Duration::from_micros(
        (due - world.clock.now_micros()).max(0) as u64 + 1,
    ));
    world.run_to_end(&mut engine, 100).await;
    let all = calls.lock().expect("calls").clone();
    let a: Vec<(u64, u32, bool)> = all
        .iter()
        .filter(|c| c.0 == "deal-a")
        .map(|c| (c.1, c.2, c.3))
        .collect();
    assert_eq!(
        a,
        [
            (0, 1, false),
            (0, 2, false),
            (0, 3, false),
            (0, 4, true),
            (1, 1, true)
        ]
    );
    let b: Vec<u64> = all
        .iter()
        .filter(|c| c.0 == "deal-b")
        .map(|c| c.1)
        .collect();
    assert_eq!(
        b,
        [0, 1],
        "acked events of another key were delivered again after the restart"
    );
    assert_eq!(engine.stats().committed, [4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_dead_letters_and_hold_parks_the_key() {
    for mode in [OnExhausted::Skip, OnExhausted::Hold] {
        let world = World::new(1).await;
        world
            .publish(vec![ev("deal-x", 0), ev("deal-x", 1), ev("deal-y", 0)])
            .await;
        let calls: Calls = Arc::default();
        let handler = recording_handler(Arc::clone(&calls), |d| {
            (d.event.subject.as_deref() == Some("deal-x") && n_of(d) == 0)
                .then(|| HandlerError::transient("422 from ERP"))
        });
        let opts = SubscribeOptions {
            retry: quick_retry(3),
            on_exhausted: mode,
            breaker: None,
            ..SubscribeOptions::default()
        };
        let mut engine = world.engine(handler, opts).await;
        world.run_to_end(&mut engine, 100).await;
        let entries = world
            .state
            .scan("sub/deals/crm-sync/dlq", "")
            .await
            .expect("scan");
        assert_eq!(entries.len(), 1, "{mode:?}");
        let dl: crmbus::delivery::DeadLetter =
            serde_json::from_slice(&entries[0].1).expect("entry");
        assert_eq!(
            (dl.attempts, dl.last_error.as_str(), dl.offset, dl.held),
            (3, "422 from ERP", 0, mode == OnExhausted::Hold)
        );
        assert_eq!(dl.event.subject.as_deref(), Some("deal-x"));
        let per = successes_per_key(&calls);
        assert_eq!(
            per.get("deal-y").map(Vec::as_slice),
            Some(&[0u64][..]),
            "other keys flow"
        );
        match mode {
            OnExhausted::Skip => {
                assert_eq!(
                    per.get("deal-x").map(Vec::as_slice),
                    Some(&[1u64][..]),
                    "skip moves the key on"
                );
                assert_eq!(engine.stats().committed, [3]);
            }
            OnExhausted::Hold => {
                assert_eq!(per.get("deal-x"), None, "hold keeps the key parked");
                assert_eq!(engine.stats().parked_keys, 1);
                assert_eq!(engine.stats().committed, [0]);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_skip_retries_and_open_breaker_spends_no_attempts() {
    let world = World::new(1).await;
    world
        .publish((0..6).map(|n| ev(&format!("deal-{n}"), 0)).collect())
        .await;
    let calls: Calls = Arc::default();
    let handler = recording_handler(Arc::clone(&calls), |d| {
        Some(if d.event.subject.as_deref() == Some("deal-0") {
            HandlerError::permanent("bad data")
        } else {
            HandlerError::transient("down")
        })
    });
    let breaker = BreakerPolicy {
        consecutive_failures: 3,
        failure_rate: 1.1,
        min_requests: 1000,
        window: Duration::from_secs(60),
        open_for: Duration::from_secs(30),
    };
    let opts = SubscribeOptions {
        retry: quick_retry(10),
        max_in_flight: 1,
        breaker: Some(breaker),
        ..SubscribeOptions::default()
    };
    let mut engine = world.engine(handler, opts).await;
    engine.run_until_idle().await.expect("run");
    let s = engine.stats();
    assert_eq!(
        s.dead_lettered, 1,
        "the permanent failure went straight to the DLQ"
    );
    assert_eq!(
        s.delivered, 3,
        "the breaker opened after 3 failures in a row"
    );
    // Retries fall due, but the breaker is open: nothing is delivered, no attempt spent.
    world.clock.advance(Duration::from_secs(10));
    engine.run_until_idle().await.expect("run");
    assert_eq!(engine.stats().delivered, 3);
    // After the cool-down one probe goes; it fails, so the breaker opens again.
    world.clock.advance(Duration::from_secs(21));
    engine.run_until_idle().await.expect("run");
    assert_eq!(engine.stats().delivered, 4);
}

mod dlq_and_dedupe {
    use super::*;
    use crmbus::delivery::DlqFilter;

    fn flip_handler(
        calls: Calls,
        failing: Arc<Mutex<bool>>,
        bad_key: &'static str,
    ) -> Arc<dyn crmbus::delivery::Handler> {
        recording_handler(calls, move |d| {
            (d.event.subject.as_deref() == Some(bad_key) && *failing.lock().expect("flag"))
                .then(|| HandlerError::transient("contact locked in CRM"))
        })
    }

    fn opts(mode: OnExhausted) -> SubscribeOptions {
        SubscribeOptions {
            retry: quick_retry(2),
            on_exhausted: mode,
            breaker: None,
            ..SubscribeOptions::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn held_key_is_released_by_redrive_and_audited() {
        let world = World::new(1).await;
        world
            .publish(vec![ev("c-1", 0), ev("c-1", 1), ev("c-2", 0)])
            .await;
        let calls: Calls = Arc::default();
        let failing = Arc::new(Mutex::new(true));
        let mut engine = world
            .engine(
                flip_handler(Arc::clone(&calls), Arc::clone(&failing), "c-1"),
                opts(OnExhausted::Hold),
            )
            .await;
        world.run_to_end(&mut engine, 50).await;
        let dl = engine
            .dead_letters(&DlqFilter::default())
            .await
            .expect("list");
        assert_eq!(dl.len(), 1);
        assert!(dl[0].held);
        *failing.lock().expect("flag") = false;
        let n = engine
            .redrive(Some(&[dl[0].id.clone()]), &DlqFilter::default(), "ops@acme")
            .await
            .expect("redrive");
        assert_eq!(n, 1);
        world.run_to_end(&mut engine, 50).await;
        let c1: Vec<(u64, u32, bool)> = calls
            .lock()
            .expect("calls")
            .iter()
            .filter(|c| c.0 == "c-1")
            .map(|c| (c.1, c.2, c.3))
            .collect();
        assert_eq!(
            c1,
            [(0, 1, false), (0, 2, false), (0, 1, true), (1, 1, true)]
        );
        assert!(engine
            .dead_letters(&DlqFilter::default())
            .await
            .expect("list")
            .is_empty());
        assert_eq!(engine.stats().committed, [3]);
        let audit = engine.audit_log().await.expect("audit");
        assert_eq!(audit.len(), 1);
        assert_eq!(
            (
                audit[0].who.as_str(),
                audit[0].action.as_str(),
                audit[0].entry.as_str()
            ),
            ("ops@acme", "redrive", "0-0")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn discard_moves_a_held_key_on_and_is_audited() {
        let world = World::new(1).await;
        world.publish(vec![ev("c-1", 0), ev("c-1", 1)]).await;
        let calls: Calls = Arc::default();
        let failing = Arc::new(Mutex::new(true));
        let mut engine = world
            .engine(
                flip_handler(Arc::clone(&calls), Arc::clone(&failing), "c-1"),
                opts(OnExhausted::Hold),
            )
            .await;
        world.run_to_end(&mut engine, 50).await;
        *failing.lock().expect("flag") = false;
        assert!(engine.discard("0-0", "ana").await.expect("discard"));
        assert!(
            !engine.discard("0-0", "ana").await.expect("second discard"),
            "discarded twice"
        );
        world.run_to_end(&mut engine, 50).await;
        let c1: Vec<(u64, bool)> = calls
            .lock()
            .expect("calls")
            .iter()
            .filter(|c| c.0 == "c-1")
            .map(|c| (c.1, c.3))
            .collect();
        assert_eq!(
            c1,
            [(0, false), (0, false), (1, true)],
            "the discarded event must not be delivered again"
        );
        assert_eq!(engine.stats().committed, [2]);
        let audit = engine.audit_log().await.expect("audit");
        assert_eq!(
            audit.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(),
            ["discard"]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn skipped_dead_letters_redrive_in_their_original_order_by_filter() {
        let world = World::new(1).await;
        world
            .publish(vec![ev("c-1", 0), ev("c-1", 1), ev("c-1", 2), ev("c-2", 0)])
            .await;
        let calls: Calls = Arc::default();
        let failing = Arc::new(Mutex::new(true));
        let mut engine = world
            .engine(
                flip_handler(Arc::clone(&calls), Arc::clone(&failing), "c-1"),
                opts(OnExhausted::Skip),
            )
            .await;
        world.run_to_end(&mut engine, 100).await;
        let all = engine
            .dead_letters(&DlqFilter::default())
            .await
            .expect("list");
        assert_eq!(all.len(), 3);
        let by_error = DlqFilter {
            error: Some("locked".into()),
            ..DlqFilter::default()
        };
        assert_eq!(engine.dead_letters(&by_error).await.expect("list").len(), 3);
        let none = DlqFilter {
            ty: Some("invoice.*".into()),
            ..DlqFilter::default()
        };
        assert!(engine.dead_letters(&none).await.expect("list").is_empty());
        *failing.lock().expect("flag") = false;
        calls.lock().expect("calls").clear();
        let sel = DlqFilter {
            ty: Some("deal.*".into()),
            ..DlqFilter::default()
        };
        assert_eq!(engine.redrive(None, &sel, "ops").await.expect("redrive"), 3);
        world.run_to_end(&mut engine, 100).await;
        let c1: Vec<u64> = calls
            .lock()
            .expect("calls")
            .iter()
            .filter(|c| c.0 == "c-1" && c.3)
            .map(|c| c.1)
            .collect();
        assert_eq!(
            c1,
            [0, 1, 2],
            "redriven events of a key must keep their order"
        );
        assert!(
            engine
                .dead_letters(&DlqFilter::default())
                .await
                .expect("list")
                .is_empty(),
            "DLQ must drain"
        );
        assert_eq!(engine.audit_log().await.expect("audit").len(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn consumer_dedupe_holds_across_a_restart() {
        let world = World::with_dedupe_window(1, Duration::ZERO).await;
        let first = ev("d-1", 0).id("evt-1");
        // Three appends: the log's own dedupe window is zero, so the twin is stored again.
        world.publish(vec![first.clone()]).await;
        world.publish(vec![ev("d-2", 0)]).await;
        world.publish(vec![first.clone()]).await;
        let calls: Calls = Arc::default();
        let o = SubscribeOptions {
            dedupe_ttl: Some(Duration::from_secs(3600)),
            breaker: None,
            ..SubscribeOptions::default()
        };
        let mut engine = world
            .engine(recording_handler(Arc::clone(&calls), |_| None), o.clone())
            .await;
        engine.run_until_idle().await.expect("run");
        assert_eq!(
            calls.lock().expect("calls").len(),
            2,
            "the redelivered duplicate was handled"
        );
        assert_eq!(engine.stats().deduped, 1);
        drop(engine);
        world.publish(vec![first.clone()]).await;
        let mut engine = world
            .engine(recording_handler(Arc::clone(&calls), |_| None), o)
            .await;
        engine.run_until_idle().await.expect("run");
        assert_eq!(
            calls.lock().expect("calls").len(),
            2,
            "dedupe forgot across the restart"
        );
        assert_eq!(engine.stats().committed, [4]);
    }
}

mod options {
    use super::*;
    use crmbus::delivery::{Filter, Op, Ordering, StartAt};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn filters_pass_over_events_and_still_commit() {
        let world = World::new(1).await;
        let big = Event::new("deal.won", json!({"deal_id": "d-1", "amount": "25000.00"}))
            .subject("d-1")
            .source("urn:t");
        let small = Event::new("deal.won", json!({"deal_id": "d-2", "amount": "90.00"}))
            .subject("d-2")
            .source("urn:t");
        let lead = Event::new("lead.created", json!({"lead_id": "l-1"}))
            .subject("l-1")
            .source("urn:t");
        world.publish(vec![big, small, lead]).await;
        let calls: Calls = Arc::default();
        let filter = Filter::types(["deal.*"]).with("data.amount", Op::Gte(10_000.0));
        let opts = SubscribeOptions {
            filter,
            breaker: None,
            ..SubscribeOptions::default()
        };
        let mut engine = world
            .engine(recording_handler(Arc::clone(&calls), |_| None), opts)
            .await;
        engine.run_until_idle().await.expect("run");
        let keys: Vec<String> = calls
            .lock()
            .expect("calls")
            .iter()
            .map(|c| c.0.clone())
            .collect();
        assert_eq!(keys, ["d-1"]);
        assert_eq!(engine.stats().filtered, 2);
        assert_eq!(
            engine.stats().committed,
            [3],
            "passed-over events must be committed too"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ordering_none_does_not_park_a_key_behind_its_failure() {
        let world = World::new(1).await;
        world
            .publish(vec![ev("k", 0), ev("k", 1), ev("k", 2)])
            .await;
        let calls: Calls = Arc::default();
        let handler = recording_handler(Arc::clone(&calls), |d| {
            (n_of(d) == 0).then(|| HandlerError::transient("first fails"))
        });
        let opts = SubscribeOptions {
            ordering: Ordering::None,
            retry: quick_retry(5),
            breaker: None,
            ..SubscribeOptions::default()
        };
        let mut engine = world.engine(handler, opts).await;
        engine.run_until_idle().await.expect("run");
        let ok: Vec<u64> = calls
            .lock()
            .expect("calls")
            .iter()
            .filter(|c| c.3)
            .map(|c| c.1)
            .collect();
        let mut sorted = ok.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            [1, 2],
            "with ordering none the same key's later events go ahead"
        );
        assert_eq!(
            engine.stats().committed,
            [0],
            "the low-water mark waits for the failed event"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_nack_may_name_its_delay() {
        let world = World::new(1).await;
        world.publish(vec![ev("k", 0)]).await;
        let calls: Calls = Arc::default();
        let handler = recording_handler(Arc::clone(&calls), |d| {
            (d.attempt == 1).then(|| {
                HandlerError::transient("429 from mail API").retry_after(Duration::from_secs(90))
            })
        });
        let opts = SubscribeOptions {
            retry: quick_retry(5),
            breaker: None,
            ..SubscribeOptions::default()
        };
        let mut engine = world.engine(handler, opts).await;
        let t0 = world.clock.now_micros();
        engine.run_until_idle().await.expect("run");
        assert_eq!(
            engine.next_due_us(),
            Some(t0 + 90_000_000),
            "Retry-After was not honoured"
        );
        world.clock.advance(Duration::from_secs(89));
        engine.run_until_idle().await.expect("run");
        assert_eq!(
            calls.lock().expect("calls").len(),
            1,
            "retried before the named delay"
        );
        world.clock.advance(Duration::from_secs(2));
        engine.run_until_idle().await.expect("run");
        assert_eq!(calls.lock().expect("calls").len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn new_groups_start_at_earliest_latest_or_a_time() {
        let world = World::new(1).await;
        world.publish(vec![ev("a", 0), ev("a", 1)]).await;
        let mut counts = Vec::new();
        for (group, start) in [
            ("g-earliest", StartAt::Earliest),
            ("g-latest", StartAt::Latest),
            ("g-future", StartAt::Time(i64::MAX / 2)),
        ] {
            let calls: Calls = Arc::default();
            let opts = SubscribeOptions {
                start,
                breaker: None,
                ..SubscribeOptions::default()
            };
            let mut engine = Engine::open(
                Arc::clone(&world.log),
                Arc::clone(&world.state),
                Arc::new(world.clock.clone()),
                "deals",
                group,
                recording_handler(Arc::clone(&calls), |_| None),
                opts,
            )
            .await
            .expect("open");
            engine.run_until_idle().await.expect("run");
            counts.push(calls.lock().expect("calls").len());
        }
        assert_eq!(counts, [2, 0, 0]);
        // A later event reaches the "latest" group.
        world.publish(vec![ev("a", 2)]).await;
        let calls: Calls = Arc::default();
        let mut engine = Engine::open(
            Arc::clone(&world.log),
            Arc::clone(&world.state),
            Arc::new(world.clock.clone()),
            "deals",
            "g-latest",
            recording_handler(Arc::clone(&calls), |_| None),
            SubscribeOptions::default(),
        )
        .await
        .expect("open");
        engine.run_until_idle().await.expect("run");
        let got: Vec<u64> = calls.lock().expect("calls").iter().map(|c| c.1).collect();
        assert_eq!(got, [2]);
    }
}
