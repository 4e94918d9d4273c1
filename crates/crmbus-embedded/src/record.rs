//! The on-disk record frame.
//!
//! ```text
//! frame  = body_len: u32 LE | crc32c(body): u32 LE | body
//! body   = offset: u64 LE | timestamp_us: i64 LE | dedupe_hash: u64 LE | flags: u8
//!          | [version: u64 LE, when flags bit 1 is set] | event JSON
//! ```
//!
//! The checksum covers the whole body, so a record whose offset, time or event was damaged
//! is detected. `flags` bit 0 marks the last record of an append batch in its partition;
//! recovery drops a batch whose last record never reached the disk. Bit 1 marks a record
//! that carries its subject's version (every event with a `subject` written since versions
//! exist; older records have no such bit and are read as before). A build that does not
//! know bit 1 reads the version's bytes as the start of the JSON, which does not decode:
//! such a record is reported corrupt, never misread.

/// Bytes before the body: length and checksum.
pub const FRAME_HEADER: usize = 8;
/// Bytes of the body before the event JSON.
pub const BODY_HEADER: usize = 25;
/// The largest body accepted (and believed when reading a length).
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// `flags` bit: last record of its batch in this partition.
pub const FLAG_BATCH_END: u8 = 1;
/// `flags` bit: the body holds the subject's version after the flags.
pub const FLAG_VERSIONED: u8 = 2;
/// Bytes the version adds to a versioned record's body.
pub const VERSION_BYTES: usize = 8;

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
    /// The version of the event in its subject's stream (1, 2, 3 …); 0 for an event
    /// without a subject, or one written before versions existed.
    pub version: u64,
}

impl RecordMeta {
    /// Bytes a frame of this record takes with `json_len` bytes of event JSON.
    pub fn frame_len(version: u64, json_len: usize) -> usize {
        FRAME_HEADER + BODY_HEADER + json_len + if version > 0 { VERSION_BYTES } else { 0 }
    }
}

/// Appends one framed record to `out`. A `meta.version` above 0 is written with the
/// record (and sets [`FLAG_VERSIONED`]); 0 writes none.
pub fn encode(out: &mut Vec<u8>, meta: &RecordMeta, event_json: &[u8]) {
    let frame_len = RecordMeta::frame_len(meta.version, event_json.len());
    let body_len = frame_len - FRAME_HEADER;
    let start = out.len();
    out.reserve(frame_len);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&meta.offset.to_le_bytes());
    out.extend_from_slice(&meta.timestamp_us.to_le_bytes());
    out.extend_from_slice(&meta.dedupe_hash.to_le_bytes());
    if meta.version > 0 {
        out.push(meta.flags | FLAG_VERSIONED);
        out.extend_from_slice(&meta.version.to_le_bytes());
    } else {
        out.push(meta.flags & !FLAG_VERSIONED);
    }
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
    let flags = body[24];
    let (version, json_at) = if flags & FLAG_VERSIONED != 0 {
        if body.len() < BODY_HEADER + VERSION_BYTES {
            return Parsed::Invalid("versioned record too short for its version");
        }
        (u64_at(body, BODY_HEADER), BODY_HEADER + VERSION_BYTES)
    } else {
        (0, BODY_HEADER)
    };
    let meta = RecordMeta {
        offset: u64_at(body, 0),
        timestamp_us: u64_at(body, 8) as i64,
        dedupe_hash: u64_at(body, 16),
        flags,
        version,
    };
    Parsed::Record(meta, &body[json_at..], total)
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
            version: 0,
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
    fn a_version_is_kept_and_a_record_without_one_reads_as_before() {
        let mut buf = Vec::new();
        let versioned = RecordMeta {
            version: 3,
            ..meta(9)
        };
        encode(&mut buf, &versioned, b"{\"subject\":\"deal-1\"}");
        let Parsed::Record(m, json, len) = parse(&buf) else {
            panic!("the versioned record did not parse");
        };
        assert_eq!(m.version, 3);
        assert_eq!(m.flags, FLAG_BATCH_END | FLAG_VERSIONED);
        assert_eq!(json, b"{\"subject\":\"deal-1\"}");
        assert_eq!(len, RecordMeta::frame_len(3, json.len()));
        // A frame written before versions existed: the bytes of the old layout.
        let old = {
            let body: Vec<u8> = [
                &7u64.to_le_bytes()[..],
                &1i64.to_le_bytes()[..],
                &42u64.to_le_bytes()[..],
                &[FLAG_BATCH_END][..],
                b"{}",
            ]
            .concat();
            let mut f = (body.len() as u32).to_le_bytes().to_vec();
            f.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
            f.extend_from_slice(&body);
            f
        };
        let Parsed::Record(m, json, _) = parse(&old) else {
            panic!("a record of the old layout did not parse");
        };
        assert_eq!((m.offset, m.version, json), (7, 0, &b"{}"[..]));
    }

    #[test]
    fn every_truncation_is_incomplete_and_every_bit_flip_detected() {
        let mut buf = Vec::new();
        encode(
            &mut buf,
            &RecordMeta {
                version: 5,
                ..meta(1)
            },
            b"{\"deal_id\":\"d-1\"}",
        );
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
