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

    /// [`StateStore::apply`], applied only while every one of `fences` is still held with
    /// its token, checked atomically with the batch ([`LogError::Fenced`] otherwise, and
    /// nothing is applied). With no fences it is a plain apply. Stores without leases (the
    /// default) refuse fenced batches.
    async fn apply_fenced(
        &self,
        fences: &[crate::cluster::Fence],
        ops: Vec<StateOp>,
    ) -> Result<(), LogError> {
        if fences.is_empty() {
            return self.apply(ops).await;
        }
        Err(LogError::InvalidArgument(
            "this backend has no leases: a fenced write is not possible".into(),
        ))
    }

    /// The backend's leases, when it has them (shared backends): what servers over one
    /// backend coordinate with. `None` (the default) for single-node stores.
    fn leases(&self) -> Option<std::sync::Arc<dyn crate::cluster::LeaseStore>> {
        None
    }

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
