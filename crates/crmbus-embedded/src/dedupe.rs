//! The producer dedupe index of one topic: which (source, id) digests were appended within
//! the window, and where.
//!
//! It is derived state: every record carries its digest, so on open the index is rebuilt
//! from the records of the last window. Nothing here needs its own durability.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The bound on dedupe entries across every topic of a log, shared by their indexes: with
/// topics created on first publish, a per-topic cap alone bounds nothing.
#[derive(Debug)]
pub struct DedupeBudget {
    used: AtomicUsize,
    max: usize,
}

impl DedupeBudget {
    /// A budget of `max` entries (at least 1).
    pub fn new(max: usize) -> Arc<DedupeBudget> {
        Arc::new(DedupeBudget {
            used: AtomicUsize::new(0),
            max: max.max(1),
        })
    }

    /// Entries held now, across all topics.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// Where an event was first appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstAppend {
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
}

/// The hasher of the index's map. Its keys are already digests (of source and id), so
/// hashing them again needs no strength of its own beyond a random seed: foldhash mixes a
/// `u64` in a few instructions, where the standard SipHash was most of an insert's cost.
/// Its resistance to keys chosen to collide is minimal: publishers choose ids, but the
/// seed is drawn per map and never shown, and a collision costs time, never a wrong
/// answer (a digest found is checked against the stored event's source and id).
type DigestHash = foldhash::fast::RandomState;

/// Digest → first append, with expiry by time and a size cap.
#[derive(Debug)]
pub struct DedupeIndex {
    map: HashMap<u64, FirstAppend, DigestHash>,
    order: VecDeque<(i64, u64, FirstAppend)>,
    window_us: i64,
    max_entries: usize,
    budget: Arc<DedupeBudget>,
}

impl DedupeIndex {
    /// An empty index holding at most `max_entries`, drawing on the log-wide `budget`.
    pub fn new(window_us: i64, max_entries: usize, budget: Arc<DedupeBudget>) -> Self {
        DedupeIndex {
            map: HashMap::default(),
            order: VecDeque::new(),
            window_us,
            max_entries: max_entries.max(1),
            budget,
        }
    }

    /// Forgets entries older than the window at `now_us`.
    pub fn expire(&mut self, now_us: i64) {
        let cutoff = now_us.saturating_sub(self.window_us);
        while let Some(&(ts, _, _)) = self.order.front() {
            if ts >= cutoff {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((_, hash, at)) = self.order.pop_front() {
            self.budget.used.fetch_sub(1, Ordering::Relaxed);
            if self.map.get(&hash) == Some(&at) {
                self.map.remove(&hash);
            }
        }
    }

    /// The first append of `hash`, if remembered.
    pub fn get(&self, hash: u64) -> Option<FirstAppend> {
        self.map.get(&hash).copied()
    }

    /// Remembers a new first append.
    /// When this topic or the whole log is at its cap, this topic's oldest entry goes
    /// first (counted in `crmbus_dedupe_evicted_early_total`).
    pub fn insert(&mut self, hash: u64, at: FirstAppend, ts_us: i64) {
        if self.order.len() >= self.max_entries
            || self.budget.used.load(Ordering::Relaxed) >= self.budget.max && !self.order.is_empty()
        {
            self.pop_oldest();
            metrics::counter!("crmbus_dedupe_evicted_early_total").increment(1);
        }
        self.map.insert(hash, at);
        self.order.push_back((ts_us, hash, at));
        self.budget.used.fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets that `hash` was first appended at `at` (an append taken back before it was
    /// submitted); a later entry for the digest stays.
    pub fn forget(&mut self, hash: u64, at: FirstAppend) {
        if self.map.get(&hash) == Some(&at) {
            self.map.remove(&hash);
        }
    }

    /// Number of remembered entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl Drop for DedupeIndex {
    fn drop(&mut self) {
        self.budget
            .used
            .fetch_sub(self.order.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(o: u64) -> FirstAppend {
        FirstAppend {
            partition: 0,
            offset: o,
        }
    }

    #[test]
    fn expires_by_time_and_caps_size() {
        let mut d = DedupeIndex::new(1_000, 3, DedupeBudget::new(100));
        d.insert(1, at(0), 100);
        d.insert(2, at(1), 600);
        assert_eq!(d.get(1), Some(at(0)));
        d.expire(1_200);
        assert_eq!(d.get(1), None);
        assert_eq!(d.get(2), Some(at(1)));
        d.insert(3, at(2), 700);
        d.insert(4, at(3), 800);
        d.insert(5, at(4), 900);
        assert_eq!(d.len(), 3);
        assert_eq!(
            d.get(2),
            None,
            "oldest entry should go when the cap is reached"
        );
        assert_eq!(d.get(5), Some(at(4)));
    }

    #[test]
    fn overwritten_entry_survives_expiry_of_the_old_one() {
        let mut d = DedupeIndex::new(1_000, 10, DedupeBudget::new(100));
        d.insert(7, at(0), 0);
        d.insert(7, at(5), 900);
        d.expire(1_500);
        assert_eq!(d.get(7), Some(at(5)));
    }

    #[test]
    fn topics_share_one_bound_and_give_entries_back_when_dropped() {
        let budget = DedupeBudget::new(4);
        let mut a = DedupeIndex::new(1_000_000, 100, Arc::clone(&budget));
        let mut b = DedupeIndex::new(1_000_000, 100, Arc::clone(&budget));
        for i in 0..3 {
            a.insert(i, at(i), 10);
        }
        for i in 10..13 {
            b.insert(i, at(i), 20);
        }
        assert_eq!(budget.used(), 4, "the log-wide bound holds");
        assert_eq!(a.len() + b.len(), 4);
        assert_eq!(
            b.get(10),
            None,
            "the topic over the bound gave up its oldest"
        );
        assert_eq!(b.get(12), Some(at(12)));
        drop(a);
        assert_eq!(budget.used(), b.len());
    }
}
