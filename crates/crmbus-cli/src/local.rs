//! Commands that work on an embedded log directory directly, without a server
//! (`--data-dir`): publish events and read them back.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use crmbus::{Event, EventLog, LogError, TopicSpec};
use crmbus_embedded::{EmbeddedLog, EmbeddedOptions};

/// Options of `crmbus publish`.
#[derive(Args, Debug)]
pub struct PublishArgs {
    /// Event type, like `deal.won`.
    #[arg(long = "type", value_name = "TYPE")]
    ty: String,
    /// The business key (CloudEvents `subject`), like `deal-42`; it decides the partition.
    #[arg(long)]
    subject: Option<String>,
    /// Event data: a JSON value, or `@path` to read it from a file.
    #[arg(long, default_value = "{}")]
    data: String,
    /// Topic to publish to; repeat for several.
    #[arg(long = "topic", required = true)]
    topics: Vec<String>,
    /// The event `source`. Default: `CRMBUS_EVENT_SOURCE`, else `urn:crmbus:cli`.
    #[arg(long)]
    source: Option<String>,
    /// Event id. Default: a new UUIDv7.
    #[arg(long)]
    id: Option<String>,
    /// Extension attribute `name=value`; repeatable.
    #[arg(long = "ext", value_name = "NAME=VALUE")]
    extensions: Vec<String>,
    /// Embedded log directory to publish into.
    #[arg(long, env = "CRMBUS_DATA_DIR", default_value = "./crmbus-data")]
    data_dir: PathBuf,
    /// Partitions of topics created on first use.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Print the receipts as JSON.
    #[arg(long)]
    json: bool,
}

/// Options of `crmbus read`.
#[derive(Args, Debug)]
pub struct ReadArgs {
    /// Topic to read.
    #[arg(long)]
    topic: String,
    /// Only this partition (default: all, one after another).
    #[arg(long)]
    partition: Option<u32>,
    /// First offset to read in each partition.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Start at the first event appended at or after this RFC 3339 time instead.
    #[arg(long)]
    from_time: Option<String>,
    /// At most this many events per partition.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Embedded log directory to read.
    #[arg(long, env = "CRMBUS_DATA_DIR", default_value = "./crmbus-data")]
    data_dir: PathBuf,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

fn open(dir: &PathBuf) -> anyhow::Result<EmbeddedLog> {
    let opts = EmbeddedOptions {
        retention_interval: None,
        ..EmbeddedOptions::default()
    };
    EmbeddedLog::open(dir, opts)
        .with_context(|| format!("opening the embedded log in {}", dir.display()))
}

fn parse_data(arg: &str) -> anyhow::Result<serde_json::Value> {
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => arg.to_string(),
    };
    serde_json::from_str(&text).context("--data is not valid JSON")
}

/// `crmbus publish` into a local embedded log.
pub fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let mut event = Event::new(args.ty.clone(), parse_data(&args.data)?);
    event.source = args
        .source
        .clone()
        .or_else(|| std::env::var("CRMBUS_EVENT_SOURCE").ok())
        .unwrap_or_else(|| "urn:crmbus:cli".to_string());
    if let Some(s) = &args.subject {
        event = event.subject(s.clone());
    }
    if let Some(id) = &args.id {
        event = event.id(id.clone());
    }
    for ext in &args.extensions {
        let Some((name, value)) = ext.split_once('=') else {
            bail!("--ext {ext:?} is not NAME=VALUE");
        };
        event = event.extension(name, value);
    }
    event.validate()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let log = open(&args.data_dir)?;
        for t in &args.topics {
            match log
                .create_topic(TopicSpec::new(t.clone(), args.partitions))
                .await
            {
                Ok(_) | Err(LogError::TopicExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let receipts = log
            .append(&args.topics, std::slice::from_ref(&event))
            .await?;
        log.close().await?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string(&serde_json::json!({ "receipts": receipts }))?
            );
        } else {
            for r in receipts {
                let dup = if r.duplicate {
                    "  (duplicate: already stored)"
                } else {
                    ""
                };
                println!(
                    "published {} to {} partition {} offset {}{dup}",
                    r.id, r.topic, r.partition, r.offset
                );
            }
        }
        Ok(())
    })
}

/// `crmbus read` from a local embedded log.
pub fn read(args: ReadArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        if !args.data_dir.join("meta.redb").exists() {
            bail!(
                "no embedded log in {} (publish an event first)",
                args.data_dir.display()
            );
        }
        let log = open(&args.data_dir)?;
        let info = log.describe_topic(&args.topic).await?;
        let partitions: Vec<u32> = match args.partition {
            Some(p) => vec![p],
            None => (0..info.partitions).collect(),
        };
        let from_time = match &args.from_time {
            Some(t) => Some(
                chrono::DateTime::parse_from_rfc3339(t)
                    .with_context(|| format!("--from-time {t:?} is not an RFC 3339 time"))?
                    .with_timezone(&chrono::Utc),
            ),
            None => None,
        };
        if !args.json {
            println!(
                "{:<4} {:>8}  {:<32} {:<20} {:<14} id",
                "PART", "OFFSET", "APPENDED", "TYPE", "SUBJECT"
            );
        }
        for p in partitions {
            let from = match from_time {
                Some(t) => log.offset_for_time(&args.topic, p, t).await?,
                None => args.from,
            };
            for s in log.read(&args.topic, p, from, args.limit).await? {
                if args.json {
                    let line = serde_json::json!({
                        "partition": s.partition, "offset": s.offset,
                        "appended": s.timestamp.to_rfc3339(), "event": s.event,
                    });
                    println!("{line}");
                } else {
                    println!(
                        "{:<4} {:>8}  {:<32} {:<20} {:<14} {}",
                        s.partition,
                        s.offset,
                        s.timestamp.to_rfc3339(),
                        s.event.ty,
                        s.event.subject.as_deref().unwrap_or("-"),
                        s.event.id
                    );
                }
            }
        }
        log.close().await?;
        Ok(())
    })
}
