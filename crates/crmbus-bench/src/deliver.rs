//! `crmbus bench deliver`: delivery throughput with a no-op handler and key ordering, and
//! publish→handler latency at a fixed publish rate, on the embedded log (fsync) with its
//! durable state store.

use crate::common::bar;
use crate::rss::rss_bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use crmbus::delivery::{handler_fn, Delivery, StartAt, SubscribeOptions};
use crmbus::{Clock, Event, EventBus, EventLog, SystemClock, TopicSpec};
use crmbus_embedded::{EmbeddedLog, EmbeddedOptions};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Notify;

/// Options of `crmbus bench deliver`.
#[derive(Args, Debug)]
pub struct DeliverBenchArgs {
    /// Events delivered in the throughput phase.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Distinct ordering keys (subjects).
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Partitions of the benchmark topics.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Deliveries in flight at once.
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// Publish rate of the latency phase, events per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Duration of the latency phase, seconds.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Turn consumer dedupe on, remembering each processed event for this many
    /// milliseconds (off when not given).
    #[arg(long)]
    dedupe_window_ms: Option<u64>,
    /// Directory to run in. Default: a temporary directory under the current one.
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct DeliverReport {
    events: u64,
    keys: u64,
    partitions: u32,
    max_in_flight: usize,
    deliver_events_per_sec: f64,
    rate: u64,
    latency_events: u64,
    e2e_p50_us: u64,
    e2e_p99_us: u64,
    e2e_max_us: u64,
    dedupe_window_ms: Option<u64>,
    /// Resident memory before the throughput phase's subscription started.
    rss_start_bytes: Option<u64>,
    /// Highest resident memory seen (sampled every 100 ms) during the throughput phase.
    rss_peak_bytes: Option<u64>,
    /// Resident memory after every tenth of the throughput phase's deliveries.
    rss_by_tenth_bytes: Vec<u64>,
    /// Resident memory once the throughput phase's deliveries were all made.
    rss_final_bytes: Option<u64>,
    /// The engine's in-memory entries at the end of the throughput phase.
    dedupe_entries: u64,
    dedupe_entries_peak: u64,
    done_entries: u64,
    done_markers: u64,
}

/// Runs the benchmark.
pub fn run(args: DeliverBenchArgs) -> anyhow::Result<()> {
    if args.events == 0 || args.keys == 0 || args.rate == 0 || args.seconds == 0 {
        bail!("--events, --keys, --rate and --seconds must be at least 1");
    }
    let dir = crate::common::work_dir(args.dir.as_deref(), "deliver")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(&args, dir.path()))
}

fn event(key: u64, n: u64, sent_us: i64) -> Event {
    Event::new("deal.stage_changed", json!({"deal_id": format!("deal-{key}"), "n": n, "sent_us": sent_us, "new_stage": "negotiation"}))
        .subject(format!("deal-{key}"))
        .source("urn:crmbus:bench")
}

async fn run_async(args: &DeliverBenchArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    let quiet = args.json;
    let opts = EmbeddedOptions {
        retention_interval: None,
        ..EmbeddedOptions::default()
    };
    let log = Arc::new(EmbeddedLog::open(dir.join("log"), opts)?);
    let bus = EventBus::builder()
        .log(Arc::clone(&log) as Arc<dyn EventLog>)
        .state(log.state_store())
        .build();

    // 1. Throughput: N events already stored, a no-op handler, key ordering.
    log.create_topic(TopicSpec::new("throughput", args.partitions))
        .await?;
    let pb = bar(args.events, "publish", quiet);
    let mut n = 0;
    while n < args.events {
        let end = (n + 1000).min(args.events);
        let batch: Vec<Event> = (n..end).map(|i| event(i % args.keys, i, 0)).collect();
        bus.publish_batch(batch, &["throughput"]).await?;
        pb.set_position(end);
        n = end;
    }
    pb.finish_and_clear();
    let count = Arc::new(AtomicU64::new(0));
    let all_done = Arc::new(Notify::new());
    let (c, d, target) = (Arc::clone(&count), Arc::clone(&all_done), args.events);
    let handler = handler_fn(move |_d: Delivery| {
        let (c, d) = (Arc::clone(&c), Arc::clone(&d));
        async move {
            if c.fetch_add(1, Ordering::Relaxed) + 1 == target {
                d.notify_one();
            }
            Ok(())
        }
    });
    let sub_opts = SubscribeOptions {
        max_in_flight: args.max_in_flight,
        breaker: None,
        dedupe_ttl: args.dedupe_window_ms.map(Duration::from_millis),
        ..SubscribeOptions::default()
    };
    let rss_start_bytes = rss_bytes();
    let mut rss_peak_bytes = rss_start_bytes;
    let mut rss_by_tenth_bytes = Vec::new();
    let mut dedupe_entries_peak = 0u64;
    let pb = bar(args.events, "deliver", quiet);
    let started = Instant::now();
    let sub = bus
        .subscribe("throughput", "bench", handler, sub_opts.clone())
        .await?;
    loop {
        tokio::select! {
            _ = all_done.notified() => break,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                let done = count.load(Ordering::Relaxed);
                pb.set_position(done);
                let rss = rss_bytes();
                rss_peak_bytes = rss_peak_bytes.max(rss);
                while (rss_by_tenth_bytes.len() as u64 + 1) * args.events / 10 <= done
                    && rss_by_tenth_bytes.len() < 10
                {
                    rss_by_tenth_bytes.push(rss.unwrap_or(0));
                }
                dedupe_entries_peak = dedupe_entries_peak.max(sub.stats().await?.dedupe_entries);
                if done >= args.events { break; }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    pb.finish_and_clear();
    // Once every delivery was made: let the dedupe window pass (entries expire) and the
    // engine persist, then measure.
    if let Some(ms) = args.dedupe_window_ms {
        tokio::time::sleep(Duration::from_millis(ms.saturating_add(300))).await;
    }
    let end_stats = sub.stats().await?;
    let rss_final_bytes = rss_bytes();
    rss_peak_bytes = rss_peak_bytes.max(rss_final_bytes);
    while rss_by_tenth_bytes.len() < 10 {
        rss_by_tenth_bytes.push(rss_final_bytes.unwrap_or(0));
    }
    dedupe_entries_peak = dedupe_entries_peak.max(end_stats.dedupe_entries);
    sub.unsubscribe().await?;
    let deliver_events_per_sec = args.events as f64 / secs;

    // 2. Latency at a fixed publish rate: publish → handler, measured by the handler.
    log.create_topic(TopicSpec::new("latency", args.partitions))
        .await?;
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let received = Arc::new(AtomicU64::new(0));
    let (h, r) = (Arc::clone(&hist), Arc::clone(&received));
    let handler = handler_fn(move |d: Delivery| {
        let (h, r) = (Arc::clone(&h), Arc::clone(&r));
        async move {
            let sent = d
                .event
                .data_json()
                .and_then(|v| v["sent_us"].as_i64())
                .unwrap_or(0);
            let lat = (SystemClock.now_micros() - sent).max(0) as u64;
            if let Ok(mut h) = h.lock() {
                let _ = h.record(lat);
            }
            r.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    });
    let lat_opts = SubscribeOptions {
        start: StartAt::Latest,
        ..sub_opts
    };
    let sub = bus.subscribe("latency", "bench", handler, lat_opts).await?;
    let total = args.rate * args.seconds;
    let pb = bar(total, "latency", quiet);
    // Publish in 1 ms ticks: rate/1000 events per tick, each its own publish call.
    let per_tick = (args.rate / 1000).max(1);
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0u64;
    let mut inflight = tokio::task::JoinSet::new();
    while sent < total {
        ticker.tick().await;
        for _ in 0..per_tick.min(total - sent) {
            let bus = bus.clone();
            let e = event(sent % args.keys, sent, SystemClock.now_micros());
            inflight.spawn(async move { bus.publish(e, &["latency"]).await.map(|_| ()) });
            sent += 1;
        }
        while let Some(r) = inflight.try_join_next() {
            r??;
        }
        pb.set_position(received.load(Ordering::Relaxed));
    }
    while let Some(r) = inflight.join_next().await {
        r??;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.load(Ordering::Relaxed) < total {
        if Instant::now() > deadline {
            bail!(
                "only {} of {total} events reached the handler",
                received.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        pb.set_position(received.load(Ordering::Relaxed));
    }
    pb.finish_and_clear();
    sub.unsubscribe().await?;
    log.close().await?;
    let h = hist
        .lock()
        .map_err(|_| anyhow::anyhow!("histogram lock poisoned"))?;
    let report = DeliverReport {
        events: args.events,
        keys: args.keys,
        partitions: args.partitions,
        max_in_flight: args.max_in_flight,
        deliver_events_per_sec,
        rate: args.rate,
        latency_events: total,
        e2e_p50_us: h.value_at_quantile(0.5),
        e2e_p99_us: h.value_at_quantile(0.99),
        e2e_max_us: h.max(),
        dedupe_window_ms: args.dedupe_window_ms,
        rss_start_bytes,
        rss_peak_bytes,
        rss_by_tenth_bytes,
        rss_final_bytes,
        dedupe_entries: end_stats.dedupe_entries,
        dedupe_entries_peak,
        done_entries: end_stats.done_entries,
        done_markers: end_stats.done_markers,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("crmbus bench deliver — embedded log (fsync) and its state store, {} partitions, {} keys, key ordering", report.partitions, report.keys);
        println!(
            "  no-op handler throughput      {:>10.0} events/s ({} events, max_in_flight {})",
            report.deliver_events_per_sec, report.events, report.max_in_flight
        );
        println!(
            "  publish→handler at {:>6}/s   p50 {:>6} us   p99 {:>6} us   max {:>6} us ({} events)",
            report.rate,
            report.e2e_p50_us,
            report.e2e_p99_us,
            report.e2e_max_us,
            report.latency_events
        );
        let mb = |b: Option<u64>| {
            b.map(|b| format!("{:.1} MB", b as f64 / 1e6))
                .unwrap_or_else(|| "?".into())
        };
        println!(
            "  throughput phase RSS          start {}   peak {}   final {} (dedupe window {})",
            mb(report.rss_start_bytes),
            mb(report.rss_peak_bytes),
            mb(report.rss_final_bytes),
            report
                .dedupe_window_ms
                .map(|ms| format!("{ms} ms"))
                .unwrap_or_else(|| "off".into())
        );
        let tenths: Vec<String> = report
            .rss_by_tenth_bytes
            .iter()
            .map(|b| format!("{:.0}", *b as f64 / 1e6))
            .collect();
        println!("  RSS (MB) after each tenth     {}", tenths.join(" "));
        println!(
            "  engine entries at the end     dedupe {} (peak {})   done {}   done markers {}",
            report.dedupe_entries,
            report.dedupe_entries_peak,
            report.done_entries,
            report.done_markers
        );
    }
    Ok(())
}
