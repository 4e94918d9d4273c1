//! [`EmbeddedLog`]: the [`EventLog`] implementation over segment files and redb metadata.
//!
//! This file holds the log's state and its [`EventLog`] face; the work is in `open.rs`
//! (open and recovery), `admin.rs` (creating and deleting topics) and `append.rs` (the
//! append path: dedupe, staging, the batch journal's marks and the commit, through
//! [`Committer`]).

use crmbus::sync::{LockExt, RwLockExt};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crmbus::{
    Event, EventLog, LogError, PartitionInfo, Receipt, StateOp, StateStore, StoredEvent,
    SubjectRead, TopicInfo, TopicSpec,
};

use crate::batch_journal::BatchJournal;
use crate::committer::Committer;
use crate::dedupe::{DedupeBudget, DedupeIndex};
use crate::handles::HandleCache;
use crate::metadata::Metadata;
use crate::options::EmbeddedOptions;
use crate::partition::{CorruptCounter, Partition};
use crate::storage::StorageLock;
use crate::syncer::GroupCommitStats;

mod admin;
mod append;
mod open;

struct Topic {
    spec: TopicSpec,
    partitions: Vec<Arc<Partition>>,
    /// Held for the whole of an append to this topic: dedupe decisions and offsets are
    /// taken together, and a batch stays contiguous in each partition.
    /// An async mutex: appenders waiting for it yield their runtime thread instead of
    /// blocking it, so encoding of other batches goes on meanwhile.
    append: tokio::sync::Mutex<DedupeIndex>,
}

struct Inner {
    dir: PathBuf,
    opts: EmbeddedOptions,
    meta: Metadata,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Makes journal frames and staged data durable (group commit), or not (page cache).
    commit: Committer,
    /// Intents of appends that span partitions (see [`crate::batch_journal`]).
    journal: Arc<BatchJournal>,
    corrupt: Arc<CorruptCounter>,
    /// The bound on dedupe entries across all topics.
    dedupe_budget: Arc<DedupeBudget>,
    /// The bound on open segment files.
    handles: Arc<HandleCache>,
    closed: AtomicBool,
    /// Held for the whole of a topic's creation or deletion, so those run one at a time
    /// while the topic map itself is locked only to look up, insert or remove.
    admin: Arc<tokio::sync::Mutex<()>>,
    _lock: Box<dyn StorageLock>,
}

/// Runs `work`, which does disk I/O, on tokio's blocking threads so that no async worker
/// thread waits on the disk. Once started it runs to its end even if the caller goes away,
/// so a cancelled call never leaves its work half done.
async fn off_runtime<T, F>(work: F) -> Result<T, LogError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, LogError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| LogError::Unavailable(format!("storage task failed: {e}")))?
}

struct Background {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Background {
    fn stop(&self) {
        let (flag, cv) = &*self.stop;
        *flag.locked() = true;
        cv.notify_all();
        if let Some(t) = self.thread.locked().take() {
            let _ = t.join();
        }
    }
}

/// crmbus's embedded storage engine: a durable, partitioned event log in one directory.
///
/// Layout: `LOCK` (held while open), `meta.redb` (topics and group offsets), and
/// `topics/<topic>/<partition>/<base-offset>.log` segment files with their `.idx` index
/// files. See the crate documentation for the guarantees.
///
/// With [`Durability::Fsync`](crate::Durability::Fsync), an append on a multi-threaded
/// tokio runtime that finds no group-commit round running writes and fsyncs in a
/// [`tokio::task::block_in_place`] section of its own thread: other tasks go on, but other
/// futures in the same task (a `select!` or `timeout` around the append) wait until its
/// round ends.
pub struct EmbeddedLog {
    inner: Arc<Inner>,
    background: Arc<Background>,
}

fn topics_dir(dir: &Path) -> PathBuf {
    dir.join("topics")
}

impl EmbeddedLog {
    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// How many corrupt records were detected since open (also exported as the metric
    /// `crmbus_log_corrupt_records_total`).
    pub fn corrupt_records(&self) -> u64 {
        self.inner.corrupt.get()
    }

    /// Bytes the log holds on disk across all segment files.
    pub fn size_bytes(&self) -> u64 {
        let topics = self.inner.topics.read_locked();
        topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .map(|p| p.size_bytes())
            .sum()
    }

    /// What the group commit did since open: rounds run, rounds appenders led, and the
    /// microseconds they spent writing and syncing (all zero with
    /// [`Durability::Os`](crate::Durability::Os)).
    pub fn group_commit_stats(&self) -> GroupCommitStats {
        self.inner.commit.stats()
    }

    /// The delivery-state store kept in this log's metadata database (same directory, same
    /// crash safety: every applied batch is durable when `apply` returns).
    pub fn state_store(&self) -> Arc<dyn StateStore> {
        Arc::new(EmbeddedState {
            inner: Arc::clone(&self.inner),
        })
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &EmbeddedOptions {
        &self.inner.opts
    }
}

impl Drop for EmbeddedLog {
    fn drop(&mut self) {
        self.background.stop();
        self.inner.commit.stop();
    }
}

fn info(t: &Topic) -> TopicInfo {
    TopicInfo {
        spec: t.spec.clone(),
        partition_info: t
            .partitions
            .iter()
            .map(|p| PartitionInfo {
                partition: p.id,
                first_offset: p.first_offset(),
                next_offset: p.durable_next(),
                corrupt: p.corrupt_ranges(),
            })
            .collect(),
    }
}

impl Inner {
    fn check_open(&self) -> Result<(), LogError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Unavailable("log is closed".into()));
        }
        if let Some(f) = self.commit.failure() {
            return Err(LogError::Unavailable(f));
        }
        Ok(())
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, LogError> {
        self.topics
            .read_locked()
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::TopicNotFound(name.to_string()))
    }

    fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>, LogError> {
        let t = self.topic(topic)?;
        t.partitions
            .get(partition as usize)
            .cloned()
            .ok_or_else(|| LogError::PartitionNotFound {
                topic: topic.to_string(),
                partition,
            })
    }

    /// Every topic, as it stands now.
    fn all_topics(&self) -> Vec<Arc<Topic>> {
        self.topics.read_locked().values().cloned().collect()
    }

    fn enforce_retention(&self) -> Result<u64, LogError> {
        let topics = self.all_topics();
        let mut removed = 0;
        for t in topics {
            for p in &t.partitions {
                removed += p.enforce_retention(&t.spec.retention, &self.opts)?;
            }
        }
        Ok(removed)
    }
}

#[async_trait]
impl EventLog for EmbeddedLog {
    fn backend_name(&self) -> &'static str {
        "embedded"
    }

    async fn create_topic(&self, spec: TopicSpec) -> Result<TopicInfo, LogError> {
        self.inner.check_open()?;
        spec.validate()?;
        let admin = Arc::clone(&self.inner.admin).lock_owned().await;
        let inner = Arc::clone(&self.inner);
        off_runtime(move || {
            let _admin = admin;
            inner.create_topic(spec)
        })
        .await
    }

    async fn delete_topic(&self, name: &str) -> Result<(), LogError> {
        self.inner.check_open()?;
        let admin = Arc::clone(&self.inner.admin).lock_owned().await;
        let inner = Arc::clone(&self.inner);
        let name = name.to_string();
        let runtime = tokio::runtime::Handle::current();
        off_runtime(move || {
            let _admin = admin;
            inner.delete_topic(&name, &runtime)
        })
        .await
    }

    async fn list_topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        let topics = self.inner.topics.read_locked();
        Ok(topics.values().map(|t| info(t)).collect())
    }

    async fn describe_topic(&self, name: &str) -> Result<TopicInfo, LogError> {
        Ok(info(self.inner.topic(name)?.as_ref()))
    }

    async fn append(&self, topics: &[String], events: &[Event]) -> Result<Vec<Receipt>, LogError> {
        self.inner.append(topics, events).await
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, LogError> {
        let p = self.inner.partition(topic, partition)?;
        off_runtime(move || p.read(from, max)).await
    }

    async fn offset_for_time(
        &self,
        topic: &str,
        partition: u32,
        time: DateTime<Utc>,
    ) -> Result<u64, LogError> {
        let p = self.inner.partition(topic, partition)?;
        off_runtime(move || p.offset_for_time(time.timestamp_micros())).await
    }

    async fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), LogError> {
        self.commit_offsets(group, topic, &[(partition, offset)])
            .await
    }

    async fn commit_offsets(
        &self,
        group: &str,
        topic: &str,
        offsets: &[(u32, u64)],
    ) -> Result<(), LogError> {
        self.inner.check_open()?;
        for &(partition, _) in offsets {
            self.inner.partition(topic, partition)?;
        }
        if group.is_empty() {
            return Err(LogError::InvalidArgument("group name is empty".into()));
        }
        if offsets.is_empty() {
            return Ok(());
        }
        let inner = Arc::clone(&self.inner);
        let (group, topic, offsets) = (group.to_string(), topic.to_string(), offsets.to_vec());
        off_runtime(move || inner.meta.commit_offsets(&group, &topic, &offsets)).await
    }

    async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError> {
        self.inner.partition(topic, partition)?;
        let inner = Arc::clone(&self.inner);
        let (group, topic) = (group.to_string(), topic.to_string());
        off_runtime(move || inner.meta.committed_offset(&group, &topic, partition)).await
    }

    fn supports_versions(&self) -> bool {
        true
    }

    async fn read_subject(
        &self,
        topic: &str,
        subject: &str,
        from_version: u64,
        max: usize,
    ) -> Result<SubjectRead, LogError> {
        let t = self.inner.topic(topic)?;
        let p = crmbus::partition::partition_for_key(subject, t.spec.partitions);
        let p = self.inner.partition(topic, p)?;
        let subject = subject.to_string();
        off_runtime(move || p.read_subject(&subject, from_version, max)).await
    }

    async fn enforce_retention(&self) -> Result<u64, LogError> {
        self.inner.check_open()?;
        let inner = Arc::clone(&self.inner);
        off_runtime(move || inner.enforce_retention()).await
    }

    async fn close(&self) -> Result<(), LogError> {
        self.inner.closed.store(true, Ordering::Release);
        // Stopping joins the retention thread, which may be in the middle of a pass.
        let background = Arc::clone(&self.background);
        off_runtime(move || {
            background.stop();
            Ok(())
        })
        .await?;
        let replaceable = self.inner.commit.close();
        // Nothing is written any more: each active segment's file, and the batch journal,
        // is cut back to its records (best effort: zeros left by a failure only take space;
        // the next open cuts a segment's, and the journal's read as its end).
        let inner = Arc::clone(&self.inner);
        off_runtime(move || {
            let topics: Vec<Arc<Topic>> = inner.topics.read_locked().values().cloned().collect();
            for t in topics {
                for p in &t.partitions {
                    if let Err(e) = p.trim_prefill() {
                        tracing::warn!(topic = %t.spec.name, partition = p.id, error = %e,
                            "could not cut the zeros written ahead of a segment's records");
                    }
                }
            }
            // Trimming may compact the journal (a new file renamed over it): not while the
            // commit file's records name the old one.
            if replaceable {
                if let Err(e) = inner.journal.trim() {
                    tracing::warn!(error = %e, "could not cut the zeros written ahead of the batch journal's frames");
                }
            }
            Ok(())
        })
        .await?;
        Ok(())
    }
}

/// The [`StateStore`] of an [`EmbeddedLog`]; see [`EmbeddedLog::state_store`].
struct EmbeddedState {
    inner: Arc<Inner>,
}

#[async_trait]
impl StateStore for EmbeddedState {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, LogError> {
        let inner = Arc::clone(&self.inner);
        let (namespace, key) = (namespace.to_string(), key.to_string());
        off_runtime(move || inner.meta.state_get(&namespace, &key)).await
    }

    async fn scan(
        &self,
        namespace: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, LogError> {
        let inner = Arc::clone(&self.inner);
        let (namespace, prefix) = (namespace.to_string(), prefix.to_string());
        off_runtime(move || inner.meta.state_scan(&namespace, &prefix)).await
    }

    async fn apply(&self, ops: Vec<StateOp>) -> Result<(), LogError> {
        self.inner.check_open()?;
        let inner = Arc::clone(&self.inner);
        off_runtime(move || inner.meta.state_apply(&ops)).await
    }
}
