//! What the CLI's server commands share: the server (`--url`, `CRMBUS_URL`) reached
//! through `crmbus-client` with an API key (`--api-key`, `CRMBUS_API_KEY`), `--json`, and
//! printing tables.

use std::fmt::Display;

use anyhow::{bail, Context};
use clap::Args;
pub use crmbus_client::Client;
use serde::Serialize;

/// Options every command that talks to a server takes.
#[derive(Args, Debug, Clone)]
pub struct Remote {
    /// The crmbus server.
    #[arg(long, env = "CRMBUS_URL", default_value = "http://127.0.0.1:7480")]
    pub url: String,
    /// The API key (`crmbus_…`) sent with every request; better given in the environment
    /// than on the command line, where `ps` shows it.
    #[arg(long, env = "CRMBUS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// A PEM file of CA certificates to trust for an https:// server (its self-signed
    /// certificate, or a private CA's), beside the system's roots.
    #[arg(long, env = "CRMBUS_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

impl Remote {
    /// A typed client of the server `--url` names, after checking the URL for the mistakes
    /// people make (no scheme, https, a path such as /v1), each named with its source.
    pub fn client(&self) -> anyhow::Result<Client> {
        check_url(&self.url, self.source())?;
        let client = match &self.ca_cert {
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("--ca-cert {}: cannot read it", path.display()))?;
                Client::with_ca_certs(&self.url, &pem)
                    .with_context(|| format!("--ca-cert {}", path.display()))?
            }
            None => Client::new(&self.url)?,
        };
        Ok(match &self.api_key {
            Some(k) => client.with_api_key(k.clone()),
            None => client,
        })
    }

    /// Where the URL came from, for messages.
    fn source(&self) -> &'static str {
        match std::env::var("CRMBUS_URL") {
            Ok(v) if v == self.url => "CRMBUS_URL",
            _ => "--url",
        }
    }
}

/// The server's base URL is `http://HOST:PORT`; anything else gets a message that says
/// what to change.
fn check_url(url: &str, source: &str) -> anyhow::Result<()> {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        bail!(
            "{source} {url:?} has no http:// or https:// in front: give the server's base URL, like http://127.0.0.1:7480"
        );
    };
    let scheme = if url.starts_with("https://") {
        "https"
    } else {
        "http"
    };
    if let Some((host, path)) = rest.split_once('/') {
        if !path.trim_matches('/').is_empty() {
            bail!(
                "{source} {url:?}: give the server's base URL without a path (/{path}), like {scheme}://{host}"
            );
        }
    }
    Ok(())
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

/// `n thing` or `n things`.
pub fn plural(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// An optional value as a table cell (`-` when absent).
pub fn opt<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_mistakes_are_named_with_their_source() {
        assert!(check_url("http://127.0.0.1:7480", "--url").is_ok());
        assert!(check_url("http://127.0.0.1:7480/", "--url").is_ok());
        let e = check_url("127.0.0.1:7480", "CRMBUS_URL")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("CRMBUS_URL") && e.contains("http://"), "{e}");
        let e = check_url("http://127.0.0.1:7480/v1", "--url")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("without a path (/v1)") && e.contains("http://127.0.0.1:7480"),
            "{e}"
        );
        // HTTPS (a server with [server] tls_cert) is a base URL like any other.
        assert!(check_url("https://crm.example:7480", "--url").is_ok());
        let e = check_url("https://crm.example/v1", "--url")
            .unwrap_err()
            .to_string();
        assert!(e.contains("like https://crm.example"), "{e}");
    }
}
