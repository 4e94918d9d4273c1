//! Group offsets: kept in the state store (namespace `kafka/offsets/<topic>`), where a
//! fenced commit checks its leases in the same transaction as the write.

use crmbus::cluster::Fence;
use crmbus::{LogError, StateOp, StateStore};

use super::Inner;
use crate::naming;

impl Inner {
    pub(super) async fn commit_offset(
        &self,
        fences: &[Fence],
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), LogError> {
        self.record_partition(topic, partition).await?;
        let op = StateOp::Put {
            namespace: naming::offsets_ns(topic),
            key: naming::offset_key(group, partition),
            value: offset.to_string().into_bytes(),
        };
        self.state.apply_fenced(fences, vec![op]).await
    }

    pub(super) async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError> {
        self.record_partition(topic, partition).await?;
        let raw = self
            .state
            .get(
                &naming::offsets_ns(topic),
                &naming::offset_key(group, partition),
            )
            .await?;
        match raw {
            None => Ok(None),
            Some(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or_else(|| LogError::Backend {
                    message: format!(
                        "the offset of group '{group}' on {topic}/{partition} is not a number"
                    ),
                    source: None,
                }),
        }
    }
}
