//! `crmbus bench log`: how close the embedded log's durable appends come to the disk.

use crate::common::bar;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use crmbus::{Event, EventLog, TopicSpec};
use crmbus_embedded::{Durability, EmbeddedLog, EmbeddedOptions};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde::Serialize;
use serde_json::json;

use crate::rss::{cpu_time, rss_bytes};

/// Options of `crmbus bench log`.
#[derive(Args, Debug)]
pub struct LogBenchArgs {
    /// Events to append in the pipelined phase (and read back).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Size of each event's `data` payload in bytes.
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,
    /// Directory to run in (on the disk to measure). Default: a new temporary directory
    /// under the current one, removed afterwards.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Concurrent producers in the pipelined phase.
    #[arg(long, default_value_t = 64)]
    producers: u64,
    /// Events per append call in the pipelined phase.
    #[arg(long, default_value_t = 64)]
    batch: u64,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// One-at-a-time durable appends to time for latency.
    #[arg(long, default_value_t = 2_000)]
    single: u64,
    /// Chunk size of the disk measurement: each chunk is written then fdatasync'd.
    #[arg(long, default_value_t = 1 << 20)]
    disk_chunk_bytes: usize,
    /// Durability of the log under test: fsync (default) or os.
    #[arg(long, default_value = "fsync")]
    durability: Durability,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize, Debug)]
struct RssPoint {
    events: u64,
    rss_mb: f64,
}

#[derive(Serialize, Debug)]
struct LogBenchReport {
    events: u64,
    payload_bytes: usize,
    producers: u64,
    batch: u64,
    partitions: u32,
    durability: Durability,
    disk_chunk_bytes: usize,
    disk_mb_per_sec: f64,
    disk_mb_per_sec_before: f64,
    disk_mb_per_sec_after: f64,
    append_events_per_sec: f64,
    append_mb_per_sec: f64,
    append_payload_mb_per_sec: f64,
    append_ratio_to_disk: f64,
    bytes_per_event_on_disk: f64,
    single_p50_us: f64,
    single_p99_us: f64,
    raw_fsync_p50_us: f64,
    raw_fsync_p99_us: f64,
    single_p99_ratio_to_raw_fsync: f64,
    read_events_per_sec: f64,
    rss_mb_after_events: Vec<RssPoint>,
    /// Whether this process may use transparent huge pages (`THP_enabled` of
    /// `/proc/self/status`; `null` where the kernel does not say). The crmbus binary turns
    /// them off, as the server runs: with them on, zeroing huge pages took a quarter of
    /// this benchmark's CPU.
    transparent_huge_pages: Option<bool>,
}

const MB: f64 = 1024.0 * 1024.0;

struct Workdir {
    path: PathBuf,
    remove: bool,
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Runs the benchmark.
pub fn run(args: LogBenchArgs) -> anyhow::Result<()> {
    if args.events == 0 || args.producers == 0 || args.batch == 0 || args.partitions == 0 {
        bail!("--events, --producers, --batch and --partitions must be at least 1");
    }
    let work = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            let path = d.join(format!("crmbus-bench-{}", uuid::Uuid::now_v7()));
            Workdir { path, remove: true }
        }
        None => Workdir {
            path: PathBuf::from(format!("crmbus-bench-{}", uuid::Uuid::now_v7())),
            remove: true,
        },
    };
    std::fs::create_dir_all(&work.path)
        .with_context(|| format!("creating {}", work.path.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(&args, &work.path))
}

fn sample_event(payload_bytes: usize, n: u64) -> Event {
    let pad = "x".repeat(payload_bytes.saturating_sub(60));
    Event::new(
        "deal.stage_changed",
        json!({"deal_id": format!("deal-{n}"), "old_stage": "proposal", "new_stage": "won", "pad": pad}),
    )
    .subject(format!("deal-{}", n % 10_000))
    .source("urn:crmbus:bench")
}

async fn run_async(args: &LogBenchArgs, dir: &Path) -> anyhow::Result<()> {
    let quiet = args.json;
    let frame_bytes = sample_event(args.payload_bytes, 0).to_json_vec().len() + 33;
    let total_bytes = args.events * frame_bytes as u64;

    // 1. The disk's own limit: sequential chunks, each fdatasync'd, of the same total size.
    // Measured again at the end; the report compares against the mean of the two, since
    // a virtual disk's rate drifts during a run.
    let disk_before = measure_disk(
        &dir.join("disk-probe"),
        total_bytes,
        args.disk_chunk_bytes,
        quiet,
    )?;

    // 2. Pipelined durable appends from many producers.
    let opts = EmbeddedOptions {
        durability: args.durability,
        retention_interval: None,
        ..EmbeddedOptions::default()
    };
    let log = Arc::new(EmbeddedLog::open(dir.join("log"), opts)?);
    log.create_topic(TopicSpec::new("bench", args.partitions))
        .await?;
    let topics = Arc::new(vec!["bench".to_string()]);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let pb = bar(args.events, "append", quiet);
    let size_before = log.size_bytes();
    let cpu_before = cpu_time();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.producers {
        let (log, topics, next, done) = (
            Arc::clone(&log),
            Arc::clone(&topics),
            Arc::clone(&next),
            Arc::clone(&done),
        );
        // Each producer reuses one batch of events (see `spawn_producer`): the log does all
        // its per-event work, while the benchmark does not measure the allocator building
        // and dropping the application's events.
        let payload = args.payload_bytes;
        let buffer: Vec<Event> = (0..args.batch).map(|n| sample_event(payload, n)).collect();
        tasks.push(crate::common::spawn_producer(
            log,
            topics,
            next,
            args.events,
            buffer,
            move |n| {
                done.fetch_add(n, Ordering::Relaxed);
            },
        ));
    }
    // Progress and RSS samples at every million events.
    let mut rss_points = Vec::new();
    let mut next_mark = 1_000_000u64;
    loop {
        let d = done.load(Ordering::Relaxed);
        pb.set_position(d);
        while d >= next_mark {
            if let Some(r) = rss_bytes() {
                rss_points.push(RssPoint {
                    events: next_mark,
                    rss_mb: r as f64 / MB,
                });
            }
            next_mark += 1_000_000;
        }
        if tasks.iter().all(|t| t.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in tasks {
        t.await??;
    }
    let append_secs = started.elapsed().as_secs_f64();
    let append_cpu = match (cpu_before, cpu_time()) {
        (Some(a), Some(b)) => (b - a).as_secs_f64() / append_secs,
        _ => 0.0,
    };
    let commit = log.group_commit_stats();
    let (rounds, sync_us) = (commit.rounds, commit.sync_micros);
    if !quiet {
        eprintln!("append phase used {:.0}% of one core", append_cpu * 100.0);
        eprintln!("group commit: {rounds} rounds ({} run by appenders), {:.1} events/round, {:.0} us fsync/round, {:.0}% of the time in fsync",
            commit.rounds_led, args.events as f64 / rounds.max(1) as f64, sync_us as f64 / rounds.max(1) as f64, sync_us as f64 / 1e4 / append_secs);
    }
    pb.finish_and_clear();
    if rss_points.last().map(|p| p.events) != Some(args.events) {
        if let Some(r) = rss_bytes() {
            rss_points.push(RssPoint {
                events: args.events,
                rss_mb: r as f64 / MB,
            });
        }
    }
    let bytes_written = log.size_bytes() - size_before;
    let append_events_per_sec = args.events as f64 / append_secs;
    let append_mb_per_sec = bytes_written as f64 / MB / append_secs;

    // 3. One-at-a-time durable appends, and raw 4 KiB write+fdatasync for comparison.
    let pb = bar(args.single * 2, "single", quiet);
    let mut single = Histogram::<u64>::new(3)?;
    for n in 0..args.single {
        let e = sample_event(args.payload_bytes, n);
        let t = Instant::now();
        log.append(&topics, std::slice::from_ref(&e)).await?;
        single.record(t.elapsed().as_micros() as u64)?;
        pb.inc(1);
    }
    let raw = measure_raw_fsync(&dir.join("fsync-probe"), args.single, &pb)?;
    pb.finish_and_clear();

    // 4. Full read-back.
    let total = args.events + args.single;
    let pb = bar(total, "read", quiet);
    let started = Instant::now();
    let mut read = 0u64;
    for p in 0..args.partitions {
        let mut from = 0;
        loop {
            let batch = log.read("bench", p, from, 4096).await?;
            let Some(last) = batch.last() else { break };
            from = last.offset + 1;
            read += batch.len() as u64;
            pb.inc(batch.len() as u64);
        }
    }
    let read_secs = started.elapsed().as_secs_f64();
    pb.finish_and_clear();
    if read != total {
        bail!("read back {read} events, expected {total}");
    }
    log.close().await?;
    let disk_after = measure_disk(
        &dir.join("disk-probe"),
        total_bytes,
        args.disk_chunk_bytes,
        quiet,
    )?;
    let disk_mb_per_sec = (disk_before + disk_after) / 2.0;

    let report = LogBenchReport {
        events: args.events,
        payload_bytes: args.payload_bytes,
        producers: args.producers,
        batch: args.batch,
        partitions: args.partitions,
        durability: args.durability,
        disk_chunk_bytes: args.disk_chunk_bytes,
        disk_mb_per_sec,
        disk_mb_per_sec_before: disk_before,
        disk_mb_per_sec_after: disk_after,
        append_events_per_sec,
        append_mb_per_sec,
        append_payload_mb_per_sec: append_events_per_sec * args.payload_bytes as f64 / MB,
        append_ratio_to_disk: append_mb_per_sec / disk_mb_per_sec,
        bytes_per_event_on_disk: bytes_written as f64 / args.events as f64,
        single_p50_us: single.value_at_quantile(0.5) as f64,
        single_p99_us: single.value_at_quantile(0.99) as f64,
        raw_fsync_p50_us: raw.value_at_quantile(0.5) as f64,
        raw_fsync_p99_us: raw.value_at_quantile(0.99) as f64,
        single_p99_ratio_to_raw_fsync: single.value_at_quantile(0.99) as f64
            / raw.value_at_quantile(0.99).max(1) as f64,
        read_events_per_sec: read as f64 / read_secs,
        rss_mb_after_events: rss_points,
        transparent_huge_pages: crate::rss::transparent_huge_pages(),
    };
    crate::common::emit(&report, args.json, print_table)
}

fn measure_disk(path: &Path, total: u64, chunk: usize, quiet: bool) -> anyhow::Result<f64> {
    let chunk = chunk.max(4096);
    let buf: Vec<u8> = (0..chunk).map(|i| (i * 31 % 251) as u8).collect();
    let pb = bar(total, "disk", quiet);
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let started = Instant::now();
    let mut written = 0u64;
    while written < total {
        f.write_all(&buf)?;
        f.sync_data()?;
        written += chunk as u64;
        pb.set_position(written.min(total));
    }
    let secs = started.elapsed().as_secs_f64();
    pb.finish_and_clear();
    drop(f);
    std::fs::remove_file(path)?;
    Ok(written as f64 / MB / secs)
}

fn measure_raw_fsync(path: &Path, n: u64, pb: &ProgressBar) -> anyhow::Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new(3)?;
    let buf = vec![7u8; 4096];
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&buf)?;
        f.sync_data()?;
        h.record(t.elapsed().as_micros() as u64)?;
        pb.inc(1);
    }
    drop(f);
    std::fs::remove_file(path)?;
    Ok(h)
}

fn print_table(r: &LogBenchReport) {
    println!("crmbus bench log — {} events of {} B, {} producers x batch {}, {} partitions, durability {:?}",
        r.events, r.payload_bytes, r.producers, r.batch, r.partitions, r.durability);
    println!(
        "  disk (chunks of {} B + fdatasync)  {:>12.1} MB/s (mean of {:.1} before, {:.1} after)",
        r.disk_chunk_bytes, r.disk_mb_per_sec, r.disk_mb_per_sec_before, r.disk_mb_per_sec_after
    );
    println!("  pipelined durable append          {:>12.0} events/s  {:>8.1} MB/s on disk ({:.0} B/event)",
        r.append_events_per_sec, r.append_mb_per_sec, r.bytes_per_event_on_disk);
    println!(
        "  append / disk                     {:>12.2}",
        r.append_ratio_to_disk
    );
    println!(
        "  single append latency             p50 {:>6.0} us   p99 {:>6.0} us",
        r.single_p50_us, r.single_p99_us
    );
    println!("  raw 4 KiB write+fdatasync         p50 {:>6.0} us   p99 {:>6.0} us  (single p99 / raw p99 = {:.2})",
        r.raw_fsync_p50_us, r.raw_fsync_p99_us, r.single_p99_ratio_to_raw_fsync);
    println!(
        "  read-back                         {:>12.0} events/s",
        r.read_events_per_sec
    );
    for p in &r.rss_mb_after_events {
        println!(
            "  RSS after {:>10} events        {:>8.1} MB",
            p.events, p.rss_mb
        );
    }
    let thp = match r.transparent_huge_pages {
        Some(true) => "on",
        Some(false) => "off",
        None => "unknown",
    };
    println!("  transparent huge pages for this process: {thp}");
}
