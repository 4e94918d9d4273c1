//! `crmbus bench outbox`: the transactional outbox end to end on the machine's PostgreSQL —
//! writers commit rows into `crmbus_outbox` (one row per transaction, as an application
//! saving a deal does) while a relay publishes them into a bus on the embedded log (fsync).
//! Figures: rows/s relayed end to end, commit-to-published latency (p50/p99, from the
//! rows' own `created_at` and `published_at`), and, as the peer in the same run, the rate
//! the same writers commit with no relay running (the ratio says whether the relay keeps
//! up with the database). A fresh database is created and dropped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use crmbus::{EventBus, TopicSpec};
use crmbus_embedded::{EmbeddedLog, EmbeddedOptions};
use crmbus_postgres::{Relay, RelayOptions};
use serde::Serialize;
use serde_json::json;
use tokio_postgres::NoTls;

use crate::common::run_in_work_dir;

/// Options of `crmbus bench outbox`.
#[derive(Args, Debug)]
pub struct OutboxBenchArgs {
    /// A PostgreSQL server where the benchmark may create and drop a database.
    #[arg(
        long,
        env = "CRMBUS_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    database_url: String,
    /// Rows written in each phase.
    #[arg(long, default_value_t = 20_000)]
    rows: u64,
    /// Concurrent writers (connections), each committing one row per transaction.
    #[arg(long, default_value_t = 8)]
    writers: u64,
    /// Rows the relay claims per step.
    #[arg(long, default_value_t = 256)]
    batch_size: i64,
    /// Directory for the embedded log. Default: a temporary directory here, removed after.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize, Debug)]
struct OutboxBenchReport {
    rows: u64,
    writers: u64,
    batch_size: i64,
    /// Commits per second with no relay running (the peer).
    write_only_rows_per_sec: f64,
    /// Rows committed and published per second, from the first commit to the last mark.
    relayed_rows_per_sec: f64,
    /// relayed / write-only.
    ratio: f64,
    commit_to_published_p50_ms: f64,
    commit_to_published_p99_ms: f64,
    commit_to_published_max_ms: f64,
}

/// Runs `crmbus bench outbox`.
pub fn run(args: OutboxBenchArgs) -> anyhow::Result<()> {
    let json = args.json;
    let parent = args.dir.clone();
    run_in_work_dir(parent.as_deref(), "outbox", json, print_table, |dir| {
        bench(args, dir)
    })
}

fn print_table(r: &OutboxBenchReport) {
    println!(
        "outbox: {} rows per phase, {} writers (one row per transaction), relay batches of {}",
        r.rows, r.writers, r.batch_size
    );
    println!(
        "  writers alone (no relay):        {:>10.0} rows/s",
        r.write_only_rows_per_sec
    );
    println!(
        "  written and relayed end to end:  {:>10.0} rows/s  ({:.2} of writers alone)",
        r.relayed_rows_per_sec, r.ratio
    );
    println!(
        "  commit -> published:  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        r.commit_to_published_p50_ms, r.commit_to_published_p99_ms, r.commit_to_published_max_ms
    );
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(conn);
    Ok(client)
}

/// Commits `rows` rows from `writers` connections; returns rows/s.
async fn write(url: &str, rows: u64, writers: u64, phase: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let client = connect(url).await?;
        let phase = phase.to_string();
        let share = rows / writers + u64::from(w < rows % writers);
        tasks.push(tokio::spawn(async move {
            let topics = vec!["deals".to_string()];
            for n in 0..share {
                let deal = format!("deal-{}", (w * 7919 + n) % 1000);
                let event = json!({
                    "id": format!("{phase}-{w}-{n}"), "source": "/crm/bench", "type": "deal.updated",
                    "subject": deal, "data": {"deal_id": deal, "name": "Acme renewal", "amount": "1250.00"}
                });
                client
                    .execute(
                        "INSERT INTO crmbus_outbox (topics, event) VALUES ($1, $2)",
                        &[&topics, &event],
                    )
                    .await?;
            }
            Ok::<(), tokio_postgres::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

async fn bench(args: OutboxBenchArgs, dir: PathBuf) -> anyhow::Result<OutboxBenchReport> {
    if args.rows == 0 || args.writers == 0 {
        bail!("--rows and --writers must be at least 1");
    }
    let admin = connect(&args.database_url).await?;
    let name = format!("crmbus_bench_{}", uuid::Uuid::now_v7().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .context("creating the benchmark database")?;
    let base = match args.database_url.rfind('/') {
        Some(i) if i > args.database_url.find("://").map_or(0, |s| s + 2) => {
            args.database_url[..i].to_string()
        }
        _ => args.database_url.clone(),
    };
    let url = format!("{base}/{name}");
    let result = measure(&args, &url, &dir).await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .context("dropping the benchmark database")?;
    result
}

async fn measure(
    args: &OutboxBenchArgs,
    url: &str,
    dir: &std::path::Path,
) -> anyhow::Result<OutboxBenchReport> {
    let mut client = connect(url).await?;
    crmbus_postgres::sql::install(&mut client).await?;

    // The peer: the writers alone, then the rows are cleared.
    let write_only = write(url, args.rows, args.writers, "alone").await?;
    client.batch_execute("TRUNCATE crmbus_outbox").await?;

    let dir = dir.to_path_buf();
    let log =
        tokio::task::spawn_blocking(move || EmbeddedLog::open(&dir, EmbeddedOptions::default()))
            .await??;
    let bus = EventBus::builder().log(Arc::new(log)).build();
    bus.create_topic(TopicSpec::new("deals", 4)).await?;
    let relay = Relay::new(
        RelayOptions {
            batch_size: args.batch_size,
            poll_interval: Duration::from_millis(100),
            ..RelayOptions::new(url)
        },
        Arc::new(bus.clone()),
    )?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(async move { relay.run(stopped).await });

    let started = Instant::now();
    write(url, args.rows, args.writers, "relayed").await?;
    loop {
        let pending: i64 = client
            .query_one(
                "SELECT count(*) FROM crmbus_outbox WHERE published_at IS NULL",
                &[],
            )
            .await?
            .get(0);
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    running.await?;
    bus.close().await?;

    let mut latency = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    for row in client
        .query(
            "SELECT (extract(epoch FROM published_at - created_at) * 1000000)::bigint FROM crmbus_outbox",
            &[],
        )
        .await?
    {
        let us: i64 = row.get(0);
        latency.record(us.max(1) as u64)?;
    }
    let relayed = args.rows as f64 / elapsed;
    Ok(OutboxBenchReport {
        rows: args.rows,
        writers: args.writers,
        batch_size: args.batch_size,
        write_only_rows_per_sec: write_only,
        relayed_rows_per_sec: relayed,
        ratio: relayed / write_only,
        commit_to_published_p50_ms: latency.value_at_quantile(0.5) as f64 / 1000.0,
        commit_to_published_p99_ms: latency.value_at_quantile(0.99) as f64 / 1000.0,
        commit_to_published_max_ms: latency.max() as f64 / 1000.0,
    })
}
