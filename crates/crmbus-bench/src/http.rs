//! `crmbus bench http`: publishing over HTTP from concurrent clients, one event per request
//! (structured mode) and batches (batch mode), against a server started in this process on
//! the embedded log (fsync by default) or an already running one (`--url`).

use crate::common::bar;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use crmbus_client::api::CreateTopicRequest;
use crmbus_client::{Client, Encoded};
use crmbus_server::{Config, Server};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde::Serialize;

/// Options of `crmbus bench http`.
#[derive(Args, Debug)]
pub struct HttpBenchArgs {
    /// Events to publish in each mode (single and batch).
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Events of the single-event mode, if not --events (one request each, so slower).
    #[arg(long)]
    single_events: Option<u64>,
    /// Concurrent clients, each with its own connection and one request in flight.
    #[arg(long, default_value_t = 32)]
    clients: u64,
    /// Events per request in batch mode.
    #[arg(long, default_value_t = 100)]
    batch: u64,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Benchmark this running server instead of starting one in this process. The
    /// benchmark creates a topic `bench-http-<uuid>` there and deletes it afterwards.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Directory of the in-process server's log. Default: a temporary directory under the
    /// current one, removed afterwards.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Durability of the in-process server's log: fsync (default) or os.
    #[arg(long, default_value = "fsync")]
    durability: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize, Debug)]
struct ModeReport {
    events: u64,
    requests: u64,
    batch_size: u64,
    seconds: f64,
    events_per_sec: f64,
    requests_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
}

#[derive(Serialize, Debug)]
struct HttpBenchReport {
    single: ModeReport,
    batch: ModeReport,
    clients: u64,
    partitions: u32,
    /// The log's durability, or `remote` for a server given by `--url`.
    durability: String,
    target: String,
    event_bytes: usize,
    data_bytes: usize,
}

/// The in-process server's directory, removed when the benchmark ends.
struct Workdir(PathBuf);

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the benchmark.
pub fn run(args: HttpBenchArgs) -> anyhow::Result<()> {
    if args.events == 0 || args.clients == 0 || args.batch == 0 || args.partitions == 0 {
        bail!("--events, --clients, --batch and --partitions must be at least 1");
    }
    if args.single_events == Some(0) {
        bail!("--single-events must be at least 1");
    }
    if !matches!(args.durability.as_str(), "fsync" | "os") {
        bail!(
            "--durability must be fsync or os, not '{}'",
            args.durability
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match &args.url {
        Some(url) => {
            let base = url.trim_end_matches('/').to_string();
            if !base.starts_with("http://") {
                bail!("--url {url:?} must start with http://");
            }
            rt.block_on(measure(&args, &base, "remote"))
        }
        None => {
            let parent = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
            let work = Workdir(parent.join(format!("crmbus-bench-http-{}", uuid::Uuid::now_v7())));
            std::fs::create_dir_all(&work.0)
                .with_context(|| format!("creating {}", work.0.display()))?;
            let env = [
                ("CRMBUS_SERVER_LISTEN", "127.0.0.1:0".to_string()),
                ("CRMBUS_STORAGE_BACKEND", "embedded".to_string()),
                ("CRMBUS_STORAGE_DATA_DIR", work.0.display().to_string()),
                ("CRMBUS_STORAGE_DURABILITY", args.durability.clone()),
            ]
            .map(|(k, v)| (k.to_string(), v));
            let config = Config::load(None, env)?;
            rt.block_on(async {
                let server = Server::start(config).await.context("starting the server")?;
                let base = format!("http://{}", server.local_addr());
                let measured = measure(&args, &base, &args.durability).await;
                let stopped = server.shutdown().await.context("stopping the server");
                measured.and(stopped)
            })
        }
    }
}

/// Builds the events of a request into `out`: one structured event, or a JSON array.
/// `bench net` sends the same bytes to every engine.
pub(crate) struct EventWriter {
    run: String,
    time: String,
    /// Distinct subjects (business keys): event `n` is about `deal-{n % keys}`.
    keys: u64,
}

impl EventWriter {
    /// A writer whose events' ids are unique to this run, over `keys` subjects (at least 1).
    pub(crate) fn new(keys: u64) -> EventWriter {
        EventWriter {
            run: uuid::Uuid::now_v7().simple().to_string(),
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            keys: keys.max(1),
        }
    }

    /// Appends the `data` of event `n`: a deal moving between stages, about 256 bytes of JSON.
    pub(crate) fn data(&self, out: &mut String, n: u64) {
        const STAGES: [&str; 5] = [
            "prospecting",
            "qualification",
            "proposal",
            "negotiation",
            "closed_won",
        ];
        let s = (n % 4) as usize;
        let _ = write!(
            out,
            r#"{{"deal_id":"deal-{:08}","old_stage":"{}","new_stage":"{}","pipeline_id":"pipeline-enterprise-emea-renewals-fy2026-{}","changed_by":"user-{:08x}-sales-operations@acme-industries.example","changed_at":"{}"}}"#,
            n % self.keys,
            STAGES[s],
            STAGES[s + 1],
            n % 7,
            n.wrapping_mul(2_654_435_761) % 0xffff_ffff,
            self.time,
        );
    }

    /// Appends event `n` as a structured CloudEvent (about 530 bytes, 256 of them data).
    pub(crate) fn event(&self, out: &mut String, n: u64) {
        let _ = write!(
            out,
            r#"{{"specversion":"1.0","id":"{}-{n}","source":"urn:crmbus:bench:http","type":"deal.stage_changed","subject":"deal-{:08}","time":"{}","datacontenttype":"application/json","data":"#,
            self.run,
            n % self.keys,
            self.time,
        );
        self.data(out, n);
        out.push('}');
    }

    fn request(&self, out: &mut String, first: u64, count: u64, batch: bool) {
        out.clear();
        if batch {
            out.push('[');
            for n in first..first + count {
                if n > first {
                    out.push(',');
                }
                self.event(out, n);
            }
            out.push(']');
        } else {
            self.event(out, first);
        }
    }
}

async fn measure(args: &HttpBenchArgs, base: &str, durability: &str) -> anyhow::Result<()> {
    let quiet = args.json;
    let topic = format!("bench-http-{}", uuid::Uuid::now_v7().simple());
    let admin = Client::new(base)?;
    admin
        .create_topic(&CreateTopicRequest {
            name: topic.clone(),
            partitions: Some(args.partitions),
            retention: None,
            require_schemas: false,
        })
        .await
        .with_context(|| format!("creating topic {topic}"))?;
    let writer = EventWriter::new(100_000);
    let mut sample = String::new();
    writer.event(&mut sample, 0);
    let event_bytes = sample.len();
    sample.clear();
    writer.data(&mut sample, 0);
    let data_bytes = sample.len();

    let target = Arc::new(Target {
        clients: connect(args.clients, base)?,
        topic: topic.clone(),
        writer,
    });
    // Warm-up: every connection opened and used, not measured.
    phase(&target, 1_000_000_000_000, args.clients * 4, 1, false, None).await?;

    let single_events = args.single_events.unwrap_or(args.events);
    let pb = bar(single_events, "single", quiet);
    let single = phase(&target, 0, single_events, 1, false, Some(&pb)).await?;
    pb.finish_and_clear();
    let pb = bar(args.events, "batch", quiet);
    let batch = phase(
        &target,
        2_000_000_000_000,
        args.events,
        args.batch,
        true,
        Some(&pb),
    )
    .await?;
    pb.finish_and_clear();

    // Everything acknowledged is in the topic.
    let info = admin.topic(&topic).await?;
    let expected = args.clients * 4 + single_events + args.events;
    if info.events != expected {
        bail!(
            "topic {topic} holds {} events, expected {expected}",
            info.events
        );
    }
    if args.url.is_some() {
        let _ = admin.delete_topic(&topic).await;
    }

    let report = HttpBenchReport {
        single,
        batch,
        clients: args.clients,
        partitions: args.partitions,
        durability: durability.to_string(),
        target: if args.url.is_some() {
            base.to_string()
        } else {
            "in-process".to_string()
        },
        event_bytes,
        data_bytes,
    };
    crate::common::emit(&report, args.json, print_table)
}

/// What the clients publish to, and with what.
struct Target {
    /// One client (with a connection of its own) per simulated client.
    clients: Vec<Client>,
    /// The topic published to.
    topic: String,
    writer: EventWriter,
}

/// One HTTP client per simulated client, so that each has a connection of its own.
fn connect(n: u64, base: &str) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::new();
    for _ in 0..n {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(1)
            .tcp_nodelay(true)
            .build()
            .with_context(|| format!("HTTP client for {base}"))?;
        clients.push(Client::with_http(base, http)?);
    }
    Ok(clients)
}

/// Publishes `events` events (numbered from `first`) in requests of `batch` from every
/// client at once, each client sending its next request when the previous one is
/// answered. Latency is per request, from send to the whole answer read.
async fn phase(
    target: &Arc<Target>,
    first: u64,
    events: u64,
    batch: u64,
    batch_mode: bool,
    pb: Option<&ProgressBar>,
) -> anyhow::Result<ModeReport> {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..target.clients.len() {
        let target = Arc::clone(target);
        let (next, done, requests) = (Arc::clone(&next), Arc::clone(&done), Arc::clone(&requests));
        let content_type = if batch_mode {
            "application/cloudevents-batch+json"
        } else {
            "application/cloudevents+json"
        };
        tasks.push(tokio::spawn(async move {
            let (client, topic, writer) = (&target.clients[c], &target.topic, &target.writer);
            let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
            let mut text = String::new();
            loop {
                let start = next.fetch_add(batch, Ordering::Relaxed);
                if start >= events {
                    return Ok::<_, anyhow::Error>(hist);
                }
                let count = batch.min(events - start);
                writer.request(&mut text, first + start, count, batch_mode);
                let body = Encoded {
                    content_type,
                    body: Bytes::copy_from_slice(text.as_bytes()),
                };
                let t = Instant::now();
                client
                    .publish_encoded(&[topic.as_str()], &body)
                    .await
                    .with_context(|| format!("publishing to {topic}"))?;
                hist.saturating_record(t.elapsed().as_micros() as u64);
                done.fetch_add(count, Ordering::Relaxed);
                requests.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    if let Some(pb) = pb {
        while !tasks.iter().all(|t| t.is_finished()) {
            pb.set_position(done.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for t in tasks {
        hist.add(t.await??)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let requests = requests.load(Ordering::Relaxed);
    Ok(ModeReport {
        events,
        requests,
        batch_size: batch,
        seconds,
        events_per_sec: events as f64 / seconds,
        requests_per_sec: requests as f64 / seconds,
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        max_us: hist.max(),
    })
}

fn print_table(r: &HttpBenchReport) {
    println!(
        "crmbus bench http — {} clients, events of {} B ({} B data), {} partitions, durability {}, server {}",
        r.clients, r.event_bytes, r.data_bytes, r.partitions, r.durability, r.target
    );
    for (name, m) in [("single events", &r.single), ("batches", &r.batch)] {
        println!(
            "  {:<14} x{:<4} {:>10.0} events/s {:>9.0} requests/s   p50 {:>7} us   p99 {:>7} us   max {:>7} us   ({} events in {:.1} s)",
            name, m.batch_size, m.events_per_sec, m.requests_per_sec, m.p50_us, m.p99_us, m.max_us, m.events, m.seconds
        );
    }
}
