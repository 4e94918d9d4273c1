//! `crmbus subs (create|list|show|delete)`: pull subscriptions (consumer groups).

use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::{block_on, cell, enc, print_cursors, print_json, print_table, Client, Remote};

/// Subscription commands.
#[derive(Subcommand, Debug)]
pub enum SubsCommand {
    /// Create a pull subscription on a topic.
    Create {
        /// Topic.
        topic: String,
        /// Subscription (and consumer group) name.
        name: String,
        /// Only events whose type matches this pattern (`deal.*`); repeatable.
        #[arg(long = "type", value_name = "PATTERN")]
        types: Vec<String>,
        /// Where a new subscription starts: earliest (default), latest, or an RFC 3339 time.
        #[arg(long, default_value = "earliest")]
        start: String,
        /// Deliveries at most per event, the first included.
        #[arg(long)]
        max_attempts: Option<u32>,
        /// key (default: per-subject order) or none.
        #[arg(long)]
        ordering: Option<String>,
        /// skip (default) or hold: what a key does after its event is dead-lettered.
        #[arg(long)]
        on_exhausted: Option<String>,
        /// Lease of a pulled delivery, ms.
        #[arg(long)]
        ack_timeout_ms: Option<u64>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List subscriptions with their lag and DLQ size.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a subscription: configuration, lag per partition, in flight, parked keys, DLQ.
    Show {
        /// Subscription name.
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a subscription with its retry state and dead letters.
    Delete {
        /// Subscription name.
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
}

/// `earliest`, `latest`, or a time as the API's `{time}`.
pub fn position(text: &str) -> Value {
    match text {
        "earliest" | "latest" => json!(text),
        t => json!({ "time": t }),
    }
}

fn row(s: &Value) -> Vec<String> {
    let st = &s["status"];
    vec![
        cell(&s["name"]),
        cell(&s["topic"]),
        cell(&st["lag"]),
        cell(&st["in_flight"]),
        cell(&st["parked_keys"]),
        cell(&st["dlq_size"]),
    ]
}

const HEADER: [&str; 6] = ["NAME", "TOPIC", "LAG", "IN_FLIGHT", "PARKED_KEYS", "DLQ"];

/// Runs a subscription command.
pub fn run(cmd: SubsCommand) -> anyhow::Result<()> {
    block_on(async move {
        match cmd {
            SubsCommand::Create {
                topic,
                name,
                types,
                start,
                max_attempts,
                ordering,
                on_exhausted,
                ack_timeout_ms,
                remote,
            } => {
                let mut req = json!({ "name": name, "start": position(&start) });
                if !types.is_empty() {
                    req["filter"] = json!({ "types": types });
                }
                if let Some(n) = max_attempts {
                    req["retry"] = json!({ "max_attempts": n });
                }
                if let Some(o) = ordering {
                    req["ordering"] = json!(o);
                }
                if let Some(o) = on_exhausted {
                    req["on_exhausted"] = json!(o);
                }
                if let Some(a) = ack_timeout_ms {
                    req["ack_timeout_ms"] = json!(a);
                }
                let body = Client::new(&remote)?
                    .post(&format!("/v1/topics/{}/subscriptions", enc(&topic)), &req)
                    .await?;
                if remote.json {
                    print_json(&body);
                } else {
                    println!("created subscription {name} on {topic}");
                }
            }
            SubsCommand::List { remote } => {
                let body = Client::new(&remote)?.get("/v1/subscriptions").await?;
                if remote.json {
                    print_json(&body);
                } else {
                    let rows: Vec<Vec<String>> = body["subscriptions"]
                        .as_array()
                        .map(|a| a.iter().map(row).collect())
                        .unwrap_or_default();
                    print_table(&HEADER, &rows);
                }
            }
            SubsCommand::Show { name, remote } => {
                let body = Client::new(&remote)?
                    .get(&format!("/v1/subscriptions/{}", enc(&name)))
                    .await?;
                if remote.json {
                    print_json(&body);
                } else {
                    print_table(&HEADER, &[row(&body)]);
                    println!();
                    print_cursors(&body["status"]["partitions"]);
                    println!("\nconfig: {}", body["config"]);
                }
            }
            SubsCommand::Delete { name, remote } => {
                Client::new(&remote)?
                    .delete(&format!("/v1/subscriptions/{}", enc(&name)))
                    .await?;
                if remote.json {
                    print_json(&json!({ "deleted": name }));
                } else {
                    println!("deleted subscription {name}");
                }
            }
        }
        Ok(())
    })
}
