//! `crmbus bench schema`: what schema validation at publish costs — durable publish
//! throughput of typical `deal.stage_changed` events through `EventBus::publish_batch` on
//! the embedded log (fsync), with the catalog's schema enforced and without a validator,
//! and validation alone on one core with no I/O.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use crmbus::{BusError, Event, EventBus, EventLog, TopicSpec};
use crmbus_embedded::{Durability, EmbeddedLog, EmbeddedOptions};
use crmbus_schema::SchemaRegistry;
use serde::Serialize;
use serde_json::json;

use crate::common::bar;

/// Options of `crmbus bench schema`.
#[derive(Args, Debug)]
pub struct SchemaBenchArgs {
    /// Events to publish in each mode (validation on, validation off).
    #[arg(long, default_value_t = 500_000)]
    events: u64,
    /// Events per `publish_batch` call.
    #[arg(long, default_value_t = 100)]
    batch: u64,
    /// `publish_batch` calls in flight.
    #[arg(long, default_value_t = 8)]
    in_flight: u64,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// `validate_event` calls in the validation-only measurement.
    #[arg(long, default_value_t = 1_000_000)]
    validations: u64,
    /// Directory for the embedded log (on the disk to measure). Default: a new temporary
    /// directory under the current one, removed afterwards.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize, Debug)]
struct Mode {
    events_per_sec: f64,
}

#[derive(Serialize, Debug)]
struct SchemaBenchReport {
    events: u64,
    batch: u64,
    in_flight: u64,
    partitions: u32,
    event_bytes: usize,
    durability: &'static str,
    order: &'static str,
    validation_on: Mode,
    validation_off: Mode,
    /// validation_on / validation_off.
    ratio: f64,
    /// `validate_event` alone, `data` a JSON value (events built in code).
    validate_only_per_sec: f64,
    validate_only_us: f64,
    /// `validate_event` alone, `data` JSON text (events as the HTTP API reads them).
    validate_text_per_sec: f64,
    validate_text_us: f64,
}

const TOPIC: &str = "deals";

/// A typical `deal.stage_changed` event, valid against the catalog's schema (its latest version);
/// `n` varies the deal, the user and so the partition.
pub(super) fn deal_event(n: u64) -> Event {
    let deal = format!("deal-{}", n % 10_000);
    Event::new(
        "deal.stage_changed",
        json!({
            "deal_id": deal,
            "old_stage": "qualification",
            "new_stage": "proposal",
            "pipeline_id": "pipeline-enterprise",
            "changed_by": format!("user-{}", n % 50),
            "changed_at": "2026-11-06T10:15:00Z",
        }),
    )
    .subject(deal)
    .source("urn:crmbus:bench")
}

/// Runs the benchmark.
pub fn run(args: SchemaBenchArgs) -> anyhow::Result<()> {
    if args.events == 0
        || args.batch == 0
        || args.in_flight == 0
        || args.partitions == 0
        || args.validations == 0
    {
        bail!("--events, --batch, --in-flight, --partitions and --validations must be at least 1");
    }
    let args = &args;
    crate::common::run_in_work_dir(
        args.dir.as_deref(),
        "schema",
        args.json,
        print_table,
        |dir| async move { run_async(args, &dir).await },
    )
}

async fn run_async(
    args: &SchemaBenchArgs,
    dir: &std::path::Path,
) -> anyhow::Result<SchemaBenchReport> {
    let quiet = args.json;
    let opts = EmbeddedOptions {
        durability: Durability::Fsync,
        retention_interval: None,
        ..EmbeddedOptions::default()
    };
    let log = Arc::new(EmbeddedLog::open(dir.join("log"), opts)?);
    let result = measure_all(args, Arc::clone(&log), quiet).await;
    log.close().await?;
    result
}

async fn measure_all(
    args: &SchemaBenchArgs,
    log: Arc<EmbeddedLog>,
    quiet: bool,
) -> anyhow::Result<SchemaBenchReport> {
    let registry = Arc::new(
        SchemaRegistry::open(log.state_store())
            .await
            .context("opening the schema registry")?,
    );
    registry
        .load_builtin_catalog()
        .await
        .context("loading the built-in catalog")?;
    log.create_topic(TopicSpec::new(TOPIC, args.partitions))
        .await?;
    let dyn_log: Arc<dyn EventLog> = log.clone();
    let off = EventBus::builder()
        .log(Arc::clone(&dyn_log))
        .state(log.state_store())
        .build();
    let on = EventBus::builder()
        .log(Arc::clone(&dyn_log))
        .state(log.state_store())
        .validator(registry.clone())
        .build();

    check_validation_is_on(&on, &dyn_log).await?;

    // Validation alone: one core, no I/O; with `data` a value (events built in code), then
    // as the HTTP API reads it (`data` kept as its JSON text).
    let mut samples: Vec<Event> = (0..1024).map(deal_event).collect();
    let validate_only_per_sec = validations_per_sec(&registry, &mut samples, args.validations)?;
    let mut samples = samples
        .iter()
        .map(|e| {
            Event::from_json_slice(&e.to_json_vec())
                .map_err(|v| anyhow!("a sample event does not read back: {v}"))
        })
        .collect::<anyhow::Result<Vec<Event>>>()?;
    let validate_text_per_sec = validations_per_sec(&registry, &mut samples, args.validations)?;

    // Publish in ABBA order (off, on, on, off), half the events each time, so a drift of
    // the disk during the run weighs on both modes alike.
    let half = args.events / 2;
    let halves = [half, args.events - half];
    let mut secs_off = 0.0;
    let mut secs_on = 0.0;
    let mut next_n = 0u64;
    for (i, (validated, events)) in [
        (false, halves[0]),
        (true, halves[0]),
        (true, halves[1]),
        (false, halves[1]),
    ]
    .into_iter()
    .enumerate()
    {
        if events == 0 {
            continue;
        }
        let (bus, what) = if validated {
            (&on, "validation on")
        } else {
            (&off, "validation off")
        };
        let pb = bar(events, &format!("{what} {}", i / 2 + 1), quiet);
        let secs = publish(bus, args, events, next_n, &pb).await?;
        pb.finish_and_clear();
        next_n += events;
        if validated {
            secs_on += secs;
        } else {
            secs_off += secs;
        }
    }
    let on_rate = args.events as f64 / secs_on;
    let off_rate = args.events as f64 / secs_off;
    let stored = log.describe_topic(TOPIC).await?.event_count();
    if stored != 2 * args.events + 1 {
        bail!(
            "the topic holds {stored} events, expected {}",
            2 * args.events + 1
        );
    }
    Ok(SchemaBenchReport {
        events: args.events,
        batch: args.batch,
        in_flight: args.in_flight,
        partitions: args.partitions,
        event_bytes: deal_event(0).to_json_vec().len(),
        durability: "fsync before ack (group commit)",
        order: "off, on, on, off: half of each mode's events per step",
        validation_on: Mode {
            events_per_sec: on_rate,
        },
        validation_off: Mode {
            events_per_sec: off_rate,
        },
        ratio: on_rate / off_rate,
        validate_only_per_sec,
        validate_only_us: 1e6 / validate_only_per_sec,
        validate_text_per_sec,
        validate_text_us: 1e6 / validate_text_per_sec,
    })
}

/// `validate_event` calls per second over `samples`, `count` calls in all, on this thread.
/// Each event gets its `dataschema` cleared before its call, as a publisher's events arrive
/// without one; each call must stamp it again (none is skipped).
fn validations_per_sec(
    registry: &SchemaRegistry,
    samples: &mut [Event],
    count: u64,
) -> anyhow::Result<f64> {
    if samples.is_empty() {
        bail!("no sample events to validate");
    }
    let started = Instant::now();
    for i in 0..count {
        let e = &mut samples[(i % samples.len() as u64) as usize];
        e.dataschema = None;
        registry
            .validate_event(std::hint::black_box(e), false)
            .map_err(|v| anyhow!("a sample event failed validation: {v}"))?;
    }
    let per_sec = count as f64 / started.elapsed().as_secs_f64();
    let called = usize::try_from(count).map_or(samples.len(), |c| c.min(samples.len()));
    if samples[..called].iter().any(|e| e.dataschema.is_none()) {
        bail!("a sample event was not validated");
    }
    Ok(per_sec)
}

/// Makes sure the validating bus really validates: a valid event is stored with the
/// schema's URI as its `dataschema`, an invalid one is refused and not stored.
async fn check_validation_is_on(on: &EventBus, log: &Arc<dyn EventLog>) -> anyhow::Result<()> {
    let receipts = on.publish(deal_event(0), &[TOPIC]).await?;
    let r = receipts
        .first()
        .ok_or_else(|| anyhow!("a publish returned no receipt"))?;
    let stored = log.read(TOPIC, r.partition, r.offset, 1).await?;
    let schema = stored.first().and_then(|s| s.event.dataschema.clone());
    if schema.is_none() {
        bail!("a validated event was stored without a dataschema: is the catalog loaded?");
    }
    let invalid = Event::new(
        "deal.stage_changed",
        json!({"deal_id": "deal-1", "old_stage": "proposal"}),
    );
    match on.publish(invalid, &[TOPIC]).await {
        Err(BusError::Validation(_)) => Ok(()),
        Err(e) => Err(e.into()),
        Ok(_) => bail!("an event missing new_stage was accepted with validation on"),
    }
}

/// Publishes `events` events through `bus` in batches, `in_flight` calls at a time;
/// returns the seconds it took.
async fn publish(
    bus: &EventBus,
    args: &SchemaBenchArgs,
    events: u64,
    first_n: u64,
    pb: &indicatif::ProgressBar,
) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.in_flight {
        let (bus, next, pb, batch) = (bus.clone(), Arc::clone(&next), pb.clone(), args.batch);
        tasks.push(tokio::spawn(async move {
            loop {
                let start = next.fetch_add(batch, Ordering::Relaxed);
                if start >= events {
                    return Ok::<_, BusError>(());
                }
                let end = (start + batch).min(events);
                // Fresh events for every call: publish_batch takes them by value, and
                // validation sets each one's dataschema.
                let batch: Vec<Event> = (first_n + start..first_n + end).map(deal_event).collect();
                bus.publish_batch(batch, &[TOPIC]).await?;
                pb.inc(end - start);
            }
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| anyhow!("a publisher task failed: {e}"))?
            .context("publish_batch")?;
    }
    Ok(started.elapsed().as_secs_f64())
}

fn print_table(r: &SchemaBenchReport) {
    println!(
        "crmbus bench schema — {} deal.stage_changed events of {} B per mode, batches of {}, {} in flight, {} partitions",
        r.events, r.event_bytes, r.batch, r.in_flight, r.partitions
    );
    println!("  embedded log, {}; order {}", r.durability, r.order);
    println!(
        "  publish, validation off        {:>12.0} events/s",
        r.validation_off.events_per_sec
    );
    println!(
        "  publish, validation on         {:>12.0} events/s",
        r.validation_on.events_per_sec
    );
    println!("  on / off                       {:>12.2}", r.ratio);
    println!(
        "  validate_event alone (1 core)  {:>12.0} events/s  ({:.2} µs each; data a value)",
        r.validate_only_per_sec, r.validate_only_us
    );
    println!(
        "  validate_event alone (1 core)  {:>12.0} events/s  ({:.2} µs each; data as text, as over HTTP)",
        r.validate_text_per_sec, r.validate_text_us
    );
}
