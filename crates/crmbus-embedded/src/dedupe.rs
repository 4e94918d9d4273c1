//! The producer dedupe index of one topic: which (source, id) digests were appended within
//! the window, and where.
//!
//! It is derived state: every record carries its digest, so on open the index is rebuilt
//! from the records of the last window. Nothing here needs its own durability.

use std::collections::{HashMap, VecDeque};

/// Where an event was first appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstAppend {
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
}

/// Digest → first append, with expiry by time and a size cap.
#[derive(Debug, Default)]
pub struct DedupeIndex {
    map: HashMap<u64, FirstAppend>,
    order: VecDeque<(i64, u64, FirstAppend)>,
    window_us: i64,
    max_entries: usize,
}

impl DedupeIndex {
    /// An empty index.
    pub fn new(window_us: i64, max_entries: usize) -> Self {
        DedupeIndex {
            map: HashMap::new(),
            order: VecDeque::new(),
            window_us,
            max_entries: max_entries.max(1),
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
    pub fn insert(&mut self, hash: u64, at: FirstAppend, ts_us: i64) {
        if self.order.len() >= self.max_entries {
            self.pop_oldest();
            metrics::counter!("crmbus_dedupe_evicted_early_total").increment(1);
        }
        self.map.insert(hash, at);
        self.order.push_back((ts_us, hash, at));
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
        let mut d = DedupeIndex::new(1_000, 3);
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
        let mut d = DedupeIndex::new(1_000, 10);
        d.insert(7, at(0), 0);
        d.insert(7, at(5), 900);
        d.expire(1_500);
        assert_eq!(d.get(7), Some(at(5)));
    }
}
