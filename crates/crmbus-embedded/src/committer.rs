//! [`Committer`]: how the embedded log makes what it writes durable, decided once.
//!
//! With [`Durability::Fsync`] every step goes through the [`GroupCommit`]: journal frames
//! are queued for its next round, staged data is handed to it, and a caller that must not
//! go on before something is on disk waits for the round's ticket. An append on a
//! multi-threaded tokio runtime that finds no round running runs one itself, in a blocking
//! section of its worker ([`tokio::task::block_in_place`]), instead of handing it to the
//! group-commit thread and being woken back. With
//! [`Durability::Os`] every step writes to the page cache at once and nothing is fsynced or
//! waited for; a failed write stops the log until a restart (offsets may have a hole).
//!
//! The log calls the same steps in the same order in both modes; only this file knows which
//! of the two it runs.

use crmbus::sync::LockExt;
use std::sync::{Arc, Mutex};

use crmbus::LogError;

use crate::batch_journal::BatchJournal;
use crate::commit_file::CommitFile;
use crate::options::{Durability, EmbeddedOptions};
use crate::partition::SyncItem;
use crate::syncer::{GroupCommit, GroupCommitStats};

/// A storage error as the log reports it: a full disk is [`LogError::StorageFull`].
pub(crate) fn storage_error(e: std::io::Error) -> LogError {
    if crate::storage::is_no_space(&e) {
        LogError::StorageFull(e.to_string())
    } else {
        LogError::Io(e)
    }
}

/// Makes the log's journal frames and staged data durable, by group commit or not at all.
pub(crate) struct Committer {
    journal: Arc<BatchJournal>,
    how: How,
}

enum How {
    /// [`Durability::Fsync`]: the group-commit thread writes and fsyncs.
    Group(GroupCommit),
    /// [`Durability::Os`]: written to the page cache now, never fsynced.
    PageCache {
        /// Set when a page-cache write failed (offsets may have a hole).
        failed: Mutex<Option<String>>,
    },
}

/// What a caller waits for before it goes on: a queued frame on disk (group commit), or
/// nothing (page cache, where the frame is already written).
#[must_use = "wait for the barrier before going on"]
pub(crate) struct Barrier {
    ticket: Option<u64>,
    /// The caller runs the round itself if none is running (see [`Committer::submit`]).
    lead: bool,
}

impl Barrier {
    const NONE: Barrier = Barrier {
        ticket: None,
        lead: false,
    };

    fn ticket(ticket: u64) -> Barrier {
        Barrier {
            ticket: Some(ticket),
            lead: false,
        }
    }
}

/// Whether the calling thread may run a group-commit round itself, in
/// [`tokio::task::block_in_place`]: on a multi-threaded tokio runtime only (on the
/// current-thread runtime it would block every task, and outside tokio nothing says
/// blocking is allowed).
fn may_lead() -> bool {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread,
        Err(_) => false,
    }
}

impl Committer {
    /// The committer `opts.durability` asks for; starts the group-commit thread if any. It
    /// writes `journal`'s frames, and its rounds use `commit` (page-cache durability needs
    /// no commit file).
    pub fn start(
        opts: &EmbeddedOptions,
        journal: Arc<BatchJournal>,
        commit: CommitFile,
    ) -> std::io::Result<Self> {
        let how = match opts.durability {
            Durability::Fsync => How::Group(GroupCommit::start(
                opts.clone(),
                Arc::clone(&journal),
                commit,
            )?),
            Durability::Os => How::PageCache {
                failed: Mutex::new(None),
            },
        };
        Ok(Committer { journal, how })
    }

    /// Makes room in the journal for an intent frame of up to `bytes`, before the append
    /// that spans partitions stages anything: a full disk fails that append here, not the
    /// group commit's write (the page cache writes the frame at once and needs no room).
    pub fn reserve_intent(&self, bytes: u64) -> Result<(), LogError> {
        match &self.how {
            How::Group(commit) => self
                .journal
                .ensure_room(commit.queued_journal_bytes() + bytes)
                .map_err(storage_error),
            How::PageCache { .. } => Ok(()),
        }
    }

    /// Held by an append that spans partitions from staging until it has submitted: the
    /// group commit takes all of its parts and its intent in one round (see
    /// [`crate::syncer`]). The page cache needs none: its writes happen under the
    /// topics' append locks, which the append holds throughout.
    pub fn gate(&self) -> Option<std::sync::RwLockReadGuard<'_, ()>> {
        match &self.how {
            How::Group(commit) => Some(commit.gate()),
            How::PageCache { .. } => None,
        }
    }

    /// Queues the intent `frame` of an append that spans partitions, after staging it and
    /// before submitting it (holding [`Committer::gate`]): the group commit writes and
    /// fsyncs it beside the append's data; the page cache gets it now.
    pub fn queue_intent(&self, frame: Vec<u8>) -> Result<(), LogError> {
        match &self.how {
            How::Group(commit) => {
                commit.queue_intent(frame);
                Ok(())
            }
            How::PageCache { .. } => self
                .journal
                .write(&frame, false)
                .map_err(|e| self.fail_write(&e)),
        }
    }

    /// Queues a journal `frame` that must be durable before the caller goes on (an abort
    /// mark, a topic deletion mark); returns the barrier to wait for.
    pub fn queue_mark(&self, frame: Vec<u8>) -> Result<Barrier, LogError> {
        match &self.how {
            How::Group(commit) => {
                commit.queue_intent(frame);
                Ok(Barrier::ticket(commit.submit(Vec::new())))
            }
            How::PageCache { .. } => {
                self.journal
                    .write(&frame, false)
                    .map_err(|e| self.fail_write(&e))?;
                Ok(Barrier::NONE)
            }
        }
    }

    /// Writes the done `frame` of a journalled append whose data is durable. The group
    /// commit writes it with its next round and never waits for it (a lost mark only makes
    /// recovery look at a complete batch again).
    pub fn finish_intent(&self, frame: Vec<u8>) -> Result<(), LogError> {
        match &self.how {
            How::Group(commit) => {
                commit.submit_done(frame);
                Ok(())
            }
            How::PageCache { .. } => self
                .journal
                .write(&frame, false)
                .and_then(|()| self.journal.compact_if_large())
                .map_err(|e| self.fail_write(&e)),
        }
    }

    /// Hands what `sync` staged to the group commit and returns the barrier to wait for,
    /// or writes it to the page cache now (and raises the partitions' durable offsets).
    /// Called while the append still holds its topics' locks, so page-cache writes of
    /// appends to a topic happen in the order they staged.
    ///
    /// Where the caller may run a round itself ([`may_lead`]), the group-commit thread is
    /// not woken: the caller must [`Committer::wait`] for the barrier at once (in the same
    /// poll, with no await in between), which runs the round if no other is running.
    pub fn submit(&self, sync: Vec<SyncItem>, opts: &EmbeddedOptions) -> Result<Barrier, LogError> {
        match &self.how {
            How::Group(commit) => {
                if sync.is_empty() {
                    return Ok(Barrier::NONE);
                }
                if may_lead() {
                    return Ok(Barrier {
                        ticket: Some(commit.submit_to_lead(sync)),
                        lead: true,
                    });
                }
                Ok(Barrier::ticket(commit.submit(sync)))
            }
            How::PageCache { failed } => {
                // After a failed write nothing more is written: what a failed append left
                // staged must not reach the files with the next append's data.
                if let Some(why) = failed.locked().clone() {
                    return Err(LogError::Unavailable(why));
                }
                // Page-cache durability: write now, without fsync; served only once all of
                // it is written (a failure stops the log, and the next open rolls back an
                // append that spans partitions and was written to some only).
                let mut written = Vec::with_capacity(sync.len());
                for item in &sync {
                    match item.partition.flush_staged(opts) {
                        Ok((_, next)) => written.push(next.max(item.next_offset)),
                        Err(e) => return Err(self.fail_write(&e)),
                    }
                }
                for (item, next) in sync.iter().zip(written) {
                    item.partition.mark_durable(next);
                }
                Ok(Barrier::NONE)
            }
        }
    }

    /// Waits until what `barrier` stands for is durable. A barrier that leads runs the
    /// round first, before the first await, if none is running.
    pub async fn wait(&self, barrier: Barrier) -> Result<(), LogError> {
        match (&self.how, barrier.ticket) {
            (How::Group(commit), Some(ticket)) => {
                // A blocking section only for a round this append runs: one that finds a
                // round running leaves its ticket to the group-commit thread.
                if let Some(lead) = barrier.lead.then(|| commit.try_lead(ticket)).flatten() {
                    // `block_in_place` refuses (panics, before running anything) on a
                    // thread that entered a multi-threaded runtime's handle without
                    // being one of its workers or in its `block_on`: the round is let go
                    // and the group-commit thread runs it. A panic of the round itself
                    // poisons the log (see `syncer`), and the wait below reports it.
                    let led = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        tokio::task::block_in_place(|| lead.run())
                    }));
                    if led.is_err() {
                        commit.wake();
                    }
                }
                commit
                    .wait(ticket)
                    .await
                    .map_err(|e| LogError::Unavailable(e.to_string()))
            }
            _ => Ok(()),
        }
    }

    /// [`Committer::wait`] from a blocking thread, on `runtime`.
    pub fn wait_blocking(
        &self,
        barrier: Barrier,
        runtime: &tokio::runtime::Handle,
    ) -> Result<(), LogError> {
        if barrier.ticket.is_none() {
            return Ok(());
        }
        runtime.block_on(self.wait(barrier))
    }

    /// Writes and fsyncs the recovery points that `frames` makes (on open, once all of
    /// every partition is durable: open fsyncs what it found, whatever the durability).
    /// With page-cache durability these are the only points written, and they stay true:
    /// what they cover was fsynced.
    pub fn write_recovery_points(&self, frames: impl FnOnce() -> Vec<u8>) -> Result<(), LogError> {
        let frames = frames();
        if frames.is_empty() {
            return Ok(());
        }
        self.journal.write(&frames, true).map_err(storage_error)
    }

    /// Makes every file written so far durable and forgets the commit file's records
    /// (see [`GroupCommit::checkpoint`]): before files the records may name are removed.
    /// Blocks on disk I/O.
    pub fn checkpoint(&self) -> Result<(), LogError> {
        match &self.how {
            How::Group(commit) => commit
                .checkpoint()
                .map_err(|e| LogError::Unavailable(e.to_string())),
            How::PageCache { .. } => Ok(()),
        }
    }

    /// Why the log accepts no more writes, if it does not: a failed group commit round or
    /// a failed page-cache write.
    pub fn failure(&self) -> Option<String> {
        match &self.how {
            How::Group(commit) => commit.failure().map(|f| f.to_string()),
            How::PageCache { failed } => failed.locked().clone(),
        }
    }

    /// What the group commit's rounds did so far; all zero without group commit.
    pub fn stats(&self) -> GroupCommitStats {
        match &self.how {
            How::Group(commit) => commit.stats(),
            How::PageCache { .. } => GroupCommitStats::default(),
        }
    }

    /// Syncs what is queued and stops the group-commit thread (on drop of the log).
    pub fn stop(&self) {
        if let How::Group(commit) = &self.how {
            let _ = commit.stop();
        }
    }

    /// Stops for good ([`crmbus::EventLog::close`]): a waiting append gets an error.
    /// Returns whether the log's files may be replaced now (the commit file names none of
    /// them; see [`GroupCommit::stop`]).
    pub fn close(&self) -> bool {
        match &self.how {
            How::Group(commit) => commit.close(),
            How::PageCache { .. } => true,
        }
    }

    /// Records a page-cache write failure: the log stops accepting writes.
    fn fail_write(&self, e: &std::io::Error) -> LogError {
        tracing::error!(error = %e, "write failed; the embedded log stops accepting writes");
        let msg = format!("write failed: {e}");
        if let How::PageCache { failed } = &self.how {
            *failed.locked() = Some(msg.clone());
        }
        LogError::Unavailable(msg)
    }
}
