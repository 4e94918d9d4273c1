//! [`OutboxError`]: what the outbox, the relay and the inbox can fail with.

/// An outbox, relay or inbox failure.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The database URL could not be parsed.
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// A query or the connection failed.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection could be taken from the pool (the database is unreachable, or it
    /// refused the connection).
    #[error("PostgreSQL connection: {0}")]
    Pool(String),
    /// The bus refused or failed a publish; see [`crate::SinkError`].
    #[error("publishing: {0}")]
    Sink(#[from] crate::SinkError),
    /// The relay's leader connection (which holds the lock and listens) was lost.
    #[error("the relay's leader connection to PostgreSQL was lost")]
    LeadershipLost,
    /// A step took too long (a stalled bus or database); the relay gave up its lock.
    #[error("a relay step took longer than {0:?}; giving the lock up and starting again")]
    StepTimeout(std::time::Duration),
}

/// A PostgreSQL failure of the state store or the leases as a [`crmbus::LogError`], naming
/// what was being done.
pub(crate) fn state_err(what: &str, e: impl std::fmt::Display) -> crmbus::LogError {
    crmbus::LogError::Backend {
        message: format!("PostgreSQL, {what}: {e}"),
        source: None,
    }
}

/// A connection of `pool`, or [`crmbus::LogError::Unavailable`].
pub(crate) async fn state_client(
    pool: &deadpool_postgres::Pool,
) -> Result<deadpool_postgres::Object, crmbus::LogError> {
    pool.get()
        .await
        .map_err(|e| crmbus::LogError::Unavailable(format!("PostgreSQL: {e}")))
}

impl From<deadpool_postgres::PoolError> for OutboxError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => OutboxError::Postgres(e),
            other => OutboxError::Pool(other.to_string()),
        }
    }
}
