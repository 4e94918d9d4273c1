//! The on-disk record frame.
//!
//! ```text
//! frame  = body_len: u32 LE | crc32c(body): u32 LE | body
//! body   = offset: u64 LE | timestamp_us: i64 LE | dedupe_hash: u64 LE | flags: u8
//!          | [version: varint, 1–10 bytes, when flags bit 2 is set (see below)]
//!          | [version: u64 LE, when flags bit 1 is set (the previous layout, still read)]
//!          | [intent: varint, 1–10 bytes, when flags bit 3 is set (see below)]
//!          | event JSON
//! ```
//!
//! The checksum covers the whole body, so a record whose offset, time or event was damaged
//! is detected. `flags` bit 0 marks the last record of an append batch in its partition;
//! recovery drops a batch whose last record never reached the disk.
//!
//! The flags byte is each record's format version. A record that carries its subject's
//! version (every event with a `subject`) is written with bit 2 and the version as a
//! varint: its first byte is `0b1MVVVVVV` (the version's low 6 bits, and `M` set when
//! more follow), then the rest of the version as LEB128 (7 bits a byte, high bit set on
//! all but the last). A subject's first 63 versions take one byte, its first 8,191 two,
//! instead of eight. Records written before that have bit 1 and an eight-byte version,
//! and records older still have neither; both are read as before. A build that knows only
//! bit 1 reads a record of bit 2 as one without a version, whose JSON then starts with the
//! varint's first byte: never ASCII (its high bit is set), so never the whitespace JSON
//! allows before the event's `{`, and the record does not decode. It is reported corrupt
//! there, never misread, just as a build that knew neither bit reported a record of bit 1.
//! Builds from this one on also keep, in the metadata store, the newest layout a log may
//! hold ([`crate::metadata::RECORD_FORMAT`]), and refuse at open a log marked with a layout
//! newer than they know, with a message that says so.
//!
//! Bit 3 (record format 3) marks the first record of each part of an append that spans
//! partitions: the body names the append's batch journal intent, in the same varint as the
//! version, after it. The group commit writes such an append's intent and its data side by
//! side, so a crash can leave a part on disk whose intent is not; recovery finds the part by
//! this id and cuts it (see [`crate::batch_journal`]). Like the version's, the varint's
//! first byte is never ASCII.

/// Bytes before the body: length and checksum.
pub const FRAME_HEADER: usize = 8;
/// Bytes of the body before the event JSON.
pub const BODY_HEADER: usize = 25;
/// The largest body accepted (and believed when reading a length).
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// `flags` bit: last record of its batch in this partition.
pub const FLAG_BATCH_END: u8 = 1;
/// `flags` bit: the body holds the subject's version after the flags in eight bytes (the
/// previous layout: read, no longer written).
pub const FLAG_VERSIONED: u8 = 2;
/// Bytes the version takes in a record of [`FLAG_VERSIONED`].
pub const VERSION_BYTES: usize = 8;
/// `flags` bit: the body holds the subject's version after the flags as a varint (see
/// the module documentation).
pub const FLAG_VERSION_VARINT: u8 = 4;
/// Most bytes a varint version takes (6 bits of a `u64`, then 58 in 7-bit groups).
pub const MAX_VERSION_BYTES: usize = 10;
/// `flags` bit: the body holds the id of the batch journal intent of the record's append
/// after the version (if any), as a varint (see the module documentation).
pub const FLAG_INTENT: u8 = 8;
/// Most bytes the varint of an intent id takes.
pub const MAX_INTENT_BYTES: usize = MAX_VERSION_BYTES;

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
    /// The batch journal intent of the append whose part in this partition the record
    /// starts (an append that spans partitions); 0 for every other record.
    pub intent: u64,
}

impl RecordMeta {
    /// Bytes a frame of this record takes with `json_len` bytes of event JSON.
    pub fn frame_len(&self, json_len: usize) -> usize {
        FRAME_HEADER + BODY_HEADER + json_len + varint_len(self.version) + varint_len(self.intent)
    }

    /// The most bytes a frame takes with `json_len` bytes of event JSON, with a version
    /// (`versioned`, of any size) or without one, and with an intent id (`names_intent`)
    /// or without one.
    pub fn frame_len_at_most(versioned: bool, names_intent: bool, json_len: usize) -> usize {
        FRAME_HEADER
            + BODY_HEADER
            + json_len
            + if versioned { MAX_VERSION_BYTES } else { 0 }
            + if names_intent { MAX_INTENT_BYTES } else { 0 }
    }
}

/// Bytes the varint of `version` (or of an intent id) takes in a record; none for 0 (no
/// version, no intent).
fn varint_len(version: u64) -> usize {
    match version {
        0 => 0,
        1..=0x3f => 1,
        _ => {
            let rest = version >> 6;
            1 + (64 - rest.leading_zeros() as usize).div_ceil(7)
        }
    }
}

/// Appends the varint of `version` (above 0) to `out`.
fn put_varint(out: &mut Vec<u8>, version: u64) {
    let low = (version & 0x3f) as u8;
    let mut rest = version >> 6;
    if rest == 0 {
        out.push(0x80 | low);
        return;
    }
    out.push(0xc0 | low);
    while rest >= 0x80 {
        out.push((rest as u8 & 0x7f) | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Appends one framed record to `out`. A `meta.version` above 0 is written with the
/// record as a varint (and sets [`FLAG_VERSION_VARINT`]), and so is a `meta.intent` above
/// 0 (setting [`FLAG_INTENT`]); 0 writes none.
pub fn encode(out: &mut Vec<u8>, meta: &RecordMeta, event_json: &[u8]) {
    let frame_len = meta.frame_len(event_json.len());
    let body_len = frame_len - FRAME_HEADER;
    let start = out.len();
    out.reserve(frame_len);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&meta.offset.to_le_bytes());
    out.extend_from_slice(&meta.timestamp_us.to_le_bytes());
    out.extend_from_slice(&meta.dedupe_hash.to_le_bytes());
    let mut flags = meta.flags & !(FLAG_VERSIONED | FLAG_VERSION_VARINT | FLAG_INTENT);
    if meta.version > 0 {
        flags |= FLAG_VERSION_VARINT;
    }
    if meta.intent > 0 {
        flags |= FLAG_INTENT;
    }
    out.push(flags);
    if meta.version > 0 {
        put_varint(out, meta.version);
    }
    if meta.intent > 0 {
        put_varint(out, meta.intent);
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

/// The varint version at the start of `b` and the bytes it takes; `None` if its first
/// byte is not one, or it runs past `b` or past a `u64`.
fn varint_at(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    if first & 0x80 == 0 {
        return None;
    }
    let low = u64::from(first & 0x3f);
    if first & 0x40 == 0 {
        return Some((low, 1));
    }
    let mut rest = 0u64;
    for (i, &byte) in b[1..].iter().take(MAX_VERSION_BYTES - 1).enumerate() {
        let group = u64::from(byte & 0x7f);
        // The ninth group holds the top 2 of the 58 bits.
        if i == MAX_VERSION_BYTES - 2 && group > 3 {
            return None;
        }
        rest |= group << (7 * i);
        if byte & 0x80 == 0 {
            return Some(((rest << 6) | low, i + 2));
        }
    }
    None
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
    let (version, json_at) = match (
        flags & FLAG_VERSION_VARINT != 0,
        flags & FLAG_VERSIONED != 0,
    ) {
        (true, true) => return Parsed::Invalid("record flags name two version layouts"),
        (true, false) => match varint_at(&body[BODY_HEADER..]) {
            Some((version, len)) => (version, BODY_HEADER + len),
            None => return Parsed::Invalid("record's version runs past its body"),
        },
        (false, true) => {
            if body.len() < BODY_HEADER + VERSION_BYTES {
                return Parsed::Invalid("versioned record too short for its version");
            }
            (u64_at(body, BODY_HEADER), BODY_HEADER + VERSION_BYTES)
        }
        (false, false) => (0, BODY_HEADER),
    };
    let (intent, json_at) = if flags & FLAG_INTENT != 0 {
        match varint_at(&body[json_at..]) {
            Some((0, _)) => return Parsed::Invalid("record names intent 0"),
            Some((intent, len)) => (intent, json_at + len),
            None => return Parsed::Invalid("record's intent runs past its body"),
        }
    } else {
        (0, json_at)
    };
    let meta = RecordMeta {
        offset: u64_at(body, 0),
        timestamp_us: u64_at(body, 8) as i64,
        dedupe_hash: u64_at(body, 16),
        flags,
        version,
        intent,
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
            intent: 0,
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
        assert_eq!(m.flags, FLAG_BATCH_END | FLAG_VERSION_VARINT);
        assert_eq!(json, b"{\"subject\":\"deal-1\"}");
        assert_eq!(len, versioned.frame_len(json.len()));
        assert_eq!(
            len,
            FRAME_HEADER + BODY_HEADER + 1 + json.len(),
            "one byte for version 3"
        );
        // A frame of the previous layout: the version in eight bytes, under bit 1.
        let eight = {
            let body: Vec<u8> = [
                &9u64.to_le_bytes()[..],
                &1i64.to_le_bytes()[..],
                &42u64.to_le_bytes()[..],
                &[FLAG_BATCH_END | FLAG_VERSIONED][..],
                &300u64.to_le_bytes()[..],
                b"{}",
            ]
            .concat();
            framed(&body)
        };
        let Parsed::Record(m, json, _) = parse(&eight) else {
            panic!("a record of the eight-byte layout did not parse");
        };
        assert_eq!((m.offset, m.version, json), (9, 300, &b"{}"[..]));
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
            framed(&body)
        };
        let Parsed::Record(m, json, _) = parse(&old) else {
            panic!("a record of the old layout did not parse");
        };
        assert_eq!((m.offset, m.version, json), (7, 0, &b"{}"[..]));
    }

    /// A record body's header fields (offset 1, a timestamp, a digest) with `flags`.
    fn body_header(flags: u8) -> Vec<u8> {
        [
            &1u64.to_le_bytes()[..],
            &1i64.to_le_bytes()[..],
            &42u64.to_le_bytes()[..],
            &[flags][..],
        ]
        .concat()
    }

    /// Frames of `body` with a valid checksum.
    fn framed(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn varint_versions_of_every_size_round_trip() {
        for version in [
            1,
            9,
            32,
            63,
            64,
            127,
            128,
            8_191,
            8_192,
            16_383,
            16_384,
            u64::from(u32::MAX),
            (1 << 63) - 1,
            1 << 63,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            let m = RecordMeta { version, ..meta(5) };
            encode(&mut buf, &m, b"{}");
            assert_eq!(buf.len(), m.frame_len(2), "{version}");
            assert!(buf.len() <= RecordMeta::frame_len_at_most(true, false, 2));
            let Parsed::Record(got, json, len) = parse(&buf) else {
                panic!("version {version} did not parse");
            };
            assert_eq!((got.version, json, len), (version, &b"{}"[..], buf.len()));
            // Never ASCII where a reader of the eight-byte layout expects the event.
            assert!(buf[FRAME_HEADER + BODY_HEADER] >= 0x80, "{version}");
        }
    }

    #[test]
    fn an_intent_id_is_kept_with_or_without_a_version() {
        for (version, intent) in [(0, 1), (0, 63), (7, 64), (300, 1 << 40), (1, u64::MAX)] {
            let m = RecordMeta {
                version,
                intent,
                ..meta(11)
            };
            let mut buf = Vec::new();
            encode(&mut buf, &m, b"{\"deal_id\":\"d-9\"}");
            assert_eq!(buf.len(), m.frame_len(17), "{version}/{intent}");
            assert!(buf.len() <= RecordMeta::frame_len_at_most(version > 0, true, 17));
            let Parsed::Record(got, json, len) = parse(&buf) else {
                panic!("{version}/{intent} did not parse");
            };
            assert_eq!((got.version, got.intent), (version, intent));
            assert_ne!(got.flags & FLAG_INTENT, 0);
            assert_eq!((json, len), (&b"{\"deal_id\":\"d-9\"}"[..], buf.len()));
            // Where a build of format 2 (which skips bit 3) expects the event: never ASCII.
            let skipped = FRAME_HEADER + BODY_HEADER + varint_len(version);
            assert!(buf[skipped] >= 0x80, "{version}/{intent}");
        }
        // A record without one reads as having none, and takes no byte for it.
        let mut buf = Vec::new();
        encode(&mut buf, &meta(12), b"{}");
        let Parsed::Record(got, _, _) = parse(&buf) else {
            panic!("did not parse");
        };
        assert_eq!((got.intent, got.flags & FLAG_INTENT), (0, 0));
        assert_eq!(buf.len(), FRAME_HEADER + BODY_HEADER + 2);
    }

    #[test]
    fn an_intent_that_runs_past_its_body_or_is_zero_is_refused() {
        let mut cut = body_header(FLAG_INTENT);
        cut.extend_from_slice(&[0xc1]);
        assert!(matches!(parse(&framed(&cut)), Parsed::Invalid(_)));
        let mut ascii = body_header(FLAG_INTENT | FLAG_VERSION_VARINT);
        ascii.extend_from_slice(&[0x81]);
        ascii.extend_from_slice(b"{}");
        assert!(matches!(parse(&framed(&ascii)), Parsed::Invalid(_)));
        let mut zero = body_header(FLAG_INTENT);
        zero.extend_from_slice(&[0x80]);
        zero.extend_from_slice(b"{}");
        assert!(matches!(parse(&framed(&zero)), Parsed::Invalid(_)));
    }

    #[test]
    fn a_version_that_runs_past_its_body_or_a_u64_is_refused() {
        // The body ends inside the varint.
        let mut cut = body_header(FLAG_VERSION_VARINT);
        cut.extend_from_slice(&[0xc1, 0x80]);
        assert!(matches!(parse(&framed(&cut)), Parsed::Invalid(_)));
        // A first byte that is not a varint's.
        let mut ascii = body_header(FLAG_VERSION_VARINT);
        ascii.extend_from_slice(b" {}");
        assert!(matches!(parse(&framed(&ascii)), Parsed::Invalid(_)));
        // Eleven bytes, or a tenth byte past a u64.
        let mut long = body_header(FLAG_VERSION_VARINT);
        long.extend_from_slice(&[0xff; 10]);
        long.extend_from_slice(&[0x01, b'{', b'}']);
        assert!(matches!(parse(&framed(&long)), Parsed::Invalid(_)));
        let mut wide = body_header(FLAG_VERSION_VARINT);
        wide.extend_from_slice(&[0xff; 9]);
        wide.extend_from_slice(&[0x04, b'{', b'}']);
        assert!(matches!(parse(&framed(&wide)), Parsed::Invalid(_)));
        let mut widest = body_header(FLAG_VERSION_VARINT);
        widest.extend_from_slice(&[0xff; 9]);
        widest.extend_from_slice(&[0x03, b'{', b'}']);
        let Parsed::Record(m, _, _) = parse(&framed(&widest)) else {
            panic!("u64::MAX did not parse");
        };
        assert_eq!(m.version, u64::MAX);
        // Both layouts claimed at once.
        let mut both = body_header(FLAG_VERSION_VARINT | FLAG_VERSIONED);
        both.extend_from_slice(&[0x01; 9]);
        both.extend_from_slice(b"{}");
        assert!(matches!(parse(&framed(&both)), Parsed::Invalid(_)));
    }

    #[test]
    fn every_truncation_is_incomplete_and_every_bit_flip_detected() {
        let mut buf = Vec::new();
        encode(
            &mut buf,
            &RecordMeta {
                version: 5,
                intent: 77,
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
