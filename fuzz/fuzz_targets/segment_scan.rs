//! The embedded log's segment scan (`crmbus_embedded::segment::scan_bytes`), which runs
//! on every segment at open and decides what survives a crash.
//!
//! The input is either raw bytes or a segment built from valid records
//! (`record::encode`) and then damaged: bytes changed, a tail cut off, offsets skipped.
//! Whatever the bytes, the outcome must describe them consistently: the valid length is
//! within the file, index entries and records are in order inside the valid data,
//! corrupt ranges are in order, and scanning just the valid prefix again finds the same
//! records with no torn tail.
#![no_main]

use crmbus_embedded::record::{self, RecordMeta, FLAG_BATCH_END};
use crmbus_embedded::segment::{scan_bytes, ScanOutcome};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Rec {
    /// Microseconds added to the previous record's timestamp.
    ts_step: u16,
    batch_end: bool,
    /// Skip this many offsets before the record (0: consecutive).
    gap: u8,
    /// The subject version it carries (0: none); any size, so every varint length.
    version: u64,
    payload: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
enum Body {
    Raw(Vec<u8>),
    Built {
        records: Vec<Rec>,
        /// (position, xor) pairs applied to the encoded bytes.
        damage: Vec<(u16, u8)>,
        /// Keep only this many bytes, if set.
        cut: Option<u16>,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    base: u32,
    index_interval: u16,
    whole_batches: bool,
    keep_records: bool,
    body: Body,
}

fn build(base: u64, records: &[Rec], damage: &[(u16, u8)], cut: Option<u16>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = base;
    let mut ts = 1_700_000_000_000_000_i64;
    for r in records {
        offset += u64::from(r.gap % 4 == 3) * u64::from(r.gap >> 2);
        ts += i64::from(r.ts_step);
        let meta = RecordMeta {
            offset,
            timestamp_us: ts,
            dedupe_hash: offset.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            flags: if r.batch_end { FLAG_BATCH_END } else { 0 },
            version: r.version,
        };
        record::encode(&mut out, &meta, &r.payload);
        offset += 1;
    }
    for (pos, xor) in damage {
        if !out.is_empty() {
            let i = usize::from(*pos) % out.len();
            out[i] ^= xor;
        }
    }
    if let Some(cut) = cut {
        out.truncate(usize::from(cut));
    }
    out
}

fn check(data: &[u8], base: u64, o: &ScanOutcome, keep_records: bool) {
    let valid = usize::try_from(o.valid_len).expect("valid_len fits");
    assert!(valid <= data.len(), "valid_len {valid} past {}", data.len());
    assert!(o.next_offset >= base);
    if !o.torn {
        assert_eq!(
            valid,
            data.len(),
            "a scan without a torn tail stopped early"
        );
    }
    if !o.index.is_empty() {
        assert!(o.first_timestamp_us.is_some());
    }
    for w in o.index.windows(2) {
        assert!(w[0].offset < w[1].offset && w[0].position < w[1].position);
    }
    for e in &o.index {
        assert!(e.position < o.valid_len && e.offset >= base && e.offset < o.next_offset);
        assert!(e.timestamp_us <= o.max_timestamp_us);
    }
    for w in o.corrupt.windows(2) {
        assert!(w[0].first + w[0].count <= w[1].first);
        assert!(w[0].resume_position <= w[1].position);
    }
    for c in &o.corrupt {
        assert!(c.count > 0 && c.position < c.resume_position && c.resume_position <= o.valid_len);
        assert!(c.first + c.count <= o.next_offset);
    }
    if keep_records {
        for w in o.records.windows(2) {
            assert!(w[0].offset < w[1].offset);
        }
        if let Some(first) = o.records.first() {
            assert_eq!(Some(first.timestamp_us), o.first_timestamp_us);
        }
    }
}

fuzz_target!(|input: Input| {
    let base = u64::from(input.base);
    let data = match &input.body {
        Body::Raw(bytes) => bytes.clone(),
        Body::Built {
            records,
            damage,
            cut,
        } => build(base, records, damage, *cut),
    };
    let interval = u64::from(input.index_interval);
    let o = scan_bytes(
        &data,
        base,
        interval,
        input.whole_batches,
        input.keep_records,
    );
    check(&data, base, &o, input.keep_records);

    // The valid prefix scans to the same outcome, without a torn tail.
    let prefix = &data[..usize::try_from(o.valid_len).expect("valid_len fits")];
    let again = scan_bytes(
        prefix,
        base,
        interval,
        input.whole_batches,
        input.keep_records,
    );
    assert!(!again.torn, "the valid prefix has a torn tail");
    assert_eq!(again.valid_len, o.valid_len);
    assert_eq!(again.next_offset, o.next_offset);
    assert_eq!(again.index, o.index);
    assert_eq!(again.corrupt, o.corrupt);
    assert_eq!(again.records, o.records);

    // Undamaged records with consecutive offsets are all found.
    if let Body::Built {
        records,
        damage,
        cut: None,
    } = &input.body
    {
        if damage.is_empty() && records.iter().all(|r| r.gap % 4 != 3 || r.gap >> 2 == 0) {
            assert!(o.corrupt.is_empty());
            let all_kept = !input.whole_batches || records.last().is_none_or(|r| r.batch_end);
            if all_kept {
                assert!(!o.torn);
                assert_eq!(o.next_offset, base + records.len() as u64);
            }
        }
    }
});
