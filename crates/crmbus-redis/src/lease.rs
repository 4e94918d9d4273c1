//! [`RedisLeaseStore`]: leases with fencing tokens on the same Redis, for servers that
//! share the backend.
//!
//! A lease is the hash `<prefix>:lease:<name>` (`holder`, `token`, `data`) with a Redis
//! expiry of its time to live, so expiry follows the Redis server's clock; tokens come
//! from the counter `<prefix>:lease-token` (`INCR`), so each acquisition's token is
//! greater than every earlier one. The sorted set `<prefix>:leases` lists the names for
//! [`LeaseStore::list`], which forgets the names of expired leases as it meets them. Each
//! operation is one Lua script; fenced writes check `token` in the same script as the
//! write (see the state store and the group-offset commit).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use crmbus::cluster::{LeaseInfo, LeaseStore};
use crmbus::LogError;
use redis::Value;

use crate::conn::Conn;
use crate::conv;

/// The leases of one crmbus namespace (key prefix) on Redis.
#[derive(Clone)]
pub struct RedisLeaseStore {
    conn: Arc<Conn>,
}

impl RedisLeaseStore {
    pub(crate) fn with_conn(conn: Arc<Conn>) -> RedisLeaseStore {
        RedisLeaseStore { conn }
    }
}

/// A time to live in whole milliseconds, at least 1 (Redis refuses an expiry of 0).
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl LeaseStore for RedisLeaseStore {
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        data: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, LogError> {
        let mut conn = self.conn.manager();
        self.conn
            .scripts
            .lease_acquire
            .arg(&self.conn.prefix)
            .arg(name)
            .arg(holder)
            .arg(data)
            .arg(ttl_ms(ttl))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.conn.err(e))
    }

    async fn renew(&self, name: &str, token: u64, ttl: Duration) -> Result<bool, LogError> {
        let mut conn = self.conn.manager();
        let renewed: i64 = self
            .conn
            .scripts
            .lease_renew
            .arg(&self.conn.prefix)
            .arg(name)
            .arg(token)
            .arg(ttl_ms(ttl))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.conn.err(e))?;
        Ok(renewed == 1)
    }

    async fn release(&self, name: &str, token: u64) -> Result<(), LogError> {
        self.release_as(name, &token.to_string()).await
    }

    async fn revoke(&self, name: &str) -> Result<(), LogError> {
        self.release_as(name, "*").await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<LeaseInfo>, LogError> {
        let mut conn = self.conn.manager();
        let reply: Value = self
            .conn
            .scripts
            .lease_list
            .arg(&self.conn.prefix)
            .arg(prefix)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.conn.err(e))?;
        let mut out = Vec::new();
        for row in conv::items(&reply).chunks(5) {
            if let [name, holder, token, ttl, data] = row {
                let text = |v: &Value| conv::text(v).unwrap_or_default();
                out.push(LeaseInfo {
                    name: text(name),
                    holder: text(holder),
                    token: text(token).parse().unwrap_or(0),
                    expires_in_ms: text(ttl).parse().unwrap_or(0),
                    data: text(data),
                });
            }
        }
        Ok(out)
    }
}

impl RedisLeaseStore {
    async fn release_as(&self, name: &str, token: &str) -> Result<(), LogError> {
        let mut conn = self.conn.manager();
        let _: i64 = self
            .conn
            .scripts
            .lease_release
            .arg(&self.conn.prefix)
            .arg(name)
            .arg(token)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.conn.err(e))?;
        Ok(())
    }
}
