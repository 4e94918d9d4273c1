//! Creating and deleting topics (the caller holds the log's `admin` lock).

use crmbus::sync::RwLockExt;
use std::sync::Arc;

use crmbus::{LogError, TopicInfo, TopicSpec};

use super::open::{open_topic, TopicShared};
use super::{info, topics_dir, Inner};
use crate::batch_journal::RecoveryPoints;

impl Inner {
    /// Creates a topic: its directories, fsynced, then its spec in the metadata. Blocking;
    /// the caller holds `admin`. The topic map is locked only to check and to insert, so
    /// appends and reads of other topics go on during the I/O.
    pub(super) fn create_topic(&self, spec: TopicSpec) -> Result<TopicInfo, LogError> {
        if self.topic(&spec.name).is_ok() {
            return Err(LogError::TopicExists(spec.name));
        }
        // A log that stopped accepting writes may hold commit file records naming a
        // deleted topic's files (its deletion could not checkpoint): a topic created again
        // under the name would get them at the next open. (The caller checked this before
        // it took `admin`; a deletion that failed meanwhile poisoned the log.)
        if let Some(why) = self.commit.failure() {
            return Err(LogError::Unavailable(why));
        }
        let storage = self.opts.storage.as_ref();
        let tdir = topics_dir(&self.dir).join(&spec.name);
        if storage.exists(&tdir) {
            storage.remove_dir_all(&tdir)?;
        }
        storage.create_dir_all(&tdir)?;
        let no_points = RecoveryPoints::new();
        let shared = TopicShared {
            corrupt: &self.corrupt,
            budget: &self.dedupe_budget,
            handles: &self.handles,
            points: &no_points,
        };
        let created = open_topic(&self.dir, spec.clone(), &self.opts, &shared).and_then(|t| {
            // Not needed for correctness while every topic has a partition: each partition's
            // open creates its directory with `create_dir_all_durable`, which fsyncs this
            // one (the parent) already. Kept so the topic's own entries never rely on it.
            storage.sync_dir(&tdir)?; // mutants: equivalent (see above)
            storage.sync_dir(&topics_dir(&self.dir))?;
            self.meta.put_topic(&spec)?;
            Ok(t)
        });
        match created {
            Ok(t) => {
                let i = info(&t);
                self.topics.write_locked().insert(spec.name, Arc::new(t));
                Ok(i)
            }
            Err(e) => {
                let _ = storage.remove_dir_all(&tdir);
                Err(e)
            }
        }
    }

    /// Deletes a topic: from the metadata, from the map (its partitions refuse appends
    /// from then on), a deletion mark in the journal, durable, then its files. Blocking
    /// (`runtime` waits for the group commit); the caller holds `admin`.
    pub(super) fn delete_topic(
        &self,
        name: &str,
        runtime: &tokio::runtime::Handle,
    ) -> Result<(), LogError> {
        if self.topic(name).is_err() {
            return Err(LogError::TopicNotFound(name.to_string()));
        }
        self.meta.remove_topic(name)?;
        let removed = self.topics.write_locked().remove(name);
        let barrier = {
            // Under the topic's append lock: an append that resolved the topic before it
            // was removed has either queued its intent already (before the mark, which
            // then applies to it) or finds the partitions deleted and fails; none stages
            // in the deleted topic after the mark.
            let _append = removed.as_ref().map(|t| t.append.blocking_lock());
            for p in removed.iter().flat_map(|t| &t.partitions) {
                p.mark_deleted();
            }
            // Pending intents must not be applied to a topic created again under this
            // name: the deletion mark is queued before a create can run (`admin` is held),
            // and is durable before this returns.
            self.commit.queue_mark(self.journal.topic_deleted(name))?
        };
        self.commit.wait_blocking(barrier, runtime)?;
        // The commit file's records name the topic's files by path, which a topic created
        // again under the name reuses: they are made durable and forgotten first.
        self.commit.checkpoint()?;
        // The topic is gone from the metadata: if a crash comes before its files are, the
        // next open removes them.
        let storage = self.opts.storage.as_ref();
        storage.remove_dir_all(&topics_dir(&self.dir).join(name))?;
        // Not needed for correctness, for the same reasons as the removals in `open`.
        storage.sync_dir(&topics_dir(&self.dir))?; // mutants: equivalent (see above)
        Ok(())
    }
}
