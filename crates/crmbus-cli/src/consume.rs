//! `crmbus subs pull` and `crmbus consume`: reading a pull subscription from the shell.
//!
//! `consume SUB -- COMMAND…` runs the command once per delivery with the event (a
//! structured CloudEvent) on standard input, and acks the delivery when the command exits
//! 0, or nacks it with the tail of its standard error. The subscription hands out one event
//! per business key at a time, so running several commands at once keeps per-key order.

use std::process::Stdio;

use anyhow::{bail, Context};
use clap::Args;
use crmbus_client::api::{AckRequest, DeliveryView, NackRequest, PullRequest};
use crmbus_client::Client;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

use crate::client::{block_on, print_json, print_table, Remote};

/// The most of a failing command's standard error kept as the nack's error.
const STDERR_TAIL: usize = 500;

/// Options of `crmbus subs pull`.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// Subscription name.
    subscription: String,
    /// Deliveries at most.
    #[arg(long, default_value_t = 10)]
    max: usize,
    /// Wait up to this long for the first delivery, ms.
    #[arg(long, default_value_t = 1000)]
    wait_ms: u64,
    /// Ack what was pulled.
    #[arg(long, conflicts_with = "nack")]
    ack: bool,
    /// Nack what was pulled, with this error (it is retried under the retry policy).
    #[arg(long, value_name = "ERROR")]
    nack: Option<String>,
    #[command(flatten)]
    remote: Remote,
}

/// Runs `crmbus subs pull`.
pub fn pull(args: PullArgs) -> anyhow::Result<()> {
    block_on(async move {
        let client = args.remote.client()?;
        let req = PullRequest {
            max_events: Some(args.max),
            wait_ms: Some(args.wait_ms),
        };
        let pulled = client.pull(&args.subscription, &req).await?;
        let ids: Vec<String> = pulled.deliveries.iter().map(|d| d.ack_id.clone()).collect();
        let settled = if ids.is_empty() {
            None
        } else if args.ack {
            let req = AckRequest { ack_ids: ids };
            Some(("acked", client.ack(&args.subscription, &req).await?))
        } else if let Some(error) = &args.nack {
            let req = NackRequest {
                ack_ids: ids,
                delay_ms: None,
                error: Some(error.clone()),
            };
            Some(("nacked", client.nack(&args.subscription, &req).await?))
        } else {
            None
        };
        if args.remote.json {
            return print_json(&pulled);
        }
        let rows: Vec<Vec<String>> = pulled
            .deliveries
            .iter()
            .map(|d| {
                vec![
                    format!("{}-{}", d.partition, d.offset),
                    d.attempt.to_string(),
                    d.event["type"].as_str().unwrap_or("-").to_string(),
                    d.event["subject"].as_str().unwrap_or("-").to_string(),
                    d.event["id"].as_str().unwrap_or("-").to_string(),
                    d.ack_id.clone(),
                ]
            })
            .collect();
        if !rows.is_empty() {
            print_table(&["AT", "ATTEMPT", "TYPE", "SUBJECT", "ID", "ACK_ID"], &rows);
        }
        match settled {
            Some((what, answer)) => println!("{what} {}", answer.settled),
            None if !rows.is_empty() => println!(
                "leased: ack with --ack or nack with --nack ERROR next time, or let the lease expire"
            ),
            None => println!("nothing to deliver"),
        }
        Ok(())
    })
}

/// Options of `crmbus consume`.
#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// Subscription name.
    subscription: String,
    /// Commands run at once (events of one business key never run at the same time).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Stop after this many events were handled (acked or nacked); default: until Ctrl-C.
    #[arg(long)]
    limit: Option<u64>,
    /// The command, run once per event with the event as JSON on standard input (and
    /// CRMBUS_EVENT_ID, CRMBUS_EVENT_TYPE, CRMBUS_ATTEMPT in its environment).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
    #[command(flatten)]
    remote: Remote,
}

/// Runs `crmbus consume` until Ctrl-C (or `--limit` events).
pub fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    block_on(async move {
        let client = args.remote.client()?;
        if !args.remote.json {
            eprintln!(
                "consuming {} with `{}` (Ctrl-C to stop)",
                args.subscription,
                args.command.join(" ")
            );
        }
        let mut running: JoinSet<anyhow::Result<bool>> = JoinSet::new();
        let mut handled = 0u64;
        loop {
            if args.limit.is_some_and(|l| handled >= l) && running.is_empty() {
                return Ok(());
            }
            let room = args.concurrency - running.len();
            let wanted = args.limit.map_or(room as u64, |l| {
                (l.saturating_sub(handled + running.len() as u64)).min(room as u64)
            });
            // Nothing new this round: wait for a running command instead of pulling again
            // at once (which would spin against the server).
            let mut idle = true;
            if wanted > 0 {
                let req = PullRequest {
                    max_events: Some(wanted as usize),
                    wait_ms: Some(if running.is_empty() { 5_000 } else { 0 }),
                };
                let pulled = tokio::select! {
                    p = client.pull(&args.subscription, &req) => p?,
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                };
                idle = pulled.deliveries.is_empty();
                for d in pulled.deliveries {
                    let (client, sub, cmd) = (
                        client.clone(),
                        args.subscription.clone(),
                        args.command.clone(),
                    );
                    running.spawn(async move { handle(&client, &sub, &cmd, d).await });
                }
            }
            if !running.is_empty() && (idle || running.len() >= args.concurrency) {
                let done = tokio::select! {
                    d = running.join_next() => d,
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                };
                if let Some(result) = done {
                    let ok = result.context("a consumer task failed")??;
                    handled += 1;
                    if args.remote.json {
                        print_json(&serde_json::json!({ "acked": ok }))?;
                    }
                }
            }
        }
    })
}

/// Runs the command for one delivery, then acks (exit 0) or nacks it; true when acked.
async fn handle(
    client: &Client,
    sub: &str,
    command: &[String],
    d: DeliveryView,
) -> anyhow::Result<bool> {
    let Some((program, args)) = command.split_first() else {
        bail!("no command to run");
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env(
            "CRMBUS_EVENT_ID",
            d.event["id"].as_str().unwrap_or_default(),
        )
        .env(
            "CRMBUS_EVENT_TYPE",
            d.event["type"].as_str().unwrap_or_default(),
        )
        .env("CRMBUS_ATTEMPT", d.attempt.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input is fine: a closed pipe is not an error.
        // What the subscription's transformation shaped, if it has one; else the event.
        let input = d.body.as_ref().unwrap_or(&d.event);
        let _ = stdin.write_all(input.to_string().as_bytes()).await;
    }
    let out = child
        .wait_with_output()
        .await
        .with_context(|| format!("waiting for {program}"))?;
    let at = format!("{}-{}", d.partition, d.offset);
    if out.status.success() {
        let req = AckRequest {
            ack_ids: vec![d.ack_id],
        };
        client.ack(sub, &req).await?;
        eprintln!("{at} acked");
        return Ok(true);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: String = {
        let t = stderr.trim_end();
        let start = t
            .char_indices()
            .rev()
            .nth(STDERR_TAIL)
            .map_or(0, |(i, _)| i);
        t[start..].to_string()
    };
    let error = if tail.is_empty() {
        format!("{program} exited with {}", out.status)
    } else {
        tail
    };
    let req = NackRequest {
        ack_ids: vec![d.ack_id],
        delay_ms: None,
        error: Some(error.clone()),
    };
    client.nack(sub, &req).await?;
    eprintln!("{at} nacked: {error}");
    Ok(false)
}
