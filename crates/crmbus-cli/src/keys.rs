//! `crmbus keys (create|list|revoke)`: API keys. The first key is made against a server
//! that has none (on loopback, no key needed); every later change needs an admin key.

use clap::Subcommand;
use crmbus_client::api::{CreateKeyRequest, KeyView};
use serde_json::json;

use crate::client::{block_on, print_json, print_table, Remote};

/// API key commands.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Make a key; it is printed once (`crmbus_…`) and cannot be shown again.
    Create {
        /// A name for people (`erp-sync`, `ops-alice`).
        name: String,
        /// `publish:<topic-pattern>`, `subscribe:<…>`, `dlq:<…>` or `admin`; repeatable.
        #[arg(long = "scope", value_name = "SCOPE", required = true)]
        scopes: Vec<String>,
        /// When the key stops working (RFC 3339); never when absent.
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List keys (without secrets), revoked ones included.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke a key by its id (`crmbus keys list` shows it).
    Revoke {
        /// The key's id.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

fn row(k: &KeyView) -> Vec<String> {
    let state = match (&k.revoked_at, &k.expires_at) {
        (Some(at), _) => format!("revoked {at}"),
        (None, Some(at)) => format!("expires {at}"),
        (None, None) => "active".to_string(),
    };
    vec![k.id.clone(), k.name.clone(), k.scopes.join(" "), state]
}

/// Runs a key command.
pub fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    block_on(async move {
        match cmd {
            KeysCommand::Create {
                name,
                scopes,
                expires_at,
                remote,
            } => {
                let made = remote
                    .client()?
                    .create_key(&CreateKeyRequest {
                        name,
                        scopes,
                        expires_at,
                    })
                    .await?;
                if remote.json {
                    print_json(&made)?;
                } else {
                    println!(
                        "created key {} ({}), scopes: {}",
                        made.view.name,
                        made.view.id,
                        made.view.scopes.join(" ")
                    );
                    println!(
                        "key (shown once; send it as --api-key or CRMBUS_API_KEY): {}",
                        made.key
                    );
                }
            }
            KeysCommand::List { remote } => {
                let list = remote.client()?.list_keys().await?;
                if remote.json {
                    print_json(&list)?;
                } else {
                    let rows: Vec<Vec<String>> = list.keys.iter().map(row).collect();
                    print_table(&["ID", "NAME", "SCOPES", "STATE"], &rows);
                }
            }
            KeysCommand::Revoke { id, remote } => {
                remote.client()?.revoke_key(&id).await?;
                if remote.json {
                    print_json(&json!({ "revoked": id }))?;
                } else {
                    println!("revoked key {id}");
                }
            }
        }
        Ok(())
    })
}
