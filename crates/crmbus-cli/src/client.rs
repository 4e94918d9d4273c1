//! What the CLI's server commands share: the server (`--url`, `CRMBUS_URL`) reached
//! through `crmbus-client`, `--json`, and printing tables.

use std::fmt::Display;

use clap::Args;
pub use crmbus_client::Client;
use serde::Serialize;

/// Options every command that talks to a server takes.
#[derive(Args, Debug, Clone)]
pub struct Remote {
    /// The crmbus server.
    #[arg(long, env = "CRMBUS_URL", default_value = "http://127.0.0.1:7480")]
    pub url: String,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

impl Remote {
    /// A typed client of the server `--url` names.
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(&self.url)?)
    }
}

/// Runs an async command on a small runtime.
pub fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// Prints an answer as JSON on one line.
pub fn print_json<T: Serialize + ?Sized>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

/// Prints rows as a table with a header, columns padded to their widest cell.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// Prints a subscription cursor as a table.
pub fn print_cursors(partitions: &[crmbus_client::api::CursorView]) {
    let rows: Vec<Vec<String>> = partitions
        .iter()
        .map(|c| {
            vec![
                c.partition.to_string(),
                c.committed.to_string(),
                c.next_offset.to_string(),
                c.lag.to_string(),
            ]
        })
        .collect();
    print_table(&["PARTITION", "COMMITTED", "NEXT_OFFSET", "LAG"], &rows);
}

/// An optional value as a table cell (`-` when absent).
pub fn opt<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}
