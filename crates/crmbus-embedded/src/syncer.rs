//! Group commit: one background thread makes appended data durable for every append that
//! arrived while the previous fdatasync ran, then wakes them all at once.
//!
//! An appender writes its frames to the page cache, then [`GroupCommit::submit`]s what it
//! dirtied and waits on the returned ticket. The thread takes everything submitted so far,
//! fsyncs the directories of new files, fdatasyncs each dirty segment once, raises the
//! partitions' durable offsets, and publishes the ticket number it reached.
//! A failed fsync poisons the log: the kernel may have dropped the dirty pages, so no
//! later write can be acknowledged honestly.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use tokio::sync::watch;

use crate::partition::Partition;
use crate::segment::Segment;

/// Something an append dirtied: a segment (and maybe its new directory entry) that must
/// reach the disk before `partition` may serve offsets below `next_offset`.
pub struct SyncItem {
    /// The partition written to.
    pub partition: Arc<Partition>,
    /// The segment written to.
    pub segment: Arc<Segment>,
    /// The partition's next offset after the write.
    pub next_offset: u64,
    /// A directory whose entries changed (a new segment file) and must be fsynced first.
    pub dir: Option<PathBuf>,
}

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
    ticket: u64,
    shutdown: bool,
}

struct Shared {
    rounds: std::sync::atomic::AtomicU64,
    sync_micros: std::sync::atomic::AtomicU64,
    queue: Mutex<Queue>,
    wake: Condvar,
    progress: watch::Sender<Progress>,
}

/// The group-commit thread and its queue.
pub struct GroupCommit {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl GroupCommit {
    /// Starts the thread.
    pub fn start() -> std::io::Result<GroupCommit> {
        let (tx, _) = watch::channel(Progress::default());
        let shared = Arc::new(Shared {
            rounds: std::sync::atomic::AtomicU64::new(0),
            sync_micros: std::sync::atomic::AtomicU64::new(0),
            queue: Mutex::new(Queue {
                items: Vec::new(),
                ticket: 0,
                shutdown: false,
            }),
            wake: Condvar::new(),
            progress: tx,
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

    /// Queues dirtied segments; returns the ticket to wait for.
    pub fn submit(&self, items: Vec<SyncItem>) -> u64 {
        let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.items.extend(items);
        q.ticket += 1;
        let t = q.ticket;
        drop(q);
        self.shared.wake.notify_one();
        t
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

    /// Group-commit rounds run so far, and the total time they spent syncing (µs).
    pub fn stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.shared.rounds.load(Relaxed),
            self.shared.sync_micros.load(Relaxed),
        )
    }

    /// Syncs what is queued, then stops the thread.
    pub fn stop(&self) {
        {
            let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.shutdown = true;
        }
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(shared: &Shared) {
    loop {
        let (items, ticket) = {
            let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            while q.items.is_empty() && q.ticket == shared.progress.borrow().synced && !q.shutdown {
                q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            if q.shutdown && q.items.is_empty() && q.ticket == shared.progress.borrow().synced {
                return;
            }
            (std::mem::take(&mut q.items), q.ticket)
        };
        if shared.progress.borrow().failed.is_some() {
            // Poisoned: nothing more is ever acknowledged; wait for the log to close.
            let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            while !q.shutdown {
                q.items.clear();
                q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            return;
        }
        let started = std::time::Instant::now();
        let result = sync_items(&items);
        shared
            .rounds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        shared.sync_micros.fetch_add(
            started.elapsed().as_micros() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        match result {
            Ok(()) => {
                for item in &items {
                    item.partition.mark_durable(item.next_offset);
                }
                shared.progress.send_modify(|p| p.synced = ticket);
            }
            Err(e) => {
                tracing::error!(error = %e, "fsync failed; the embedded log stops accepting writes");
                metrics::counter!("crmbus_log_fsync_failures_total").increment(1);
                shared
                    .progress
                    .send_modify(|p| p.failed = Some(Arc::from(format!("fsync failed: {e}"))));
            }
        }
    }
}

fn sync_items(items: &[SyncItem]) -> std::io::Result<()> {
    let mut dirs: Vec<&PathBuf> = items.iter().filter_map(|i| i.dir.as_ref()).collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        File::open(d)?.sync_all()?;
    }
    let mut segments: HashMap<*const Segment, &Segment> = HashMap::new();
    for i in items {
        segments.insert(Arc::as_ptr(&i.segment), &i.segment);
    }
    let segments: Vec<&Segment> = segments.into_values().collect();
    match segments.as_slice() {
        [] => Ok(()),
        [one] => one.file.sync_data(),
        many => {
            // Several dirty files (partitions): flush them concurrently so the device sees
            // the requests together instead of paying one flush latency after another.
            std::thread::scope(|scope| {
                let handles: Vec<_> = many
                    .iter()
                    .map(|s| scope.spawn(move || s.file.sync_data()))
                    .collect();
                let mut result = Ok(());
                for h in handles {
                    let r = h
                        .join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("fsync thread panicked")));
                    if result.is_ok() {
                        result = r;
                    }
                }
                result
            })
        }
    }
}
