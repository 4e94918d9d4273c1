//! A bound on the segment files the log holds open.
//!
//! Every partition's active segment stays open (it takes appends); sealed segments are
//! opened when a read needs them and closed again, least recently used first, once more
//! than [`EmbeddedOptions::max_open_segments`](crate::EmbeddedOptions) files are open. Without
//! it, a log with long retention kept a descriptor per segment, until the process limit
//! made a seal fail (and poisoned the log) or a restart fail to open.

use crmbus::sync::LockExt;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::storage::{OpenMode, Storage, StorageFile};

/// The open file of one segment, if it is open.
#[derive(Debug, Default)]
pub struct HandleSlot {
    file: Mutex<Option<Arc<dyn StorageFile>>>,
    last_used: AtomicU64,
    /// Never closed while set (the active segment).
    pinned: AtomicBool,
}

impl HandleSlot {
    /// A slot holding `file`, pinned open.
    pub fn pinned(file: Box<dyn StorageFile>) -> Arc<HandleSlot> {
        Arc::new(HandleSlot {
            file: Mutex::new(Some(Arc::from(file))),
            last_used: AtomicU64::new(0),
            pinned: AtomicBool::new(true),
        })
    }

    /// A slot with no file open yet.
    pub fn closed() -> Arc<HandleSlot> {
        Arc::new(HandleSlot::default())
    }

    /// Lets the cache close the file when it needs room (the segment was sealed).
    pub fn unpin(&self) {
        self.pinned.store(false, Ordering::Release);
    }

    fn is_open(&self) -> bool {
        self.file.lock().map(|f| f.is_some()).unwrap_or(false)
    }

    /// Closes the file if nobody is using it and it is not pinned; true if it did.
    fn close_if_idle(&self) -> bool {
        if self.pinned.load(Ordering::Acquire) {
            return false;
        }
        let mut f = self.file.locked();
        match f.as_ref() {
            Some(h) if Arc::strong_count(h) == 1 => {
                *f = None;
                true
            }
            _ => false,
        }
    }
}

/// The log-wide set of open segment files.
#[derive(Debug)]
pub struct HandleCache {
    max: usize,
    tick: AtomicU64,
    slots: Mutex<Vec<Weak<HandleSlot>>>,
}

impl HandleCache {
    /// A cache that keeps at most `max` files open (pinned ones excepted when over).
    pub fn new(max: usize) -> Arc<HandleCache> {
        Arc::new(HandleCache {
            max: max.max(1),
            tick: AtomicU64::new(0),
            slots: Mutex::new(Vec::new()),
        })
    }

    /// The file of `slot`, opening `path` if it is closed (and closing the least recently
    /// used idle files if that makes too many open).
    pub fn file(
        &self,
        slot: &Arc<HandleSlot>,
        storage: &dyn Storage,
        path: &Path,
    ) -> io::Result<Arc<dyn StorageFile>> {
        slot.last_used
            .store(self.tick.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        let opened = {
            let mut f = slot.file.locked();
            if let Some(h) = f.as_ref() {
                return Ok(Arc::clone(h));
            }
            let h: Arc<dyn StorageFile> = Arc::from(storage.open(path, OpenMode::Existing)?);
            *f = Some(Arc::clone(&h));
            h
        };
        self.track(slot);
        Ok(opened)
    }

    /// Counts `slot` among the open files, closing idle ones beyond the bound.
    pub fn track(&self, slot: &Arc<HandleSlot>) {
        let mut slots = self.slots.locked();
        slots.push(Arc::downgrade(slot));
        slots.retain(|w| w.upgrade().is_some_and(|s| s.is_open()));
        let mut open = slots.len();
        if open <= self.max {
            return;
        }
        let mut candidates: Vec<(u64, Arc<HandleSlot>)> = slots
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|s| !s.pinned.load(Ordering::Acquire) && !Arc::ptr_eq(s, slot))
            .map(|s| (s.last_used.load(Ordering::Relaxed), s))
            .collect();
        candidates.sort_by_key(|(t, _)| *t);
        for (_, s) in candidates {
            if open <= self.max {
                break;
            }
            if s.close_if_idle() {
                open -= 1;
            }
        }
        slots.retain(|w| w.upgrade().is_some_and(|s| s.is_open()));
    }

    /// Segment files open now (as far as the cache knows).
    pub fn open_files(&self) -> usize {
        let slots = self.slots.locked();
        slots
            .iter()
            .filter(|w| w.upgrade().is_some_and(|s| s.is_open()))
            .count()
    }
}
