//! `crmbus audit`: the server's audit log (admin): admin actions, dead-letter redrives
//! and discards, key changes, bursts of refused requests.

use clap::Args;
use crmbus_client::api::{AuditLogEntry, AuditLogQuery};

use crate::client::{block_on, print_json, print_table, Remote};

/// `crmbus audit` arguments.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Entries after this entry id (a page's `next_after`, or an entry's id).
    #[arg(long, value_name = "ID")]
    after: Option<String>,
    /// Entries per page (1–1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    limit: u64,
    /// Read every page to the end, not just the first.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    remote: Remote,
}

fn row(e: &AuditLogEntry) -> Vec<String> {
    let what = if e.path.is_empty() || e.action.starts_with("auth.") {
        e.action.clone()
    } else {
        // The route's method and the path it acted on.
        let method = e.action.split(' ').next().unwrap_or_default();
        format!("{method} {}", e.path)
    };
    vec![
        e.at.clone(),
        e.actor.clone(),
        what,
        e.status.to_string(),
        e.from.clone().unwrap_or_default(),
        e.detail.clone(),
    ]
}

/// Runs `crmbus audit`.
pub fn run(args: AuditArgs) -> anyhow::Result<()> {
    block_on(async move {
        let client = args.remote.client()?;
        let mut after = args.after.clone();
        let mut entries = Vec::new();
        loop {
            let page = client
                .server_audit(&AuditLogQuery {
                    after: after.clone(),
                    limit: Some(args.limit),
                })
                .await?;
            entries.extend(page.entries);
            match page.next_after {
                Some(next) if args.all => after = Some(next),
                next => {
                    after = next;
                    break;
                }
            }
        }
        if args.remote.json {
            print_json(&serde_json::json!({"entries": entries, "next_after": after}))?;
        } else {
            let rows: Vec<Vec<String>> = entries.iter().map(row).collect();
            print_table(
                &["AT", "ACTOR", "ACTION", "STATUS", "FROM", "DETAIL"],
                &rows,
            );
            if let Some(next) = after {
                eprintln!("more: crmbus audit --after {next} (or --all)");
            }
        }
        Ok(())
    })
}
