//! `crmbus bench subjects`: event sourcing on the embedded log. In one run: durable appends
//! that state each subject's expected version against the same appends without one (the
//! cost of the check), stale appends refused, and reading every subject's stream from the
//! subject index against reading the same partitions by offset.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use clap::Args;
use crmbus::{Event, EventLog, ExtensionValue, LogError, TopicSpec, EXPECTED_VERSION};
use crmbus_embedded::{Durability, EmbeddedLog, EmbeddedOptions};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;

use crate::common::{bar, run_in_work_dir};

/// Options of `crmbus bench subjects`.
#[derive(Args, Debug)]
pub struct SubjectsBenchArgs {
    /// Subjects (deals) in each append phase.
    #[arg(long, default_value_t = 2_000)]
    subjects: u64,
    /// Events per subject in each append phase.
    #[arg(long, default_value_t = 50)]
    events_per_subject: u64,
    /// Size of each event's `data` payload in bytes.
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,
    /// Concurrent writers, each owning its share of the subjects.
    #[arg(long, default_value_t = 32)]
    clients: u64,
    /// Partitions of the benchmark topic; the read phases run one reader per partition,
    /// reading by subject or by offset.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Durability of the log: fsync (default) or os.
    #[arg(long, default_value = "fsync")]
    durability: Durability,
    /// Directory to run in (default: a temporary one under the current directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize, Debug)]
struct SubjectsBenchReport {
    subjects: u64,
    events_per_subject: u64,
    payload_bytes: usize,
    clients: u64,
    partitions: u32,
    durability: Durability,
    /// Durable one-event appends without an expectation, events/s (the peer): the mean of
    /// a phase before and one after the expected-version phase.
    plain_append_per_sec: f64,
    /// The same appends, each stating its subject's version, events/s.
    expected_append_per_sec: f64,
    expected_to_plain: f64,
    /// Appends with a stale expectation, refused (409), per second.
    refused_per_sec: f64,
    /// Every subject's whole stream read from the subject index (one reader per
    /// partition, each reading its partition's subjects), events/s.
    subject_read_per_sec: f64,
    /// The same partitions read by offset, 1,000 at a time, events/s (the peer).
    partition_read_per_sec: f64,
    subject_to_partition_read: f64,
    /// Latency of reading one subject's whole stream.
    stream_read_p50_us: f64,
    stream_read_p99_us: f64,
}

fn deal_event(payload_bytes: usize, subject: u64, n: u64) -> Event {
    let pad = "x".repeat(payload_bytes.saturating_sub(70));
    Event::new(
        "deal.stage_changed",
        json!({"deal_id": format!("deal-{subject}"), "old_stage": "proposal", "new_stage": format!("s{n}"), "pad": pad}),
    )
    .subject(format!("deal-{subject}"))
    .source("urn:crmbus:bench")
}

fn expecting(mut e: Event, version: u64) -> Event {
    e.extensions.insert(
        EXPECTED_VERSION.to_string(),
        ExtensionValue::Number(version.into()),
    );
    e
}

/// Runs the benchmark.
pub fn run(args: SubjectsBenchArgs) -> anyhow::Result<()> {
    if args.subjects == 0 || args.events_per_subject == 0 || args.clients == 0 {
        bail!("--subjects, --events-per-subject and --clients must be at least 1");
    }
    if args.partitions == 0 {
        bail!("--partitions must be at least 1");
    }
    let dir = args.dir.clone();
    run_in_work_dir(
        dir.as_deref(),
        "subjects",
        args.json,
        print_table,
        |work| async move { run_async(&args, work).await },
    )
}

/// One append phase: `clients` writers, each appending its subjects' events one at a time
/// (durable before the next), stating each subject's version when `expected` (offset by
/// `first_subject` so each phase writes its own subjects). Returns events/s.
async fn append_phase(
    log: &Arc<EmbeddedLog>,
    args: &SubjectsBenchArgs,
    first_subject: u64,
    expected: bool,
    label: &str,
) -> anyhow::Result<f64> {
    let total = args.subjects * args.events_per_subject;
    let pb = bar(total, label, args.json);
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (log, done, pb) = (Arc::clone(log), Arc::clone(&done), pb.clone());
        let mine: Vec<u64> = (0..args.subjects)
            .filter(|s| s % args.clients == c)
            .map(|s| s + first_subject)
            .collect();
        let (per_subject, payload) = (args.events_per_subject, args.payload_bytes);
        tasks.push(tokio::spawn(async move {
            let topics = vec!["bench".to_string()];
            for n in 0..per_subject {
                for &s in &mine {
                    let e = deal_event(payload, s, n);
                    let e = if expected { expecting(e, n) } else { e };
                    let r = log.append(&topics, &[e]).await?;
                    if r.first().and_then(|r| r.version) != Some(n + 1) {
                        return Err(LogError::Backend {
                            message: format!("deal-{s} did not get version {}", n + 1),
                            source: None,
                        });
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    pb.inc(1);
                }
            }
            Ok::<(), LogError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    pb.finish_and_clear();
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

async fn run_async(args: &SubjectsBenchArgs, work: PathBuf) -> anyhow::Result<SubjectsBenchReport> {
    let opts = EmbeddedOptions {
        durability: args.durability,
        retention_interval: None,
        ..EmbeddedOptions::default()
    };
    let log = Arc::new(EmbeddedLog::open(work.join("log"), opts)?);
    log.create_topic(TopicSpec::new("bench", args.partitions))
        .await?;

    // 1-2. The same appends without and with expected versions, on distinct subjects; the
    // plain ones before and after, so neither phase alone has the fresh log.
    let plain_before = append_phase(&log, args, 0, false, "plain").await?;
    let expected = append_phase(&log, args, args.subjects, true, "expected").await?;
    let plain_after = append_phase(&log, args, 2 * args.subjects, false, "plain again").await?;
    let plain = (plain_before + plain_after) / 2.0;

    // 3. Stale expectations: each refused before anything is staged.
    let refusals = args.subjects.min(20_000);
    let topics = vec!["bench".to_string()];
    let started = Instant::now();
    for s in 0..refusals {
        // Every such subject is at version events_per_subject: one more is stale.
        let stale = expecting(
            deal_event(args.payload_bytes, args.subjects + s, 0),
            args.events_per_subject + 1,
        );
        match log.append(&topics, &[stale]).await {
            Err(LogError::VersionConflict { .. }) => {}
            other => bail!("a stale append was not refused: {other:?}"),
        }
    }
    let refused = refusals as f64 / started.elapsed().as_secs_f64();

    // 4. Every subject's whole stream from the index, one reader per partition (the
    // parallelism of the offset reads below), each reading its partition's subjects.
    let all_subjects = 3 * args.subjects;
    let pb = bar(all_subjects, "subject reads", args.json);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..args.partitions {
        let (log, pb) = (Arc::clone(&log), pb.clone());
        let (per_subject, partitions) = (args.events_per_subject, args.partitions);
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3)?;
            let mut events = 0u64;
            for s in 0..all_subjects {
                let subject = format!("deal-{s}");
                if crmbus::partition::partition_for_key(&subject, partitions) != p {
                    continue;
                }
                let t = Instant::now();
                let mut got = 0u64;
                let mut from = 1;
                loop {
                    let read = log.read_subject("bench", &subject, from, 1000).await?;
                    let Some(last) = read.events.last() else {
                        break;
                    };
                    from = last.version + 1;
                    got += read.events.len() as u64;
                }
                hist.record(t.elapsed().as_micros() as u64)?;
                if got != per_subject {
                    bail!("{subject}: {got} events read, {per_subject} appended");
                }
                events += got;
                pb.inc(1);
            }
            Ok::<_, anyhow::Error>((events, hist))
        }));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    let mut read_events = 0u64;
    for t in tasks {
        let (n, h) = t.await??;
        read_events += n;
        hist.add(h)?;
    }
    pb.finish_and_clear();
    let subject_read = read_events as f64 / started.elapsed().as_secs_f64();

    // 5. The same partitions by offset, one reader per partition.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..args.partitions {
        let log = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            let mut from = 0;
            let mut n = 0u64;
            loop {
                let got = log.read("bench", p, from, 1000).await?;
                let Some(last) = got.last() else { break };
                from = last.offset + 1;
                n += got.len() as u64;
            }
            Ok::<u64, LogError>(n)
        }));
    }
    let mut partition_events = 0u64;
    for t in tasks {
        partition_events += t.await??;
    }
    let partition_read = partition_events as f64 / started.elapsed().as_secs_f64();
    log.close().await?;

    Ok(SubjectsBenchReport {
        subjects: args.subjects,
        events_per_subject: args.events_per_subject,
        payload_bytes: args.payload_bytes,
        clients: args.clients,
        partitions: args.partitions,
        durability: args.durability,
        plain_append_per_sec: plain,
        expected_append_per_sec: expected,
        expected_to_plain: expected / plain,
        refused_per_sec: refused,
        subject_read_per_sec: subject_read,
        partition_read_per_sec: partition_read,
        subject_to_partition_read: subject_read / partition_read,
        stream_read_p50_us: hist.value_at_quantile(0.5) as f64,
        stream_read_p99_us: hist.value_at_quantile(0.99) as f64,
    })
}

fn print_table(r: &SubjectsBenchReport) {
    println!(
        "crmbus bench subjects — {} subjects x {} events of {} B, {} clients, {} partitions, durability {:?}",
        r.subjects, r.events_per_subject, r.payload_bytes, r.clients, r.partitions, r.durability
    );
    println!(
        "  durable appends, no expectation     {:>10.0} events/s",
        r.plain_append_per_sec
    );
    println!(
        "  durable appends, expectedversion    {:>10.0} events/s   ({:.2}x the plain appends)",
        r.expected_append_per_sec, r.expected_to_plain
    );
    println!(
        "  stale expectations refused (409)    {:>10.0} per second",
        r.refused_per_sec
    );
    println!(
        "  subject streams read (index)        {:>10.0} events/s   ({:.2}x reading the partitions by offset: {:.0} events/s)",
        r.subject_read_per_sec, r.subject_to_partition_read, r.partition_read_per_sec
    );
    println!(
        "  one stream of {} events (1 reader/partition) p50 {:>6.0} us   p99 {:>6.0} us",
        r.events_per_subject, r.stream_read_p50_us, r.stream_read_p99_us
    );
}
