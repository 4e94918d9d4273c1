//! The Redis Pub/Sub target: each delivery is `PUBLISH`ed as a structured CloudEvent on a
//! channel (by default `crm:events:<topic>`, the channels the in-process bus's listeners
//! subscribe to).
//!
//! At-most-once on Redis's side: Pub/Sub keeps nothing, so a listener that is not
//! subscribed when an event is published never sees it. On crmbus's side the mirror is a
//! subscription like any other: durable, in order per key, and retried (with the
//! subscription's policy) while Redis cannot be reached; the connection is re-made with
//! backoff by the redis crate's connection manager. The server's addresses are checked
//! against the [`TargetGuard`] before the first connection (so a Redis on a private
//! address must be listed in `[push] allowed_targets`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use crmbus::delivery::{Delivery, Handler, HandlerError};
use tokio::sync::{watch, OnceCell};

use super::guard::TargetGuard;
use super::webhook::cancelled;
use super::{body_of, record_attempt};
use crate::transform::Transform;

/// The default channel: `{topic}` is replaced by the topic's name.
pub const DEFAULT_CHANNEL: &str = "crm:events:{topic}";

/// One Redis Pub/Sub subscription's handler.
pub struct RedisPubsubHandler {
    subscription: String,
    client: redis::Client,
    channel: String,
    /// Made at the first delivery; reconnects by itself.
    conn: OnceCell<redis::aio::ConnectionManager>,
    /// Checks the server's addresses before the first connection.
    guard: Arc<TargetGuard>,
    /// Turns true when the subscription stops: a publish in flight ends at once.
    cancel: watch::Receiver<bool>,
    /// The subscription's transformation: the message is the JSON it shapes.
    transform: Option<Arc<Transform>>,
}

/// The channel a target's template names for `topic`.
pub fn channel_for(template: Option<&str>, topic: &str) -> String {
    template
        .unwrap_or(DEFAULT_CHANNEL)
        .replace("{topic}", topic)
}

/// Checks a Redis URL, naming what is wrong.
pub fn parse_url(url: &str) -> Result<redis::Client, String> {
    redis::Client::open(url).map_err(|e| format!("not a Redis URL: {e}"))
}

impl RedisPubsubHandler {
    /// A handler publishing on `channel` of the server at `client`, connecting only to
    /// addresses `guard` allows, stopping when `cancel` turns true.
    pub fn new(
        subscription: &str,
        client: redis::Client,
        channel: String,
        guard: Arc<TargetGuard>,
        cancel: watch::Receiver<bool>,
        transform: Option<Arc<Transform>>,
    ) -> RedisPubsubHandler {
        RedisPubsubHandler {
            subscription: subscription.to_string(),
            client,
            channel,
            conn: OnceCell::new(),
            guard,
            cancel,
            transform,
        }
    }

    async fn connection(&self) -> Result<redis::aio::ConnectionManager, String> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                check_server(&self.client, &self.guard).await?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(5)))
                    .set_response_timeout(Some(Duration::from_secs(5)))
                    .set_number_of_retries(3);
                redis::aio::ConnectionManager::new_with_config(self.client.clone(), config)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await?;
        Ok(conn.clone())
    }
}

/// Checks the Redis server a target names against the guard: a TCP host's every address
/// (resolved now), a Unix socket as a local address.
pub async fn check_server(client: &redis::Client, guard: &TargetGuard) -> Result<(), String> {
    match client.get_connection_info().addr() {
        redis::ConnectionAddr::Tcp(host, port)
        | redis::ConnectionAddr::TcpTls { host, port, .. } => {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), *port))
                .await
                .map_err(|e| format!("cannot resolve {host}: {e}"))?
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no address"));
            }
            for a in addrs {
                guard
                    .check(a.ip())
                    .map_err(|why| format!("refused: {host} resolves to {why}"))?;
            }
            Ok(())
        }
        _ => guard
            .check(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
            .map_err(|_| {
                "refused: a Unix socket is local; [push] allow_private_targets = true allows it"
                    .to_string()
            }),
    }
}

#[async_trait]
impl Handler for RedisPubsubHandler {
    async fn handle(&self, d: Delivery) -> Result<(), HandlerError> {
        let (body, _) = body_of(&d.event, self.transform.as_deref())?;
        let started = Instant::now();
        let publish = async {
            let mut conn = self.connection().await?;
            redis::cmd("PUBLISH")
                .arg(&self.channel)
                .arg(body)
                .query_async::<i64>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        };
        let result = tokio::select! {
            r = publish => r,
            _ = cancelled(&self.cancel) => {
                return Err(HandlerError::interrupted("the subscription is stopping"));
            }
        };
        match result {
            Ok(_) => {
                record_attempt(&self.subscription, "redis_pubsub", "ok", started.elapsed());
                Ok(())
            }
            Err(e) => {
                record_attempt(
                    &self.subscription,
                    "redis_pubsub",
                    "error",
                    started.elapsed(),
                );
                Err(HandlerError::transient(format!(
                    "PUBLISH on {} failed: {e}",
                    self.channel
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_name_the_topic() {
        assert_eq!(channel_for(None, "deals"), "crm:events:deals");
        assert_eq!(
            channel_for(Some("app.{topic}.events"), "leads"),
            "app.leads.events"
        );
        assert_eq!(channel_for(Some("fixed"), "leads"), "fixed");
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("redis://127.0.0.1:6379/0").is_ok());
    }
}
