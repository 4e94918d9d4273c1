//! `crmbus dlq (list|show|redrive|discard)`: a subscription's dead letters.

use clap::Subcommand;
use crmbus_client::api::{DlqQuery, RedriveRequest};
use serde_json::json;

use crate::client::{block_on, plural, print_json, print_table, Remote};

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
    /// Show who redrove or discarded which dead letters, oldest first.
    Audit {
        /// Subscription name.
        subscription: String,
        #[command(flatten)]
        remote: Remote,
    },
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
                let query = DlqQuery {
                    ty,
                    error,
                    ..DlqQuery::default()
                };
                let list = remote.client()?.dead_letters(&subscription, &query).await?;
                if remote.json {
                    print_json(&list)?;
                } else {
                    let rows: Vec<Vec<String>> = list
                        .entries
                        .iter()
                        .map(|d| {
                            vec![
                                d.id.clone(),
                                d.event["type"].as_str().unwrap_or("-").to_string(),
                                d.key.clone(),
                                d.attempts.to_string(),
                                d.last_failure.clone(),
                                d.last_error.clone(),
                                if d.redriving {
                                    "redriving"
                                } else if d.held {
                                    "held"
                                } else {
                                    "-"
                                }
                                .to_string(),
                            ]
                        })
                        .collect();
                    print_table(
                        &[
                            "ENTRY",
                            "TYPE",
                            "KEY",
                            "ATTEMPTS",
                            "LAST_FAILURE",
                            "LAST_ERROR",
                            "STATE",
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
                let shown = remote.client()?.dead_letter(&subscription, &entry).await?;
                if remote.json {
                    print_json(&shown)?;
                } else {
                    println!("{}", serde_json::to_string_pretty(&shown)?);
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
                    (false, None, false) => RedriveRequest {
                        entries: Some(entries),
                        ..RedriveRequest::default()
                    },
                    (true, Some(t), false) => RedriveRequest {
                        filter: Some(DlqQuery {
                            ty: Some(t),
                            ..DlqQuery::default()
                        }),
                        ..RedriveRequest::default()
                    },
                    (true, None, true) => RedriveRequest {
                        all: Some(true),
                        ..RedriveRequest::default()
                    },
                    _ => anyhow::bail!("give entry ids, --type, or --all (exactly one of them)"),
                };
                let answer = remote
                    .client()?
                    .redrive(&subscription, &req, Some(&actor))
                    .await?;
                if remote.json {
                    print_json(&answer)?;
                } else {
                    println!("redrove {}", plural(answer.redriven, "dead letter"));
                }
            }
            DlqCommand::Audit {
                subscription,
                remote,
            } => {
                let log = remote.client()?.audit_log(&subscription).await?;
                if remote.json {
                    print_json(&log)?;
                } else {
                    let rows: Vec<Vec<String>> = log
                        .entries
                        .iter()
                        .map(|a| {
                            vec![
                                a.at.clone(),
                                a.who.clone(),
                                a.action.clone(),
                                a.entry.clone(),
                                a.event_type.clone(),
                                a.event_id.clone(),
                            ]
                        })
                        .collect();
                    print_table(&["AT", "WHO", "ACTION", "ENTRY", "TYPE", "EVENT_ID"], &rows);
                }
            }
            DlqCommand::Discard {
                subscription,
                entry,
                actor,
                remote,
            } => {
                remote
                    .client()?
                    .discard(&subscription, &entry, Some(&actor))
                    .await?;
                if remote.json {
                    print_json(&json!({ "discarded": entry }))?;
                } else {
                    println!("discarded {entry}");
                }
            }
        }
        Ok(())
    })
}
