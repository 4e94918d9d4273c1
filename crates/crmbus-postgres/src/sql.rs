//! The tables' SQL: the outbox contract ([`OUTBOX_SQL`]) and the inbox ([`INBOX_SQL`]), and
//! [`install`], which runs both (what `crmbus outbox init` does). Both scripts are safe to
//! run twice; teams that run their own migrations take them from `crmbus outbox sql`.

use tokio_postgres::GenericClient;

use crate::OutboxError;

/// The outbox table, its indexes and triggers (`sql/outbox.sql`), with the contract in its
/// comments.
pub const OUTBOX_SQL: &str = include_str!("../sql/outbox.sql");

/// The inbox table (`sql/inbox.sql`), with how a consumer uses it in its comments.
pub const INBOX_SQL: &str = include_str!("../sql/inbox.sql");

/// The channel the outbox's trigger notifies on commit.
pub const NOTIFY_CHANNEL: &str = "crmbus_outbox";

/// Creates (or updates) the outbox and inbox tables in one transaction.
pub async fn install<C: GenericClient>(client: &mut C) -> Result<(), OutboxError> {
    // Two installs at once would race on CREATE ... IF NOT EXISTS; serialize them.
    let tx = client.transaction().await?;
    tx.batch_execute("SELECT pg_advisory_xact_lock(1668441442, 0)")
        .await?;
    tx.batch_execute(OUTBOX_SQL).await?;
    tx.batch_execute(INBOX_SQL).await?;
    tx.commit().await?;
    Ok(())
}
