//! How crmbus names map to Redis names: the key layout under a namespace prefix, and the
//! mapping between crmbus offsets and Redis stream ids.
//!
//! Every key of one crmbus namespace starts with `<prefix>:`:
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `<prefix>:topics` | hash | topic name → the whole [`crmbus::TopicSpec`] as JSON |
//! | `<prefix>:topicgen` | hash | topic name → incarnation number (bumped by every create) |
//! | `<prefix>:seq:<topic>` | hash | per partition `p`: `<p>` next offset, `ts:<p>` last append time (µs), `bytes:<p>` bytes held |
//! | `<prefix>:stream:<topic>:<p>` | stream | the events of partition `p`, one entry each |
//! | `<prefix>:dedupe:<topic>:<hash>` | string, with TTL | the first receipt of an event (producer dedupe) |
//! | `<prefix>:state:keys:<namespace>` | sorted set | the state store's keys of one namespace (lexicographic) |
//! | `<prefix>:state:vals:<namespace>` | hash | the state store's values of one namespace |
//!
//! Topic names cannot contain `:` (see [`crmbus::validate_topic_name`]), so no two topics
//! share a key.
//!
//! **Offsets ↔ stream ids**: offset `n` is stored at the stream id `0-<n+1>` (milliseconds
//! part 0, sequence part `n + 1`). The mapping is reversible (`0-<s>` ↔ `s - 1`), keeps
//! offsets contiguous (each entry is added with an explicit id), and makes a consumer
//! group's `last-delivered-id` equal to `0-<committed offset>`: a group that will next read
//! offset `n` has delivered up to `0-<n>`, and a new group at offset 0 sits at `0-0`.

use crmbus::LogError;

/// Stream id of `offset`.
pub fn stream_id(offset: u64) -> String {
    format!("0-{}", offset.saturating_add(1))
}

/// Offset of the stream id `id` (`0-<n+1>` → `n`); `None` for ids this crate never writes.
pub fn offset_of_id(id: &str) -> Option<u64> {
    let seq = id.strip_prefix("0-")?;
    seq.parse::<u64>().ok()?.checked_sub(1)
}

/// The consumer-group position (`last-delivered-id`) meaning "next read is `offset`".
pub fn group_position(offset: u64) -> String {
    format!("0-{offset}")
}

/// The committed offset a consumer group's `last-delivered-id` stands for.
pub fn offset_of_position(id: &str) -> Option<u64> {
    id.strip_prefix("0-")?.parse().ok()
}

/// The stream key of a topic partition.
pub fn stream_key(prefix: &str, topic: &str, partition: u32) -> String {
    format!("{prefix}:stream:{topic}:{partition}")
}

/// The hash of topic specs.
pub fn topics_key(prefix: &str) -> String {
    format!("{prefix}:topics")
}

/// The hash of the state store's values of one namespace.
pub fn state_vals_key(prefix: &str, namespace: &str) -> String {
    format!("{prefix}:state:vals:{namespace}")
}

/// Escapes glob characters so that `s` matches itself in `SCAN MATCH`.
pub fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Checks a namespace prefix: non-empty, without spaces or control characters.
pub fn validate_prefix(prefix: &str) -> Result<(), LogError> {
    if prefix.is_empty() || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(LogError::InvalidArgument(format!(
            "redis key prefix '{prefix}' must be non-empty, without spaces or control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_ids_round_trip() {
        for n in [0u64, 1, 41, 1 << 40] {
            assert_eq!(offset_of_id(&stream_id(n)), Some(n));
            assert_eq!(offset_of_position(&group_position(n)), Some(n));
        }
        assert_eq!(stream_id(0), "0-1");
        assert_eq!(group_position(0), "0-0");
        assert_eq!(offset_of_id("0-0"), None);
        assert_eq!(offset_of_id("1700000000000-0"), None);
        assert_eq!(offset_of_id("0-x"), None);
    }

    #[test]
    fn globs_are_escaped_and_prefixes_checked() {
        assert_eq!(glob_escape("a*b[c]"), "a\\*b\\[c\\]");
        assert!(validate_prefix("crmbus-test:a").is_ok());
        assert!(validate_prefix("").is_err() && validate_prefix("a b").is_err());
    }
}
