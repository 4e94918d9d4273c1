//! `crmbus schema (list|show|register|check|validate|docs)`: the schema registry.

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::{block_on, cell, enc, print_json, print_table, Client, Remote};

/// Schema commands.
#[derive(Subcommand, Debug)]
pub enum SchemaCommand {
    /// List every event type with a schema.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Print a version of a type's schema (the latest by default).
    Show {
        /// Event type, like `deal.won`.
        event_type: String,
        /// Version number, or latest.
        #[arg(long, default_value = "latest")]
        version: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Register a JSON Schema file as the type's next version (checked for compatibility).
    Register {
        /// Event type.
        event_type: String,
        /// JSON Schema (draft 2020-12) file.
        file: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Say whether a schema would be accepted as the type's next version, without
    /// registering it (exit status 1 when it would not).
    Check {
        /// Event type.
        event_type: String,
        /// JSON Schema file.
        file: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Validate an event file (a structured CloudEvent) as a publish would (exit status 1
    /// when it is invalid).
    Validate {
        /// The event file.
        file: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print the built-in catalog as a markdown table (no server needed).
    Docs,
}

fn read_json(file: &str) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    serde_json::from_str(&text).with_context(|| format!("{file} is not JSON"))
}

fn print_errors(list: &Value) {
    for e in list.as_array().into_iter().flatten() {
        println!("  {}: {}", cell(&e["field"]), cell(&e["message"]));
    }
}

/// Runs a schema command.
pub fn run(cmd: SchemaCommand) -> anyhow::Result<()> {
    if let SchemaCommand::Docs = cmd {
        return docs();
    }
    block_on(async move {
        match cmd {
            SchemaCommand::List { remote } => {
                let body = Client::new(&remote)?.get("/v1/schemas").await?;
                if remote.json {
                    print_json(&body);
                } else {
                    let rows: Vec<Vec<String>> = body["types"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|t| {
                                    vec![
                                        cell(&t["event_type"]),
                                        cell(&t["mode"]),
                                        cell(&t["versions"]),
                                        cell(&t["latest"]),
                                    ]
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    print_table(&["TYPE", "MODE", "VERSIONS", "LATEST"], &rows);
                }
            }
            SchemaCommand::Show {
                event_type,
                version,
                remote,
            } => {
                let body = Client::new(&remote)?
                    .get(&format!(
                        "/v1/schemas/{}/versions/{}",
                        enc(&event_type),
                        enc(&version)
                    ))
                    .await?;
                if remote.json {
                    print_json(&body);
                } else {
                    println!(
                        "# {} version {} ({})",
                        event_type,
                        body["version"],
                        cell(&body["uri"])
                    );
                    println!("{}", serde_json::to_string_pretty(&body["schema"])?);
                }
            }
            SchemaCommand::Register {
                event_type,
                file,
                remote,
            } => {
                let schema = read_json(&file)?;
                let body = Client::new(&remote)?
                    .post(
                        &format!("/v1/schemas/{}/versions", enc(&event_type)),
                        &json!({ "schema": schema }),
                    )
                    .await?;
                if remote.json {
                    print_json(&body);
                } else if body["created"] == true {
                    println!(
                        "registered {event_type} version {} ({})",
                        body["version"],
                        cell(&body["uri"])
                    );
                } else {
                    println!(
                        "{event_type} version {} is already this schema; nothing registered",
                        body["version"]
                    );
                }
            }
            SchemaCommand::Check {
                event_type,
                file,
                remote,
            } => {
                let schema = read_json(&file)?;
                let body = Client::new(&remote)?
                    .post(
                        &format!("/v1/schemas/{}/check", enc(&event_type)),
                        &json!({ "schema": schema }),
                    )
                    .await?;
                if remote.json {
                    print_json(&body);
                } else if body["compatible"] == true {
                    println!(
                        "compatible ({} mode, against version {})",
                        cell(&body["mode"]),
                        cell(&body["against"])
                    );
                } else {
                    println!(
                        "incompatible with version {} under {} compatibility:",
                        cell(&body["against"]),
                        cell(&body["mode"])
                    );
                    print_errors(&body["breaking"]);
                }
                if body["compatible"] != true {
                    bail!("the schema would be rejected");
                }
            }
            SchemaCommand::Validate { file, remote } => {
                let event = read_json(&file)?;
                let client = Client::new(&remote)?;
                let body = client
                    .send(
                        client
                            .http()
                            .post(client.url("/v1/schemas/validate"))
                            .header("content-type", "application/cloudevents+json")
                            .body(event.to_string()),
                    )
                    .await?;
                if remote.json {
                    print_json(&body);
                } else if body["valid"] == true {
                    println!("valid ({})", cell(&body["dataschema"]));
                } else {
                    println!("invalid:");
                    print_errors(&body["errors"]);
                }
                if body["valid"] != true {
                    bail!("{file} does not validate");
                }
            }
            SchemaCommand::Docs => {}
        }
        Ok(())
    })
}

/// The catalog as a markdown table: type, version, description, required and optional
/// fields.
fn docs() -> anyhow::Result<()> {
    let entries = crmbus_schema::catalog::builtin()?;
    println!("| type | version | description | required fields | optional fields |");
    println!("|---|---|---|---|---|");
    for e in entries {
        let required: Vec<String> = e.schema["required"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let optional: Vec<String> = e.schema["properties"]
            .as_object()
            .map(|m| {
                m.keys()
                    .filter(|k| !required.contains(k))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let description = e.schema["description"]
            .as_str()
            .unwrap_or("")
            .replace('|', "\\|");
        println!(
            "| `{}` | {} | {} | {} | {} |",
            e.event_type,
            e.version,
            description,
            required.join(", "),
            optional.join(", ")
        );
    }
    Ok(())
}
