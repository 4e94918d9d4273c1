//! Opening an [`EmbeddedLog`]: recovery of every topic and partition, the appends the
//! batch journal holds intents of (rolled back unless whole; intents of the previous
//! format completed), and the retention thread.

use crmbus::sync::LockExt;
use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};

use crmbus::{dedupe_hash, LogError, TopicSpec};

use super::append::Staged;
use super::{topics_dir, Background, EmbeddedLog, Inner, Topic};
use crate::batch_journal::{
    rollback_cuts, BatchJournal, Intent, LostIntentPart, PendingIntent, RecoveryPoint,
    RecoveryPoints,
};
use crate::commit_file::CommitFile;
use crate::committer::Committer;
use crate::dedupe::{DedupeBudget, DedupeIndex, FirstAppend};
use crate::handles::HandleCache;
use crate::metadata::Metadata;
use crate::options::EmbeddedOptions;
use crate::partition::{CorruptCounter, Partition};
use crate::syncer;

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
        // Before any file is read: the commit file's records write again what the last
        // rounds acknowledged and a power cut took from the page cache.
        let (commit_file, _) = CommitFile::recover(&opts.storage, &dir, opts.commit_file_bytes)?;
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
        let mut spans = Vec::new();
        let mut previous_format = Vec::new();
        for (id, intent) in pending {
            match intent {
                PendingIntent::Spans(parts) => spans.push((id, parts)),
                PendingIntent::Events(intent) => previous_format.push((id, intent)),
            }
        }
        let mut opened = Vec::with_capacity(specs.len());
        for spec in specs {
            let partitions = open_partitions(&dir, &spec, &opts, &shared)?;
            opened.push((spec, partitions));
        }
        let (lost, highest_intent) = lost_intent_parts(&opened, &journal)?;
        // Ids the records name are not given out again (a journal that says nothing, as
        // one removed by hand, does not know them).
        journal.skip_ids_below(highest_intent.saturating_add(1));
        if !spans.is_empty() || !lost.is_empty() {
            roll_back(&dir, &mut opened, &spans, &lost, &opts, &shared)?;
        }
        let mut topics = BTreeMap::new();
        for (spec, partitions) in opened {
            let topic = topic_with_dedupe(spec, partitions, &opts, &shared)?;
            topics.insert(topic.spec.name.clone(), Arc::new(topic));
        }
        let commit = Committer::start(&opts, Arc::clone(&journal), commit_file)?;
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
            admin: Arc::new(tokio::sync::Mutex::new(())),
            _lock: lock,
        });
        if !previous_format.is_empty() {
            inner.complete_intents(previous_format)?;
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
}

/// What every topic of a log shares, for [`open_topic`].
pub(super) struct TopicShared<'a> {
    pub(super) corrupt: &'a Arc<CorruptCounter>,
    pub(super) budget: &'a Arc<DedupeBudget>,
    pub(super) handles: &'a Arc<HandleCache>,
    /// The recovery points found in the journal on open (none for a new topic).
    pub(super) points: &'a RecoveryPoints,
}

/// At most this many threads open a topic's partitions.
const OPEN_THREADS: u32 = 16;

/// Opens a topic: its partitions, then its dedupe window.
pub(super) fn open_topic(
    dir: &Path,
    spec: TopicSpec,
    opts: &EmbeddedOptions,
    shared: &TopicShared<'_>,
) -> Result<Topic, LogError> {
    let partitions = open_partitions(dir, &spec, opts, shared)?;
    topic_with_dedupe(spec, partitions, opts, shared)
}

/// Opens partition `id` of topic `spec` (recovering its segments); `cut` is where recovery
/// just cut its files, if it did (a recovery point past it no longer applies), and the
/// recovery point of what the cut left.
fn open_partition(
    dir: &Path,
    spec: &TopicSpec,
    id: u32,
    opts: &EmbeddedOptions,
    shared: &TopicShared<'_>,
    cut: Option<(u64, Option<RecoveryPoint>)>,
) -> io::Result<Partition> {
    let point = match cut {
        Some((_, Some(after_cut))) => Some(after_cut),
        _ => shared
            .points
            .get(&(spec.name.clone(), id))
            .copied()
            .filter(|p| cut.is_none_or(|(cut, _)| p.next <= cut)),
    };
    Partition::open(
        &spec.name,
        id,
        &topics_dir(dir).join(&spec.name).join(id.to_string()),
        opts,
        Arc::clone(shared.corrupt),
        Arc::clone(shared.handles),
        point,
    )
}

/// Opens every partition of topic `spec`.
fn open_partitions(
    dir: &Path,
    spec: &TopicSpec,
    opts: &EmbeddedOptions,
    shared: &TopicShared<'_>,
) -> Result<Vec<Arc<Partition>>, LogError> {
    let open_range = |range: std::ops::Range<u32>| -> io::Result<Vec<Arc<Partition>>> {
        range
            .map(|p| open_partition(dir, spec, p, opts, shared, None).map(Arc::new))
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
    Ok(partitions)
}

/// The parts on disk whose intent the journal does not hold (see
/// [`crate::batch_journal`]): the first record of each names an intent whose write the
/// crash took. Only records after a partition's recovery point are looked at: the round
/// that made the point durable made the intents of everything before it durable too.
/// Also returns the highest intent id the records looked at name.
fn lost_intent_parts(
    opened: &[(TopicSpec, Vec<Arc<Partition>>)],
    journal: &BatchJournal,
) -> Result<(Vec<LostIntentPart>, u64), LogError> {
    let written = journal.written_intents();
    let points = journal.recovery_points();
    let mut lost = Vec::new();
    let mut intents = HashSet::new();
    let mut highest = 0;
    for (spec, partitions) in opened {
        for p in partitions {
            let from = points
                .get(&(spec.name.clone(), p.id))
                .map_or(0, |point| point.next);
            let named = p.intents_from(from)?;
            highest = named.iter().map(|(_, i)| *i).fold(highest, u64::max);
            let found: Vec<(u64, u64)> = named
                .into_iter()
                .filter(|(_, intent)| !written.contains(*intent))
                .collect();
            intents.extend(found.iter().map(|(_, intent)| *intent));
            if let Some(offset) = found.iter().map(|(offset, _)| *offset).min() {
                lost.push((spec.name.clone(), p.id, offset));
            }
        }
    }
    if !intents.is_empty() {
        tracing::warn!(intents = ?intents, "rolling back appends whose batch journal intent a crash took (none was acknowledged)");
        metrics::counter!("crmbus_log_batches_rolled_back_on_recovery_total")
            .increment(intents.len() as u64);
    }
    Ok((lost, highest))
}

/// Rolls back every append that spans partitions and is not whole on disk, and every
/// part in `lost`: the partitions are cut at the parts (see [`rollback_cuts`]) and opened
/// again.
fn roll_back(
    dir: &Path,
    opened: &mut [(TopicSpec, Vec<Arc<Partition>>)],
    spans: &[(u64, Vec<crate::batch_journal::Part>)],
    lost: &[LostIntentPart],
    opts: &EmbeddedOptions,
    shared: &TopicShared<'_>,
) -> Result<(), LogError> {
    let (rolled, cuts) = rollback_cuts(spans, lost, |topic, partition| {
        opened
            .iter()
            .find(|(spec, _)| spec.name == topic)
            .and_then(|(_, parts)| parts.get(partition as usize))
            .map(|p| p.durable_next())
    });
    for ((topic, partition), offset) in cuts {
        let Some((spec, parts)) = opened.iter_mut().find(|(spec, _)| spec.name == topic) else {
            continue;
        };
        let Some(slot) = parts.get_mut(partition as usize) else {
            continue;
        };
        tracing::warn!(topic = %topic, partition, from = offset, to = slot.durable_next(),
            "removing the records of appends a crash left in only some partitions");
        let after_cut = slot.cut_files_from(offset, opts)?;
        *slot = Arc::new(open_partition(
            dir,
            spec,
            partition,
            opts,
            shared,
            Some((offset, after_cut)),
        )?);
    }
    if !rolled.is_empty() {
        tracing::warn!(intents = ?rolled, "rolled back appends that a crash left in only some partitions (none was acknowledged)");
        metrics::counter!("crmbus_log_batches_rolled_back_on_recovery_total")
            .increment(rolled.len() as u64);
    }
    Ok(())
}

/// Builds an opened topic: its dedupe window rebuilt from the records' own digests.
fn topic_with_dedupe(
    spec: TopicSpec,
    partitions: Vec<Arc<Partition>>,
    opts: &EmbeddedOptions,
    shared: &TopicShared<'_>,
) -> Result<Topic, LogError> {
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

impl Inner {
    /// Completes the appends whose intents (of the previous format, with their events) the
    /// last run left without a done mark: every event not yet in its partition is appended
    /// and made durable, so each such append ends up whole. Runs on open, before anything
    /// is served.
    pub(super) fn complete_intents(&self, pending: Vec<(u64, Intent)>) -> Result<(), LogError> {
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
                let mut staged = Staged::default();
                self.stage_topic(
                    &topic,
                    &mut dedupe,
                    super::append::Batch {
                        events: &missing_events,
                        encoded: &missing_encoded,
                        expected: None,
                        intent: 0,
                    },
                    &mut staged,
                )?;
                let receipts = staged.receipts;
                sync.extend(staged.sync);
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

    /// Writes every partition's recovery point to the journal and fsyncs it (on open,
    /// after recovery, when all of every partition is durable).
    pub(super) fn write_recovery_points(&self) -> Result<(), LogError> {
        self.commit.write_recovery_points(|| {
            let mut frames = Vec::new();
            for t in &self.all_topics() {
                for p in &t.partitions {
                    if let Some(point) = p.recovery_point() {
                        frames.extend(self.journal.recovery_point(&t.spec.name, p.id, &point));
                    }
                }
            }
            frames
        })
    }
}
