//! The subject index of a partition: for every `subject` (business key) the partition
//! holds, its current version and where each of its events lies.
//!
//! Every event with a subject gets the next version of that subject when it is staged
//! (under its topic's append lock), and the version is written in its record
//! ([`crate::record::FLAG_VERSIONED`]). The index lives in memory: 24 bytes per event with
//! a subject (version, offset, byte position) plus each subject once. It is rebuilt on open
//! by one walk over the partition's records, taking each version from its record, so it
//! needs no file of its own and cannot disagree with the log; what the walk costs is
//! reading the partition once at start-up (about a second per GiB).
//!
//! Retention removes an event from the index with its segment. A subject whose events were
//! all removed keeps its version while the log runs; the partition also keeps such
//! versions in `subjects.heads` (written before the segment is deleted), so after a restart
//! the subject's next event still gets the next version, not 1 again.

use std::collections::{HashMap, VecDeque};

/// Where one event of a subject lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectEntry {
    /// Its version in the subject's stream.
    pub version: u64,
    /// Its offset in the partition.
    pub offset: u64,
    /// The byte position of its frame in the segment that holds the offset.
    pub position: u64,
}

#[derive(Debug, Default)]
struct Stream {
    /// The subject's current version: its newest event's (0 before its first).
    head: u64,
    /// Its events the partition holds, oldest first (versions and offsets increase).
    entries: VecDeque<SubjectEntry>,
}

/// Versions and event positions of every subject of one partition.
#[derive(Debug, Default)]
pub struct SubjectIndex {
    streams: HashMap<Box<str>, Stream>,
}

impl SubjectIndex {
    /// The subject's current version (0 when it has no event yet).
    pub fn version(&self, subject: &str) -> u64 {
        self.streams.get(subject).map_or(0, |s| s.head)
    }

    /// The subject's version counting only events at offsets below `limit` (the durable
    /// end): what a reader may rely on.
    pub fn durable_version(&self, subject: &str, limit: u64) -> u64 {
        let Some(s) = self.streams.get(subject) else {
            return 0;
        };
        let pending = s.entries.partition_point(|e| e.offset < limit);
        s.entries.get(pending).map_or(s.head, |e| e.version - 1)
    }

    /// The version of `subject`'s event at `offset`, if the index holds it.
    pub fn version_at(&self, subject: &str, offset: u64) -> Option<u64> {
        let s = self.streams.get(subject)?;
        let i = s.entries.partition_point(|e| e.offset < offset);
        s.entries
            .get(i)
            .filter(|e| e.offset == offset)
            .map(|e| e.version)
    }

    /// Records an event of `subject` (staged, or found on open).
    pub fn insert(&mut self, subject: &str, entry: SubjectEntry) {
        let stream = match self.streams.get_mut(subject) {
            Some(s) => s,
            None => self.streams.entry(subject.into()).or_default(),
        };
        stream.head = stream.head.max(entry.version);
        stream.entries.push_back(entry);
    }

    /// Sets a subject's version without an event (a version kept for a subject whose
    /// events retention removed).
    pub fn set_head(&mut self, subject: &str, version: u64) {
        let stream = self.streams.entry(subject.into()).or_default();
        stream.head = stream.head.max(version);
    }

    /// Forgets every event from `offset` on (an append taken back before it was written):
    /// each subject's version goes back to its newest event before `offset`.
    pub fn truncate_from(&mut self, offset: u64) {
        self.streams.retain(|_, s| {
            while let Some(last) = s.entries.back() {
                if last.offset < offset {
                    break;
                }
                s.head = last.version - 1;
                s.entries.pop_back();
            }
            s.head > 0
        });
    }

    /// Forgets every event below `offset` (removed by retention). Returns the subjects
    /// this leaves without events, with their versions.
    pub fn remove_below(&mut self, offset: u64) -> Vec<(String, u64)> {
        let mut emptied = Vec::new();
        for (subject, s) in &mut self.streams {
            let had = !s.entries.is_empty();
            while s.entries.front().is_some_and(|e| e.offset < offset) {
                s.entries.pop_front();
            }
            if had && s.entries.is_empty() {
                emptied.push((subject.to_string(), s.head));
            }
        }
        emptied
    }

    /// The subjects that would have no event left once everything below `offset` is
    /// removed, with their versions (what must be kept before that removal).
    pub fn emptied_below(&self, offset: u64) -> Vec<(String, u64)> {
        self.streams
            .iter()
            .filter(|(_, s)| s.entries.back().is_none_or(|e| e.offset < offset))
            .map(|(subject, s)| (subject.to_string(), s.head))
            .collect()
    }

    /// Up to `max` events of `subject` from version `from_version` on whose offsets are
    /// below `limit` (the durable end), oldest first.
    pub fn entries(
        &self,
        subject: &str,
        from_version: u64,
        limit: u64,
        max: usize,
    ) -> Vec<SubjectEntry> {
        let Some(s) = self.streams.get(subject) else {
            return Vec::new();
        };
        let start = s.entries.partition_point(|e| e.version < from_version);
        s.entries
            .range(start..)
            .take_while(|e| e.offset < limit)
            .take(max)
            .copied()
            .collect()
    }

    /// Number of subjects known.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// True when no subject is known.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(version: u64, offset: u64) -> SubjectEntry {
        SubjectEntry {
            version,
            offset,
            position: offset * 100,
        }
    }

    #[test]
    fn versions_entries_and_taking_back() {
        let mut idx = SubjectIndex::default();
        idx.insert("deal-1", at(1, 0));
        idx.insert("deal-2", at(1, 1));
        idx.insert("deal-1", at(2, 2));
        idx.insert("deal-1", at(3, 3));
        assert_eq!(idx.version("deal-1"), 3);
        assert_eq!(idx.version("deal-9"), 0);
        let from2: Vec<u64> = idx
            .entries("deal-1", 2, u64::MAX, 10)
            .iter()
            .map(|e| e.version)
            .collect();
        assert_eq!(from2, [2, 3]);
        // Only what is durable is listed.
        assert_eq!(idx.entries("deal-1", 1, 3, 10).len(), 2);
        assert_eq!(idx.durable_version("deal-1", 3), 2);
        assert_eq!(idx.durable_version("deal-1", 4), 3);
        idx.truncate_from(2);
        assert_eq!(idx.version("deal-1"), 1);
        assert_eq!(idx.version("deal-2"), 1);
        idx.truncate_from(0);
        assert!(idx.is_empty());
    }

    #[test]
    fn retention_keeps_the_version_of_an_emptied_subject() {
        let mut idx = SubjectIndex::default();
        idx.insert("deal-1", at(1, 0));
        idx.insert("deal-2", at(1, 1));
        idx.insert("deal-1", at(2, 5));
        assert_eq!(idx.emptied_below(2), vec![("deal-2".to_string(), 1)]);
        assert_eq!(idx.remove_below(2), vec![("deal-2".to_string(), 1)]);
        assert_eq!(idx.version("deal-2"), 1);
        assert!(idx.entries("deal-2", 1, u64::MAX, 10).is_empty());
        assert_eq!(idx.entries("deal-1", 1, u64::MAX, 10), vec![at(2, 5)]);
        idx.set_head("deal-3", 7);
        assert_eq!(idx.version("deal-3"), 7);
    }
}
