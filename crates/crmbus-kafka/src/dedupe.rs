//! Producer dedupe by (`source`, `id`), which Kafka does not give (its idempotent producer
//! only absorbs its own retries within one producer session): an index in PostgreSQL,
//! table `crmbus_kafka_dedupe`, one row per (namespace, topic, [`crmbus::dedupe_hash`]) with
//! the first append's partition and offset and when the row stops counting.
//!
//! An append looks its events up first, appends the others, then records them. So within
//! the window a retry of an acknowledged append is absorbed, by any server of the
//! namespace. Two limits, documented in the crate docs: an append cut short between the
//! broker's acknowledgement and the record (a crash, a lost database) leaves events that a
//! retry appends again; and two servers appending the same new event at the same moment
//! may both append it (one process serializes its own appends per topic).

use std::collections::HashMap;
use std::time::Duration;

use crmbus::LogError;
use deadpool_postgres::{GenericClient, Pool};

/// The table (safe to run twice).
const DEDUPE_SQL: &str = "
CREATE TABLE IF NOT EXISTS crmbus_kafka_dedupe (
    prefix      text        NOT NULL,
    topic       text        NOT NULL,
    hash        bigint      NOT NULL,
    partition   integer     NOT NULL,
    first_offset bigint     NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (prefix, topic, hash)
);
CREATE INDEX IF NOT EXISTS crmbus_kafka_dedupe_expiry ON crmbus_kafka_dedupe (expires_at);
";

fn pg_err(what: &str, e: impl std::fmt::Display) -> LogError {
    LogError::Backend {
        message: format!("PostgreSQL, {what}: {e}"),
        source: None,
    }
}

/// The dedupe index of one namespace.
#[derive(Clone)]
pub(crate) struct DedupeIndex {
    pool: Pool,
    prefix: String,
    window: Duration,
}

impl DedupeIndex {
    /// Creates the table when missing.
    pub async fn open(pool: Pool, prefix: &str, window: Duration) -> Result<DedupeIndex, LogError> {
        crmbus_postgres::state::install_schema(&pool, 2, DEDUPE_SQL, "the dedupe table").await?;
        Ok(DedupeIndex {
            pool,
            prefix: prefix.to_string(),
            window,
        })
    }

    /// False when the window is zero: nothing is looked up or recorded.
    pub fn enabled(&self) -> bool {
        !self.window.is_zero()
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, LogError> {
        self.pool
            .get()
            .await
            .map_err(|e| LogError::Unavailable(format!("PostgreSQL: {e}")))
    }

    /// The first appends, within the window, of those of `hashes` that `topic` has seen:
    /// hash → (partition, offset).
    pub async fn lookup(
        &self,
        topic: &str,
        hashes: &[u64],
    ) -> Result<HashMap<u64, (u32, u64)>, LogError> {
        if hashes.is_empty() || !self.enabled() {
            return Ok(HashMap::new());
        }
        let keys: Vec<i64> = hashes.iter().map(|h| *h as i64).collect();
        let rows = self
            .client()
            .await?
            .query(
                "SELECT hash, partition, first_offset FROM crmbus_kafka_dedupe \
                 WHERE prefix = $1 AND topic = $2 AND hash = ANY($3) \
                   AND expires_at > clock_timestamp()",
                &[&self.prefix, &topic, &keys],
            )
            .await
            .map_err(|e| pg_err("looking up producer dedupe", e))?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, i64>(0) as u64,
                    (r.get::<_, i32>(1) as u32, r.get::<_, i64>(2) as u64),
                )
            })
            .collect())
    }

    /// Records the appends of `rows` (hash, partition, offset) for the window from now. A
    /// row still in its window is kept (it is the first append); an expired one replaced.
    pub async fn record(&self, topic: &str, rows: &[(u64, u32, u64)]) -> Result<(), LogError> {
        if rows.is_empty() || !self.enabled() {
            return Ok(());
        }
        let hashes: Vec<i64> = rows.iter().map(|r| r.0 as i64).collect();
        let parts: Vec<i32> = rows.iter().map(|r| r.1 as i32).collect();
        let offsets: Vec<i64> = rows.iter().map(|r| r.2 as i64).collect();
        let window_ms = self.window.as_secs_f64() * 1000.0;
        self.client()
            .await?
            .execute(
                "INSERT INTO crmbus_kafka_dedupe AS d \
                   (prefix, topic, hash, partition, first_offset, expires_at) \
                 SELECT $1, $2, h, p, o, clock_timestamp() + $6 * interval '1 millisecond' \
                 FROM unnest($3::bigint[], $4::integer[], $5::bigint[]) AS t(h, p, o) \
                 ON CONFLICT (prefix, topic, hash) DO UPDATE \
                   SET partition = EXCLUDED.partition, first_offset = EXCLUDED.first_offset, \
                       expires_at = EXCLUDED.expires_at \
                   WHERE d.expires_at <= clock_timestamp()",
                &[&self.prefix, &topic, &hashes, &parts, &offsets, &window_ms],
            )
            .await
            .map_err(|e| pg_err("recording producer dedupe", e))?;
        Ok(())
    }

    /// Removes every row of `topic` (the topic was deleted).
    pub async fn forget_topic(&self, topic: &str) -> Result<(), LogError> {
        self.client()
            .await?
            .execute(
                "DELETE FROM crmbus_kafka_dedupe WHERE prefix = $1 AND topic = $2",
                &[&self.prefix, &topic],
            )
            .await
            .map_err(|e| pg_err("forgetting a topic's dedupe rows", e))?;
        Ok(())
    }

    /// Removes rows past their window, in bounded steps: how many went.
    pub async fn prune(&self) -> Result<u64, LogError> {
        let client = self.client().await?;
        let mut total = 0;
        loop {
            let n = client
                .execute(
                    "DELETE FROM crmbus_kafka_dedupe WHERE ctid IN ( \
                       SELECT ctid FROM crmbus_kafka_dedupe \
                       WHERE prefix = $1 AND expires_at <= clock_timestamp() LIMIT 10000)",
                    &[&self.prefix],
                )
                .await
                .map_err(|e| pg_err("pruning producer dedupe", e))?;
            total += n;
            if n < 10000 {
                return Ok(total);
            }
        }
    }

    /// Removes every row of the namespace (purge).
    pub async fn purge(&self) -> Result<u64, LogError> {
        self.client()
            .await?
            .execute(
                "DELETE FROM crmbus_kafka_dedupe WHERE prefix = $1",
                &[&self.prefix],
            )
            .await
            .map_err(|e| pg_err("purging producer dedupe", e))
    }
}
