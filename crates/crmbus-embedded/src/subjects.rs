//! The subject index of a partition: for every `subject` (business key) the partition
//! holds, its current version and where each of its events lies.
//!
//! Every event with a subject gets the next version of that subject when it is staged
//! (under its topic's append lock), and the version is written in its record
//! ([`crate::record::FLAG_VERSION_VARINT`]). The index lives in memory: 24 bytes per event with
//! a subject (version, offset, byte position) plus each subject once. It is rebuilt on open
//! by one walk over the partition's records, taking each version from its record, so it
//! needs no file of its own and cannot disagree with the log; what the walk costs is
//! reading the partition once at start-up (about a second per GiB).
//!
//! Retention removes an event from the index with its segment. A subject whose events were
//! all removed keeps its version while the log runs; the partition also keeps such
//! versions in `subjects.heads` (written before the segment is deleted), so after a restart
//! the subject's next event still gets the next version, not 1 again. What is kept is the
//! newest *durable* version retention took: a subject whose only newer events are staged
//! and not yet on disk is kept too (those could still be lost), at the version the disk
//! holds for it, so a version once acknowledged is never given out again.

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
    /// The newest version of its events that retention removed (or that `subjects.heads`
    /// kept from earlier runs).
    kept: u64,
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
        s.entries
            .get(pending)
            .map_or(s.head, |e| e.version.saturating_sub(1))
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

    /// Gives the event of `subject` staged at `offset` (its frame at `position`) the
    /// subject's next version, records it, and returns the version.
    pub fn append(&mut self, subject: &str, offset: u64, position: u64) -> u64 {
        let stream = match self.streams.get_mut(subject) {
            Some(s) => s,
            None => self.streams.entry(subject.into()).or_default(),
        };
        stream.head += 1;
        stream.entries.push_back(SubjectEntry {
            version: stream.head,
            offset,
            position,
        });
        stream.head
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
        stream.kept = stream.kept.max(version);
    }

    /// Forgets every event from `offset` on (an append taken back before it was written):
    /// each subject's version goes back to its newest event before `offset`.
    pub fn truncate_from(&mut self, offset: u64) {
        self.streams.retain(|_, s| {
            while let Some(last) = s.entries.back() {
                if last.offset < offset {
                    break;
                }
                s.head = last.version.saturating_sub(1).max(s.kept);
                s.entries.pop_back();
            }
            s.head > 0
        });
    }

    /// Forgets every event below `offset` (removed by retention), keeping the newest
    /// version removed.
    pub fn remove_below(&mut self, offset: u64) {
        for s in self.streams.values_mut() {
            while let Some(e) = s.entries.front().filter(|e| e.offset < offset) {
                s.kept = s.kept.max(e.version);
                s.entries.pop_front();
            }
        }
    }

    /// What `subjects.heads` must hold before everything below `offset` is removed, when
    /// records below `durable` are on disk: every subject that would then have no durable
    /// event left, with the newest durable version it had (removed, or kept before).
    pub fn to_keep(&self, offset: u64, durable: u64) -> Vec<(String, u64)> {
        let bound = offset.min(durable);
        self.streams
            .iter()
            .filter(|(_, s)| {
                !s.entries
                    .iter()
                    .any(|e| e.offset >= offset && e.offset < durable)
            })
            .filter_map(|(subject, s)| {
                let removed = s
                    .entries
                    .iter()
                    .take_while(|e| e.offset < bound)
                    .last()
                    .map_or(0, |e| e.version);
                let version = s.kept.max(removed);
                (version > 0).then(|| (subject.to_string(), version))
            })
            .collect()
    }

    /// Up to `max` events of `subject` from version `from_version` on whose offsets are
    /// in `[kept_from, limit)` (from the first segment kept to the durable end), oldest
    /// first.
    pub fn entries(
        &self,
        subject: &str,
        from_version: u64,
        kept_from: u64,
        limit: u64,
        max: usize,
    ) -> Vec<SubjectEntry> {
        let Some(s) = self.streams.get(subject) else {
            return Vec::new();
        };
        let start = s
            .entries
            .partition_point(|e| e.version < from_version || e.offset < kept_from);
        s.entries
            .range(start..)
            .take_while(|e| e.offset < limit)
            .take(max)
            .copied()
            .collect()
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
            .entries("deal-1", 2, 0, u64::MAX, 10)
            .iter()
            .map(|e| e.version)
            .collect();
        assert_eq!(from2, [2, 3]);
        // Only what is durable is listed.
        assert_eq!(idx.entries("deal-1", 1, 0, 3, 10).len(), 2);
        // Only what the kept segments hold.
        assert_eq!(
            idx.entries("deal-1", 1, 2, u64::MAX, 10),
            vec![at(2, 2), at(3, 3)]
        );
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
        assert_eq!(idx.to_keep(2, u64::MAX), vec![("deal-2".to_string(), 1)]);
        idx.remove_below(2);
        assert_eq!(idx.version("deal-2"), 1);
        assert!(idx.entries("deal-2", 1, 0, u64::MAX, 10).is_empty());
        assert_eq!(idx.entries("deal-1", 1, 0, u64::MAX, 10), vec![at(2, 5)]);
        idx.set_head("deal-3", 7);
        assert_eq!(idx.version("deal-3"), 7);
        let mut keep = idx.to_keep(2, u64::MAX);
        keep.sort();
        assert_eq!(
            keep,
            vec![("deal-2".to_string(), 1), ("deal-3".to_string(), 7)]
        );
    }

    #[test]
    fn a_subject_whose_newer_events_are_not_durable_is_kept_at_its_durable_version() {
        let mut idx = SubjectIndex::default();
        idx.insert("deal-1", at(1, 0));
        idx.insert("deal-1", at(2, 1));
        // Version 3 is staged at offset 10; the disk holds offsets below 5.
        idx.insert("deal-1", at(3, 10));
        assert_eq!(idx.to_keep(2, 5), vec![("deal-1".to_string(), 2)]);
        // Once it is durable, its record holds the version: nothing to keep.
        assert!(idx.to_keep(2, 11).is_empty());
        // Taken back (never written): the version goes back to the kept one, not below.
        idx.remove_below(2);
        idx.truncate_from(10);
        assert_eq!(idx.version("deal-1"), 2);
        idx.insert("deal-1", at(3, 10));
        assert_eq!(idx.version("deal-1"), 3);
    }
}
