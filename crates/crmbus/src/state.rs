//! [`StateStore`]: the small durable key-value store the delivery engine keeps its state in
//! (retry schedules, parked keys, dead letters, consumer dedupe), beside the event log.

use crate::sync::LockExt;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::error::LogError;

/// One change in a [`StateStore::apply`] batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateOp {
    /// Sets `key` in `namespace` to `value`.
    Put {
        /// Namespace (for example `retry/<group>`).
        namespace: String,
        /// Key within the namespace.
        key: String,
        /// New value.
        value: Vec<u8>,
    },
    /// Removes `key` from `namespace` (nothing happens if it is absent).
    Delete {
        /// Namespace.
        namespace: String,
        /// Key within the namespace.
        key: String,
    },
}

/// Durable key-value state kept per namespace.
///
/// Contract: [`StateStore::apply`] is atomic and durable when it returns (all of a batch or
/// none of it survives a crash); reads see every applied batch; [`StateStore::scan`]
/// returns a namespace's entries whose key starts with a prefix, sorted by key.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// The value of `key` in `namespace`.
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, LogError>;

    /// Every entry of `namespace` whose key starts with `prefix`, sorted by key.
    async fn scan(&self, namespace: &str, prefix: &str)
        -> Result<Vec<(String, Vec<u8>)>, LogError>;

    /// Applies a batch of changes atomically and durably.
    async fn apply(&self, ops: Vec<StateOp>) -> Result<(), LogError>;

    /// Sets one key (a one-change batch).
    async fn put(&self, namespace: &str, key: &str, value: Vec<u8>) -> Result<(), LogError> {
        self.apply(vec![StateOp::Put {
            namespace: namespace.to_string(),
            key: key.to_string(),
            value,
        }])
        .await
    }

    /// Removes one key (a one-change batch).
    async fn delete(&self, namespace: &str, key: &str) -> Result<(), LogError> {
        self.apply(vec![StateOp::Delete {
            namespace: namespace.to_string(),
            key: key.to_string(),
        }])
        .await
    }
}

/// A backend opened by configuration: its event log and the state store that goes with it
/// (where subscriptions keep retry schedules, dead letters and dedupe records).
#[derive(Clone)]
pub struct OpenedBackend {
    /// The event log.
    pub log: Arc<dyn crate::log::EventLog>,
    /// The backend's durable state store, or an in-memory one for kinds that have none.
    pub state: Arc<dyn StateStore>,
}

/// (namespace, key) → value.
type Entries = BTreeMap<(String, String), Vec<u8>>;

/// A [`StateStore`] in memory (durable only for the life of the process). Clones share
/// the same state, so a "restart" in a test can open a new engine on the same store.
#[derive(Debug, Default, Clone)]
pub struct MemoryStateStore {
    entries: Arc<Mutex<Entries>>,
}

impl MemoryStateStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl StateStore for MemoryStateStore {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, LogError> {
        let entries = self.entries.locked();
        Ok(entries
            .get(&(namespace.to_string(), key.to_string()))
            .cloned())
    }

    async fn scan(
        &self,
        namespace: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, LogError> {
        let entries = self.entries.locked();
        let start = (namespace.to_string(), prefix.to_string());
        Ok(entries
            .range(start..)
            .take_while(|((ns, k), _)| ns == namespace && k.starts_with(prefix))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn apply(&self, ops: Vec<StateOp>) -> Result<(), LogError> {
        let mut entries = self.entries.locked();
        for op in ops {
            match op {
                StateOp::Put {
                    namespace,
                    key,
                    value,
                } => {
                    entries.insert((namespace, key), value);
                }
                StateOp::Delete { namespace, key } => {
                    entries.remove(&(namespace, key));
                }
            }
        }
        Ok(())
    }
}

/// Checks a [`StateStore`] against its contract; `reopen` must return a store over the
/// same durable state (for an in-memory store, the same store).
pub async fn check_state_store<F, Fut>(store: Arc<dyn StateStore>, reopen: F) -> Result<(), String>
where
    F: FnOnce(Arc<dyn StateStore>) -> Fut,
    Fut: std::future::Future<Output = Result<Arc<dyn StateStore>, LogError>>,
{
    let err = |what: &str, e: LogError| format!("{what}: {e}");
    let put = |ns: &str, k: &str, v: &str| StateOp::Put {
        namespace: ns.into(),
        key: k.into(),
        value: v.as_bytes().to_vec(),
    };
    if store
        .get("retry/g", "a")
        .await
        .map_err(|e| err("get", e))?
        .is_some()
    {
        return Err("a new store is not empty".into());
    }
    store
        .apply(vec![
            put("retry/g", "k/2", "two"),
            put("retry/g", "k/1", "one"),
            put("retry/g", "other", "x"),
            put("retry/h", "k/1", "h"),
        ])
        .await
        .map_err(|e| err("apply", e))?;
    let scanned = store
        .scan("retry/g", "k/")
        .await
        .map_err(|e| err("scan", e))?;
    let keys: Vec<&str> = scanned.iter().map(|(k, _)| k.as_str()).collect();
    if keys != ["k/1", "k/2"] || scanned[0].1 != b"one" {
        return Err(format!("scan gave {keys:?}"));
    }
    store
        .apply(vec![
            StateOp::Delete {
                namespace: "retry/g".into(),
                key: "k/1".into(),
            },
            put("retry/g", "k/2", "TWO"),
        ])
        .await
        .map_err(|e| err("apply", e))?;
    let store = reopen(store).await.map_err(|e| err("reopen", e))?;
    if store
        .get("retry/g", "k/1")
        .await
        .map_err(|e| err("get", e))?
        .is_some()
    {
        return Err("deleted key came back".into());
    }
    if store
        .get("retry/g", "k/2")
        .await
        .map_err(|e| err("get", e))?
        != Some(b"TWO".to_vec())
    {
        return Err("overwritten value lost on reopen".into());
    }
    if store
        .get("retry/h", "k/1")
        .await
        .map_err(|e| err("get", e))?
        != Some(b"h".to_vec())
    {
        return Err("namespaces mixed up".into());
    }
    store
        .put("n", "k", b"v".to_vec())
        .await
        .map_err(|e| err("put", e))?;
    store.delete("n", "k").await.map_err(|e| err("delete", e))?;
    if store
        .get("n", "k")
        .await
        .map_err(|e| err("get", e))?
        .is_some()
    {
        return Err("delete did not remove".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_state_store_keeps_the_contract() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStateStore::new());
        check_state_store(store, |s| async move { Ok(s) })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
