//! [`EmbeddedLog`]: the [`EventLog`] implementation over segment files and redb metadata.

use crmbus::sync::{LockExt, RwLockExt};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::thread::JoinHandle;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crmbus::{
    dedupe_hash, partition_for, Event, EventLog, LogError, PartitionInfo, Receipt, StateOp,
    StateStore, StoredEvent, TopicInfo, TopicSpec,
};

use crate::batch_journal::{BatchJournal, Intent, RecoveryPoints};
use crate::dedupe::{DedupeBudget, DedupeIndex, FirstAppend};
use crate::handles::HandleCache;
use crate::metadata::Metadata;
use crate::options::{Durability, EmbeddedOptions};
use crate::partition::{CorruptCounter, Partition, RawRecord};
use crate::record::{BODY_HEADER, MAX_BODY};
use crate::storage::StorageLock;
use crate::syncer::{self, GroupCommit, SyncItem};

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
    commit: Option<GroupCommit>,
    /// Intents of appends that span partitions (see [`crate::batch_journal`]).
    journal: Arc<BatchJournal>,
    corrupt: Arc<CorruptCounter>,
    /// The bound on dedupe entries across all topics.
    dedupe_budget: Arc<DedupeBudget>,
    /// The bound on open segment files.
    handles: Arc<HandleCache>,
    closed: AtomicBool,
    /// Set when a page-cache write failed under `Durability::Os` (offsets may have a hole).
    write_failed: Mutex<Option<String>>,
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
pub struct EmbeddedLog {
    inner: Arc<Inner>,
    background: Arc<Background>,
}

fn topics_dir(dir: &Path) -> PathBuf {
    dir.join("topics")
}

impl EmbeddedLog {
    /// Opens (creating if needed) the log in `dir`, recovering every partition: torn tails
    /// are truncated, damaged records found and counted, missing indexes rebuilt, and the
    /// producer dedupe window rebuilt from the records themselves.
    ///
    /// Fails if another process has the directory open.
    pub fn open(dir: impl AsRef<Path>, opts: EmbeddedOptions) -> Result<EmbeddedLog, LogError> {
        let dir = dir.as_ref().to_path_buf();
        let storage = Arc::clone(&opts.storage);
        let tdir = topics_dir(&dir);
        if !storage.exists(&tdir) {
            storage.create_dir_all(&tdir)?;
            // Not needed for correctness while `Metadata::open` below fsyncs this same
            // directory when it creates meta.redb (which a new log always does), before
            // anything can be acknowledged; kept so the order of the two never matters.
            storage.sync_dir(&dir)?; // mutants: equivalent (see above)
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                storage.sync_dir(parent)?;
            }
        }
        let lock = match storage.lock(&dir.join("LOCK")) {
            Ok(lock) => lock,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(LogError::Unavailable(format!(
                    "data directory {} is in use by another crmbus process",
                    dir.display()
                )))
            }
            Err(e) => return Err(LogError::Io(e)),
        };
        let meta = Metadata::open(storage.as_ref(), &dir.join("meta.redb"))?;
        let corrupt = Arc::new(CorruptCounter::default());
        let dedupe_budget = DedupeBudget::new(opts.dedupe_max_entries_total);
        let handles = HandleCache::new(opts.max_open_segments);
        let specs = meta.topics()?;
        // Directories of topics that were being created or deleted when we stopped.
        let mut removed_any = false;
        for name in storage.list_dir(&tdir)? {
            if !specs.iter().any(|s| s.name == name) {
                tracing::warn!(topic = %name, "removing the directory of a topic that does not exist");
                storage.remove_dir_all(&tdir.join(&name))?;
                removed_any = true;
            }
        }
        if removed_any {
            // Not needed for correctness: a removal the power cut takes back is done again
            // by the next open, and creating a topic of the same name fsyncs this
            // directory before the topic holds anything.
            storage.sync_dir(&tdir)?; // mutants: equivalent (see above)
        }
        // The journal first: it holds the partitions' recovery points.
        let (journal, pending) = BatchJournal::open_compacting_at(
            Arc::clone(&opts.storage),
            &dir,
            opts.batch_journal_compact_bytes,
        )?;
        let journal = Arc::new(journal);
        let shared = TopicShared {
            corrupt: &corrupt,
            budget: &dedupe_budget,
            handles: &handles,
            points: journal.recovery_points(),
        };
        let mut topics = BTreeMap::new();
        for spec in specs {
            let topic = open_topic(&dir, spec, &opts, &shared)?;
            topics.insert(topic.spec.name.clone(), Arc::new(topic));
        }
        let commit = match opts.durability {
            Durability::Fsync => Some(GroupCommit::start(opts.clone(), Arc::clone(&journal))?),
            Durability::Os => None,
        };
        let inner = Arc::new(Inner {
            dir,
            opts,
            meta,
            topics: RwLock::new(topics),
            commit,
            journal,
            corrupt,
            dedupe_budget,
            handles,
            closed: AtomicBool::new(false),
            write_failed: Mutex::new(None),
            admin: Arc::new(tokio::sync::Mutex::new(())),
            _lock: lock,
        });
        if !pending.is_empty() {
            inner.complete_intents(pending)?;
        }
        // Everything in the journal is now complete (and a torn tail must not stay in front
        // of new frames): start it empty, with every partition's recovery point as of now
        // (all of what open kept is durable).
        inner.journal.clear()?;
        inner.write_recovery_points()?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = match inner.opts.retention_interval {
            Some(every) => {
                let weak = Arc::downgrade(&inner);
                let stop = Arc::clone(&stop);
                Some(
                    std::thread::Builder::new()
                        .name("crmbus-retention".into())
                        .spawn(move || retention_loop(&weak, &stop, every))?,
                )
            }
            None => None,
        };
        Ok(EmbeddedLog {
            inner,
            background: Arc::new(Background {
                stop,
                thread: Mutex::new(thread),
            }),
        })
    }

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

    /// Group-commit rounds run since open and the total microseconds they spent in
    /// fsync calls (both zero with [`Durability::Os`]).
    pub fn group_commit_stats(&self) -> (u64, u64) {
        self.inner
            .commit
            .as_ref()
            .map(|c| c.stats())
            .unwrap_or((0, 0))
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
        if let Some(c) = &self.inner.commit {
            c.stop();
        }
    }
}

/// What every topic of a log shares, for [`open_topic`].
struct TopicShared<'a> {
    corrupt: &'a Arc<CorruptCounter>,
    budget: &'a Arc<DedupeBudget>,
    handles: &'a Arc<HandleCache>,
    /// The recovery points found in the journal on open (none for a new topic).
    points: &'a RecoveryPoints,
}

/// At most this many threads open a topic's partitions.
const OPEN_THREADS: u32 = 16;

fn open_topic(
    dir: &Path,
    spec: TopicSpec,
    opts: &EmbeddedOptions,
    shared: &TopicShared<'_>,
) -> Result<Topic, LogError> {
    let tdir = topics_dir(dir).join(&spec.name);
    let open_range = |range: std::ops::Range<u32>| -> io::Result<Vec<Arc<Partition>>> {
        range
            .map(|p| {
                Partition::open(
                    &spec.name,
                    p,
                    &tdir.join(p.to_string()),
                    opts,
                    Arc::clone(shared.corrupt),
                    Arc::clone(shared.handles),
                    shared.points.get(&(spec.name.clone(), p)).copied(),
                )
                .map(Arc::new)
            })
            .collect()
    };
    // Each partition's open ends with two fsyncs; with many partitions, they run on several
    // threads so the file system can batch them (thousands one after another took seconds).
    let threads = if opts.storage.concurrent() {
        spec.partitions.min(OPEN_THREADS)
    } else {
        1
    };
    let partitions: Vec<Arc<Partition>> = if threads <= 1 {
        open_range(0..spec.partitions)?
    } else {
        let per = spec.partitions.div_ceil(threads);
        let chunks: Vec<io::Result<Vec<Arc<Partition>>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|i| {
                    let range =
                        (i * per).min(spec.partitions)..((i + 1) * per).min(spec.partitions);
                    scope.spawn(move || open_range(range))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("partition open thread panicked")))
                })
                .collect()
        });
        let mut all = Vec::with_capacity(spec.partitions as usize);
        for chunk in chunks {
            all.extend(chunk?);
        }
        all
    };
    // Rebuild the dedupe window from the records' own digests.
    let now = opts.clock.now_micros();
    let since = now.saturating_sub(opts.dedupe_window.as_micros() as i64);
    let mut recent = Vec::new();
    for part in &partitions {
        for h in part.headers_since(since)? {
            recent.push((h.timestamp_us, h.offset, part.id, h.dedupe_hash));
        }
    }
    recent.sort_unstable();
    let mut dedupe = DedupeIndex::new(
        opts.dedupe_window.as_micros() as i64,
        opts.dedupe_max_entries,
        Arc::clone(shared.budget),
    );
    for (ts, offset, partition, hash) in recent {
        if dedupe.get(hash).is_none() {
            dedupe.insert(hash, FirstAppend { partition, offset }, ts);
        }
    }
    Ok(Topic {
        spec,
        partitions,
        append: tokio::sync::Mutex::new(dedupe),
    })
}

fn retention_loop(inner: &Weak<Inner>, stop: &(Mutex<bool>, Condvar), every: std::time::Duration) {
    let (flag, cv) = stop;
    loop {
        {
            let guard = flag.locked();
            // Checked under the lock before waiting, so a stop that came first is not missed.
            if *guard {
                return;
            }
            let (guard, _) = cv
                .wait_timeout(guard, every)
                .unwrap_or_else(|p| p.into_inner());
            if *guard {
                return;
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        if let Err(e) = inner.enforce_retention() {
            tracing::warn!(error = %e, "retention failed");
        }
    }
}

fn info(t: &Topic) -> TopicInfo {
    TopicInfo {
        name: t.spec.name.clone(),
        partitions: t.spec.partitions,
        retention: t.spec.retention,
        require_schemas: t.spec.require_schemas,
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

/// A storage error as the log reports it: a full disk is [`LogError::StorageFull`].
fn storage_error(e: std::io::Error) -> LogError {
    if e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(libc::ENOSPC) {
        LogError::StorageFull(e.to_string())
    } else {
        LogError::Io(e)
    }
}

/// Whether an append to `topics` touches more than one partition in all.
fn spans_partitions(topics: &[Arc<Topic>], events: &[Event]) -> bool {
    if topics.len() > 1 {
        return !events.is_empty();
    }
    let Some(t) = topics.first() else {
        return false;
    };
    let n = t.spec.partitions;
    let mut first = None;
    for e in events {
        let p = partition_for(e, n);
        match first {
            None => first = Some(p),
            Some(f) if f != p => return true,
            Some(_) => {}
        }
    }
    false
}

/// What an append decided for one event in one topic.
#[derive(Clone, Copy)]
enum Slot {
    New {
        partition: u32,
        index_in_partition: usize,
    },
    Duplicate(FirstAppend),
    SameAs(usize),
}

impl Inner {
    /// Creates a topic: its directories, fsynced, then its spec in the metadata. Blocking;
    /// the caller holds `admin`. The topic map is locked only to check and to insert, so
    /// appends and reads of other topics go on during the I/O.
    fn create_topic(&self, spec: TopicSpec) -> Result<TopicInfo, LogError> {
        if self.topic(&spec.name).is_ok() {
            return Err(LogError::TopicExists(spec.name));
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
            storage.sync_dir(&tdir)?;
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
    fn delete_topic(&self, name: &str, runtime: &tokio::runtime::Handle) -> Result<(), LogError> {
        if self.topic(name).is_err() {
            return Err(LogError::TopicNotFound(name.to_string()));
        }
        self.meta.remove_topic(name)?;
        let ticket = {
            let mut topics = self.topics.write_locked();
            if let Some(t) = topics.remove(name) {
                for p in &t.partitions {
                    p.mark_deleted();
                }
            }
            // Pending intents must not be replayed into a topic created again under this
            // name: the deletion mark is queued before a create can run (`admin` is held),
            // and is durable before this returns.
            let mark = self.journal.topic_deleted(name);
            match &self.commit {
                Some(commit) => {
                    commit.queue_intent(mark);
                    Some(commit.submit(Vec::new()))
                }
                None => {
                    self.journal
                        .write(&mark, false)
                        .map_err(|e| self.fail_write(&e))?;
                    None
                }
            }
        };
        if let (Some(commit), Some(ticket)) = (&self.commit, ticket) {
            runtime
                .block_on(commit.wait(ticket))
                .map_err(|e| LogError::Unavailable(e.to_string()))?;
        }
        // The topic is gone from the metadata: if a crash comes before its files are, the
        // next open removes them.
        let storage = self.opts.storage.as_ref();
        storage.remove_dir_all(&topics_dir(&self.dir).join(name))?;
        // Not needed for correctness, for the same reasons as the removals in `open`.
        storage.sync_dir(&topics_dir(&self.dir))?; // mutants: equivalent (see above)
        Ok(())
    }

    fn check_open(&self) -> Result<(), LogError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Unavailable("log is closed".into()));
        }
        if let Some(f) = self.commit.as_ref().and_then(|c| c.failure()) {
            return Err(LogError::Unavailable(f.to_string()));
        }
        if let Some(f) = self.write_failed.locked().as_ref() {
            return Err(LogError::Unavailable(f.clone()));
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

    /// Stages `events` in every topic and waits until they are durable.
    /// Stages `events` in every topic and waits until they are durable. An append that
    /// spans partitions (`journalled`) writes its intent first and its done mark after.
    ///
    /// Cancellation-safe: every topic's lock is taken first (in name order, so appends do
    /// not deadlock), and from the intent to the submission to the group commit nothing
    /// awaits, so a caller that goes away (a client that disconnects) cannot leave the
    /// append staged in some topics only. An append that fails before anything was staged
    /// withdraws its intent durably before the error is returned.
    async fn stage_and_commit(
        &self,
        resolved: &[Arc<Topic>],
        events: &[Event],
        encoded: &[(Vec<u8>, u64)],
        journalled: bool,
    ) -> Result<Vec<Receipt>, LogError> {
        let mut by_name: Vec<&Arc<Topic>> = resolved.iter().collect();
        by_name.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        by_name.dedup_by(|a, b| a.spec.name == b.spec.name);
        let mut guards = Vec::with_capacity(by_name.len());
        for t in &by_name {
            guards.push(t.append.lock().await);
        }
        // No await from here until the staged data is handed to the group commit.
        let intent = if journalled {
            Some(self.write_intent(resolved, encoded)?)
        } else {
            None
        };
        let mut receipts = Vec::with_capacity(events.len() * resolved.len());
        let mut sync = Vec::new();
        let mut staged = Ok(());
        for t in resolved {
            let Some(i) = by_name.iter().position(|b| b.spec.name == t.spec.name) else {
                continue;
            };
            staged = self.stage_topic(t, &mut guards[i], events, encoded, &mut receipts, &mut sync);
            if staged.is_err() {
                break;
            }
        }
        drop(guards);
        if let Err(e) = staged {
            if let (Some(id), true) = (intent, sync.is_empty()) {
                // Nothing reached a partition: an abort mark keeps recovery from storing a
                // publish that was answered with an error.
                self.abort_intent(id).await?;
            }
            // Otherwise the intent stays: the next open completes the append.
            return Err(e);
        }
        match &self.commit {
            Some(commit) => {
                if !sync.is_empty() {
                    let ticket = commit.submit(sync);
                    commit
                        .wait(ticket)
                        .await
                        .map_err(|e| LogError::Unavailable(e.to_string()))?;
                }
            }
            None => {
                // Page-cache durability: write now, without fsync.
                for item in sync {
                    match item.partition.flush_staged(&self.opts) {
                        Ok((_, next)) => item.partition.mark_durable(next.max(item.next_offset)),
                        Err(e) => return Err(self.fail_write(&e)),
                    }
                }
            }
        }
        if let Some(id) = intent {
            self.write_done(id)?;
        }
        Ok(receipts)
    }

    /// Records a page-cache write failure: the log stops accepting writes.
    fn fail_write(&self, e: &std::io::Error) -> LogError {
        tracing::error!(error = %e, "write failed; the embedded log stops accepting writes");
        let msg = format!("write failed: {e}");
        *self.write_failed.locked() = Some(msg.clone());
        LogError::Unavailable(msg)
    }

    /// Writes (or, with group commit, queues) the intent of an append that spans
    /// partitions, ahead of its data; returns its id.
    fn write_intent(
        &self,
        resolved: &[Arc<Topic>],
        encoded: &[(Vec<u8>, u64)],
    ) -> Result<u64, LogError> {
        let topics: Vec<(&str, Vec<u64>)> = resolved
            .iter()
            .map(|t| {
                let from = t.partitions.iter().map(|p| p.durable_next()).collect();
                (t.spec.name.as_str(), from)
            })
            .collect();
        let jsons: Vec<&[u8]> = encoded.iter().map(|(j, _)| j.as_slice()).collect();
        let (id, frame) = self
            .journal
            .begin(self.opts.clock.now_micros(), &topics, &jsons);
        match &self.commit {
            Some(commit) => {
                // Room in the journal for what is queued and this frame, so a full disk
                // fails this append here, not the group commit's write.
                let room = commit.queued_journal_bytes() + frame.len() as u64;
                if let Err(e) = self.journal.ensure_room(room) {
                    self.journal.finished(id);
                    return Err(storage_error(e));
                }
                // Durable before any of the append's data: the group commit writes queued
                // intents ahead of the data it takes.
                commit.queue_intent(frame);
                Ok(())
            }
            None => self
                .journal
                .write(&frame, false)
                .map_err(|e| self.fail_write(&e)),
        }
        .map(|()| id)
        // On failure the intent stays outstanding: the next open completes the append.
    }

    /// Marks intent `id` done: its append is durable in every partition.
    fn write_done(&self, id: u64) -> Result<(), LogError> {
        let frame = self.journal.finished(id);
        match &self.commit {
            Some(commit) => {
                commit.submit_done(frame);
                Ok(())
            }
            None => self
                .journal
                .write(&frame, false)
                .and_then(|()| self.journal.compact_if_large())
                .map_err(|e| self.fail_write(&e)),
        }
    }

    /// Writes every partition's recovery point to the journal and fsyncs it (on open,
    /// after recovery, when all of every partition is durable).
    fn write_recovery_points(&self) -> Result<(), LogError> {
        if self.commit.is_none() {
            // Page-cache durability promises nothing across a power loss: no points.
            return Ok(());
        }
        let topics = self.all_topics();
        let mut frames = Vec::new();
        for t in &topics {
            for p in &t.partitions {
                if let Some(point) = p.recovery_point() {
                    frames.extend(self.journal.recovery_point(&t.spec.name, p.id, &point));
                }
            }
        }
        if frames.is_empty() {
            return Ok(());
        }
        self.journal.write(&frames, true).map_err(storage_error)
    }

    /// Withdraws intent `id` whose append failed before staging anything: its mark is
    /// durable before the caller hears of the failure, so recovery never completes it.
    async fn abort_intent(&self, id: u64) -> Result<(), LogError> {
        let frame = self.journal.finished(id);
        match &self.commit {
            Some(commit) => {
                commit.queue_intent(frame);
                let ticket = commit.submit(Vec::new());
                commit
                    .wait(ticket)
                    .await
                    .map_err(|e| LogError::Unavailable(e.to_string()))
            }
            None => self
                .journal
                .write(&frame, false)
                .map_err(|e| self.fail_write(&e)),
        }
    }

    /// Completes the appends whose intents the last run left without a done mark: every
    /// event not yet in its partition is appended and made durable, so each such append
    /// ends up whole. Runs on open, before anything is served.
    fn complete_intents(&self, pending: Vec<(u64, Intent)>) -> Result<(), LogError> {
        for (id, intent) in pending {
            let encoded: Vec<(Vec<u8>, u64)> = intent
                .events
                .iter()
                .map(|e| (e.to_json_vec(), dedupe_hash(&e.source, &e.id)))
                .collect();
            let mut appended = 0usize;
            let mut sync = Vec::new();
            for it in &intent.topics {
                let Ok(topic) = self.topic(&it.name) else {
                    tracing::warn!(intent = id, topic = %it.name, "batch journal: the topic no longer exists");
                    continue;
                };
                // A topic shorter than when the intent was written is another topic under
                // the same name (deletion marks catch the rest).
                if topic.partitions.len() != it.from.len()
                    || topic
                        .partitions
                        .iter()
                        .zip(&it.from)
                        .any(|(p, &from)| p.durable_next() < from)
                {
                    tracing::warn!(intent = id, topic = %it.name, "batch journal: the topic was recreated; skipped");
                    continue;
                }
                // An event counts as stored if the topic holds it from the start of the
                // dedupe window as it was when the append ran: then the append either
                // stored it or found it a duplicate. Looked up by digest in every
                // partition (dedupe is per topic), whatever the window says now.
                let since = intent
                    .at_us
                    .saturating_sub(self.opts.dedupe_window.as_micros() as i64);
                let hashes: HashSet<u64> = encoded.iter().map(|(_, h)| *h).collect();
                let mut found: HashSet<(String, String)> = HashSet::new();
                for part in &topic.partitions {
                    found.extend(part.ids_since(since, &hashes)?);
                }
                let mut missing_events = Vec::new();
                let mut missing_encoded = Vec::new();
                for (e, enc) in intent.events.iter().zip(&encoded) {
                    if !found.contains(&(e.source.clone(), e.id.clone())) {
                        missing_events.push(e.clone());
                        missing_encoded.push(enc.clone());
                    }
                }
                if missing_events.is_empty() {
                    continue;
                }
                let Ok(mut dedupe) = topic.append.try_lock() else {
                    return Err(LogError::Unavailable(
                        "batch journal recovery raced an append".into(),
                    ));
                };
                let mut receipts = Vec::new();
                self.stage_topic(
                    &topic,
                    &mut dedupe,
                    &missing_events,
                    &missing_encoded,
                    &mut receipts,
                    &mut sync,
                )?;
                appended += receipts.iter().filter(|r| !r.duplicate).count();
            }
            syncer::sync_recovered(&sync, &self.opts)?;
            if appended > 0 {
                tracing::warn!(
                    intent = id,
                    events = appended,
                    "completed an append the last run left in only some partitions"
                );
                metrics::counter!("crmbus_log_batches_completed_on_recovery_total").increment(1);
            }
        }
        Ok(())
    }

    /// Is the remembered first append really the same (source, id)? Guards against digest
    /// collisions; costs a read only when a digest matches.
    fn same_event(&self, topic: &Topic, at: FirstAppend, event: &Event) -> Result<bool, LogError> {
        let Some(part) = topic.partitions.get(at.partition as usize) else {
            return Ok(false);
        };
        let raw = match part.read_raw(at.offset) {
            Ok(RawRecord::Json(raw)) => raw,
            // The original is damaged and never served: storing the event again is the
            // only way it reaches a consumer (refusing would fail every retry for ever).
            Err(LogError::Corrupt { .. }) => {
                tracing::warn!(topic = %topic.spec.name, partition = at.partition, offset = at.offset,
                    "the original of a retried event is damaged; storing the event again");
                return Ok(false);
            }
            Err(e) => return Err(e),
            // Being written this very moment: a 64-bit digest match on an event appended
            // milliseconds ago is taken as the same event.
            Ok(RawRecord::InFlight) => return Ok(true),
            Ok(RawRecord::Missing) => return Ok(false),
        };
        // A record that passed its checksum but does not decode cannot be the same event.
        Ok(Event::from_json_slice(&raw)
            .is_ok_and(|stored| stored.source == event.source && stored.id == event.id))
    }

    /// Decides, under the topic's lock (`dedupe`), which events are new and which are
    /// duplicates, and stages the new ones in their partitions.
    fn stage_topic(
        &self,
        topic: &Topic,
        dedupe: &mut DedupeIndex,
        events: &[Event],
        encoded: &[(Vec<u8>, u64)],
        receipts: &mut Vec<Receipt>,
        sync: &mut Vec<SyncItem>,
    ) -> Result<(), LogError> {
        let now = self.opts.clock.now_micros();
        dedupe.expire(now);
        let n = topic.spec.partitions;
        let mut slots = Vec::with_capacity(events.len());
        let mut in_batch: HashMap<u64, usize> = HashMap::new();
        let mut per_partition: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, e) in events.iter().enumerate() {
            let hash = encoded[i].1;
            if let Some(&first) = in_batch.get(&hash) {
                if events[first].source == e.source && events[first].id == e.id {
                    slots.push(Slot::SameAs(first));
                    continue;
                }
            }
            if let Some(at) = dedupe.get(hash) {
                if self.same_event(topic, at, e)? {
                    slots.push(Slot::Duplicate(at));
                    continue;
                }
            }
            in_batch.insert(hash, i);
            let p = partition_for(e, n);
            let list = per_partition.entry(p).or_default();
            slots.push(Slot::New {
                partition: p,
                index_in_partition: list.len(),
            });
            list.push(i);
        }
        let mut first_offsets: HashMap<u32, u64> = HashMap::new();
        for (&p, idxs) in &per_partition {
            let part = &topic.partitions[p as usize];
            let batch: Vec<(&[u8], u64)> = idxs
                .iter()
                .map(|&i| (encoded[i].0.as_slice(), encoded[i].1))
                .collect();
            let appended = part.append(&batch, &self.opts).map_err(storage_error)?;
            for (k, &i) in idxs.iter().enumerate() {
                let at = FirstAppend {
                    partition: p,
                    offset: appended.first_offset + k as u64,
                };
                dedupe.insert(encoded[i].1, at, now);
            }
            first_offsets.insert(p, appended.first_offset);
            sync.push(appended.sync);
        }
        let resolve = |slot: Slot| -> (FirstAppend, bool) {
            match slot {
                Slot::New {
                    partition,
                    index_in_partition,
                } => (
                    FirstAppend {
                        partition,
                        offset: first_offsets.get(&partition).copied().unwrap_or(0)
                            + index_in_partition as u64,
                    },
                    false,
                ),
                Slot::Duplicate(at) => (at, true),
                Slot::SameAs(_) => (
                    FirstAppend {
                        partition: 0,
                        offset: 0,
                    },
                    true,
                ),
            }
        };
        for (i, &slot) in slots.iter().enumerate() {
            let (at, duplicate) = match slot {
                Slot::SameAs(first) => (resolve(slots[first]).0, true),
                other => resolve(other),
            };
            if duplicate && !per_partition.contains_key(&at.partition) {
                let part = &topic.partitions[at.partition as usize];
                if at.offset >= part.durable_next() {
                    // The first append is not durable yet: wait for it too.
                    sync.push(part.sync_item_for_current());
                }
            }
            receipts.push(Receipt {
                id: events[i].id.clone(),
                topic: topic.spec.name.clone(),
                partition: at.partition,
                offset: at.offset,
                duplicate,
            });
        }
        Ok(())
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
        let inner = &self.inner;
        inner.check_open()?;
        if topics.is_empty() {
            return Err(LogError::InvalidArgument("no topic given".into()));
        }
        let resolved: Vec<Arc<Topic>> = topics
            .iter()
            .map(|t| inner.topic(t))
            .collect::<Result<_, _>>()?;
        let mut encoded = Vec::with_capacity(events.len());
        for e in events {
            e.validate()?;
            let json = e.to_json_vec();
            if json.len() + BODY_HEADER > MAX_BODY {
                return Err(LogError::InvalidArgument(format!(
                    "event {} is {} bytes; the limit is {} bytes",
                    e.id,
                    json.len(),
                    MAX_BODY - BODY_HEADER
                )));
            }
            encoded.push((json, dedupe_hash(&e.source, &e.id)));
        }
        // An append that reaches several partitions is journalled first, so a crash
        // cannot leave it in some of them only (see `batch_journal`).
        let journalled = spans_partitions(&resolved, events);
        inner
            .stage_and_commit(&resolved, events, &encoded, journalled)
            .await
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
        self.inner.check_open()?;
        self.inner.partition(topic, partition)?;
        if group.is_empty() {
            return Err(LogError::InvalidArgument("group name is empty".into()));
        }
        let inner = Arc::clone(&self.inner);
        let (group, topic) = (group.to_string(), topic.to_string());
        off_runtime(move || inner.meta.commit_offset(&group, &topic, partition, offset)).await
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
        if let Some(c) = &self.inner.commit {
            c.close();
        }
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
