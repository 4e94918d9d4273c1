//! [`Leader`]: the relay's own connection (not from the pool) that holds the relay lock
//! and listens for the outbox trigger's notifications.
//!
//! One relay per database publishes at a time: the one whose session holds the advisory
//! lock [`RELAY_LOCK`]. Others wait and take over when that session ends (the relay
//! stopped, crashed, or lost its connection: PostgreSQL releases a session's locks when
//! the session ends). A single publisher is what keeps the rows of one subject in order.
//! The connection is driven with `poll_message`, so notifications are seen; pooled
//! connections would drop them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::sql::NOTIFY_CHANNEL;
use crate::store::pg_config;
use crate::OutboxError;

/// The advisory lock (two 32-bit keys) a relay holds while it publishes.
pub const RELAY_LOCK: (i32, i32) = (1_668_441_442, 1);

/// A connection that may hold the relay lock and receives the outbox's notifications.
pub struct Leader {
    client: Client,
    alive: Arc<AtomicBool>,
    woken: Arc<Notify>,
    closed: Arc<Notify>,
}

impl Leader {
    /// Opens the connection and starts listening (without taking the lock yet).
    pub async fn connect(url: &str) -> Result<Leader, OutboxError> {
        let (client, mut connection) = pg_config(url)?.connect(NoTls).await?;
        let alive = Arc::new(AtomicBool::new(true));
        let woken = Arc::new(Notify::new());
        let closed = Arc::new(Notify::new());
        {
            let (alive, woken, closed) = (alive.clone(), woken.clone(), closed.clone());
            tokio::spawn(async move {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(message) = messages.next().await {
                    match message {
                        Ok(AsyncMessage::Notification(_)) => woken.notify_one(),
                        Ok(_) => {}
                        Err(error) => {
                            tracing::warn!(%error, "outbox relay: leader connection failed");
                            break;
                        }
                    }
                }
                alive.store(false, Ordering::SeqCst);
                closed.notify_waiters();
                woken.notify_one();
            });
        }
        // The server probes this session's socket too, so that if the relay's host dies the
        // session, and with it the lock, ends within about 25 s instead of the system's
        // default of hours; then another relay takes over.
        client
            .batch_execute(&format!(
                "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5;
                 SET tcp_keepalives_count = 3; LISTEN {NOTIFY_CHANNEL}"
            ))
            .await?;
        Ok(Leader {
            client,
            alive,
            woken,
            closed,
        })
    }

    /// Tries to take the relay lock; true when this connection now holds it.
    pub async fn try_lock(&self) -> Result<bool, OutboxError> {
        let row = self
            .client
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[&RELAY_LOCK.0, &RELAY_LOCK.1],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    /// The connection itself: the relay claims and marks rows through it, so that those
    /// writes stop with the session that holds the lock.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether the connection (and so the lock, once taken) is still there.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst) && !self.client.is_closed()
    }

    /// Resolves at the next notification (or when the connection closes).
    pub async fn woken(&self) {
        self.woken.notified().await
    }

    /// Resolves when the connection closes.
    pub async fn closed(&self) {
        let notified = self.closed.notified();
        if !self.is_alive() {
            return;
        }
        notified.await
    }
}
