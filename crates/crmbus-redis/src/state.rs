//! [`RedisStateStore`]: the delivery engine's [`StateStore`] on the same Redis.
//!
//! Each namespace is a hash of values (`<prefix>:state:vals:<namespace>`) beside a sorted
//! set of its keys, all with score 0 (`<prefix>:state:keys:<namespace>`), so a prefix scan
//! is one `ZRANGEBYLEX` in key order. A batch is applied by one Lua script: atomic, and as
//! durable as the server's persistence makes it (see the crate documentation).

use std::sync::Arc;

use async_trait::async_trait;
use crmbus::cluster::{Fence, LeaseStore};
use crmbus::{LogError, StateOp, StateStore};
use redis::{AsyncCommands, Value};

use crate::conn::{Conn, RedisOptions};
use crate::conv;
use crate::lease::RedisLeaseStore;
use crate::naming;

/// The crmbus [`StateStore`] kept in Redis under a key prefix.
#[derive(Clone)]
pub struct RedisStateStore {
    conn: Arc<Conn>,
}

impl RedisStateStore {
    /// Connects to the Redis at `url` and keeps the state under `prefix` (the same prefix
    /// as the [`crate::RedisLog`] it goes with).
    pub async fn open(url: &str, prefix: &str) -> Result<RedisStateStore, LogError> {
        let conn = Conn::connect(url, prefix, &RedisOptions::default()).await?;
        Ok(Self::with_conn(Arc::new(conn)))
    }

    pub(crate) fn with_conn(conn: Arc<Conn>) -> RedisStateStore {
        RedisStateStore { conn }
    }

    fn vals_key(&self, namespace: &str) -> String {
        naming::state_vals_key(&self.conn.prefix, namespace)
    }
}

#[async_trait]
impl StateStore for RedisStateStore {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, LogError> {
        let mut conn = self.conn.manager();
        conn.hget(self.vals_key(namespace), key)
            .await
            .map_err(|e| self.conn.err(e))
    }

    async fn scan(
        &self,
        namespace: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, LogError> {
        let mut conn = self.conn.manager();
        let reply: Value = self
            .conn
            .scripts
            .state_scan
            .arg(&self.conn.prefix)
            .arg(namespace)
            .arg(prefix)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.conn.err(e))?;
        let mut out = Vec::new();
        for pair in conv::items(&reply).chunks(2) {
            if let [k, v] = pair {
                if let (Some(k), Some(v)) = (conv::text(k), conv::bytes(v)) {
                    out.push((k, v.to_vec()));
                }
            }
        }
        Ok(out)
    }

    async fn apply(&self, ops: Vec<StateOp>) -> Result<(), LogError> {
        self.apply_fenced(&[], ops).await
    }

    async fn apply_fenced(&self, fences: &[Fence], ops: Vec<StateOp>) -> Result<(), LogError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut inv = self.conn.scripts.state_apply.prepare_invoke();
        inv.arg(&self.conn.prefix);
        inv.arg(fences.len());
        for f in fences {
            inv.arg(&f.lease).arg(f.token);
        }
        for op in &ops {
            match op {
                StateOp::Put {
                    namespace,
                    key,
                    value,
                } => inv.arg("P").arg(namespace).arg(key).arg(value.as_slice()),
                StateOp::Delete { namespace, key } => inv.arg("D").arg(namespace).arg(key).arg(""),
            };
        }
        let mut conn = self.conn.manager();
        let _: Value = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.conn.err(e))?;
        Ok(())
    }

    fn leases(&self) -> Option<Arc<dyn LeaseStore>> {
        Some(Arc::new(RedisLeaseStore::with_conn(Arc::clone(&self.conn))))
    }
}
