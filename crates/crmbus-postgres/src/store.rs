//! [`OutboxTable`]: the queries the relay and `crmbus outbox status` run against
//! `crmbus_outbox` through a connection pool.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::{GenericClient, NoTls};

use crate::OutboxError;

/// One claimed outbox row.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// The row's id (its place in the order).
    pub id: i64,
    /// The topics to publish to.
    pub topics: Vec<String>,
    /// The structured CloudEvent as written.
    pub event: Value,
    /// How many times a relay has claimed the row, this claim included.
    pub attempts: i32,
    /// When a relay first claimed it (the database's clock).
    pub first_attempt_at: DateTime<Utc>,
}

/// What `crmbus outbox status` shows, and the relay's metrics.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OutboxStatus {
    /// Rows committed and not yet published (failed rows not counted).
    pub pending: i64,
    /// Age of the oldest pending row, in seconds (0 when none).
    pub oldest_pending_seconds: f64,
    /// Rows crmbus refused (`failed_at` set): they wait for someone to fix and retry them.
    pub failed: i64,
    /// Rows published in the last minute.
    pub published_last_minute: i64,
    /// Published rows still kept (deleted after the retention period).
    pub published_kept: i64,
}

/// A failed row, as `crmbus outbox status` lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FailedRow {
    /// The row's id.
    pub id: i64,
    /// Its event's `type`.
    pub event_type: Option<String>,
    /// Its event's `id`.
    pub event_id: Option<String>,
    /// Why crmbus refused it.
    pub error: Option<String>,
    /// When.
    pub failed_at: DateTime<Utc>,
}

/// `crmbus_outbox` behind a connection pool.
#[derive(Clone)]
pub struct OutboxTable {
    pool: Pool,
}

/// The connection settings of `url` (`postgres://user@host:port/db`), with a connect
/// timeout and TCP keepalives, so that a database that went away is noticed in seconds
/// rather than hours.
pub fn pg_config(url: &str) -> Result<tokio_postgres::Config, OutboxError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| OutboxError::InvalidUrl(e.to_string()))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3);
    Ok(config)
}

/// A pool of connections to the database at `url` (`postgres://user@host:port/db`).
pub fn connect_pool(url: &str, max_size: usize) -> Result<Pool, OutboxError> {
    let config = pg_config(url)?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            // A connection closed by a database restart is noticed and replaced.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| OutboxError::Pool(e.to_string()))
}

impl OutboxTable {
    /// The table in the database behind `pool`.
    pub fn new(pool: Pool) -> OutboxTable {
        OutboxTable { pool }
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Claims up to `limit` pending rows through `client`, oldest first, counting the
    /// attempt and committing it before returning, so that a relay that dies after
    /// publishing leaves a trace: a row claimed again has `attempts > 1`. Rows another claim
    /// holds are skipped, and so are the later rows of a subject that has a row set aside
    /// (they wait for it). A row whose `topics` cannot be read is set aside here.
    pub async fn claim_with<C: GenericClient>(
        &self,
        client: &C,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, OutboxError> {
        let rows = client
            .query(
                "UPDATE crmbus_outbox o
                    SET attempts = o.attempts + 1,
                        first_attempt_at = coalesce(o.first_attempt_at, clock_timestamp())
                   FROM (SELECT c.id FROM crmbus_outbox c
                          WHERE c.published_at IS NULL AND c.failed_at IS NULL
                            AND NOT EXISTS (
                                SELECT 1 FROM crmbus_outbox f
                                 WHERE f.failed_at IS NOT NULL
                                   AND f.event ->> 'subject' = c.event ->> 'subject'
                                   AND f.id < c.id)
                          ORDER BY c.id LIMIT $1
                          FOR UPDATE OF c SKIP LOCKED) c
                  WHERE o.id = c.id
              RETURNING o.id, o.topics, o.event, o.attempts, o.first_attempt_at",
                &[&limit],
            )
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for r in rows {
            let id: i64 = r.try_get(0)?;
            match r.try_get::<_, Vec<String>>(1) {
                Ok(topics) => claimed.push(OutboxRow {
                    id,
                    topics,
                    event: r.try_get(2)?,
                    attempts: r.try_get(3)?,
                    first_attempt_at: r.try_get(4)?,
                }),
                Err(_) => {
                    self.mark_failed(id, "topics must be a one-dimensional array of topic names")
                        .await?
                }
            }
        }
        claimed.sort_by_key(|r| r.id);
        Ok(claimed)
    }

    /// [`OutboxTable::claim_with`] on a connection from the pool.
    pub async fn claim(&self, limit: i64) -> Result<Vec<OutboxRow>, OutboxError> {
        let client = self.pool.get().await?;
        self.claim_with(&**client, limit).await
    }

    /// Marks rows published through `client`.
    pub async fn mark_published_with<C: GenericClient>(
        &self,
        client: &C,
        ids: &[i64],
    ) -> Result<u64, OutboxError> {
        if ids.is_empty() {
            return Ok(0);
        }
        Ok(client
            .execute(
                "UPDATE crmbus_outbox SET published_at = clock_timestamp()
                  WHERE id = ANY($1) AND published_at IS NULL",
                &[&ids],
            )
            .await?)
    }

    /// [`OutboxTable::mark_published_with`] on a connection from the pool.
    pub async fn mark_published(&self, ids: &[i64]) -> Result<u64, OutboxError> {
        let client = self.pool.get().await?;
        self.mark_published_with(&**client, ids).await
    }

    /// Marks a row failed: crmbus refused it and a retry would repeat the refusal.
    pub async fn mark_failed(&self, id: i64, error: &str) -> Result<(), OutboxError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE crmbus_outbox SET failed_at = clock_timestamp(), last_error = $2
                  WHERE id = $1",
                &[&id, &error],
            )
            .await?;
        Ok(())
    }

    /// Deletes the rows published more than `retention` ago, `chunk` at a time; returns how
    /// many. (A retention beyond a century keeps everything.)
    pub async fn purge(&self, retention: Duration, chunk: i64) -> Result<u64, OutboxError> {
        const CENTURY: f64 = 100.0 * 365.0 * 24.0 * 3600.0;
        let seconds = retention.as_secs_f64();
        if seconds >= CENTURY {
            return Ok(0);
        }
        let chunk = chunk.max(1);
        let client = self.pool.get().await?;
        let mut total = 0;
        loop {
            let deleted = client
                .execute(
                    "DELETE FROM crmbus_outbox WHERE id IN (
                        SELECT id FROM crmbus_outbox
                         WHERE published_at < clock_timestamp() - make_interval(secs => $1)
                         LIMIT $2)",
                    &[&seconds, &chunk],
                )
                .await?;
            total += deleted;
            if deleted < chunk as u64 {
                return Ok(total);
            }
        }
    }

    /// What the relay's metrics show: pending rows and the age of the oldest, in seconds
    /// (both from the pending index).
    pub async fn backlog(&self) -> Result<(i64, f64), OutboxError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT count(*),
                        coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8
                   FROM crmbus_outbox WHERE published_at IS NULL AND failed_at IS NULL",
                &[],
            )
            .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// The backlog and its age, failures and recent throughput.
    pub async fn status(&self) -> Result<OutboxStatus, OutboxError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT
                   (SELECT count(*) FROM crmbus_outbox
                     WHERE published_at IS NULL AND failed_at IS NULL),
                   (SELECT coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8
                      FROM crmbus_outbox WHERE published_at IS NULL AND failed_at IS NULL),
                   (SELECT count(*) FROM crmbus_outbox WHERE failed_at IS NOT NULL),
                   (SELECT count(*) FROM crmbus_outbox
                     WHERE published_at > clock_timestamp() - interval '1 minute'),
                   (SELECT count(*) FROM crmbus_outbox WHERE published_at IS NOT NULL)",
                &[],
            )
            .await?;
        Ok(OutboxStatus {
            pending: row.try_get(0)?,
            oldest_pending_seconds: row.try_get(1)?,
            failed: row.try_get(2)?,
            published_last_minute: row.try_get(3)?,
            published_kept: row.try_get(4)?,
        })
    }

    /// The most recent failed rows, newest first.
    pub async fn failed_rows(&self, limit: i64) -> Result<Vec<FailedRow>, OutboxError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT id, event ->> 'type', event ->> 'id', last_error, failed_at
                   FROM crmbus_outbox WHERE failed_at IS NOT NULL
                  ORDER BY failed_at DESC LIMIT $1",
                &[&limit],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(FailedRow {
                    id: r.try_get(0)?,
                    event_type: r.try_get(1)?,
                    event_id: r.try_get(2)?,
                    error: r.try_get(3)?,
                    failed_at: r.try_get(4)?,
                })
            })
            .collect()
    }
}
