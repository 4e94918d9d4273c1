//! The Redis Pub/Sub target: each delivery is `PUBLISH`ed as a structured CloudEvent on a
//! channel (by default `crm:events:<topic>`, the channels the in-process bus's listeners
//! subscribe to).
//!
//! At-most-once on Redis's side: Pub/Sub keeps nothing, so a listener that is not
//! subscribed when an event is published never sees it. On crmbus's side the mirror is a
//! subscription like any other: durable, in order per key, and retried (with the
//! subscription's policy) while Redis cannot be reached; the connection is re-made with
//! backoff by the redis crate's connection manager.

use async_trait::async_trait;
use crmbus::delivery::{Delivery, Handler, HandlerError};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

use super::record_attempt;

/// The default channel: `{topic}` is replaced by the topic's name.
pub const DEFAULT_CHANNEL: &str = "crm:events:{topic}";

/// One Redis Pub/Sub subscription's handler.
pub struct RedisPubsubHandler {
    subscription: String,
    client: redis::Client,
    channel: String,
    /// Made at the first delivery; reconnects by itself.
    conn: OnceCell<redis::aio::ConnectionManager>,
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
    /// A handler publishing on `channel` of the server at `client`.
    pub fn new(subscription: &str, client: redis::Client, channel: String) -> RedisPubsubHandler {
        RedisPubsubHandler {
            subscription: subscription.to_string(),
            client,
            channel,
            conn: OnceCell::new(),
        }
    }

    async fn connection(&self) -> Result<redis::aio::ConnectionManager, redis::RedisError> {
        let conn = self
            .conn
            .get_or_try_init(|| {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(5)))
                    .set_response_timeout(Some(Duration::from_secs(5)))
                    .set_number_of_retries(3);
                redis::aio::ConnectionManager::new_with_config(self.client.clone(), config)
            })
            .await?;
        Ok(conn.clone())
    }
}

#[async_trait]
impl Handler for RedisPubsubHandler {
    async fn handle(&self, d: Delivery) -> Result<(), HandlerError> {
        let body = serde_json::to_vec(&d.event)
            .map_err(|e| HandlerError::permanent(format!("cannot render the event: {e}")))?;
        let started = Instant::now();
        let result = async {
            let mut conn = self.connection().await?;
            redis::cmd("PUBLISH")
                .arg(&self.channel)
                .arg(body)
                .query_async::<i64>(&mut conn)
                .await
        }
        .await;
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
