//! Unit tests of the segment scan.

use super::*;
use crate::record::{self, FLAG_BATCH_END};

fn frames(base: u64, n: u64, batch: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let meta = RecordMeta {
            offset: base + i,
            timestamp_us: 1000 + i as i64,
            dedupe_hash: i,
            flags: if (i + 1) % batch == 0 {
                FLAG_BATCH_END
            } else {
                0
            },
            version: 0,
            intent: 0,
        };
        record::encode(&mut out, &meta, format!("{{\"n\":{i}}}").as_bytes());
    }
    out
}

#[test]
fn scan_finds_all_records_and_index() {
    let data = frames(10, 100, 1);
    let out = scan_bytes(&data, 10, 256, true, true);
    assert_eq!(out.next_offset, 110);
    assert_eq!(out.valid_len, data.len() as u64);
    assert!(!out.torn && out.corrupt.is_empty());
    assert!(out.index.len() > 5 && out.index[0].offset == 10);
    assert_eq!(out.records.len(), 100);
}

#[test]
fn incomplete_batch_is_dropped() {
    let data = frames(0, 10, 4); // batches end at 3 and 7; 8 and 9 are an unfinished batch
    let out = scan_bytes(&data, 0, 4096, true, false);
    assert!(out.torn);
    assert_eq!(out.next_offset, 8);
    let out = scan_bytes(&data, 0, 4096, false, false);
    assert_eq!(out.next_offset, 10);
}

#[test]
fn damage_in_the_middle_is_skipped_not_truncated() {
    let mut data = frames(0, 20, 1);
    let one = data.len() / 20;
    data[one * 5 + 30] ^= 0x10;
    let out = scan_bytes(&data, 0, 4096, true, false);
    assert!(!out.torn);
    assert_eq!(out.next_offset, 20);
    assert_eq!(out.corrupt.len(), 1);
    assert_eq!(out.corrupt[0].first, 5);
    assert_eq!(out.corrupt[0].count, 1);
}

/// A segment on a simulated disk (which overwrites in place, so zeros are written ahead),
/// with 1 MiB reserved.
fn reserved_segment() -> (Arc<dyn Storage>, Segment) {
    let sim = crate::storage::SimStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(sim.mount());
    let dir = std::path::PathBuf::from("/d/p");
    storage.create_dir_all(&dir).expect("dir");
    let cache = HandleCache::new(8);
    let segment = Segment::create(&storage, &cache, &dir, 0, 0).expect("create");
    segment.reserve(1 << 20, 0).expect("reserve");
    (storage, segment)
}

fn records_of(n: u64) -> (Vec<u8>, Vec<(RecordMeta, u32)>) {
    let bytes = frames(0, n, 1);
    let mut lens = Vec::new();
    let mut pos = 0;
    while let record::Parsed::Record(meta, _, len) = record::parse(&bytes[pos..]) {
        lens.push((meta, len as u32));
        pos += len;
    }
    (bytes, lens)
}

/// A segment just rolled to holds nothing until the one before it is sealed (open drops
/// an empty last file): the group commit's zeros ahead must not be written to it.
#[test]
fn an_empty_segment_gets_no_zeros_ahead() {
    let (storage, segment) = reserved_segment();
    assert!(!segment.wants_prefill());
    assert!(!segment.prefill_ahead());
    assert_eq!(storage.read(&segment.path).expect("read").len(), 0);
}

/// Zeros ahead follow small writes only: after a large one (whose rounds would write every
/// zero to disk once more before the records replace it) none are asked for, and after a
/// small one they are, up to `PREFILL_AHEAD` past the records.
#[test]
fn zeros_ahead_follow_small_writes_only() {
    let (storage, segment) = reserved_segment();
    let (large, lens) = records_of(2000);
    assert!(large.len() as u64 > PREFILL_WRITES_UP_TO);
    segment.append(&large, &lens, 4096).expect("large append");
    assert!(!segment.wants_prefill(), "no zeros after a large write");
    assert!(!segment.prefill_ahead());
    assert_eq!(
        storage.read(&segment.path).expect("read").len(),
        large.len()
    );
    let (small, mut small_lens) = records_of(1);
    // The frame's header names offset 0; the index only needs positions here.
    small_lens[0].0.offset = 2000;
    segment
        .append(&small, &small_lens, 4096)
        .expect("small append");
    let end = (large.len() + small.len()) as u64;
    // The append wrote its own zeros ahead (PREFILL_AHEAD); none are wanted yet.
    assert!(!segment.wants_prefill());
    assert_eq!(
        storage.read(&segment.path).expect("read").len() as u64,
        end + PREFILL_AHEAD
    );
}
