//! The HTTP client the CLI's server commands share: the base URL (`--url`, `CRMBUS_URL`),
//! `--json`, and errors turned into messages people can act on.

use anyhow::{anyhow, bail};
use clap::Args;
use serde_json::Value;

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

/// A client of one server.
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// A client of the server `remote` names.
    pub fn new(remote: &Remote) -> anyhow::Result<Client> {
        let base = remote.url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--url {base:?} must start with http:// or https://");
        }
        Ok(Client {
            base,
            http: reqwest::Client::new(),
        })
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The underlying HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends a request and returns its JSON body (or `null`), or an error that says what
    /// the server answered, or that it could not be reached.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        Self::answer(resp).await
    }

    /// The error for a request that never got an answer.
    pub fn unreachable(&self, e: reqwest::Error) -> anyhow::Error {
        if e.is_connect() || e.is_timeout() {
            anyhow!(
                "cannot reach the crmbus server at {}: is `crmbus serve` running there? (set --url or CRMBUS_URL)",
                self.base
            )
        } else {
            anyhow!("request to {} failed: {e}", self.base)
        }
    }

    /// A response's JSON body, or its problem document as an error message.
    pub async fn answer(resp: reqwest::Response) -> anyhow::Result<Value> {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let body: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok(body);
        }
        let mut msg = match body.get("detail").and_then(Value::as_str) {
            Some(d) => format!("{d} (HTTP {})", status.as_u16()),
            None => format!("the server answered HTTP {}: {body}", status.as_u16()),
        };
        if let Some(errors) = body.get("errors").and_then(Value::as_array) {
            for e in errors {
                msg.push_str(&format!(
                    "\n  {}: {}",
                    e.get("field").and_then(Value::as_str).unwrap_or("?"),
                    e.get("message").and_then(Value::as_str).unwrap_or("?")
                ));
            }
        }
        Err(anyhow!(msg))
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(self.url(path))).await
    }

    /// POST `body` as JSON to `path`.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    /// DELETE `path`.
    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.delete(self.url(path))).await
    }
}

/// Runs an async command on a small runtime.
pub fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// Prints a JSON value on one line.
pub fn print_json(v: &Value) {
    println!("{v}");
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

/// Table rows from a JSON array of objects: one row per object, one cell per field.
pub fn rows(list: &Value, fields: &[&str]) -> Vec<Vec<String>> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| fields.iter().map(|f| cell(&item[*f])).collect())
                .collect()
        })
        .unwrap_or_default()
}

/// Prints a subscription cursor (`[{partition, committed, next_offset, lag}]`) as a table.
pub fn print_cursors(partitions: &Value) {
    print_table(
        &["PARTITION", "COMMITTED", "NEXT_OFFSET", "LAG"],
        &rows(
            partitions,
            &["partition", "committed", "next_offset", "lag"],
        ),
    );
}

/// A JSON value as a table cell.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Percent-encodes a path segment or query value.
pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
