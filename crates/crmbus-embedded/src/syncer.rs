//! Group commit: one *round* makes appended data durable for every append that arrived
//! while the previous fdatasync ran, then wakes them all at once.
//!
//! An appender encodes its frames into its partitions' staging buffers (in memory), then
//! [`GroupCommit::submit`]s what it staged and waits on the returned ticket. A round takes
//! everything submitted so far, fsyncs the directories of new files, and for each
//! partition (concurrently) writes the staged frames to the segment files and fdatasyncs
//! them; then it raises the partitions' durable offsets and publishes the ticket number it
//! reached. A failed write or fsync poisons the log: the kernel may have dropped the dirty
//! pages, so no later write can be acknowledged honestly.
//!
//! Rounds run one at a time, on one of two kinds of thread. An appender that finds no
//! round running *leads*: it takes the round ([`GroupCommit::try_lead`]) and runs it itself
//! ([`Lead::run`], on a blocking section of its own thread), so a publish that arrives
//! alone costs no hand-off to another thread and back. An appender that finds a round
//! running enters no blocking section (on a tokio worker each one hands the worker's other
//! tasks to another thread): it wakes the group-commit thread, which runs the next round as
//! soon as the current one ends and takes every append that arrived meanwhile. A leader
//! that sees more work queued when its round ends wakes the thread too.
//!
//! The same rounds make [`BatchJournal`] intents durable (see [`crate::batch_journal`]). An
//! append that spans partitions stages its parts, queues its intent and submits, all while
//! it holds the *gate* (shared); a round takes its tickets, the staged data of their
//! partitions and the queued journal frames while it holds the gate alone. So a round takes
//! all of such an append (its parts and its intent) or none of it. It writes and fsyncs
//! the journal at the same time as that data, as one more task beside the partitions' (a
//! storage that takes one operation at a time gets the data first, then the journal): the
//! first record of each part names its intent, and recovery cuts a part whose intent did
//! not reach the disk. The round is acknowledged only once both are durable.
//!
//! A round that would fsync more than one file (several partitions, or a partition and the
//! journal) fsyncs only the log's commit file instead (see [`crate::commit_file`]): it
//! writes its data and journal frames to their files, then one record holding the same
//! bytes to the commit file, and fdatasyncs that. The files it wrote are fsynced by the
//! next checkpoint. A round that writes one file fsyncs that file, as before.

use crmbus::sync::{LockExt, RwLockExt};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;

use tokio::sync::watch;

use crate::batch_journal::BatchJournal;
use crate::commit_file::{CommitFile, CommitRecord};
use crate::flush_pool::FlushPool;
use crate::options::EmbeddedOptions;
/// What an append hands the group commit; defined beside [`Partition`], which makes it.
pub use crate::partition::SyncItem;
use crate::partition::{Partition, TakenStaged};
use crate::segment::Segment;

/// Progress of the group commit, as seen by waiters.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Every ticket up to this one is durable.
    pub synced: u64,
    /// Set when an fsync failed; no later ticket will complete.
    pub failed: Option<Arc<str>>,
}

struct Queue {
    items: Vec<SyncItem>,
    /// Journal frames to write in the next round.
    journal: Vec<u8>,
    /// Whether those frames include an intent (and so need an fsync).
    journal_sync: bool,
    ticket: u64,
    shutdown: bool,
    /// A round an appender led left writes whose writeback the thread starts (see
    /// [`CommitState::written`]): off the appender's way to its answer.
    writeback: bool,
    /// Partitions whose active segment wants zeros written ahead of its records (see
    /// [`Segment::prefill_ahead`]): the thread writes them when no round waits.
    prefill: Vec<Arc<Partition>>,
}

struct Shared {
    opts: EmbeddedOptions,
    journal: Arc<BatchJournal>,
    /// Threads that flush a round's partitions side by side.
    flush: FlushPool,
    /// Held by whoever runs a round (the group-commit thread or a leading appender), so
    /// rounds run one at a time and in order.
    round: Mutex<()>,
    /// Held (shared) by an append that spans partitions from staging to submitting, and
    /// alone by a round while it takes its work (see the module documentation).
    gate: RwLock<()>,
    /// Partitions the last successful round made durable: the next round writes their
    /// recovery points with its journal frames.
    touched: Mutex<Vec<Arc<Partition>>>,
    rounds: std::sync::atomic::AtomicU64,
    /// Of `rounds`, those an appender led.
    rounds_led: std::sync::atomic::AtomicU64,
    /// See [`GroupCommitStats::blocking_sections`].
    blocking_sections: std::sync::atomic::AtomicU64,
    sync_micros: std::sync::atomic::AtomicU64,
    queue: Mutex<Queue>,
    wake: Condvar,
    progress: watch::Sender<Progress>,
    /// The commit file and what its current generation covers; used by a round (holding
    /// `round`) and by a checkpoint.
    commit: Mutex<CommitState>,
    /// See [`GroupCommitStats::committed_rounds`].
    committed_rounds: std::sync::atomic::AtomicU64,
    /// See [`GroupCommitStats::checkpoints`].
    checkpoints: std::sync::atomic::AtomicU64,
    /// See [`GroupCommitStats::prefills_ahead`].
    prefills_ahead: std::sync::atomic::AtomicU64,
}

/// The commit file, with the segments the records of its current generation wrote (not
/// fsynced since: a checkpoint fsyncs them before it starts the next generation).
struct CommitState {
    file: CommitFile,
    record: CommitRecord,
    dirty: Vec<Arc<Segment>>,
    /// Writes of the rounds the commit file made durable since the last writeback was
    /// started (segment, position, length): their writeback to the disk is started once
    /// the round is acknowledged, so the next checkpoint's fsyncs find little left to
    /// write.
    written: Vec<(Arc<Segment>, u64, u64)>,
}

/// What the group commit's rounds did since the log opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Rounds run (each writes and fsyncs what was queued when it started).
    pub rounds: u64,
    /// Of those, the rounds an appender ran on its own thread (it found none running).
    pub rounds_led: u64,
    /// Blocking sections appenders entered to lead a round. Each costs its tokio worker a
    /// hand-over of its other tasks to another thread, so one is entered only to run a
    /// round: this equals `rounds_led` but for a round a stopping log declined.
    pub blocking_sections: u64,
    /// Total time the rounds spent writing and syncing, in microseconds.
    pub sync_micros: u64,
    /// Of `rounds`, those made durable by one record of the commit file (they wrote more
    /// than one file), instead of an fsync of each file they wrote.
    pub committed_rounds: u64,
    /// Checkpoints of the commit file: the files written since the last one fsynced, and a
    /// new generation started.
    pub checkpoints: u64,
    /// Times the thread wrote zeros ahead of a segment's records between rounds (see
    /// [`Segment::prefill_ahead`]).
    pub prefills_ahead: u64,
}

/// The group-commit thread and its queue.
pub struct GroupCommit {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl GroupCommit {
    /// Starts the thread; it also writes `journal`'s frames, and makes rounds that write
    /// several files durable with records of `commit`.
    pub fn start(
        opts: EmbeddedOptions,
        journal: Arc<BatchJournal>,
        commit: CommitFile,
    ) -> std::io::Result<GroupCommit> {
        let (tx, _) = watch::channel(Progress::default());
        let shared = Arc::new(Shared {
            opts,
            journal,
            flush: FlushPool::new(FLUSH_THREADS),
            round: Mutex::new(()),
            gate: RwLock::new(()),
            touched: Mutex::new(Vec::new()),
            rounds: std::sync::atomic::AtomicU64::new(0),
            rounds_led: std::sync::atomic::AtomicU64::new(0),
            blocking_sections: std::sync::atomic::AtomicU64::new(0),
            sync_micros: std::sync::atomic::AtomicU64::new(0),
            queue: Mutex::new(Queue {
                items: Vec::new(),
                journal: Vec::new(),
                journal_sync: false,
                ticket: 0,
                shutdown: false,
                writeback: false,
                prefill: Vec::new(),
            }),
            wake: Condvar::new(),
            progress: tx,
            commit: Mutex::new(CommitState {
                file: commit,
                record: CommitRecord::new(),
                dirty: Vec::new(),
                written: Vec::new(),
            }),
            committed_rounds: std::sync::atomic::AtomicU64::new(0),
            checkpoints: std::sync::atomic::AtomicU64::new(0),
            prefills_ahead: std::sync::atomic::AtomicU64::new(0),
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("crmbus-group-commit".into())
            .spawn(move || run(&worker))?;
        Ok(GroupCommit {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues dirtied segments for the group-commit thread and wakes it; returns the
    /// ticket to wait for.
    pub fn submit(&self, items: Vec<SyncItem>) -> u64 {
        let t = self.submit_to_lead(items);
        self.shared.wake.notify_one();
        t
    }

    /// Queues dirtied segments without waking the group-commit thread: the caller must
    /// call [`GroupCommit::try_lead`] with the returned ticket (and run the [`Lead`] it
    /// gets, if any) before it waits or goes away, or the round that makes them durable may
    /// not run.
    pub fn submit_to_lead(&self, items: Vec<SyncItem>) -> u64 {
        let mut q = self.shared.queue.locked();
        q.items.extend(items);
        q.ticket += 1;
        q.ticket
    }

    /// Takes the round for `ticket`, for the caller to run on its own thread
    /// ([`Lead::run`]), if no round is running and the ticket is not durable yet. Does not
    /// block: when a round is running it wakes the group-commit thread, which runs the next
    /// one with this ticket, and returns `None`; so does a log that is stopping (the
    /// thread runs what is left), one that is poisoned, and one whose ticket a round that
    /// just ended took. Either way, [`GroupCommit::wait`] for the ticket next.
    ///
    /// Only a caller that got a [`Lead`] needs a blocking section (on an async worker,
    /// [`tokio::task::block_in_place`], which hands the worker's other tasks to another
    /// thread): most appends under load find a round running and need none.
    pub fn try_lead(&self, ticket: u64) -> Option<Lead<'_>> {
        let shared = &*self.shared;
        if shared.progress.borrow().synced >= ticket {
            return None;
        }
        let round = match shared.round.try_lock() {
            Ok(round) => round,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                // A round is running: the thread runs the next one, with this ticket.
                shared.wake.notify_one();
                return None;
            }
        };
        // The round that just ended may have taken this ticket; a poisoned log runs no
        // more rounds (its waiters see the failure).
        let progress = shared.progress.borrow().clone();
        if progress.synced >= ticket || progress.failed.is_some() {
            return None;
        }
        // Once stopping, only the thread runs rounds (it takes what is queued before it
        // ends): no blocking section for a round that would decline.
        if shared.queue.locked().shutdown {
            shared.wake.notify_one();
            return None;
        }
        Some(Lead {
            shared,
            ran: false,
            _round: round,
        })
    }

    /// Wakes the group-commit thread to run a round for what is queued.
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Holds rounds off while an append that spans partitions stages, queues its intent
    /// and submits: the round after takes all of it.
    pub fn gate(&self) -> RwLockReadGuard<'_, ()> {
        self.shared.gate.read_locked()
    }

    /// Queues a batch journal intent. Call it (holding [`GroupCommit::gate`]) after
    /// staging the append's data and before submitting it: the round that takes that data
    /// writes and fsyncs the intent beside it.
    pub fn queue_intent(&self, frame: Vec<u8>) {
        let mut q = self.shared.queue.locked();
        q.journal.extend_from_slice(&frame);
        q.journal_sync = true;
    }

    /// Journal bytes queued and not yet written.
    pub fn queued_journal_bytes(&self) -> u64 {
        let q = self.shared.queue.locked();
        q.journal.len() as u64
    }

    /// Queues a batch journal done mark: written with the next round (or at stop), and
    /// never waited for — a lost mark only makes recovery look at a complete batch again.
    pub fn submit_done(&self, frame: Vec<u8>) {
        let mut q = self.shared.queue.locked();
        q.journal.extend_from_slice(&frame);
    }

    /// Waits until `ticket` is durable, or returns the fsync failure that prevents it.
    pub async fn wait(&self, ticket: u64) -> Result<(), Arc<str>> {
        let mut rx = self.shared.progress.subscribe();
        let result = rx
            .wait_for(|p| p.synced >= ticket || p.failed.is_some())
            .await
            .map(|p| p.failed.clone());
        match result {
            Ok(None) => Ok(()),
            Ok(Some(e)) => Err(e),
            Err(_) => Err(Arc::from("group commit stopped")),
        }
    }

    /// The failure that poisoned the log, if any.
    pub fn failure(&self) -> Option<Arc<str>> {
        self.shared.progress.borrow().failed.clone()
    }

    /// What the rounds did so far.
    pub fn stats(&self) -> GroupCommitStats {
        use std::sync::atomic::Ordering::Relaxed;
        GroupCommitStats {
            rounds: self.shared.rounds.load(Relaxed),
            rounds_led: self.shared.rounds_led.load(Relaxed),
            blocking_sections: self.shared.blocking_sections.load(Relaxed),
            sync_micros: self.shared.sync_micros.load(Relaxed),
            committed_rounds: self.shared.committed_rounds.load(Relaxed),
            checkpoints: self.shared.checkpoints.load(Relaxed),
            prefills_ahead: self.shared.prefills_ahead.load(Relaxed),
        }
    }

    /// Fsyncs every file the commit file's current records wrote and starts its next
    /// generation, waiting for a running round first. Called before files those records
    /// name are removed (a topic's, whose paths a topic created again would reuse). A
    /// failure poisons the log. Blocks on disk I/O.
    pub fn checkpoint(&self) -> Result<(), Arc<str>> {
        let shared = &*self.shared;
        let _round = shared.round.locked();
        if let Some(failed) = shared.progress.borrow().failed.clone() {
            return Err(failed);
        }
        checkpoint(shared).map_err(|e| {
            let why: Arc<str> = Arc::from(format!("checkpoint of the commit file failed: {e}"));
            poison(shared, &e, &why);
            why
        })
    }

    /// Syncs what is queued, then stops the thread; then checkpoints the commit file and
    /// cuts it to its header. Returns whether that was done: if not (the log is poisoned,
    /// or the checkpoint failed), records still name the log's files, and none of them may
    /// be replaced (the batch journal must not be compacted) before the next open writes
    /// the records again.
    pub fn stop(&self) -> bool {
        {
            let mut q = self.shared.queue.locked();
            q.shutdown = true;
        }
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.locked().take() {
            let _ = t.join();
        }
        // A round an appender led may still be running: wait for it. Appenders that come
        // later see `shutdown` and take no round (`try_lead`).
        let _round = self.shared.round.locked();
        // Everything is written: fsync it and leave the commit file only its header. Not
        // after a failure: the records may be all that holds what a failed fsync dropped,
        // and the next open writes them again.
        if self.shared.progress.borrow().failed.is_some() {
            return false;
        }
        let closed =
            checkpoint(&self.shared).and_then(|()| self.shared.commit.locked().file.close());
        match closed {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "could not checkpoint the commit file on stop; the next open writes its records again");
                false
            }
        }
    }

    /// Stops the thread for good ([`crmbus::EventLog::close`]): an append that got past the
    /// open check as the log closed gets an error instead of waiting forever. Returns what
    /// [`GroupCommit::stop`] does.
    pub fn close(&self) -> bool {
        let clean = self.stop();
        self.shared.progress.send_modify(|p| {
            if p.failed.is_none() {
                p.failed = Some(Arc::from("log is closed"));
            }
        });
        clean
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A round an appender took to run on its own thread ([`GroupCommit::try_lead`]). It holds
/// the round lock, so no other round runs (or takes its ticket) until it is run or dropped.
/// Dropped without running (a caller that could not block after all), it wakes the
/// group-commit thread to run the round instead.
pub struct Lead<'a> {
    shared: &'a Shared,
    ran: bool,
    _round: std::sync::MutexGuard<'a, ()>,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        if !self.ran {
            self.shared.wake.notify_one();
        }
    }
}

impl Lead<'_> {
    /// Runs the round, which takes everything queued (the appender's ticket among it), then
    /// wakes the group-commit thread for appends that arrived meanwhile. Blocks on disk
    /// I/O: call it where blocking is allowed (in [`tokio::task::block_in_place`] on an
    /// async worker).
    pub fn run(mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.ran = true;
        let shared = self.shared;
        shared.blocking_sections.fetch_add(1, Relaxed);
        if run_round(shared, true) {
            shared.rounds_led.fetch_add(1, Relaxed);
        }
        if has_work(&shared.queue.locked(), shared) {
            shared.wake.notify_one();
        }
    }
}

/// Whether a round has anything to do: staged data, tickets not yet durable or journal
/// frames not yet written.
fn has_work(q: &Queue, shared: &Shared) -> bool {
    !q.items.is_empty() || !q.journal.is_empty() || q.ticket != shared.progress.borrow().synced
}

/// The group-commit thread: runs a round whenever it is woken and there is work.
fn run(shared: &Shared) {
    loop {
        {
            let mut q = shared.queue.locked();
            while q.items.is_empty()
                && q.ticket == shared.progress.borrow().synced
                && !q.shutdown
                && !q.writeback
                && q.prefill.is_empty()
            {
                q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            let writeback = std::mem::take(&mut q.writeback);
            // What wakes the thread for a round (journal frames alone wait for the next
            // one, but are written before it stops).
            let work = if q.shutdown {
                has_work(&q, shared)
            } else {
                !q.items.is_empty() || q.ticket != shared.progress.borrow().synced
            };
            if q.shutdown && !work {
                return;
            }
            // Zeros ahead only when no round waits for the thread (they wait otherwise).
            let prefill = if work || q.shutdown {
                Vec::new()
            } else {
                std::mem::take(&mut q.prefill)
            };
            drop(q);
            if writeback {
                start_writeback(shared);
                checkpoint_ahead(shared);
            }
            if !prefill.is_empty() {
                prefill_ahead(shared, prefill);
            }
            if !work {
                continue;
            }
        }
        if shared.progress.borrow().failed.is_some() {
            // Poisoned: nothing more is ever acknowledged; wait for the log to close.
            let mut q = shared.queue.locked();
            while !q.shutdown {
                q.items.clear();
                q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            return;
        }
        // A leading appender may be running a round: wait for it, then take what is left.
        let _round = shared.round.locked();
        if shared.progress.borrow().failed.is_none() {
            run_round(shared, false);
        }
    }
}

/// Runs one round, holding [`Shared::round`]: takes what is queued, writes and fsyncs it,
/// and publishes the ticket reached (or the failure). Returns whether it ran: there was
/// anything to do, and the round is the thread's or the log is not stopping (`leader`:
/// once [`GroupCommit::stop`] is under way only the thread runs rounds).
fn run_round(shared: &Shared, leader: bool) -> bool {
    let (opts, journal) = (&shared.opts, &*shared.journal);
    // The round's work, taken while no append that spans partitions is half staged:
    // the tickets, the staged data of their partitions, and the journal frames queued
    // (among them the intent of every such append whose data is taken here).
    let (items, ticket, frames, journal_sync, work) = {
        let _gate = shared.gate.write_locked();
        let (items, ticket, frames, journal_sync) = {
            let mut q = shared.queue.locked();
            if !has_work(&q, shared) || (leader && q.shutdown) {
                return false;
            }
            (
                std::mem::take(&mut q.items),
                q.ticket,
                std::mem::take(&mut q.journal),
                std::mem::take(&mut q.journal_sync),
            )
        };
        let work = take_work(&items);
        (items, ticket, frames, journal_sync, work)
    };
    // A round that panics after taking its work must not let a later round publish a
    // ticket past the data it dropped: the log is poisoned instead.
    let _poison_on_panic = PoisonOnPanic(shared);
    let started = std::time::Instant::now();
    // Files the round fsyncs: each partition it writes, and the journal when it carries
    // intents or marks a caller waits for. Each costs the device a flush of its own.
    let files_written = work.partitions.len() + usize::from(journal_sync);
    let committed = files_written > 1 && opts.commit_file_bytes > 0;
    let files_synced = if committed { 1 } else { files_written };
    let journal_step = JournalStep { shared, journal };
    let frames = journal_step.frames(frames);
    let result = if committed {
        // One record of the commit file, one fsync, for all of the round's files.
        write_committed(shared, work, opts, &frames)
    } else if journal_sync {
        // Intents (or marks a caller waits for): fsynced beside the data.
        write_work(
            work,
            opts,
            &shared.flush,
            Some(JournalWrite {
                journal: Arc::clone(&shared.journal),
                frames,
            }),
        )
    } else {
        // Done marks and recovery points need no fsync: written now, ahead of the data.
        journal
            .write(&frames, false)
            .and_then(|()| write_work(work, opts, &shared.flush, None))
    }
    .map(|partitions| {
        let wanting = partitions
            .iter()
            .filter(|p| p.wants_prefill())
            .cloned()
            .collect::<Vec<_>>();
        journal_step.made_durable(partitions);
        wanting
    })
    .and_then(|wanting| compact_journal(shared).map(|()| wanting));
    drop(items);
    shared
        .rounds
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    shared.sync_micros.fetch_add(
        started.elapsed().as_micros() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    metrics::counter!("crmbus_log_commit_rounds_total").increment(1);
    metrics::counter!("crmbus_log_commit_files_synced_total").increment(files_synced as u64);
    metrics::histogram!("crmbus_log_commit_round_seconds").record(started.elapsed().as_secs_f64());
    match result {
        Ok(wanting) => {
            shared.progress.send_modify(|p| p.synced = ticket);
            if !wanting.is_empty() {
                let mut q = shared.queue.locked();
                for p in wanting {
                    if !q.prefill.iter().any(|w| Arc::ptr_eq(w, &p)) {
                        q.prefill.push(p);
                    }
                }
                drop(q);
                if leader {
                    shared.wake.notify_one();
                }
            }
            if committed && leader {
                // The leading appender answers first; the thread starts the writeback.
                shared.queue.locked().writeback = true;
                shared.wake.notify_one();
            } else if committed {
                start_writeback(shared);
            }
        }
        Err(e) => poison(
            shared,
            &e,
            &Arc::from(format!("write or fsync failed: {e}")),
        ),
    }
    true
}

/// Stops the log accepting writes after a failed write or fsync (`why` says so to
/// waiters).
fn poison(shared: &Shared, e: &std::io::Error, why: &Arc<str>) {
    tracing::error!(error = %e, "write or fsync failed; the embedded log stops accepting writes");
    metrics::counter!("crmbus_log_fsync_failures_total").increment(1);
    shared.progress.send_modify(|p| {
        if p.failed.is_none() {
            p.failed = Some(Arc::clone(why));
        }
    });
}

/// Starts the writeback of what the last committed round wrote to its segments (see
/// [`CommitState::written`]); best effort.
fn start_writeback(shared: &Shared) {
    let written = std::mem::take(&mut shared.commit.locked().written);
    for (segment, position, len) in written {
        if let Err(e) = segment
            .file()
            .and_then(|f| f.start_writeback(position, len))
        {
            tracing::debug!(segment = %segment.path.display(), error = %e, "could not start a segment's writeback");
        }
    }
}

/// Writes zeros ahead of the records of `partitions`' active segments (see
/// [`Segment::prefill_ahead`]), holding the round lock so that no round writes to their
/// files meanwhile. Run by the thread when no round waits for it: a small append then
/// writes into zeros already on disk, and its fdatasync has only its own pages to write.
///
/// It gives way to rounds: when one is running it writes nothing, and once an append is
/// queued it stops. A partition it skipped still wants its zeros after the next round,
/// which queues it again.
fn prefill_ahead(shared: &Shared, partitions: Vec<Arc<Partition>>) {
    let Ok(_round) = shared.round.try_lock() else {
        return;
    };
    if shared.progress.borrow().failed.is_some() {
        return;
    }
    for p in partitions {
        if has_work(&shared.queue.locked(), shared) {
            return;
        }
        if p.prefill_ahead() {
            shared
                .prefills_ahead
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Checkpoints once the commit file is more than half full, if no round is running: run by
/// the group-commit thread right after a round an appender led, while that appender's
/// next request is still on its way, so the round that would find the file full (and pay
/// for the checkpoint while its appenders wait) never comes.
fn checkpoint_ahead(shared: &Shared) {
    let half_full = {
        let state = shared.commit.locked();
        state.file.used() > state.file.capacity() / 2
    };
    if !half_full {
        return;
    }
    let Ok(_round) = shared.round.try_lock() else {
        // A round is running: the next one may check again.
        return;
    };
    if shared.progress.borrow().failed.is_some() {
        return;
    }
    if let Err(e) = checkpoint(shared) {
        poison(
            shared,
            &e,
            &Arc::from(format!("checkpoint of the commit file failed: {e}")),
        );
    }
}

/// Compacts the batch journal once it is large. The compaction replaces the file, so the
/// commit file's records must not name the old one: a checkpoint comes first.
fn compact_journal(shared: &Shared) -> std::io::Result<()> {
    if !shared.journal.wants_compaction() {
        return Ok(());
    }
    checkpoint(shared)?;
    shared.journal.compact_if_large()
}

/// Fsyncs the files the commit file's current generation wrote (the segments, then the
/// journal), then starts the next generation. The caller holds the round lock (or no
/// round can run).
fn checkpoint(shared: &Shared) -> std::io::Result<()> {
    let mut state = shared.commit.locked();
    if state.file.used() == 0 && state.dirty.is_empty() {
        return Ok(());
    }
    checkpoint_locked(shared, &mut state)
}

fn checkpoint_locked(shared: &Shared, state: &mut CommitState) -> std::io::Result<()> {
    for segment in &state.dirty {
        match segment.file() {
            Ok(f) => f.sync_data()?,
            // Removed since (retention): nothing of it needs to be durable.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    shared.journal.sync()?;
    state.file.checkpointed()?;
    state.dirty.clear();
    shared
        .checkpoints
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    metrics::counter!("crmbus_log_commit_checkpoints_total").increment(1);
    Ok(())
}

/// Writes what `work` took, and the journal `frames`, to their files without fsyncing
/// them, then one record of the same bytes to the commit file, fdatasynced; raises the
/// partitions' durable offsets once it is durable and returns the partitions. A round too
/// large for what is left of the commit file checkpoints instead (which fsyncs its files
/// with the rest).
fn write_committed(
    shared: &Shared,
    work: RoundWork,
    opts: &EmbeddedOptions,
    frames: &[u8],
) -> std::io::Result<Vec<Arc<Partition>>> {
    let journal = &*shared.journal;
    let mut guard = shared.commit.locked();
    let state = &mut *guard;
    journal.write(frames, false)?;
    state.record.clear();
    let RoundWork { partitions, taken } = work;
    let mut flushed = Vec::with_capacity(partitions.len());
    let (file, record) = (&state.file, &mut state.record);
    for ((p, _), t) in partitions.iter().zip(taken) {
        // The partition's writes of this round, one range per segment (a segment is
        // appended to at its end), by the segment's base offset.
        let mut ranges: Vec<(u64, u64, u64)> = Vec::new();
        let (segments, next) = p.write_taken_noting(t, opts, &mut |segment, position, bytes| {
            let end = position + bytes.len() as u64;
            match ranges.iter_mut().find(|(base, _, _)| *base == segment.base) {
                Some((_, _, last)) => *last = end,
                None => ranges.push((segment.base, position, end)),
            }
            record.add(file.relative(&segment.path)?, position, bytes)
        })?;
        for s in segments {
            if let Some(&(_, first, end)) = ranges.iter().find(|(base, _, _)| *base == s.base) {
                state.written.push((Arc::clone(&s), first, end - first));
            }
            if !state.dirty.iter().any(|d| Arc::ptr_eq(d, &s)) {
                state.dirty.push(s);
            }
        }
        flushed.push(next);
    }
    let journal_end = match journal.uncovered()? {
        Some((at, bytes)) => {
            let path = journal.path();
            state.record.add(state.file.relative(&path)?, at, &bytes)?;
            Some(at + bytes.len() as u64)
        }
        None => None,
    };
    if state.file.fits(&state.record) && state.file.append(&mut state.record)? {
        if let Some(end) = journal_end {
            journal.mark_covered(end);
        }
        shared
            .committed_rounds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    } else {
        // Too large for what is left of the commit file, or no room on the disk for it:
        // the checkpoint fsyncs every dirty segment, the journal and the header (the
        // round counted one file).
        let files = state.dirty.len() as u64 + 1;
        checkpoint_locked(shared, state)?;
        state.written.clear();
        metrics::counter!("crmbus_log_commit_files_synced_total").increment(files);
    }
    for ((p, wanted), flushed) in partitions.iter().zip(flushed) {
        p.mark_durable(flushed.max(*wanted));
    }
    Ok(partitions.into_iter().map(|(p, _)| p).collect())
}

/// Poisons the log if dropped while its round unwinds from a panic.
struct PoisonOnPanic<'a>(&'a Shared);

impl Drop for PoisonOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.progress.send_modify(|p| {
                if p.failed.is_none() {
                    p.failed = Some(Arc::from("a group-commit round panicked"));
                }
            });
        }
    }
}

/// The journal frames a round writes: the recovery points of the last round, then what
/// was queued.
struct JournalStep<'a> {
    shared: &'a Shared,
    journal: &'a BatchJournal,
}

impl JournalStep<'_> {
    /// The recovery points of what the last round made durable, then the round's queued
    /// `frames`: what the round writes to the journal. Points alone are written here (best
    /// effort), and none are returned.
    fn frames(&self, frames: Vec<u8>) -> Vec<u8> {
        // Recovery points of what the last round made durable. Read now, after taking
        // this round's data and before writing it, a partition's length is exactly what
        // earlier rounds wrote and made durable (fsynced, or in a durable commit file
        // record, which the next open writes again before it reads the point). They need no fsync: a lost point is only an
        // older one.
        let touched = std::mem::take(&mut *self.shared.touched.locked());
        let mut points = Vec::new();
        for p in touched {
            // A deleted topic's partition has no point: it would apply to a topic created
            // again under the name.
            if p.is_deleted() {
                continue;
            }
            if let Some(point) = p.recovery_point() {
                points.extend(self.journal.recovery_point(&p.topic, p.id, &point));
            }
        }
        if frames.is_empty() {
            // Points alone are best effort: failing to write one (a full disk) must not
            // stop the log, it only leaves an older point in place.
            if !points.is_empty() {
                if let Err(e) = self.journal.write(&points, false) {
                    tracing::warn!(error = %e, "could not write recovery points");
                }
            }
            return Vec::new();
        }
        // The points go first: a topic deletion mark queued for this round must come after
        // any point of the topic it deletes.
        points.extend(frames);
        points
    }

    /// Notes the partitions a round made durable.
    fn made_durable(&self, partitions: Vec<Arc<Partition>>) {
        *self.shared.touched.locked() = partitions;
    }
}

/// What a round took: each partition with the offset its items wait for, and what was
/// staged in it.
struct RoundWork {
    partitions: Vec<(Arc<Partition>, u64)>,
    taken: Vec<TakenStaged>,
}

/// Takes the staged data of the partitions `items` name.
fn take_work(items: &[SyncItem]) -> RoundWork {
    let mut partitions: HashMap<*const Partition, (&Arc<Partition>, u64)> = HashMap::new();
    for i in items {
        let e = partitions
            .entry(Arc::as_ptr(&i.partition))
            .or_insert((&i.partition, i.next_offset));
        e.1 = e.1.max(i.next_offset);
    }
    let mut partitions: Vec<(Arc<Partition>, u64)> = partitions
        .into_values()
        .map(|(p, next)| (Arc::clone(p), next))
        .collect();
    partitions.sort_by(|(a, _), (b, _)| (&a.topic, a.id).cmp(&(&b.topic, b.id)));
    let taken = partitions.iter().map(|(p, _)| p.take_staged()).collect();
    RoundWork { partitions, taken }
}

/// Most threads a log's [`FlushPool`] keeps: with the round's own thread, one more than
/// this many partitions are flushed at once (a round of more queues the rest behind
/// them).
const FLUSH_THREADS: usize = 15;

/// Writes `t` to `p`'s segments and fdatasyncs them; returns the next offset written.
fn write_and_sync(p: &Partition, t: TakenStaged, opts: &EmbeddedOptions) -> std::io::Result<u64> {
    let (segments, next) = p.write_taken(t, opts)?;
    for s in segments {
        s.file()?.sync_data()?;
    }
    Ok(next)
}

/// Journal frames a round writes and fsyncs beside its data.
struct JournalWrite {
    journal: Arc<BatchJournal>,
    frames: Vec<u8>,
}

impl JournalWrite {
    fn run(self) -> std::io::Result<()> {
        self.journal.write(&self.frames, true)
    }
}

/// A round's task: one partition's data, or the journal's frames.
type FlushTask = Box<dyn FnOnce() -> std::io::Result<Option<u64>> + Send>;

/// Writes and fsyncs what `work` took, and `journal` beside it, and raises the partitions'
/// durable offsets once all of it is durable; returns the partitions made durable.
fn write_work(
    work: RoundWork,
    opts: &EmbeddedOptions,
    pool: &FlushPool,
    journal: Option<JournalWrite>,
) -> std::io::Result<Vec<Arc<Partition>>> {
    let RoundWork { partitions, taken } = work;
    let tasks = partitions.len() + usize::from(journal.is_some());
    let results: Vec<std::io::Result<Option<u64>>> = if tasks <= 1 || !opts.storage.concurrent() {
        // One at a time: the data first, then the journal (the order a crash between
        // the two finds hardest: parts on disk whose intent is not).
        let mut results: Vec<_> = partitions
            .iter()
            .zip(taken)
            .map(|((p, _), t)| write_and_sync(p, t, opts).map(Some))
            .collect();
        if let Some(j) = journal {
            if results.iter().all(Result::is_ok) {
                results.push(j.run().map(|()| None));
            }
        }
        results
    } else {
        // Several tasks: write and flush them concurrently, so the device sees the
        // requests together instead of one flush latency after another.
        let opts = Arc::new(opts.clone());
        let mut tasks: Vec<FlushTask> = Vec::with_capacity(tasks);
        if let Some(j) = journal {
            tasks.push(Box::new(move || j.run().map(|()| None)));
        }
        for ((p, _), t) in partitions.iter().zip(taken) {
            let (p, opts) = (Arc::clone(p), Arc::clone(&opts));
            tasks.push(Box::new(move || write_and_sync(&p, t, &opts).map(Some)));
        }
        pool.run_all(tasks, || {
            Err(std::io::Error::other("flush thread panicked"))
        })
    };
    // Nothing of a round is served unless all of it is durable: an append that spans
    // partitions and failed in one of them (or whose intent failed) is rolled back by the
    // next open.
    let flushed: Vec<u64> = results
        .into_iter()
        .collect::<std::io::Result<Vec<Option<u64>>>>()?
        .into_iter()
        .flatten()
        .collect();
    for ((p, wanted), flushed) in partitions.iter().zip(flushed) {
        p.mark_durable(flushed.max(*wanted));
    }
    Ok(partitions.into_iter().map(|(p, _)| p).collect())
}

/// Writes and fsyncs what `items` staged, without a journal step: for recovery on open,
/// before any append runs.
pub(crate) fn sync_recovered(items: &[SyncItem], opts: &EmbeddedOptions) -> std::io::Result<()> {
    // A pool for this one round: its threads end when it is dropped.
    let pool = FlushPool::new(FLUSH_THREADS);
    write_work(take_work(items), opts, &pool, None).map(|_| ())
}
