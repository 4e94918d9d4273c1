//! `crmbus dlq (list|show|redrive|discard)`: a subscription's dead letters.

use clap::Subcommand;
use serde_json::json;

use crate::client::{block_on, cell, enc, print_json, print_table, Client, Remote};

/// Dead-letter commands.
#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// List dead letters, optionally filtered.
    List {
        /// Subscription name.
        subscription: String,
        /// Only events whose type matches this pattern.
        #[arg(long = "type", value_name = "PATTERN")]
        ty: Option<String>,
        /// Only entries whose last error contains this text.
        #[arg(long)]
        error: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one dead letter with its event.
    Show {
        /// Subscription name.
        subscription: String,
        /// Entry id (`<partition>-<offset>`).
        entry: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Deliver dead letters again: given entries, those matching --type, or --all.
    Redrive {
        /// Subscription name.
        subscription: String,
        /// Entry ids.
        entries: Vec<String>,
        /// Every entry whose event type matches this pattern.
        #[arg(long = "type", value_name = "PATTERN")]
        ty: Option<String>,
        /// Every entry.
        #[arg(long)]
        all: bool,
        /// Recorded in the audit log as the operator.
        #[arg(long, env = "USER", default_value = "cli")]
        actor: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Discard a dead letter (audited).
    Discard {
        /// Subscription name.
        subscription: String,
        /// Entry id.
        entry: String,
        /// Recorded in the audit log as the operator.
        #[arg(long, env = "USER", default_value = "cli")]
        actor: String,
        #[command(flatten)]
        remote: Remote,
    },
}

/// Runs a dead-letter command.
pub fn run(cmd: DlqCommand) -> anyhow::Result<()> {
    block_on(async move {
        match cmd {
            DlqCommand::List {
                subscription,
                ty,
                error,
                remote,
            } => {
                let mut q = Vec::new();
                if let Some(t) = ty {
                    q.push(format!("type={}", enc(&t)));
                }
                if let Some(e) = error {
                    q.push(format!("error={}", enc(&e)));
                }
                let body = Client::new(&remote)?
                    .get(&format!(
                        "/v1/subscriptions/{}/dlq?{}",
                        enc(&subscription),
                        q.join("&")
                    ))
                    .await?;
                if remote.json {
                    print_json(&body);
                } else {
                    let rows: Vec<Vec<String>> = body["entries"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|d| {
                                    vec![
                                        cell(&d["id"]),
                                        cell(&d["event"]["type"]),
                                        cell(&d["key"]),
                                        cell(&d["attempts"]),
                                        cell(&d["last_failure"]),
                                        cell(&d["last_error"]),
                                    ]
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    print_table(
                        &[
                            "ENTRY",
                            "TYPE",
                            "KEY",
                            "ATTEMPTS",
                            "LAST_FAILURE",
                            "LAST_ERROR",
                        ],
                        &rows,
                    );
                }
            }
            DlqCommand::Show {
                subscription,
                entry,
                remote,
            } => {
                let body = Client::new(&remote)?
                    .get(&format!(
                        "/v1/subscriptions/{}/dlq/{}",
                        enc(&subscription),
                        enc(&entry)
                    ))
                    .await?;
                if remote.json {
                    print_json(&body);
                } else {
                    println!("{}", serde_json::to_string_pretty(&body)?);
                }
            }
            DlqCommand::Redrive {
                subscription,
                entries,
                ty,
                all,
                actor,
                remote,
            } => {
                let req = match (entries.is_empty(), ty, all) {
                    (false, None, false) => json!({ "entries": entries }),
                    (true, Some(t), false) => json!({ "filter": { "type": t } }),
                    (true, None, true) => json!({ "all": true }),
                    _ => anyhow::bail!("give entry ids, --type, or --all (exactly one of them)"),
                };
                let client = Client::new(&remote)?;
                let body = client
                    .send(
                        client
                            .http()
                            .post(client.url(&format!(
                                "/v1/subscriptions/{}/dlq/redrive",
                                enc(&subscription)
                            )))
                            .header("x-crmbus-actor", actor)
                            .json(&req),
                    )
                    .await?;
                if remote.json {
                    print_json(&body);
                } else {
                    println!("redrove {} dead letters", cell(&body["redriven"]));
                }
            }
            DlqCommand::Discard {
                subscription,
                entry,
                actor,
                remote,
            } => {
                let client = Client::new(&remote)?;
                client
                    .send(
                        client
                            .http()
                            .delete(client.url(&format!(
                                "/v1/subscriptions/{}/dlq/{}",
                                enc(&subscription),
                                enc(&entry)
                            )))
                            .header("x-crmbus-actor", actor),
                    )
                    .await?;
                if remote.json {
                    print_json(&json!({ "discarded": entry }));
                } else {
                    println!("discarded {entry}");
                }
            }
        }
        Ok(())
    })
}
