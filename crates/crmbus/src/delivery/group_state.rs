//! Where a consumer group keeps its delivery state in the [`StateStore`]: one namespace
//! per [`StateKind`], named after the topic and the group. The engine, seek and the
//! server's subscription registry all go through [`GroupState`], so a kind cannot be
//! spelled two ways or forgotten when a group's state is purged.

use crate::error::LogError;
use crate::state::{StateOp, StateStore};

/// One kind of state a consumer group keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateKind {
    /// Scheduled retries of failed deliveries.
    Retry,
    /// Offsets acknowledged ahead of the committed offset.
    Done,
    /// Dead letters.
    DeadLetter,
    /// Consumer-side dedupe: event ids already handled.
    Dedupe,
    /// The audit log of operator actions on dead letters.
    Audit,
    /// Per partition, the offset below which a server sharing the backend handed events
    /// to its handler (kept while it runs, removed at a clean stop): what a server taking
    /// the partition over after a crash delivers again counts as a further attempt.
    Dispatched,
}

impl StateKind {
    /// Every kind, in the order they are purged.
    pub const ALL: [StateKind; 6] = [
        StateKind::Retry,
        StateKind::Done,
        StateKind::DeadLetter,
        StateKind::Dedupe,
        StateKind::Audit,
        StateKind::Dispatched,
    ];

    /// The kind's part of the namespace name (stored on disk: never change one).
    pub fn as_str(self) -> &'static str {
        match self {
            StateKind::Retry => "retry",
            StateKind::Done => "done",
            StateKind::DeadLetter => "dlq",
            StateKind::Dedupe => "dedupe",
            StateKind::Audit => "audit",
            StateKind::Dispatched => "dispatched",
        }
    }
}

/// The state of one consumer group (`group`) on one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    topic: String,
    group: String,
}

impl GroupState {
    /// The state of `group` on `topic`.
    pub fn new(topic: impl Into<String>, group: impl Into<String>) -> GroupState {
        GroupState {
            topic: topic.into(),
            group: group.into(),
        }
    }

    /// The namespace `kind` is stored under: `sub/<topic>/<group>/<kind>`.
    pub fn namespace(&self, kind: StateKind) -> String {
        format!("sub/{}/{}/{}", self.topic, self.group, kind.as_str())
    }

    /// An operation that sets `key` of `kind` to `value`.
    pub fn put(&self, kind: StateKind, key: impl Into<String>, value: Vec<u8>) -> StateOp {
        StateOp::Put {
            namespace: self.namespace(kind),
            key: key.into(),
            value,
        }
    }

    /// An operation that removes `key` of `kind`.
    pub fn delete(&self, kind: StateKind, key: impl Into<String>) -> StateOp {
        StateOp::Delete {
            namespace: self.namespace(kind),
            key: key.into(),
        }
    }

    /// One entry of `kind`.
    pub async fn get(
        &self,
        store: &dyn StateStore,
        kind: StateKind,
        key: &str,
    ) -> Result<Option<Vec<u8>>, LogError> {
        store.get(&self.namespace(kind), key).await
    }

    /// Every entry of `kind`, sorted by key.
    pub async fn load(
        &self,
        store: &dyn StateStore,
        kind: StateKind,
    ) -> Result<Vec<(String, Vec<u8>)>, LogError> {
        store.scan(&self.namespace(kind), "").await
    }

    /// Operations that remove every entry of each of `kinds` (to apply in one batch with
    /// whatever else must change at the same time).
    pub async fn purge_ops(
        &self,
        store: &dyn StateStore,
        kinds: &[StateKind],
    ) -> Result<Vec<StateOp>, LogError> {
        let mut ops = Vec::new();
        for &kind in kinds {
            for (key, _) in self.load(store, kind).await? {
                ops.push(self.delete(kind, key));
            }
        }
        Ok(ops)
    }
}

#[cfg(test)]
mod tests {
    use super::{GroupState, StateKind};
    use crate::state::{MemoryStateStore, StateStore};

    #[test]
    fn namespaces_keep_their_stored_names() {
        let g = GroupState::new("deals", "erp");
        let names: Vec<String> = StateKind::ALL.iter().map(|k| g.namespace(*k)).collect();
        assert_eq!(
            names,
            [
                "sub/deals/erp/retry",
                "sub/deals/erp/done",
                "sub/deals/erp/dlq",
                "sub/deals/erp/dedupe",
                "sub/deals/erp/audit",
                "sub/deals/erp/dispatched"
            ]
        );
    }

    #[tokio::test]
    async fn purge_ops_remove_every_entry_of_the_kinds_asked_and_nothing_else() {
        let store = MemoryStateStore::default();
        let g = GroupState::new("deals", "erp");
        let other = GroupState::new("deals", "crm");
        let mut ops = Vec::new();
        for kind in StateKind::ALL {
            ops.push(g.put(kind, "a", vec![1]));
            ops.push(g.put(kind, "b", vec![2]));
            ops.push(other.put(kind, "a", vec![3]));
        }
        store.apply(ops).await.expect("apply");
        let purge = g
            .purge_ops(&store, &[StateKind::Retry, StateKind::Done])
            .await
            .expect("purge ops");
        assert_eq!(purge.len(), 4);
        store.apply(purge).await.expect("apply");
        for kind in StateKind::ALL {
            let left = g.load(&store, kind).await.expect("load").len();
            let want = if matches!(kind, StateKind::Retry | StateKind::Done) {
                0
            } else {
                2
            };
            assert_eq!(left, want, "{kind:?}");
            assert_eq!(other.load(&store, kind).await.expect("load").len(), 1);
        }
    }
}
