//! `crmbus schema (list|show|register|check|compat|validate|docs)`: the schema registry.

use anyhow::{bail, Context};
use clap::Subcommand;
use crmbus_client::api::{CompatibilityRequest, FieldError, SchemaRequest};
use serde_json::Value;

use crate::client::{block_on, opt, print_json, print_table, Remote};

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
    /// Set a type's compatibility mode: how its next version must relate to its latest
    /// (backward, forward, full or none).
    Compat {
        /// Event type.
        event_type: String,
        /// backward (the default: new versions accept what older ones did), forward (older
        /// versions accept what new ones do; use it to register a stricter version), full or
        /// none.
        mode: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print the built-in catalog as markdown: each type's required and optional fields,
    /// their types and what to assume when an optional one is absent (no server needed).
    Docs,
}

fn read_json(file: &str) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    serde_json::from_str(&text).with_context(|| format!("{file} is not JSON"))
}

fn print_errors(list: &[FieldError]) {
    for e in list {
        println!("  {}: {}", e.field, e.message);
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
                let list = remote.client()?.schemas().await?;
                if remote.json {
                    print_json(&list)?;
                } else {
                    let rows: Vec<Vec<String>> = list
                        .types
                        .iter()
                        .map(|t| {
                            vec![
                                t.event_type.clone(),
                                t.mode.clone(),
                                serde_json::to_string(&t.versions).unwrap_or_default(),
                                opt(t.latest),
                            ]
                        })
                        .collect();
                    print_table(&["TYPE", "MODE", "VERSIONS", "LATEST"], &rows);
                }
            }
            SchemaCommand::Show {
                event_type,
                version,
                remote,
            } => {
                let shown = remote
                    .client()?
                    .schema_version(&event_type, &version)
                    .await?;
                if remote.json {
                    print_json(&shown)?;
                } else {
                    println!("# {} version {} ({})", event_type, shown.version, shown.uri);
                    println!("{}", serde_json::to_string_pretty(&shown.schema)?);
                }
            }
            SchemaCommand::Register {
                event_type,
                file,
                remote,
            } => {
                let schema = read_json(&file)?;
                let reg = remote
                    .client()?
                    .register_schema(&event_type, &SchemaRequest { schema })
                    .await?;
                if remote.json {
                    print_json(&reg)?;
                } else if reg.created {
                    println!(
                        "registered {event_type} version {} ({})",
                        reg.version, reg.uri
                    );
                } else {
                    println!(
                        "{event_type} version {} is already this schema; nothing registered",
                        reg.version
                    );
                }
            }
            SchemaCommand::Check {
                event_type,
                file,
                remote,
            } => {
                let schema = read_json(&file)?;
                let check = remote
                    .client()?
                    .check_schema(&event_type, &SchemaRequest { schema })
                    .await?;
                if remote.json {
                    print_json(&check)?;
                } else if check.compatible {
                    println!(
                        "compatible ({} mode, against version {})",
                        check.mode,
                        opt(check.against)
                    );
                } else {
                    println!(
                        "incompatible with version {} under {} compatibility:",
                        opt(check.against),
                        check.mode
                    );
                    print_errors(&check.breaking);
                }
                if !check.compatible {
                    bail!("the schema would be rejected");
                }
            }
            SchemaCommand::Compat {
                event_type,
                mode,
                remote,
            } => {
                let set = remote
                    .client()?
                    .set_compatibility(&event_type, &CompatibilityRequest { mode })
                    .await?;
                if remote.json {
                    print_json(&set)?;
                } else {
                    println!("{} compatibility: {}", set.event_type, set.mode);
                }
            }
            SchemaCommand::Validate { file, remote } => {
                let event = read_json(&file)?;
                let answer = remote.client()?.validate(&event).await?;
                if remote.json {
                    print_json(&answer)?;
                } else if answer.valid {
                    println!("valid ({})", opt(answer.dataschema.as_deref()));
                } else {
                    println!("invalid:");
                    print_errors(&answer.errors);
                }
                if !answer.valid {
                    bail!("{file} does not validate");
                }
            }
            SchemaCommand::Docs => {}
        }
        Ok(())
    })
}

/// The built-in catalog as markdown (see `crmbus_schema::docs`).
fn docs() -> anyhow::Result<()> {
    let entries = crmbus_schema::catalog::builtin()?;
    print!("{}", crmbus_schema::docs::markdown(&entries));
    Ok(())
}
