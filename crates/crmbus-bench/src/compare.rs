//! `crmbus bench compare`: the same workload against the embedded log (fsync), Redis
//! Streams and NATS JetStream in one run, through the [`EventLog`] trait every backend
//! implements, so the §7 targets' ratios come from one machine at one moment.
//!
//! The workload, identical on every engine:
//!
//! 1. **Pipelined publish**: `--producers` concurrent producers, each appending batches of
//!    `--batch` events (one `append` call per batch), so up to producers × batch events are
//!    in flight. Batches are how every engine is fastest through its crmbus backend (one
//!    Lua script on Redis; up to 512 publishes awaiting their acks on JetStream; one group
//!    commit on the embedded log).
//! 2. **One-at-a-time publish**: `--single-events` sequential single-event appends, each
//!    timed from call to acknowledgement.
//! 3. **Group consume**: the whole topic read back from offset 0 with `EventLog::read`, one
//!    reader per partition concurrently, committing the group offset after every read —
//!    what crmbus's delivery engine does on every backend (not the engines' native group
//!    consumers, whose semantics differ).

use crate::common::bar;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use crmbus::{Event, EventLog, TopicSpec};
use crmbus_embedded::{Durability, EmbeddedLog, EmbeddedOptions};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::schema::deal_event;

/// Options of `crmbus bench compare`.
#[derive(Args, Debug)]
pub struct CompareBenchArgs {
    /// Events to publish in the pipelined phase (then read back with the rest).
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Sequential single-event appends in the one-at-a-time phase.
    #[arg(long, default_value_t = 5_000)]
    single_events: u64,
    /// Concurrent producers in the pipelined phase.
    #[arg(long, default_value_t = 4)]
    producers: u64,
    /// Events per append call in the pipelined phase.
    #[arg(long, default_value_t = 64)]
    batch: u64,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Events per read in the consume phase (a group offset is committed after each).
    #[arg(long, default_value_t = 1_000)]
    read_batch: usize,
    /// Redis to compare against.
    #[arg(
        long,
        env = "CRMBUS_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// NATS (with JetStream) to compare against.
    #[arg(long, env = "CRMBUS_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Kafka-protocol brokers to compare against.
    #[arg(long, env = "CRMBUS_KAFKA_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    kafka_bootstrap: String,
    /// The PostgreSQL database the Kafka backend keeps its state in.
    #[arg(
        long,
        env = "CRMBUS_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    kafka_state_url: String,
    /// Directory for the embedded log (on the disk to measure). Default: a new temporary
    /// directory under the current one, removed afterwards.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// One engine's figures, or why it has none.
#[derive(Serialize, Debug, Default)]
struct EngineReport {
    available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    durability: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    publish_events_per_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    single_p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    single_p99_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    consume_events_per_sec: Option<f64>,
    /// A failure to remove the run's keys or streams afterwards.
    #[serde(skip_serializing_if = "Option::is_none")]
    cleanup_error: Option<String>,
}

/// Embedded ÷ another engine. Throughputs: above 1 means embedded is faster. Latencies:
/// embedded's p50/p99 over the engine's, so below 1 means embedded is faster.
#[derive(Serialize, Debug, Clone, Copy)]
struct Ratio {
    publish: f64,
    single_p50: f64,
    single_p99: f64,
    consume: f64,
}

#[derive(Serialize, Debug)]
struct Ratios {
    redis: Option<Ratio>,
    nats: Option<Ratio>,
    kafka: Option<Ratio>,
}

#[derive(Serialize, Debug)]
struct CompareReport {
    events: u64,
    single_events: u64,
    partitions: u32,
    event_bytes: usize,
    pipelined: String,
    single: String,
    consume: String,
    embedded: EngineReport,
    redis: EngineReport,
    nats: EngineReport,
    kafka: EngineReport,
    ratios: Ratios,
}

struct Figures {
    publish_events_per_sec: f64,
    single_p50_us: f64,
    single_p99_us: f64,
    consume_events_per_sec: f64,
}

const TOPIC: &str = "bench";
const GROUP: &str = "bench-group";

/// Runs the benchmark.
pub fn run(args: CompareBenchArgs) -> anyhow::Result<()> {
    if args.events == 0
        || args.single_events == 0
        || args.producers == 0
        || args.batch == 0
        || args.partitions == 0
        || args.read_batch == 0
    {
        bail!("--events, --single-events, --producers, --batch, --partitions and --read-batch must be at least 1");
    }
    let args = &args;
    crate::common::run_in_work_dir(
        args.dir.as_deref(),
        "compare",
        args.json,
        print_table,
        |dir| async move { run_async(args, &dir).await },
    )
}

async fn run_async(
    args: &CompareBenchArgs,
    dir: &std::path::Path,
) -> anyhow::Result<CompareReport> {
    let quiet = args.json;
    // A unique namespace per run, so runs never meet each other's keys or streams.
    let prefix = format!("crmbus_bench_{}", uuid::Uuid::now_v7().simple());

    let embedded = run_embedded(args, dir, quiet).await?;
    let redis = run_redis(args, &prefix, quiet).await?;
    let nats = run_nats(args, &prefix, quiet).await?;
    let kafka = run_kafka(args, &prefix, quiet).await?;

    let ratio = |other: &EngineReport| -> Option<Ratio> {
        let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        Some(Ratio {
            publish: div(
                embedded.publish_events_per_sec,
                other.publish_events_per_sec,
            )?,
            single_p50: div(embedded.single_p50_us, other.single_p50_us)?,
            single_p99: div(embedded.single_p99_us, other.single_p99_us)?,
            consume: div(
                embedded.consume_events_per_sec,
                other.consume_events_per_sec,
            )?,
        })
    };
    let ratios = Ratios {
        redis: ratio(&redis),
        nats: ratio(&nats),
        kafka: ratio(&kafka),
    };
    Ok(CompareReport {
        events: args.events,
        single_events: args.single_events,
        partitions: args.partitions,
        event_bytes: deal_event(0).to_json_vec().len(),
        pipelined: format!(
            "{} producers, each appending batches of {} events ({} events in flight at most)",
            args.producers,
            args.batch,
            args.producers * args.batch
        ),
        single: format!(
            "{} sequential single-event appends, latency from call to acknowledgement",
            args.single_events
        ),
        consume: format!(
            "EventLog::read from offset 0, one reader per partition, reads of {} events, \
             group offset committed after each read (the delivery engine's path, not native \
             group consumers)",
            args.read_batch
        ),
        embedded,
        redis,
        nats,
        kafka,
        ratios,
    })
}

async fn run_embedded(
    args: &CompareBenchArgs,
    dir: &std::path::Path,
    quiet: bool,
) -> anyhow::Result<EngineReport> {
    let durability = "fsync before ack (group commit)".to_string();
    let opts = EmbeddedOptions {
        durability: Durability::Fsync,
        retention_interval: None,
        ..EmbeddedOptions::default()
    };
    let log: Arc<dyn EventLog> = match EmbeddedLog::open(dir.join("log"), opts) {
        Ok(l) => Arc::new(l),
        Err(e) => return Ok(unavailable(durability, format!("opening the log: {e}"))),
    };
    let outcome = interruptible(measure(Arc::clone(&log), args, "embedded", quiet)).await;
    let _ = log.close().await;
    finish(durability, outcome, Ok(()))
}

#[cfg(not(feature = "redis"))]
async fn run_redis(_: &CompareBenchArgs, _: &str, _: bool) -> anyhow::Result<EngineReport> {
    Ok(not_built("redis"))
}

#[cfg(not(feature = "nats"))]
async fn run_nats(_: &CompareBenchArgs, _: &str, _: bool) -> anyhow::Result<EngineReport> {
    Ok(not_built("nats"))
}

#[cfg(not(feature = "kafka"))]
async fn run_kafka(_: &CompareBenchArgs, _: &str, _: bool) -> anyhow::Result<EngineReport> {
    Ok(not_built("kafka"))
}

/// The report of a peer this build has no backend for.
#[cfg(not(all(feature = "redis", feature = "nats", feature = "kafka")))]
fn not_built(name: &str) -> EngineReport {
    unavailable(
        "unknown".to_string(),
        format!("this build has no {name} backend (build with the `{name}` cargo feature)"),
    )
}

#[cfg(feature = "redis")]
async fn run_redis(
    args: &CompareBenchArgs,
    prefix: &str,
    quiet: bool,
) -> anyhow::Result<EngineReport> {
    let url = &args.redis_url;
    let durability = crmbus_redis::durability_setting(url).await;
    let opened = match crmbus_redis::open(url, prefix).await {
        Ok(o) => o,
        Err(e) => return Ok(unavailable(durability, e.to_string())),
    };
    let outcome = interruptible(measure(Arc::clone(&opened.log), args, "redis", quiet)).await;
    let _ = opened.log.close().await;
    drop(opened);
    let cleanup = crmbus_redis::purge(url, prefix)
        .await
        .map(|_| ())
        .map_err(|e| format!("purging redis keys under '{prefix}': {e}"));
    finish(durability, outcome, cleanup)
}

#[cfg(feature = "nats")]
async fn run_nats(
    args: &CompareBenchArgs,
    prefix: &str,
    quiet: bool,
) -> anyhow::Result<EngineReport> {
    let url = &args.nats_url;
    let durability = crmbus_nats::durability_setting(url).await;
    let opened = match crmbus_nats::open(url, prefix).await {
        Ok(o) => o,
        Err(e) => {
            // Opening may have created the namespace's buckets before failing.
            let _ = crmbus_nats::purge(url, prefix).await;
            return Ok(unavailable(durability, e.to_string()));
        }
    };
    let outcome = interruptible(measure(Arc::clone(&opened.log), args, "nats", quiet)).await;
    let _ = opened.log.close().await;
    drop(opened);
    let cleanup = crmbus_nats::purge(url, prefix)
        .await
        .map(|_| ())
        .map_err(|e| format!("destroying NATS namespace '{prefix}': {e}"));
    finish(durability, outcome, cleanup)
}

#[cfg(feature = "kafka")]
async fn run_kafka(
    args: &CompareBenchArgs,
    prefix: &str,
    quiet: bool,
) -> anyhow::Result<EngineReport> {
    let (bootstrap, state_url) = (&args.kafka_bootstrap, &args.kafka_state_url);
    let durability = crmbus_kafka::durability_setting(bootstrap).await;
    let opts = crmbus_kafka::KafkaOptions::default();
    let opened = match crmbus_kafka::open(bootstrap, state_url, prefix, opts).await {
        Ok(o) => o,
        Err(e) => {
            let _ = crmbus_kafka::purge(bootstrap, state_url, prefix).await;
            return Ok(unavailable(durability, e.to_string()));
        }
    };
    let outcome = interruptible(measure(Arc::clone(&opened.log), args, "kafka", quiet)).await;
    let _ = opened.log.close().await;
    drop(opened);
    let cleanup = crmbus_kafka::purge(bootstrap, state_url, prefix)
        .await
        .map(|_| ())
        .map_err(|e| format!("deleting Kafka namespace '{prefix}': {e}"));
    finish(durability, outcome, cleanup)
}

enum Outcome {
    Done(anyhow::Result<Figures>),
    Interrupted,
}

/// Runs `fut` unless Ctrl-C comes first, so the caller still cleans up on an interrupt.
async fn interruptible(fut: impl std::future::Future<Output = anyhow::Result<Figures>>) -> Outcome {
    tokio::select! {
        r = fut => Outcome::Done(r),
        _ = tokio::signal::ctrl_c() => Outcome::Interrupted,
    }
}

fn unavailable(durability: String, reason: String) -> EngineReport {
    EngineReport {
        available: false,
        error: Some(reason),
        durability,
        ..EngineReport::default()
    }
}

/// The engine's report from its measurement and its cleanup. An interrupt is an error of
/// the whole run (after the cleanup has happened); a failed measurement is reported as
/// the engine's error, and the other engines still run.
fn finish(
    durability: String,
    outcome: Outcome,
    cleanup: Result<(), String>,
) -> anyhow::Result<EngineReport> {
    if let Err(e) = &cleanup {
        eprintln!("warning: {e}");
    }
    let figures = match outcome {
        Outcome::Interrupted => bail!("interrupted"),
        Outcome::Done(r) => r,
    };
    let mut report = match figures {
        Ok(f) => EngineReport {
            available: true,
            error: None,
            durability,
            publish_events_per_sec: Some(f.publish_events_per_sec),
            single_p50_us: Some(f.single_p50_us),
            single_p99_us: Some(f.single_p99_us),
            consume_events_per_sec: Some(f.consume_events_per_sec),
            cleanup_error: None,
        },
        Err(e) => unavailable(durability, format!("failed during the run: {e:#}")),
    };
    report.cleanup_error = cleanup.err();
    Ok(report)
}

/// The workload, the same on every engine.
async fn measure(
    log: Arc<dyn EventLog>,
    args: &CompareBenchArgs,
    engine: &str,
    quiet: bool,
) -> anyhow::Result<Figures> {
    log.create_topic(TopicSpec::new(TOPIC, args.partitions))
        .await
        .context("creating the benchmark topic")?;
    let topics = Arc::new(vec![TOPIC.to_string()]);

    // 1. Pipelined publish.
    let next = Arc::new(AtomicU64::new(0));
    let pb = bar(args.events, &format!("{engine} publish"), quiet);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.producers {
        let (log, topics, next, pb) = (
            Arc::clone(&log),
            Arc::clone(&topics),
            Arc::clone(&next),
            pb.clone(),
        );
        let buffer: Vec<Event> = (0..args.batch).map(deal_event).collect();
        tasks.push(crate::common::spawn_producer(
            log,
            topics,
            next,
            args.events,
            buffer,
            move |n| pb.inc(n),
        ));
    }
    for t in tasks {
        t.await
            .map_err(|e| anyhow!("a producer task failed: {e}"))?
            .context("pipelined append")?;
    }
    let publish_secs = started.elapsed().as_secs_f64();
    pb.finish_and_clear();

    // 2. One-at-a-time publish.
    let pb = bar(args.single_events, &format!("{engine} single"), quiet);
    let mut single = Histogram::<u64>::new(3)?;
    for n in 0..args.single_events {
        let e = deal_event(args.events + n);
        let t = Instant::now();
        log.append(&topics, std::slice::from_ref(&e))
            .await
            .context("single append")?;
        single.record(t.elapsed().as_micros() as u64)?;
        pb.inc(1);
    }
    pb.finish_and_clear();

    // 3. Group consume: every partition from offset 0, committing as it goes.
    let total = args.events + args.single_events;
    let pb = bar(total, &format!("{engine} consume"), quiet);
    let started = Instant::now();
    let mut readers = Vec::new();
    for p in 0..args.partitions {
        let (log, pb, max) = (Arc::clone(&log), pb.clone(), args.read_batch);
        readers.push(tokio::spawn(async move {
            let mut from = log.committed_offset(GROUP, TOPIC, p).await?.unwrap_or(0);
            let mut read = 0u64;
            loop {
                let batch = log.read(TOPIC, p, from, max).await?;
                let Some(last) = batch.last() else { break };
                from = last.offset + 1;
                log.commit_offset(GROUP, TOPIC, p, from).await?;
                read += batch.len() as u64;
                pb.inc(batch.len() as u64);
            }
            Ok::<_, crmbus::LogError>(read)
        }));
    }
    let mut read = 0u64;
    for r in readers {
        read += r
            .await
            .map_err(|e| anyhow!("a reader task failed: {e}"))?
            .context("group consume")?;
    }
    let consume_secs = started.elapsed().as_secs_f64();
    pb.finish_and_clear();
    if read != total {
        bail!("read back {read} events, expected {total}");
    }

    Ok(Figures {
        publish_events_per_sec: args.events as f64 / publish_secs,
        single_p50_us: single.value_at_quantile(0.5) as f64,
        single_p99_us: single.value_at_quantile(0.99) as f64,
        consume_events_per_sec: total as f64 / consume_secs,
    })
}

fn print_table(r: &CompareReport) {
    println!(
        "crmbus bench compare — {} events of {} B (+{} single), topic of {} partitions",
        r.events, r.event_bytes, r.single_events, r.partitions
    );
    println!("  pipelined publish: {}", r.pipelined);
    println!("  one-at-a-time:     {}", r.single);
    println!("  consume:           {}", r.consume);
    println!();
    println!(
        "  {:<10} {:>14} {:>12} {:>12} {:>14}",
        "engine", "publish ev/s", "single p50", "single p99", "consume ev/s"
    );
    for (name, e) in [
        ("embedded", &r.embedded),
        ("redis", &r.redis),
        ("nats", &r.nats),
        ("kafka", &r.kafka),
    ] {
        match (
            e.publish_events_per_sec,
            e.single_p50_us,
            e.single_p99_us,
            e.consume_events_per_sec,
        ) {
            (Some(p), Some(p50), Some(p99), Some(c)) => println!(
                "  {name:<10} {p:>14.0} {:>12} {:>12} {c:>14.0}",
                format!("{p50:.0} µs"),
                format!("{p99:.0} µs")
            ),
            _ => println!(
                "  {name:<10} unavailable: {}",
                e.error.as_deref().unwrap_or("no figures")
            ),
        }
    }
    println!();
    println!("  durability as found:");
    for (name, e) in [
        ("embedded", &r.embedded),
        ("redis", &r.redis),
        ("nats", &r.nats),
        ("kafka", &r.kafka),
    ] {
        println!("    {name:<9} {}", e.durability);
        if let Some(c) = &e.cleanup_error {
            println!("    {:<9} cleanup failed: {c}", "");
        }
    }
    println!();
    println!(
        "  embedded ÷ engine (throughput: >1 = embedded faster; latency: <1 = embedded faster)"
    );
    println!(
        "  {:<10} {:>10} {:>12} {:>12} {:>10}",
        "", "publish", "single p50", "single p99", "consume"
    );
    for (name, ratio) in [
        ("redis", r.ratios.redis),
        ("nats", r.ratios.nats),
        ("kafka", r.ratios.kafka),
    ] {
        match ratio {
            Some(x) => println!(
                "  {name:<10} {:>10} {:>12} {:>12} {:>10}",
                format!("{:.2}×", x.publish),
                format!("{:.2}", x.single_p50),
                format!("{:.2}", x.single_p99),
                format!("{:.2}×", x.consume)
            ),
            None => println!("  {name:<10} (no figures)"),
        }
    }
}
