//! The scan of a segment's bytes that recovers it on open: every checksum verified, the
//! sparse index rebuilt, damage in the middle told apart from a torn tail.

use std::io;

use crate::record::{self, Parsed, RecordMeta, FLAG_BATCH_END};
use crate::storage::StorageFile;

/// One sparse index point: a record's offset, its byte position, and its timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Offset of the record at `position`.
    pub offset: u64,
    /// Byte position of its frame in the segment file.
    pub position: u64,
    /// Its append timestamp (µs). Timestamps never decrease in a partition, so this
    /// doubles as the time index.
    pub timestamp_us: i64,
}

/// A damaged stretch found in a segment: offsets `first..first+count` are unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorruptRange {
    /// First unreadable offset.
    pub first: u64,
    /// How many offsets are lost.
    pub count: u64,
    /// Byte position where the damage starts.
    pub position: u64,
    /// Byte position of the next valid frame.
    pub resume_position: u64,
}

/// What a scan of a segment file found.
#[derive(Debug, Default)]
pub struct ScanOutcome {
    /// Sparse index built while scanning.
    pub index: Vec<IndexEntry>,
    /// Offset after the last valid record kept.
    pub next_offset: u64,
    /// Byte length of the valid data (the file is truncated here if `torn`).
    pub valid_len: u64,
    /// Newest timestamp seen.
    pub max_timestamp_us: i64,
    /// Timestamp of the first record.
    pub first_timestamp_us: Option<i64>,
    /// Damage in the middle of the file (followed by valid records).
    pub corrupt: Vec<CorruptRange>,
    /// Bytes after `valid_len` were a torn or incomplete tail.
    pub torn: bool,
    /// Those bytes were all zeros: written ahead of the records (see
    /// [`super::Segment::append`]), not a torn write.
    pub zero_tail: bool,
    /// Every record's header, if asked for.
    pub records: Vec<RecordMeta>,
}

/// Reads a whole segment file into memory, for a scan.
pub(super) fn read_whole(file: &dyn StorageFile) -> io::Result<Vec<u8>> {
    let len = usize::try_from(file.len()?).map_err(io::Error::other)?;
    let mut data = vec![0u8; len];
    file.read_exact_at(&mut data, 0)?;
    Ok(data)
}

/// Scans a whole segment's bytes: verifies every checksum, builds the sparse index, finds
/// damage, and finds where the valid data ends.
///
/// A bad frame followed somewhere by a valid frame with a later offset is damage (those
/// offsets are reported corrupt and never served). A bad or incomplete frame with no
/// valid frame after it is a torn tail. When `whole_batches` is set, a tail that ends in
/// the middle of an append batch is also counted as torn, back to the last batch end.
pub fn scan_bytes(
    data: &[u8],
    base: u64,
    index_interval: u64,
    whole_batches: bool,
    keep_records: bool,
) -> ScanOutcome {
    scan(
        data,
        base,
        index_interval,
        whole_batches,
        keep_records,
        None,
    )
}

/// Scans the active segment of a partition whose data was known durable up to
/// `durable` = (byte length, next offset), its recovery point (see
/// [`crate::batch_journal::RecoveryPoint`]; `(0, base)` when none is known).
///
/// Damage before the point is corruption: a corrupt range, never cut off. From the point
/// on the data may be a torn tail of a round that never completed (pages of it can be
/// missing while later ones reached the disk): the first damage there ends the segment,
/// and the segment is cut back to the last whole batch, so a torn batch never survives,
/// whatever valid frames follow.
pub fn scan_active(
    data: &[u8],
    base: u64,
    index_interval: u64,
    durable: (u64, u64),
    keep_records: bool,
) -> ScanOutcome {
    scan(
        data,
        base,
        index_interval,
        true,
        keep_records,
        Some(durable),
    )
}

fn scan(
    data: &[u8],
    base: u64,
    index_interval: u64,
    whole_batches: bool,
    keep_records: bool,
    durable: Option<(u64, u64)>,
) -> ScanOutcome {
    let mut out = ScanOutcome {
        next_offset: base,
        ..Default::default()
    };
    let mut pos = 0usize;
    let mut expected = base;
    let mut next_index_at = 0u64;
    // End of the last complete batch: (byte length, next offset, index len, records len).
    let mut batch_end = (0u64, base, 0usize, 0usize, 0i64);
    while pos < data.len() {
        match record::parse(&data[pos..]) {
            Parsed::Record(meta, _, len) if meta.offset == expected => {
                if pos as u64 >= next_index_at {
                    out.index.push(IndexEntry {
                        offset: meta.offset,
                        position: pos as u64,
                        timestamp_us: meta.timestamp_us,
                    });
                    next_index_at = pos as u64 + index_interval;
                }
                if out.first_timestamp_us.is_none() {
                    out.first_timestamp_us = Some(meta.timestamp_us);
                }
                out.max_timestamp_us = out.max_timestamp_us.max(meta.timestamp_us);
                if keep_records {
                    out.records.push(meta);
                }
                pos += len;
                expected += 1;
                if meta.flags & FLAG_BATCH_END != 0 {
                    batch_end = (
                        pos as u64,
                        expected,
                        out.index.len(),
                        out.records.len(),
                        out.max_timestamp_us,
                    );
                }
            }
            _ if durable.is_some_and(|(len, _)| pos as u64 >= len) => {
                // Damage in the tail after the recovery point: the tail ends here.
                out.torn = true;
                break;
            }
            _ => match resync(data, pos + 1, expected)
                .filter(|&(next_pos, _)| durable.is_none_or(|(len, _)| (next_pos as u64) < len))
            {
                None if durable.is_some() => {
                    // Damage inside the durable part with nothing valid after it there:
                    // its offsets up to the recovery point are lost; the tail follows.
                    let (len, next) = durable.unwrap_or_default();
                    out.corrupt.push(CorruptRange {
                        first: expected,
                        count: next.saturating_sub(expected),
                        position: pos as u64,
                        resume_position: len,
                    });
                    pos = len as usize;
                    expected = next.max(expected);
                    batch_end = (
                        len,
                        expected,
                        out.index.len(),
                        out.records.len(),
                        out.max_timestamp_us,
                    );
                }
                Some((next_pos, next_offset)) => {
                    out.corrupt.push(CorruptRange {
                        first: expected,
                        count: next_offset - expected,
                        position: pos as u64,
                        resume_position: next_pos as u64,
                    });
                    pos = next_pos;
                    expected = next_offset;
                }
                None => {
                    out.torn = true;
                    break;
                }
            },
        }
    }
    out.valid_len = (pos as u64).min(data.len() as u64);
    out.next_offset = expected;
    if let Some((len, next)) = durable {
        if (data.len() as u64) < len && expected < next {
            // Shorter than what was known durable: those offsets are lost, not reusable.
            out.corrupt.push(CorruptRange {
                first: expected,
                count: next - expected,
                position: out.valid_len,
                resume_position: out.valid_len,
            });
            out.next_offset = next;
            return out;
        }
    }
    let cut_torn_batch = match durable {
        // With a recovery point, damage before it is accounted for above.
        Some(_) => batch_end.0 < out.valid_len,
        None => whole_batches && batch_end.0 < out.valid_len && out.corrupt.is_empty(),
    };
    if cut_torn_batch {
        // The last batch never finished reaching the disk: drop its records.
        out.torn = true;
        out.valid_len = batch_end.0;
        out.next_offset = batch_end.1;
        out.index.truncate(batch_end.2);
        out.records.truncate(batch_end.3);
        out.max_timestamp_us = batch_end.4;
        if out.next_offset == base {
            out.first_timestamp_us = None;
        }
    }
    out
}

/// Finds the next valid frame at or after `from` whose offset is at least `expected`.
pub(super) fn resync(data: &[u8], from: usize, expected: u64) -> Option<(usize, u64)> {
    let max_offset = expected.saturating_add(1 << 24);
    (from..data.len()).find_map(|p| {
        if !record::plausible_start(&data[p..], expected, max_offset) {
            return None;
        }
        match record::parse(&data[p..]) {
            Parsed::Record(meta, _, _) => Some((p, meta.offset)),
            _ => None,
        }
    })
}
