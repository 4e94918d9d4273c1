//! `crmbus topics (list|create|delete|show)`.

use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::{self, block_on, cell, enc, print_json, print_table, Client, Remote};

/// Topic commands.
#[derive(Subcommand, Debug)]
pub enum TopicsCommand {
    /// List every topic.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Partitions (default: the server's default_partitions).
        #[arg(long)]
        partitions: Option<u32>,
        /// Keep events this many hours at most.
        #[arg(long, value_name = "HOURS")]
        retention_hours: Option<u64>,
        /// Keep at most this many bytes per partition.
        #[arg(long, value_name = "BYTES")]
        retention_bytes: Option<u64>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a topic and all its events.
    Delete {
        /// Topic name.
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a topic's partitions and offsets.
    Show {
        /// Topic name.
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
}

fn topic_row(t: &Value) -> Vec<String> {
    vec![
        cell(&t["name"]),
        cell(&t["partitions"]),
        cell(&t["events"]),
        cell(&t["retention"]["max_age_ms"]),
        cell(&t["retention"]["max_bytes"]),
    ]
}

const HEADER: [&str; 5] = ["NAME", "PARTITIONS", "EVENTS", "MAX_AGE_MS", "MAX_BYTES"];

/// Runs a topic command.
pub fn run(cmd: TopicsCommand) -> anyhow::Result<()> {
    block_on(async move {
        match cmd {
            TopicsCommand::List { remote } => {
                let body = Client::new(&remote)?.get("/v1/topics").await?;
                if remote.json {
                    print_json(&body);
                } else {
                    let rows: Vec<Vec<String>> = body["topics"]
                        .as_array()
                        .map(|a| a.iter().map(topic_row).collect())
                        .unwrap_or_default();
                    print_table(&HEADER, &rows);
                }
            }
            TopicsCommand::Create {
                name,
                partitions,
                retention_hours,
                retention_bytes,
                remote,
            } => {
                let mut req = json!({ "name": name });
                if let Some(p) = partitions {
                    req["partitions"] = json!(p);
                }
                if retention_hours.is_some() || retention_bytes.is_some() {
                    req["retention"] = json!({
                        "max_age_ms": retention_hours.map(|h| h * 3_600_000),
                        "max_bytes": retention_bytes,
                    });
                }
                let body = Client::new(&remote)?.post("/v1/topics", &req).await?;
                if remote.json {
                    print_json(&body);
                } else {
                    println!(
                        "created topic {} with {} partitions",
                        cell(&body["name"]),
                        cell(&body["partitions"])
                    );
                }
            }
            TopicsCommand::Delete { name, remote } => {
                Client::new(&remote)?
                    .delete(&format!("/v1/topics/{}", enc(&name)))
                    .await?;
                if remote.json {
                    print_json(&json!({ "deleted": name }));
                } else {
                    println!("deleted topic {name}");
                }
            }
            TopicsCommand::Show { name, remote } => {
                let body = Client::new(&remote)?
                    .get(&format!("/v1/topics/{}", enc(&name)))
                    .await?;
                if remote.json {
                    print_json(&body);
                } else {
                    print_table(&HEADER, &[topic_row(&body)]);
                    println!();
                    print_table(
                        &["PARTITION", "FIRST_OFFSET", "NEXT_OFFSET", "EVENTS"],
                        &client::rows(
                            &body["partition_info"],
                            &["partition", "first_offset", "next_offset", "events"],
                        ),
                    );
                }
            }
        }
        Ok(())
    })
}
