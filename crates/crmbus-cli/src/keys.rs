//! `crmbus keys (create|list|revoke)`: API keys. The first key is made against a server
//! that has none (on loopback, no key needed), or offline on a stopped server's data
//! directory (`--data-dir`); every later change needs an admin key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use crmbus::Clock;
use crmbus_client::api::{CreateKeyRequest, CreatedKey, KeyView};
use crmbus_server::audit::{Action, AuditLog, AuditSection};
use crmbus_server::auth::keys::KeyStore;
use crmbus_server::auth::scope::Scope;
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
        /// Make the key offline in this embedded data directory (the server must be
        /// stopped: it holds the directory's lock) instead of through a server.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
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
                data_dir,
                remote,
            } => {
                let req = CreateKeyRequest {
                    name,
                    scopes,
                    expires_at,
                };
                let made = match data_dir {
                    Some(dir) => create_offline(&dir, &req).await?,
                    None => remote.client()?.create_key(&req).await?,
                };
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

/// Makes a key in the embedded log of `dir` (not in use by a server; made if new, so
/// that a server meant to listen off loopback has its first key before it first starts),
/// recorded in the audit log as `offline`.
async fn create_offline(dir: &Path, req: &CreateKeyRequest) -> anyhow::Result<CreatedKey> {
    let new = !dir.join("meta.redb").exists();
    let mut scopes = Vec::new();
    for s in &req.scopes {
        scopes.push(
            s.parse::<Scope>()
                .map_err(|e| anyhow::anyhow!("--scope {s}: {e}"))?,
        );
    }
    let clock = crmbus::SystemClock;
    let expires = match &req.expires_at {
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .with_context(|| format!("--expires-at {t}: not an RFC 3339 time"))?
                .timestamp_micros(),
        ),
        None => None,
    };
    // The embedded log with the server's defaults (fsync).
    let storage = crmbus_server::config::StorageSection {
        data_dir: dir.to_path_buf(),
        ..crmbus_server::config::StorageSection::default()
    }
    .resolve()
    .map_err(|e| anyhow::anyhow!(e))?;
    let opened = crmbus_server::backend::open_backend(&storage)
        .await
        .with_context(|| {
            format!(
                "opening {} (stop the server that uses it first)",
                dir.display()
            )
        })?;
    let made = KeyStore::new(Arc::clone(&opened.state))
        .create(&req.name, &scopes, expires, clock.now_micros())
        .await;
    let made = match made {
        Ok(m) => m,
        Err(e) => {
            let _ = opened.log.close().await;
            return Err(e.into());
        }
    };
    let audit = AuditLog::new(
        Arc::clone(&opened.state),
        Arc::new(clock),
        AuditSection::default(),
    );
    let recorded = audit
        .record(Action {
            actor: "offline".to_string(),
            key_id: None,
            action: "keys.create".to_string(),
            path: String::new(),
            status: 201,
            from: None,
            detail: format!(
                "key {} ({}) made on the data directory {} with scopes {}",
                made.record.id,
                made.record.name,
                dir.display(),
                made.record.scopes.join(" ")
            ),
        })
        .await;
    opened.log.close().await?;
    recorded?;
    eprintln!(
        "made in the data directory {}{}",
        dir.display(),
        if new { " (new)" } else { "" }
    );
    Ok(CreatedKey {
        key: made.key,
        view: KeyView {
            id: made.record.id.clone(),
            name: made.record.name.clone(),
            scopes: made.record.scopes.clone(),
            created_at: crmbus_server::render::rfc3339(made.record.created_at_us),
            expires_at: made
                .record
                .expires_at_us
                .map(crmbus_server::render::rfc3339),
            revoked_at: None,
        },
    })
}
