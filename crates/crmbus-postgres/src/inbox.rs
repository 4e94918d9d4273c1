//! The inbox: exactly-once side effects for a consumer. [`Inbox::record`] inserts the
//! event's (consumer, source, id) into `crmbus_inbox` inside the consumer's own
//! transaction; the consumer applies its side effect only when that returns true, and
//! commits both together. A second delivery of the event finds the row and changes nothing.
//!
//! ```no_run
//! # async fn handle(client: &mut tokio_postgres::Client, event: &crmbus::Event) -> Result<(), crmbus_postgres::OutboxError> {
//! use crmbus_postgres::Inbox;
//!
//! let inbox = Inbox::new("erp-sync");
//! let tx = client.transaction().await?;
//! if inbox.record(&tx, &event.source, &event.id).await? {
//!     tx.execute("UPDATE accounts SET won_deals = won_deals + 1 WHERE id = $1", &[&"acct-7"]).await?;
//! }
//! tx.commit().await?;
//! # Ok(()) }
//! ```

use tokio_postgres::GenericClient;

use crate::OutboxError;

/// One consumer's inbox.
#[derive(Debug, Clone)]
pub struct Inbox {
    consumer: String,
}

impl Inbox {
    /// The inbox of `consumer` (a name unique to the consumer, e.g. its subscription).
    pub fn new(consumer: impl Into<String>) -> Inbox {
        Inbox {
            consumer: consumer.into(),
        }
    }

    /// Records the event in `client`'s transaction; true the first time, false when this
    /// consumer has recorded it before (then skip the side effect).
    pub async fn record<C: GenericClient>(
        &self,
        client: &C,
        source: &str,
        event_id: &str,
    ) -> Result<bool, OutboxError> {
        let inserted = client
            .execute(
                "INSERT INTO crmbus_inbox (consumer, source, event_id) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&self.consumer, &source, &event_id],
            )
            .await?;
        Ok(inserted == 1)
    }
}
