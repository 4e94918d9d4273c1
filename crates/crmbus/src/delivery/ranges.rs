//! [`OffsetRanges`]: a set of offsets kept as disjoint half-open ranges, so that a run of
//! finished offsets costs one entry however long it is.

use std::collections::BTreeMap;

/// A set of offsets stored as disjoint, non-adjacent ranges `start..end`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetRanges {
    /// start → end (exclusive).
    ranges: BTreeMap<u64, u64>,
}

impl OffsetRanges {
    /// Adds one offset.
    pub fn insert(&mut self, offset: u64) {
        self.insert_range(offset, offset.saturating_add(1));
    }

    /// Adds every offset of `start..end`, merging with the ranges it touches.
    pub fn insert_range(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut start, mut end) = (start, end);
        // A range that starts at or before `start` and reaches it.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
            }
        }
        // Ranges starting inside (or right after) the new one.
        let inside: Vec<(u64, u64)> = self
            .ranges
            .range(start..=end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in inside {
            self.ranges.remove(&s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
    }

    /// Is `offset` in the set?
    pub fn contains(&self, offset: u64) -> bool {
        self.ranges
            .range(..=offset)
            .next_back()
            .is_some_and(|(_, &e)| offset < e)
    }

    /// The first offset at or after `from` that is not in the set.
    pub fn first_missing_from(&self, from: u64) -> u64 {
        match self.ranges.range(..=from).next_back() {
            Some((_, &e)) if e > from => e,
            _ => from,
        }
    }

    /// Does the set hold any offset at or after `from`?
    pub fn any_from(&self, from: u64) -> bool {
        self.ranges.range(from..).next().is_some()
            || self
                .ranges
                .range(..from)
                .next_back()
                .is_some_and(|(_, &e)| e > from)
    }

    /// Drops every offset below `from`.
    pub fn remove_below(&mut self, from: u64) {
        let mut kept = self.ranges.split_off(&from);
        if let Some((_, &e)) = self.ranges.range(..from).next_back() {
            if e > from {
                kept.insert(from, e);
            }
        }
        self.ranges = kept;
    }

    /// Number of ranges (what the set costs).
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// True when the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The ranges, in order, as (start, end) pairs.
    pub fn to_pairs(&self) -> Vec<(u64, u64)> {
        self.ranges.iter().map(|(&s, &e)| (s, e)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::OffsetRanges;

    #[test]
    fn ranges_merge_split_and_answer() {
        let mut r = OffsetRanges::default();
        for o in [5, 7, 6, 1, 2, 10] {
            r.insert(o);
        }
        assert_eq!(r.to_pairs(), vec![(1, 3), (5, 8), (10, 11)]);
        assert!(r.contains(6) && !r.contains(8) && !r.contains(0) && r.contains(10));
        assert_eq!(r.first_missing_from(1), 3);
        assert_eq!(r.first_missing_from(0), 0);
        assert_eq!(r.first_missing_from(9), 9);
        r.insert_range(3, 5);
        assert_eq!(r.to_pairs(), vec![(1, 8), (10, 11)]);
        r.insert_range(0, 20);
        assert_eq!(r.to_pairs(), vec![(0, 20)]);
        assert!(r.any_from(19) && !r.any_from(20));
        r.remove_below(4);
        assert_eq!(r.to_pairs(), vec![(4, 20)]);
        r.insert(30);
        r.remove_below(25);
        assert_eq!(r.to_pairs(), vec![(30, 31)]);
        assert_eq!(r.range_count(), 1);
        r.remove_below(31);
        assert!(r.is_empty());
    }
}
