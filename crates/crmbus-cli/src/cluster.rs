//! `crmbus cluster status`: the servers sharing a backend and who drives what.

use clap::Subcommand;

use crate::client::{block_on, print_json, print_table, Remote};

/// Cluster commands.
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// The live servers, their leases, and which server drives each subscription
    /// partition.
    Status {
        #[command(flatten)]
        remote: Remote,
    },
}

/// Runs a cluster command.
pub fn run(cmd: ClusterCommand) -> anyhow::Result<()> {
    block_on(async move {
        match cmd {
            ClusterCommand::Status { remote } => {
                let view = remote.client()?.cluster().await?;
                if remote.json {
                    return print_json(&view);
                }
                if !view.enabled {
                    println!("not in a cluster: this server's backend is single-node (or [cluster] enabled = false)");
                    return Ok(());
                }
                let me = view.member.clone().unwrap_or_default();
                let rows: Vec<Vec<String>> = view
                    .members
                    .iter()
                    .map(|m| {
                        vec![
                            if m.id == me {
                                format!("{} (this server)", m.id)
                            } else {
                                m.id.clone()
                            },
                            m.url.clone(),
                            m.owned_partitions.to_string(),
                            format!("{} ms", m.expires_in_ms),
                        ]
                    })
                    .collect();
                print_table(&["MEMBER", "URL", "PARTITIONS", "LEASE_LEFT"], &rows);
                if !view.partitions.is_empty() {
                    println!();
                    let rows: Vec<Vec<String>> = view
                        .partitions
                        .iter()
                        .map(|p| {
                            vec![
                                p.subscription.clone(),
                                p.partition.to_string(),
                                p.owner.clone(),
                                p.token.to_string(),
                                format!("{} ms", p.expires_in_ms),
                            ]
                        })
                        .collect();
                    print_table(
                        &["SUBSCRIPTION", "PARTITION", "OWNER", "TOKEN", "LEASE_LEFT"],
                        &rows,
                    );
                }
                Ok(())
            }
        }
    })
}
