//! [`PgLeaseStore`]: leases with fencing tokens in PostgreSQL (table `crmbus_leases`, see
//! [`crate::state::STATE_SQL`]), for servers sharing a backend whose state lives in
//! PostgreSQL.
//!
//! Each statement is atomic on its own: an acquisition inserts the lease's row or takes
//! over an expired one (its expiry counted from when the row is taken, after any fenced
//! batch holding the row has committed) (`ON CONFLICT … DO UPDATE … WHERE expires_at <= clock_timestamp()`),
//! with a token from the sequence `crmbus_lease_token`, so tokens only grow; renew and
//! release match on the token. Expiry is the database's clock. Fenced writes lock the
//! lease rows they depend on ([`crate::state`]), so an acquisition waits for them.

use std::time::Duration;

use async_trait::async_trait;
use crmbus::cluster::{LeaseInfo, LeaseStore};
use crmbus::LogError;

use std::sync::Arc;

use deadpool_postgres::Pool;

use crate::error::{state_client, state_err as pg_err};

/// The leases of one crmbus namespace in PostgreSQL (reached through
/// [`crate::PgStateStore`]'s `leases()`, which shares its pool and namespace).
#[derive(Clone)]
pub struct PgLeaseStore {
    pool: Pool,
    prefix: Arc<str>,
}

impl PgLeaseStore {
    /// The leases of namespace `prefix` in the database behind `pool` (whose tables
    /// [`crate::PgStateStore`] creates).
    pub fn new(pool: Pool, prefix: Arc<str>) -> PgLeaseStore {
        PgLeaseStore { pool, prefix }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, LogError> {
        state_client(&self.pool).await
    }

    fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// A time to live as a PostgreSQL interval in milliseconds (at least 1).
fn ttl_ms(ttl: Duration) -> f64 {
    (ttl.as_secs_f64() * 1000.0).max(1.0)
}

fn token_of(token: u64) -> i64 {
    i64::try_from(token).unwrap_or(-1)
}

#[async_trait]
impl LeaseStore for PgLeaseStore {
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        data: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, LogError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "INSERT INTO crmbus_leases AS l (prefix, name, holder, token, expires_at, data) \
                 VALUES ($1, $2, $3, nextval('crmbus_lease_token'), \
                         clock_timestamp() + $5 * interval '1 millisecond', $4) \
                 ON CONFLICT (prefix, name) DO UPDATE \
                   SET holder = EXCLUDED.holder, token = nextval('crmbus_lease_token'), \
                       expires_at = clock_timestamp() + $5 * interval '1 millisecond', \
                       data = EXCLUDED.data \
                   WHERE l.expires_at <= clock_timestamp() \
                 RETURNING token",
                &[&self.prefix(), &name, &holder, &data, &ttl_ms(ttl)],
            )
            .await
            .map_err(|e| pg_err("acquiring a lease", e))?;
        Ok(row.map(|r| r.get::<_, i64>(0) as u64))
    }

    async fn renew(&self, name: &str, token: u64, ttl: Duration) -> Result<bool, LogError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE crmbus_leases \
                 SET expires_at = clock_timestamp() + $4 * interval '1 millisecond' \
                 WHERE prefix = $1 AND name = $2 AND token = $3 \
                   AND expires_at > clock_timestamp()",
                &[&self.prefix(), &name, &token_of(token), &ttl_ms(ttl)],
            )
            .await
            .map_err(|e| pg_err("renewing a lease", e))?;
        Ok(n == 1)
    }

    async fn release(&self, name: &str, token: u64) -> Result<(), LogError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM crmbus_leases WHERE prefix = $1 AND name = $2 AND token = $3",
                &[&self.prefix(), &name, &token_of(token)],
            )
            .await
            .map_err(|e| pg_err("releasing a lease", e))?;
        Ok(())
    }

    async fn revoke(&self, name: &str) -> Result<(), LogError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM crmbus_leases WHERE prefix = $1 AND name = $2",
                &[&self.prefix(), &name],
            )
            .await
            .map_err(|e| pg_err("revoking a lease", e))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<LeaseInfo>, LogError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT name, holder, token, \
                   greatest(0, floor(extract(epoch FROM expires_at - clock_timestamp()) * 1000))::bigint, \
                   data \
                 FROM crmbus_leases \
                 WHERE prefix = $1 AND left(name, length($2)) = $2 \
                   AND expires_at > clock_timestamp() \
                 ORDER BY name COLLATE \"C\"",
                &[&self.prefix(), &prefix],
            )
            .await
            .map_err(|e| pg_err("listing leases", e))?;
        Ok(rows
            .iter()
            .map(|r| LeaseInfo {
                name: r.get(0),
                holder: r.get(1),
                token: r.get::<_, i64>(2) as u64,
                expires_in_ms: r.get::<_, i64>(3) as u64,
                data: r.get(4),
            })
            .collect())
    }
}
