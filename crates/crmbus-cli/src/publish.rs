//! `crmbus publish`: one event from flags, or many from JSON lines on standard input
//! (sent in batches, with a progress bar).

use std::io::BufRead;

use anyhow::{bail, Context};
use clap::Args;
use crmbus::Event;
use crmbus_client::api::PublishResponse;
use crmbus_client::{Client, Encoded};
use serde_json::{json, Value};

use crate::client::{block_on, print_json, Remote};

/// Events per HTTP request in bulk mode.
const BULK_BATCH: usize = 500;

/// Options of `crmbus publish`.
#[derive(Args, Debug)]
pub struct PublishArgs {
    /// Event type, like `deal.won`. Without it, events are read from standard input, one
    /// JSON object per line (a CloudEvent; `id`, `source` and `specversion` are filled in
    /// when missing).
    #[arg(long = "type", value_name = "TYPE")]
    ty: Option<String>,
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
    #[command(flatten)]
    remote: Remote,
}

fn parse_data(arg: &str) -> anyhow::Result<Value> {
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => arg.to_string(),
    };
    serde_json::from_str(&text).context("--data is not valid JSON")
}

fn default_source(args: &PublishArgs) -> String {
    args.source
        .clone()
        .or_else(|| std::env::var("CRMBUS_EVENT_SOURCE").ok())
        .unwrap_or_else(|| "urn:crmbus:cli".to_string())
}

fn topic_refs(args: &PublishArgs) -> Vec<&str> {
    args.topics.iter().map(String::as_str).collect()
}

/// Runs `crmbus publish`.
pub fn run(args: PublishArgs) -> anyhow::Result<()> {
    block_on(async move {
        let client = args.remote.client()?;
        match &args.ty {
            Some(ty) => publish_one(&client, &args, ty).await,
            None => publish_bulk(&client, &args).await,
        }
    })
}

async fn publish_one(client: &Client, args: &PublishArgs, ty: &str) -> anyhow::Result<()> {
    let mut event = Event::new(ty, parse_data(&args.data)?).source(default_source(args));
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
    let body = Encoded {
        content_type: "application/cloudevents+json",
        body: event.to_json_vec().into(),
    };
    let answer: PublishResponse = client.publish_encoded(&topic_refs(args), &body).await?;
    if args.remote.json {
        return print_json(&answer);
    }
    for r in &answer.receipts {
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
    Ok(())
}

async fn publish_bulk(client: &Client, args: &PublishArgs) -> anyhow::Result<()> {
    let source = default_source(args);
    let stdin = std::io::stdin();
    let show_progress = !args.remote.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar = if show_progress {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_message("publishing");
    let (mut published, mut duplicates) = (0u64, 0u64);
    let mut batch: Vec<Value> = Vec::with_capacity(BULK_BATCH);
    let mut line_no = 0usize;
    let mut lines = stdin.lock().lines();
    loop {
        let line = lines.next();
        if let Some(line) = &line {
            line_no += 1;
            let line = line
                .as_ref()
                .map_err(|e| anyhow::anyhow!("reading stdin: {e}"))?;
            if line.trim().is_empty() {
                continue;
            }
            let mut v: Value = serde_json::from_str(line)
                .with_context(|| format!("line {line_no} is not JSON"))?;
            let Some(obj) = v.as_object_mut() else {
                bail!("line {line_no} is not a JSON object");
            };
            obj.entry("specversion").or_insert_with(|| json!("1.0"));
            obj.entry("source").or_insert_with(|| json!(source));
            obj.entry("id")
                .or_insert_with(|| json!(uuid::Uuid::now_v7().to_string()));
            if let Err(e) = Event::from_json_value(v.clone()) {
                bail!("line {line_no}: {e}");
            }
            batch.push(v);
        }
        if batch.len() >= BULK_BATCH || (line.is_none() && !batch.is_empty()) {
            let answer = client
                .publish_batch(&topic_refs(args), &std::mem::take(&mut batch))
                .await
                .with_context(|| format!("publishing the batch ending at line {line_no}"))?;
            for r in &answer.receipts {
                if r.duplicate {
                    duplicates += 1;
                } else {
                    published += 1;
                }
            }
            bar.set_position(published + duplicates);
            bar.set_message(format!("{published} published, {duplicates} duplicates"));
        }
        if line.is_none() {
            break;
        }
    }
    bar.finish_and_clear();
    if args.remote.json {
        print_json(&json!({"published": published, "duplicates": duplicates}))?;
    } else {
        println!("published {published} events ({duplicates} duplicates already stored)");
    }
    Ok(())
}
