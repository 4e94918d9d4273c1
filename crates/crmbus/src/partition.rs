//! The stable hashes that place an event in a partition and identify it for producer dedupe.
//!
//! Both use XXH3-64 with seed 0, whose output is fixed by its specification, so a key
//! lands in the same partition on every backend, every platform and every release.

use crate::event::Event;
use xxhash_rust::xxh3::xxh3_64;

/// The partition of `event` in a topic of `partitions` partitions: the stable hash of its
/// `subject` (the business key), or of its `id` when it has no subject, modulo the count.
pub fn partition_for(event: &Event, partitions: u32) -> u32 {
    let key = event.subject.as_deref().unwrap_or(event.id.as_str());
    partition_for_key(key, partitions)
}

/// The partition of a business key in a topic of `partitions` partitions.
pub fn partition_for_key(key: &str, partitions: u32) -> u32 {
    if partitions == 0 {
        return 0;
    }
    (xxh3_64(key.as_bytes()) % u64::from(partitions)) as u32
}

/// A 64-bit digest of an event's identity (`source` + `id`), used to index producer dedupe.
///
/// The two parts are length-prefixed so that ("ab","c") and ("a","bc") differ.
pub fn dedupe_hash(source: &str, id: &str) -> u64 {
    let mut buf = Vec::with_capacity(source.len() + id.len() + 16);
    buf.extend_from_slice(&(source.len() as u64).to_le_bytes());
    buf.extend_from_slice(source.as_bytes());
    buf.extend_from_slice(&(id.len() as u64).to_le_bytes());
    buf.extend_from_slice(id.as_bytes());
    xxh3_64(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned values, computed with the reference C implementation (libxxhash 0.8,
    /// `XXH3_64bits`): a change of hash function or of its input would move every key to
    /// another partition and break producer dedupe across a release.
    #[test]
    fn hashes_and_partitions_are_pinned_to_known_values() {
        // The XXH3-64 of the empty input, as its specification gives it.
        assert_eq!(xxh3_64(b""), 0x2D06_8005_38D3_94C2);
        assert_eq!(xxh3_64(b"deal-42"), 0x3AE0_2058_3540_9C2B);
        assert_eq!(xxh3_64(b"contact-1001"), 0x26DE_4386_27FE_5CE6);
        for (key, partitions, want) in [
            ("deal-42", 8, 3),
            ("deal-42", 4, 3),
            ("deal-42", 16, 11),
            ("deal-42", 3, 1),
            ("deal-7", 8, 6),
            ("lead-0", 8, 7),
            ("lead-1", 4, 2),
            ("contact-1001", 16, 6),
            ("anything", 3, 2),
            ("anything", 1, 0),
            ("", 8, 2),
        ] {
            assert_eq!(
                partition_for_key(key, partitions),
                want,
                "partition of '{key}' among {partitions}"
            );
        }
        assert_eq!(partition_for_key("deal-42", 0), 0, "no partitions");
        // The subject is the key; without one, the id.
        let with_subject = Event::new("deal.won", serde_json::json!({})).subject("deal-42");
        assert_eq!(partition_for(&with_subject, 16), 11);
        let without = Event::new("deal.won", serde_json::json!({})).id("lead-0");
        assert_eq!(partition_for(&without, 8), 7);
    }

    #[test]
    fn keys_spread_over_partitions() {
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            counts[partition_for_key(&format!("lead-{i}"), 4) as usize] += 1;
        }
        for c in counts {
            assert!(c > 800, "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn dedupe_hash_separates_parts_and_is_pinned() {
        // Pinned (reference XXH3-64 of the length-prefixed parts): the dedupe index on
        // disk and in Redis is keyed by these values.
        assert_eq!(dedupe_hash("ab", "c"), 0x642D_4DEB_FEBF_33AE);
        assert_eq!(dedupe_hash("a", "bc"), 0xF42E_E0DF_2A02_3EF1);
        assert_eq!(dedupe_hash("s", "1"), 0x700B_3F53_C5CA_DAAC);
        assert_eq!(dedupe_hash("urn:crm", "evt-1"), 0xF044_54A5_F290_E26E);
    }
}
