//! `crmbus tail`: follow a topic live (Server-Sent Events), with a filter and a start.

use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;
use serde_json::Value;

use crate::client::{block_on, enc, Client, Remote};

/// Options of `crmbus tail`.
#[derive(Args, Debug)]
pub struct TailArgs {
    /// Topic to follow.
    topic: String,
    /// Only events whose type matches this pattern (`deal.*`); repeatable.
    #[arg(long = "type", value_name = "PATTERN")]
    types: Vec<String>,
    /// A subscription filter as JSON, e.g. '{"where":[{"field":"data.amount","op":"gt","value":1000}]}'.
    #[arg(long)]
    filter: Option<String>,
    /// Where to start: latest (default), earliest, or an RFC 3339 time.
    #[arg(long, default_value = "latest")]
    from: String,
    /// Stop after this many events.
    #[arg(long)]
    limit: Option<u64>,
    #[command(flatten)]
    remote: Remote,
}

/// Runs `crmbus tail` until interrupted (or `--limit` events).
pub fn run(args: TailArgs) -> anyhow::Result<()> {
    block_on(async move {
        let client = Client::new(&args.remote)?;
        let mut query = vec![format!("from={}", enc(&args.from))];
        query.extend(args.types.iter().map(|t| format!("type={}", enc(t))));
        if let Some(f) = &args.filter {
            query.push(format!("filter={}", enc(f)));
        }
        let url = client.url(&format!(
            "/v1/topics/{}/stream?{}",
            enc(&args.topic),
            query.join("&")
        ));
        let resp = client
            .http()
            .get(url)
            .send()
            .await
            .map_err(|e| client.unreachable(e))?;
        if !resp.status().is_success() {
            Client::answer(resp).await?;
            return Ok(());
        }
        if !args.remote.json {
            eprintln!("following {} (Ctrl-C to stop)", args.topic);
        }
        let mut stream = resp.bytes_stream();
        let mut buf = String::new();
        let mut seen = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.context("the stream broke")?;
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let mut kind = "message".to_string();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() {
                    continue;
                }
                if kind == "error" {
                    anyhow::bail!("the server ended the stream: {data}");
                }
                print_message(&data, args.remote.json);
                seen += 1;
                if args.limit.is_some_and(|l| seen >= l) {
                    return Ok(());
                }
            }
        }
        Ok(())
    })
}

fn print_message(data: &str, json: bool) {
    if json {
        println!("{data}");
        return;
    }
    let Ok(v) = serde_json::from_str::<Value>(data) else {
        println!("{data}");
        return;
    };
    let e = &v["event"];
    let payload = e
        .get("data")
        .map(|d| d.to_string())
        .or_else(|| e.get("data_base64").map(|_| "<binary>".to_string()))
        .unwrap_or_default();
    println!(
        "{}-{}  {}  {}  {}  {}",
        v["partition"],
        v["offset"],
        e["type"].as_str().unwrap_or("?"),
        e["subject"].as_str().unwrap_or("-"),
        e["id"].as_str().unwrap_or("?"),
        payload
    );
}
