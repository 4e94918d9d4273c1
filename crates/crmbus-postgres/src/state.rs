//! [`PgStateStore`]: crmbus's [`StateStore`] (with leases, see [`crate::lease`]) in
//! PostgreSQL, for backends that have no state store of their own — the Kafka backend keeps
//! its delivery state, topic specs and group offsets here.
//!
//! The tables are `crmbus_state` and `crmbus_leases` ([`STATE_SQL`], created on open). A
//! batch is one transaction: the ops are folded to each key's last change, then written
//! with one upsert and one delete. A fenced batch first locks the rows of its leases
//! (`FOR SHARE`) and checks each is held with its token and unexpired by the database's
//! clock; an acquisition of those leases waits for the batch to commit, so the check holds
//! for the whole write. Durability is the database's: a commit returns once PostgreSQL has
//! flushed its write-ahead log (with the default `synchronous_commit = on`).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use crmbus::cluster::{Fence, LeaseStore};
use crmbus::{LogError, StateOp, StateStore};
use deadpool_postgres::GenericClient;
use deadpool_postgres::Pool;

use crate::error::{state_client, state_err as pg_err};
use crate::lease::PgLeaseStore;

/// The state and lease tables (`sql/state.sql`).
pub const STATE_SQL: &str = include_str!("../sql/state.sql");

/// A [`StateStore`] in PostgreSQL for one crmbus namespace (`prefix`). Clones share the
/// pool.
#[derive(Clone)]
pub struct PgStateStore {
    pool: Pool,
    prefix: Arc<str>,
}

impl PgStateStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`), creates the
    /// tables when missing, and returns the store of namespace `prefix`. An unreachable
    /// database is [`LogError::Unavailable`].
    pub async fn connect(url: &str, prefix: &str) -> Result<PgStateStore, LogError> {
        let pool = crate::store::connect_pool(url, 16)
            .map_err(|e| LogError::InvalidArgument(format!("state database URL: {e}")))?;
        PgStateStore::with_pool(pool, prefix).await
    }

    /// [`PgStateStore::connect`] on a pool of the caller's.
    pub async fn with_pool(pool: Pool, prefix: &str) -> Result<PgStateStore, LogError> {
        if prefix.is_empty() {
            return Err(LogError::InvalidArgument(
                "the state store's namespace prefix must not be empty".into(),
            ));
        }
        install_schema(&pool, 1, STATE_SQL, "the state tables").await?;
        Ok(PgStateStore {
            pool,
            prefix: Arc::from(prefix),
        })
    }

    /// The connection pool (shared with the backend that opened the store).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The namespace prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, LogError> {
        state_client(&self.pool).await
    }

    /// Sets `key` to `value` only if the key is absent: true when this call created it. The
    /// claim of a name among several writers.
    pub async fn insert_new(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
    ) -> Result<bool, LogError> {
        let n = self
            .client()
            .await?
            .execute(
                "INSERT INTO crmbus_state (prefix, namespace, key, value) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (prefix, namespace, key) DO NOTHING",
                &[&&*self.prefix, &namespace, &key.as_bytes(), &value],
            )
            .await
            .map_err(|e| pg_err("claiming a key", e))?;
        Ok(n == 1)
    }

    /// Replaces `key`'s value with `new` only if it is exactly `old` now: true when it did.
    /// A writer that read `old` changes nothing once someone else has.
    pub async fn compare_and_swap(
        &self,
        namespace: &str,
        key: &str,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, LogError> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE crmbus_state SET value = $5 \
                 WHERE prefix = $1 AND namespace = $2 AND key = $3 AND value = $4",
                &[&&*self.prefix, &namespace, &key.as_bytes(), &old, &new],
            )
            .await
            .map_err(|e| pg_err("updating a key", e))?;
        Ok(n == 1)
    }

    /// Removes `key` only if its value is exactly `old` now: true when it did.
    pub async fn delete_if(
        &self,
        namespace: &str,
        key: &str,
        old: &[u8],
    ) -> Result<bool, LogError> {
        let n = self
            .client()
            .await?
            .execute(
                "DELETE FROM crmbus_state \
                 WHERE prefix = $1 AND namespace = $2 AND key = $3 AND value = $4",
                &[&&*self.prefix, &namespace, &key.as_bytes(), &old],
            )
            .await
            .map_err(|e| pg_err("removing a key", e))?;
        Ok(n == 1)
    }

    /// Deletes every state entry and lease of namespace `prefix` (tests, decommissioning):
    /// how many rows went.
    pub async fn purge(&self) -> Result<u64, LogError> {
        let client = self.client().await?;
        let a = client
            .execute(
                "DELETE FROM crmbus_state WHERE prefix = $1",
                &[&&*self.prefix],
            )
            .await
            .map_err(|e| pg_err("purging state", e))?;
        let b = client
            .execute(
                "DELETE FROM crmbus_leases WHERE prefix = $1",
                &[&&*self.prefix],
            )
            .await
            .map_err(|e| pg_err("purging leases", e))?;
        Ok(a + b)
    }
}

/// Runs `sql` (idempotent `CREATE … IF NOT EXISTS` statements) in one transaction under
/// advisory lock `lock` (of crmbus's lock class), so that servers starting at once do not
/// race on creating the same objects. `what` names them in errors. For the state tables,
/// and for tables a backend keeps beside them (the Kafka backend's dedupe index).
pub async fn install_schema(pool: &Pool, lock: i32, sql: &str, what: &str) -> Result<(), LogError> {
    let mut client = state_client(pool).await?;
    let what = format!("creating {what}");
    let tx = client.transaction().await.map_err(|e| pg_err(&what, e))?;
    tx.execute("SELECT pg_advisory_xact_lock(1668441442, $1)", &[&lock])
        .await
        .map_err(|e| pg_err(&what, e))?;
    tx.batch_execute(sql).await.map_err(|e| pg_err(&what, e))?;
    tx.commit().await.map_err(|e| pg_err(&what, e))
}

/// The smallest byte string greater than every string that starts with `prefix`, or `None`
/// when there is none (an empty prefix, or one of only `0xff` bytes).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Checks, inside transaction `tx`, that every fence is held with its token and unexpired,
/// locking the lease rows until the transaction ends; [`LogError::Fenced`] naming the first
/// lost one otherwise.
pub(crate) async fn check_fences<C: GenericClient>(
    tx: &C,
    prefix: &str,
    fences: &[Fence],
) -> Result<(), LogError> {
    if fences.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = fences.iter().map(|f| f.lease.as_str()).collect();
    let rows = tx
        .query(
            "SELECT name, token FROM crmbus_leases \
             WHERE prefix = $1 AND name = ANY($2) AND expires_at > clock_timestamp() \
             ORDER BY name FOR SHARE",
            &[&prefix, &names],
        )
        .await
        .map_err(|e| pg_err("checking fences", e))?;
    let held: BTreeMap<String, i64> = rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect();
    for f in fences {
        let token = i64::try_from(f.token).unwrap_or(-1);
        if held.get(&f.lease) != Some(&token) {
            return Err(LogError::Fenced(format!(
                "lease '{}' is no longer held with token {}",
                f.lease, f.token
            )));
        }
    }
    Ok(())
}

#[async_trait]
impl StateStore for PgStateStore {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, LogError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT value FROM crmbus_state WHERE prefix = $1 AND namespace = $2 AND key = $3",
                &[&&*self.prefix, &namespace, &key.as_bytes()],
            )
            .await
            .map_err(|e| pg_err("reading state", e))?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn scan(
        &self,
        namespace: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, LogError> {
        let client = self.client().await?;
        let rows =
            match prefix_end(prefix.as_bytes()) {
                Some(end) => client
                    .query(
                        "SELECT key, value FROM crmbus_state WHERE prefix = $1 AND namespace = $2 \
                     AND key >= $3 AND key < $4 ORDER BY key",
                        &[&&*self.prefix, &namespace, &prefix.as_bytes(), &end],
                    )
                    .await,
                None => client
                    .query(
                        "SELECT key, value FROM crmbus_state WHERE prefix = $1 AND namespace = $2 \
                     AND key >= $3 ORDER BY key",
                        &[&&*self.prefix, &namespace, &prefix.as_bytes()],
                    )
                    .await,
            }
            .map_err(|e| pg_err("scanning state", e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let key: Vec<u8> = r.get(0);
            // Keys are written from Rust strings; anything else is not ours.
            if let Ok(key) = String::from_utf8(key) {
                out.push((key, r.get(1)));
            }
        }
        Ok(out)
    }

    async fn apply(&self, ops: Vec<StateOp>) -> Result<(), LogError> {
        self.apply_fenced(&[], ops).await
    }

    async fn apply_fenced(&self, fences: &[Fence], ops: Vec<StateOp>) -> Result<(), LogError> {
        if ops.is_empty() && fences.is_empty() {
            return Ok(());
        }
        // Each key's last change is what the batch leaves.
        let mut last: BTreeMap<(String, String), Option<Vec<u8>>> = BTreeMap::new();
        for op in ops {
            match op {
                StateOp::Put {
                    namespace,
                    key,
                    value,
                } => {
                    last.insert((namespace, key), Some(value));
                }
                StateOp::Delete { namespace, key } => {
                    last.insert((namespace, key), None);
                }
            }
        }
        let (mut put_ns, mut put_keys, mut put_vals) = (Vec::new(), Vec::new(), Vec::new());
        let (mut del_ns, mut del_keys) = (Vec::new(), Vec::new());
        for ((ns, key), value) in last {
            match value {
                Some(v) => {
                    put_ns.push(ns);
                    put_keys.push(key.into_bytes());
                    put_vals.push(v);
                }
                None => {
                    del_ns.push(ns);
                    del_keys.push(key.into_bytes());
                }
            }
        }
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_err("starting a state batch", e))?;
        check_fences(&tx, &self.prefix, fences).await?;
        if !put_ns.is_empty() {
            tx.execute(
                "INSERT INTO crmbus_state (prefix, namespace, key, value) \
                 SELECT $1, n, k, v FROM unnest($2::text[], $3::bytea[], $4::bytea[]) AS t(n, k, v) \
                 ON CONFLICT (prefix, namespace, key) DO UPDATE SET value = EXCLUDED.value",
                &[&&*self.prefix, &put_ns, &put_keys, &put_vals],
            )
            .await
            .map_err(|e| pg_err("writing state", e))?;
        }
        if !del_ns.is_empty() {
            tx.execute(
                "DELETE FROM crmbus_state s USING unnest($2::text[], $3::bytea[]) AS t(n, k) \
                 WHERE s.prefix = $1 AND s.namespace = t.n AND s.key = t.k",
                &[&&*self.prefix, &del_ns, &del_keys],
            )
            .await
            .map_err(|e| pg_err("deleting state", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| pg_err("committing a state batch", e))
    }

    fn leases(&self) -> Option<Arc<dyn LeaseStore>> {
        Some(Arc::new(PgLeaseStore::new(
            self.pool.clone(),
            Arc::clone(&self.prefix),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_string_after_every_extension() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
