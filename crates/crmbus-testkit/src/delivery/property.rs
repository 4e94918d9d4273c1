//! The property: per-key order holds and nothing is lost under random failures, restarts
//! and a redrive.

use super::*;

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
async fn per_key_order_case(make: MakeBackend, c: OrderCase) -> Result<Reach, TestCaseError> {
    let mut reach = Reach {
        cases: 1,
        events: c.keys as u64 * c.per_key,
        ..Reach::default()
    };
    let world = World::new(make, c.partitions).await;
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
/// `per_key_order_case`). The run counts how often it reached each of those and fails
/// if one was never reached.
///
/// `CRMBUS_PROP_CASES` sets the number of cases (default 48: about 1 s in memory, 20 s on
/// the embedded log, 7 s on Redis and 35 s on NATS on a 2-core machine — a minute across
/// the backends; the README gives a long run);
/// `CRMBUS_PROP_SEED` replays a run (its seed is printed first).
pub fn per_key_order_holds_under_random_failures(make: MakeBackend) {
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
        let reach = rt.block_on(per_key_order_case(make, c))?;
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
