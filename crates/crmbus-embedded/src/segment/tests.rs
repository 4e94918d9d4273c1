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
