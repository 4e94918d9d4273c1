//! How crmbus names map to JetStream names: streams, subjects, KV buckets and keys,
//! consumer names. Every mapping is injective (two different crmbus names never share a
//! JetStream name) and documented in the crate docs.

use crmbus::LogError;

/// Longest namespace prefix accepted (bucket and stream names must stay short).
pub const MAX_PREFIX_LEN: usize = 64;

/// A stream name longer than this is replaced by a hashed form (file names on the server
/// are limited to 255 bytes).
const MAX_STREAM_NAME: usize = 200;

/// Checks a namespace prefix: 1–64 characters of `A–Z a–z 0–9 _ -`.
pub fn validate_prefix(prefix: &str) -> Result<(), LogError> {
    let ok = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX_LEN
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(LogError::InvalidArgument(format!(
            "NATS namespace prefix '{prefix}' must be 1-{MAX_PREFIX_LEN} characters of A-Z a-z 0-9 _ -"
        )))
    }
}

/// A topic name as one subject token or stream-name part: `.` becomes `~` (a character
/// topic names cannot contain, so the mapping is reversible).
pub fn topic_token(topic: &str) -> String {
    topic.replace('.', "~")
}

/// The subject events of `topic`/`partition` are published on: `<prefix>.<topic>.<partition>`
/// (with `.` in the topic written as `~`).
pub fn subject(prefix: &str, topic: &str, partition: u32) -> String {
    format!("{prefix}.{}.{partition}", topic_token(topic))
}

/// The stream holding one partition: `<prefix>~<topic>~<partition>`, or
/// `<prefix>~h<hash>~<partition>` when that would be longer than 200 bytes.
pub fn stream_name(prefix: &str, topic: &str, partition: u32) -> String {
    let full = format!("{prefix}~{}~{partition}", topic_token(topic));
    if full.len() <= MAX_STREAM_NAME {
        full
    } else {
        let h = crmbus::dedupe_hash("crmbus-nats-stream", topic);
        format!("{prefix}~h{h:016x}~{partition}")
    }
}

/// True when `stream` is one of the partition streams of namespace `prefix`.
pub fn is_partition_stream(prefix: &str, stream: &str) -> bool {
    stream
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('~'))
        .is_some()
}

/// The KV bucket of topic specs.
pub fn topics_bucket(prefix: &str) -> String {
    format!("{prefix}_topics")
}

/// The KV bucket of group offsets.
pub fn offsets_bucket(prefix: &str) -> String {
    format!("{prefix}_offsets")
}

/// The KV bucket of the delivery state store.
pub fn state_bucket(prefix: &str) -> String {
    format!("{prefix}_state")
}

/// The KV bucket of leases (servers sharing the namespace).
pub fn leases_bucket(prefix: &str) -> String {
    format!("{prefix}_leases")
}

/// The stream journaling state-store batches.
pub fn journal_stream(prefix: &str) -> String {
    format!("{prefix}-journal")
}

/// The subject of the state-store journal.
pub fn journal_subject(prefix: &str) -> String {
    format!("{prefix}._journal")
}

/// Every stream that belongs to namespace `prefix` (partition streams, the journal and the
/// streams behind the KV buckets).
pub fn owns_stream(prefix: &str, stream: &str) -> bool {
    is_partition_stream(prefix, stream)
        || stream == journal_stream(prefix)
        || [
            topics_bucket(prefix),
            offsets_bucket(prefix),
            state_bucket(prefix),
            leases_bucket(prefix),
        ]
        .iter()
        .any(|b| stream == format!("KV_{b}"))
}

fn keep_in_key(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'/'
}

/// One KV key token for an arbitrary string: `A–Z a–z 0–9 _ - /` pass through, every other
/// byte becomes `=XX` (hex); the empty string is `=`.
pub fn key_part(s: &str) -> String {
    if s.is_empty() {
        return "=".to_string();
    }
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if keep_in_key(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// Reverses [`key_part`].
pub fn decode_key_part(s: &str) -> Option<String> {
    if s == "=" {
        return Some(String::new());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The KV key of a topic spec.
pub fn topic_key(topic: &str) -> String {
    key_part(topic)
}

/// The KV key of a group offset: `<topic>.<group>.<partition>`.
pub fn offset_key(topic: &str, group: &str, partition: u32) -> String {
    format!("{}.{}.{partition}", key_part(topic), key_part(group))
}

/// The KV key of a state entry: `<namespace>.<key>`.
pub fn state_key(namespace: &str, key: &str) -> String {
    format!("{}.{}", key_part(namespace), key_part(key))
}

/// A durable consumer name for a group: like [`key_part`] without `/`.
pub fn consumer_name(group: &str) -> String {
    key_part(group).replace('/', "=2F")
}

/// The `Nats-Msg-Id` of an event: 128 bits of two XXH3 digests of its (`source`, `id`).
pub fn msg_id(source: &str, id: &str) -> String {
    format!(
        "{:016x}{:016x}",
        crmbus::dedupe_hash(source, id),
        crmbus::dedupe_hash(id, source)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_reversible() {
        assert_eq!(subject("crmbus", "deals", 3), "crmbus.deals.3");
        assert_eq!(subject("ns", "crm.deals", 0), "ns.crm~deals.0");
        assert_eq!(stream_name("ns", "crm.deals", 0), "ns~crm~deals~0");
        assert_ne!(stream_name("ns", "a.b", 0), stream_name("ns", "a_b", 0));
        let long = "x".repeat(200);
        assert!(stream_name("ns", &long, 7).len() < 60);
        assert!(is_partition_stream("ns", &stream_name("ns", &long, 7)));
        assert!(!is_partition_stream("ns", &stream_name("ns2", "a", 0)));
        for s in ["", "a.b", "sub/deals/g/retry", "0000000001/0000", "ü=x y"] {
            assert_eq!(decode_key_part(&key_part(s)).as_deref(), Some(s));
            assert!(!key_part(s).contains('.'));
        }
        assert_eq!(consumer_name("a/b.c"), "a=2Fb=2Ec");
        assert!(validate_prefix("crmbus-t_1").is_ok());
        assert!(validate_prefix("a.b").is_err() && validate_prefix("").is_err());
        assert!(owns_stream("p", "KV_p_state") && owns_stream("p", "p-journal"));
        assert!(!owns_stream("p", "KV_q_state"));
    }
}
