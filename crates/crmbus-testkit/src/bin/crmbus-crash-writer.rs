//! Helper process for the crash tests (`tests/crash_kill.rs`): appends to an embedded log
//! until it is killed, and reports every acknowledged event on stdout.
//!
//! ```text
//! crmbus-crash-writer <data-dir> <tag> [appenders]
//! ```
//!
//! It opens the log in `<data-dir>` (fsync durability, 64 KiB segments, the batch journal
//! compacted every 64 KiB, no background retention), creates topic `crash` with 4
//! partitions if missing, and runs `appenders` (default 4) concurrent tasks. Each appends batches of 1–20 events, with subjects spread
//! over all partitions, and once an append returns prints one line per receipt:
//!
//! ```text
//! <event id> <partition> <offset>
//! ```
//!
//! Event ids are `<tag>-a<appender>-b<batch>-e<index>`; each event's data repeats these
//! numbers, plus the batch size and how many events of the batch went to its partition,
//! so that a checker can verify batch atomicity of what survived.
//!
//! Stdout carries receipt lines only; errors go to stderr with a non-zero exit. The
//! process also exits (code 3) when its stdin reaches end of file, so it never outlives
//! the test that started it.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crmbus::partition::partition_for_key;
use crmbus::{Event, EventLog, LogError, TopicSpec};
use crmbus_embedded::{EmbeddedLog, EmbeddedOptions};

const TOPIC: &str = "crash";
const PARTITIONS: u32 = 4;
const SUBJECTS: u64 = 16;
const MAX_BATCH: u64 = 20;
const SEGMENT_BYTES: u64 = 64 * 1024;
const JOURNAL_COMPACT_BYTES: u64 = 64 * 1024;

struct Args {
    dir: PathBuf,
    tag: String,
    appenders: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args_os().skip(1);
    let usage = "usage: crmbus-crash-writer <data-dir> <tag> [appenders]";
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let tag = args
        .next()
        .ok_or(usage)?
        .into_string()
        .map_err(|_| "the tag must be UTF-8".to_string())?;
    if tag.is_empty() || !tag.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "the tag must be ASCII letters and digits, got '{tag}'"
        ));
    }
    let appenders = match args.next() {
        None => 4,
        Some(a) => a
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|&n| (1..=64).contains(&n))
            .ok_or_else(|| format!("appenders must be 1-64, got {a:?}"))?,
    };
    if args.next().is_some() {
        return Err(usage.to_string());
    }
    Ok(Args {
        dir,
        tag,
        appenders,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("crmbus-crash-writer: {msg}");
            return ExitCode::from(2);
        }
    };
    // Exit once the parent closes our stdin (or dies): never outlive the test.
    let watchdog = std::thread::Builder::new()
        .name("stdin-watchdog".into())
        .spawn(|| {
            let mut buf = [0u8; 64];
            let mut stdin = std::io::stdin();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
            eprintln!("crmbus-crash-writer: stdin closed, exiting");
            std::process::exit(3);
        });
    if let Err(e) = watchdog {
        eprintln!("crmbus-crash-writer: cannot start the stdin watchdog: {e}");
        return ExitCode::from(1);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("crmbus-crash-writer: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("crmbus-crash-writer: {msg}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let opts = EmbeddedOptions {
        retention_interval: None,
        segment_bytes: SEGMENT_BYTES,
        // Compact the batch journal often, so kills land during compactions too.
        batch_journal_compact_bytes: JOURNAL_COMPACT_BYTES,
        ..EmbeddedOptions::default()
    };
    let log = EmbeddedLog::open(&args.dir, opts)
        .map_err(|e| format!("cannot open {}: {e}", args.dir.display()))?;
    match log.describe_topic(TOPIC).await {
        Ok(info) if info.spec.partitions == PARTITIONS => {}
        Ok(info) => {
            return Err(format!(
                "topic {TOPIC} has {} partitions, expected {PARTITIONS}",
                info.spec.partitions
            ))
        }
        Err(LogError::TopicNotFound(_)) => {
            log.create_topic(TopicSpec::new(TOPIC, PARTITIONS))
                .await
                .map_err(|e| format!("cannot create topic {TOPIC}: {e}"))?;
        }
        Err(e) => return Err(format!("cannot describe topic {TOPIC}: {e}")),
    }
    let log = Arc::new(log);
    let seed = xxhash_rust::xxh3::xxh3_64(args.tag.as_bytes());
    let mut tasks = tokio::task::JoinSet::new();
    for a in 0..args.appenders {
        let log = Arc::clone(&log);
        let tag = args.tag.clone();
        tasks.spawn(async move { appender(&log, &tag, a, seed).await });
    }
    // Appenders run until the process is killed; the first to stop can only have failed.
    match tasks.join_next().await {
        Some(Ok(Err(msg))) => Err(msg),
        Some(Ok(Ok(()))) => Err("an appender stopped without an error".into()),
        Some(Err(e)) => Err(format!("an appender task failed: {e}")),
        None => Err("no appender ran".into()),
    }
}

/// A small xorshift generator: enough to vary batch sizes and subjects.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % n
    }
}

async fn appender(log: &EmbeddedLog, tag: &str, a: u32, seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed ^ (u64::from(a) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let topics = [TOPIC.to_string()];
    let pad = "x".repeat(64 + (a as usize % 4) * 32);
    for batch in 0u64.. {
        let size = 1 + rng.below(MAX_BATCH);
        let subjects: Vec<String> = (0..size)
            .map(|_| format!("subject-{}", rng.below(SUBJECTS)))
            .collect();
        let partitions: Vec<u32> = subjects
            .iter()
            .map(|s| partition_for_key(s, PARTITIONS))
            .collect();
        let events: Vec<Event> = subjects
            .iter()
            .enumerate()
            .map(|(i, subject)| {
                let in_partition = partitions.iter().filter(|&&p| p == partitions[i]).count();
                Event::new(
                    "crmbus.crash.append",
                    serde_json::json!({
                        "tag": tag,
                        "appender": a,
                        "batch": batch,
                        "index": i,
                        "size": size,
                        "in_partition": in_partition,
                        "pad": pad,
                    }),
                )
                .id(format!("{tag}-a{a}-b{batch}-e{i}"))
                .source("crmbus-crash-writer")
                .subject(subject.clone())
            })
            .collect();
        let receipts = log
            .append(&topics, &events)
            .await
            .map_err(|e| format!("appender {a}: append of batch {batch} failed: {e}"))?;
        if receipts.len() != events.len() {
            return Err(format!(
                "appender {a}: batch {batch} of {} events got {} receipts",
                events.len(),
                receipts.len()
            ));
        }
        let mut lines = String::new();
        for r in &receipts {
            if r.duplicate {
                return Err(format!("appender {a}: event {} reported duplicate", r.id));
            }
            lines.push_str(&format!("{} {} {}\n", r.id, r.partition, r.offset));
        }
        // One write per append, under the stdout lock, so lines never interleave.
        let mut out = std::io::stdout().lock();
        out.write_all(lines.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| format!("appender {a}: cannot write to stdout: {e}"))?;
    }
    Ok(())
}
