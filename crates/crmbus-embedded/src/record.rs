//! The on-disk record frame.
//!
//! ```text
//! frame  = body_len: u32 LE | crc32c(body): u32 LE | body
//! body   = offset: u64 LE | timestamp_us: i64 LE | dedupe_hash: u64 LE | flags: u8 | event JSON
//! ```
//!
//! The checksum covers the whole body, so a record whose offset, time or event was damaged
//! is detected. `flags` bit 0 marks the last record of an append batch in its partition;
//! recovery drops a batch whose last record never reached the disk.

/// Bytes before the body: length and checksum.
pub const FRAME_HEADER: usize = 8;
/// Bytes of the body before the event JSON.
pub const BODY_HEADER: usize = 25;
/// The largest body accepted (and believed when reading a length).
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// `flags` bit: last record of its batch in this partition.
pub const FLAG_BATCH_END: u8 = 1;

/// The header fields of a record, without its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    /// The record's offset in its partition.
    pub offset: u64,
    /// Append time, microseconds since the epoch.
    pub timestamp_us: i64,
    /// [`crmbus::dedupe_hash`] of the event's source and id.
    pub dedupe_hash: u64,
    /// Flag bits.
    pub flags: u8,
}

/// Appends one framed record to `out`.
pub fn encode(out: &mut Vec<u8>, meta: &RecordMeta, event_json: &[u8]) {
    let body_len = BODY_HEADER + event_json.len();
    let start = out.len();
    out.reserve(FRAME_HEADER + body_len);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&meta.offset.to_le_bytes());
    out.extend_from_slice(&meta.timestamp_us.to_le_bytes());
    out.extend_from_slice(&meta.dedupe_hash.to_le_bytes());
    out.push(meta.flags);
    out.extend_from_slice(event_json);
    let crc = crc32c::crc32c(&out[start + FRAME_HEADER..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What a parse attempt at a position found.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A whole, valid record: its header, its event JSON, and the frame's total length.
    Record(RecordMeta, &'a [u8], usize),
    /// The buffer ends before the frame does; `needed` is the frame's full length if known.
    Incomplete(Option<usize>),
    /// The bytes here are not a valid record (bad length or checksum).
    Invalid(&'static str),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Parses the frame at the start of `buf`, verifying its checksum.
pub fn parse(buf: &[u8]) -> Parsed<'_> {
    if buf.len() < FRAME_HEADER {
        return Parsed::Incomplete(None);
    }
    let body_len = u32_at(buf, 0) as usize;
    if !(BODY_HEADER..=MAX_BODY).contains(&body_len) {
        return Parsed::Invalid("record length out of range");
    }
    let total = FRAME_HEADER + body_len;
    if buf.len() < total {
        return Parsed::Incomplete(Some(total));
    }
    let body = &buf[FRAME_HEADER..total];
    if crc32c::crc32c(body) != u32_at(buf, 4) {
        return Parsed::Invalid("checksum mismatch");
    }
    let meta = RecordMeta {
        offset: u64_at(body, 0),
        timestamp_us: u64_at(body, 8) as i64,
        dedupe_hash: u64_at(body, 16),
        flags: body[24],
    };
    Parsed::Record(meta, &body[BODY_HEADER..], total)
}

/// Cheap pre-check used when searching for the next valid frame after damage: could a
/// frame start at the beginning of `buf` with an offset in `[min_offset, max_offset]`?
pub fn plausible_start(buf: &[u8], min_offset: u64, max_offset: u64) -> bool {
    if buf.len() < FRAME_HEADER + BODY_HEADER {
        return false;
    }
    let body_len = u32_at(buf, 0) as usize;
    if !(BODY_HEADER..=MAX_BODY).contains(&body_len) {
        return false;
    }
    let off = u64_at(buf, FRAME_HEADER);
    (min_offset..=max_offset).contains(&off)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(offset: u64) -> RecordMeta {
        RecordMeta {
            offset,
            timestamp_us: 1_700_000_000_000_000,
            dedupe_hash: 42,
            flags: FLAG_BATCH_END,
        }
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        encode(&mut buf, &meta(7), b"{\"a\":1}");
        encode(&mut buf, &meta(8), b"{}");
        let Parsed::Record(m, json, len) = parse(&buf) else {
            panic!("first record did not parse");
        };
        assert_eq!(m, meta(7));
        assert_eq!(json, b"{\"a\":1}");
        let Parsed::Record(m2, json2, _) = parse(&buf[len..]) else {
            panic!("second record did not parse");
        };
        assert_eq!(m2.offset, 8);
        assert_eq!(json2, b"{}");
    }

    #[test]
    fn every_truncation_is_incomplete_and_every_bit_flip_detected() {
        let mut buf = Vec::new();
        encode(&mut buf, &meta(1), b"{\"deal_id\":\"d-1\"}");
        for cut in 0..buf.len() {
            assert!(
                matches!(
                    parse(&buf[..cut]),
                    Parsed::Incomplete(_) | Parsed::Invalid(_)
                ),
                "cut at {cut} parsed as a record"
            );
        }
        for bit in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(parse(&b), Parsed::Record(..)),
                "bit {bit} flipped went undetected"
            );
        }
    }
}
