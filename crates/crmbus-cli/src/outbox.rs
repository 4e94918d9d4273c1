//! `crmbus outbox (sql|init|relay|status)`: the transactional outbox on PostgreSQL.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use crmbus::Event;
use crmbus_client::api::ReadQuery;
use crmbus_client::ClientError;
use crmbus_postgres::{
    connect_pool, EventKey, OutboxSink, OutboxTable, Relay, RelayOptions, SinkError,
};

use crate::client::{print_json, Client, Remote};

/// Outbox commands.
#[derive(Subcommand, Debug)]
pub enum OutboxCommand {
    /// Print the SQL of the outbox and inbox tables (for teams that run their own
    /// migrations); `init` runs the same.
    Sql,
    /// Create (or update) the outbox and inbox tables in a database.
    Init {
        #[command(flatten)]
        db: Database,
    },
    /// Publish committed outbox rows to a crmbus server until Ctrl-C or SIGTERM (one relay
    /// per database publishes; others wait and take over).
    Relay(RelayArgs),
    /// The backlog, the age of its oldest row, failed rows and recent throughput.
    Status {
        #[command(flatten)]
        db: Database,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The database.
#[derive(Args, Debug, Clone)]
pub struct Database {
    /// PostgreSQL URL, like postgres://app@127.0.0.1:5432/crm.
    #[arg(long, env = "CRMBUS_OUTBOX_DATABASE_URL")]
    pub database_url: String,
}

/// `crmbus outbox relay`.
#[derive(Args, Debug)]
pub struct RelayArgs {
    #[command(flatten)]
    db: Database,
    /// The crmbus server to publish to.
    #[arg(long, env = "CRMBUS_URL", default_value = "http://127.0.0.1:7480")]
    url: String,
    /// Rows claimed per step.
    #[arg(long, default_value_t = 256)]
    batch_size: i64,
    /// How often to look for rows when no notification arrives, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    poll_interval_ms: u64,
    /// How long published rows are kept before they are deleted, in hours.
    #[arg(long, default_value_t = 168)]
    retention_hours: u64,
}

/// Runs an outbox command.
pub fn run(cmd: OutboxCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cmd {
            OutboxCommand::Sql => {
                println!("{}", crmbus_postgres::sql::OUTBOX_SQL);
                println!("{}", crmbus_postgres::sql::INBOX_SQL);
            }
            OutboxCommand::Init { db } => {
                let table = table(&db)?;
                let mut client = table
                    .pool()
                    .get()
                    .await
                    .with_context(|| format!("connecting to {}", shown(&db.database_url)))?;
                crmbus_postgres::sql::install(&mut **client).await?;
                println!(
                    "crmbus_outbox and crmbus_inbox are ready in {}",
                    shown(&db.database_url)
                );
            }
            OutboxCommand::Status { db, json } => {
                let table = table(&db)?;
                let status = table
                    .status()
                    .await
                    .with_context(|| format!("reading the outbox of {}", shown(&db.database_url)))?;
                let failed = table.failed_rows(20).await?;
                if json {
                    print_json(&serde_json::json!({"status": status, "failed": failed}))?;
                } else {
                    println!("pending rows:            {}", status.pending);
                    println!("oldest pending:          {:.1} s", status.oldest_pending_seconds);
                    println!("published, last minute:  {}", status.published_last_minute);
                    println!("published, still kept:   {}", status.published_kept);
                    println!("failed rows:             {}", status.failed);
                    for f in failed {
                        println!(
                            "  row {} ({} {}) at {}: {}",
                            f.id,
                            f.event_type.unwrap_or_default(),
                            f.event_id.unwrap_or_default(),
                            f.failed_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                            f.error.unwrap_or_default()
                        );
                    }
                    if status.failed > 0 {
                        println!("  (later rows of their subjects wait; fix the cause, then: UPDATE crmbus_outbox SET failed_at = NULL, last_error = NULL WHERE id = …)");
                    }
                }
            }
            OutboxCommand::Relay(args) => {
                let remote = Remote {
                    url: args.url.clone(),
                    api_key: std::env::var("CRMBUS_API_KEY").ok(),
                    ca_cert: std::env::var_os("CRMBUS_CA_CERT").map(Into::into),
                    json: false,
                };
                let sink = Arc::new(HttpSink {
                    client: remote.client()?,
                });
                let relay = Relay::new(
                    RelayOptions {
                        batch_size: args.batch_size.max(1),
                        poll_interval: Duration::from_millis(args.poll_interval_ms.max(1)),
                        retention: Duration::from_secs(args.retention_hours.saturating_mul(3600)),
                        ..RelayOptions::new(args.db.database_url.clone())
                    },
                    sink,
                )?;
                eprintln!(
                    "crmbus outbox relay: {} -> {}; stop with Ctrl-C or SIGTERM",
                    shown(&args.db.database_url),
                    args.url
                );
                let (stop, stopped) = tokio::sync::watch::channel(false);
                let running = tokio::spawn(async move { relay.run(stopped).await });
                crate::serve::wait_for_signal().await;
                let _ = stop.send(true);
                running.await?;
            }
        }
        Ok(())
    })
}

fn table(db: &Database) -> anyhow::Result<OutboxTable> {
    Ok(OutboxTable::new(
        connect_pool(&db.database_url, 2)
            .with_context(|| format!("--database-url {}", shown(&db.database_url)))?,
    ))
}

/// The URL without its password, for messages.
fn shown(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The relay's sink when it runs apart from the server: the HTTP API.
struct HttpSink {
    client: Client,
}

/// How long one request to the server may take before it counts as failed (and is retried).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The problem codes with which crmbus refuses the events themselves: sending them again
/// gets the same answer, so the row is set aside. Anything else — another status, a
/// proxy's answer, no answer — may pass later and is retried.
const REFUSALS: &[&str] = &[
    "invalid_event",
    "schema_violation",
    "topic_not_found",
    "payload_too_large",
];

fn client_error(e: ClientError) -> SinkError {
    match e.code() {
        Some(code) if REFUSALS.contains(&code) => SinkError::permanent(e.to_string()),
        _ => SinkError::transient(e.to_string()),
    }
}

async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, SinkError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(answer) => answer.map_err(client_error),
        Err(_) => Err(SinkError::transient(format!(
            "no answer from the server within {REQUEST_TIMEOUT:?}"
        ))),
    }
}

#[async_trait]
impl OutboxSink for HttpSink {
    async fn publish(&self, events: Vec<Event>, topics: &[String]) -> Result<(), SinkError> {
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        timed(self.client.publish_batch(&topics, &events))
            .await
            .map(|_| ())
    }

    async fn stored_since(
        &self,
        topic: &str,
        since: DateTime<Utc>,
        keys: &HashSet<EventKey>,
    ) -> Result<HashSet<EventKey>, SinkError> {
        let info = match tokio::time::timeout(REQUEST_TIMEOUT, self.client.topic(topic)).await {
            Ok(Ok(info)) => info,
            Ok(Err(e)) if e.code() == Some("topic_not_found") => return Ok(HashSet::new()),
            Ok(Err(e)) => return Err(SinkError::transient(e.to_string())),
            Err(_) => return Err(SinkError::transient("no answer from the server")),
        };
        let mut found = HashSet::new();
        for partition in 0..info.partitions {
            let mut query = ReadQuery {
                partition: Some(partition),
                from_time: Some(since.to_rfc3339_opts(SecondsFormat::Micros, true)),
                limit: Some(1000),
                ..ReadQuery::default()
            };
            loop {
                let page = self
                    .client
                    .read(topic, &query)
                    .await
                    .map_err(client_error)?;
                for stored in &page.events {
                    let key = (
                        stored.event["source"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        stored.event["id"].as_str().unwrap_or_default().to_string(),
                    );
                    if keys.contains(&key) {
                        found.insert(key);
                    }
                }
                let next = page.next.get(&partition.to_string()).copied();
                // A short page is not the end (a read may stop early); an empty one is.
                if page.events.is_empty() || found.len() == keys.len() {
                    break;
                }
                query.from_time = None;
                query.from = next;
            }
            if found.len() == keys.len() {
                break;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            shown("postgres://app:s3cret@db:5432/crm"),
            "postgres://app:***@db:5432/crm"
        );
        assert_eq!(
            shown("postgres://app@db:5432/crm"),
            "postgres://app@db:5432/crm"
        );
        assert_eq!(shown("host=db user=app"), "host=db user=app");
    }
}
