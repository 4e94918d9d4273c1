//! Group offsets: the next offset each group reads, kept in the offsets bucket.

use crmbus::LogError;

use super::Inner;
use crate::conn::backend;
use crate::naming;

impl Inner {
    pub(super) async fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), LogError> {
        self.check_open()?;
        if group.is_empty() {
            return Err(LogError::InvalidArgument("group name is empty".into()));
        }
        self.spec_partition(topic, partition).await?;
        self.offsets
            .put(
                naming::offset_key(topic, group, partition),
                offset.to_string().into(),
            )
            .await
            .map_err(|e| backend(&format!("committing the offset of group '{group}'"), e))?;
        Ok(())
    }

    pub(super) async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError> {
        self.spec_partition(topic, partition).await?;
        let raw = self
            .offsets
            .get(naming::offset_key(topic, group, partition))
            .await
            .map_err(|e| backend(&format!("reading the offset of group '{group}'"), e))?;
        match raw {
            None => Ok(None),
            Some(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or_else(|| backend("decoding a group offset", "not a number")),
        }
    }
}
