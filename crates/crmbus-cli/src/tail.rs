//! `crmbus tail`: follow a topic live (Server-Sent Events), with a filter and a start.

use clap::Args;
use crmbus_client::api::{LiveQuery, StoredView};

use crate::client::{block_on, print_json, Remote};

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
        let query = LiveQuery {
            from: Some(args.from.clone()),
            types: args.types.clone(),
            filter: args.filter.clone(),
            last_event_id: None,
        };
        let mut stream = args.remote.client()?.stream(&args.topic, &query).await?;
        if !args.remote.json {
            eprintln!("following {} (Ctrl-C to stop)", args.topic);
        }
        let mut seen = 0u64;
        while let Some(message) = stream.next().await {
            print_message(&message?, args.remote.json)?;
            seen += 1;
            if args.limit.is_some_and(|l| seen >= l) {
                return Ok(());
            }
        }
        Ok(())
    })
}

fn print_message(v: &StoredView, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(v);
    }
    let e = &v.event;
    let payload = e
        .get("data")
        .map(|d| d.to_string())
        .or_else(|| {
            e.get("data_base64")
                .and_then(|b| b.as_str())
                .map(|b| shown_binary(b, e["datacontenttype"].as_str()))
        })
        .unwrap_or_default();
    println!(
        "{}-{}  {}  {}  {}  {}",
        v.partition,
        v.offset,
        e["type"].as_str().unwrap_or("?"),
        e["subject"].as_str().unwrap_or("-"),
        e["id"].as_str().unwrap_or("?"),
        payload
    );
    Ok(())
}

/// Binary data as it is worth showing: text media types as their text, the rest as
/// `<N bytes of TYPE>`.
fn shown_binary(b64: &str, media: Option<&str>) -> String {
    use base64::Engine;
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64) else {
        return "<binary>".to_string();
    };
    let media = media.unwrap_or("application/octet-stream");
    let texty = media.starts_with("text/")
        || media.contains("json")
        || media.contains("xml")
        || media.contains("csv");
    match std::str::from_utf8(&bytes) {
        Ok(text) if texty => text.to_string(),
        _ => format!("<{} bytes of {media}>", bytes.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_data_is_shown_as_text() {
        assert_eq!(shown_binary("aGVsbG8=", Some("text/plain")), "hello");
        assert_eq!(
            shown_binary("aGVsbG8=", Some("image/png")),
            "<5 bytes of image/png>"
        );
    }
}
