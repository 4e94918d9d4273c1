//! Turning Redis replies and errors into crmbus values and [`LogError`]s.

use chrono::{DateTime, Utc};
use crmbus::{Event, LogError, StoredEvent};
use redis::{RedisError, Value};

use crate::keys::offset_of_id;

/// Maps a Redis error to a [`LogError`]: the codes our scripts raise to their variants,
/// connection problems to [`LogError::Unavailable`] (naming the server), the rest to
/// [`LogError::Backend`].
pub fn redis_err(url: &str, e: RedisError) -> LogError {
    let detail = e.detail().unwrap_or("").trim().to_string();
    match e.code() {
        Some("CRMBUS_NOTFOUND") => return LogError::TopicNotFound(detail),
        Some("CRMBUS_EXISTS") => return LogError::TopicExists(detail),
        Some("CRMBUS_FENCED") => return LogError::Fenced(detail),
        Some("CRMBUS_NOPARTITION") => {
            let (topic, p) = detail.rsplit_once(' ').unwrap_or((detail.as_str(), "0"));
            return LogError::PartitionNotFound {
                topic: topic.to_string(),
                partition: p.parse().unwrap_or(0),
            };
        }
        _ => {}
    }
    if e.is_io_error() || e.is_connection_refusal() || e.is_timeout() || e.is_connection_dropped() {
        LogError::Unavailable(format!("redis at {url} is unreachable: {e}"))
    } else {
        LogError::backend_from(format!("redis at {url}"), e)
    }
}

/// True when `e` is the script's "the partition count changed under you" signal.
pub fn is_stale(e: &RedisError) -> bool {
    e.code() == Some("CRMBUS_STALE")
}

/// The bytes of a string-like reply.
pub fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        Value::Okay => Some(b"OK"),
        _ => None,
    }
}

/// A string-like reply as text.
pub fn text(v: &Value) -> Option<String> {
    bytes(v).map(|b| String::from_utf8_lossy(b).into_owned())
}

/// An integer reply (or a string holding one).
pub fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

/// The items of an array reply (an empty slice for nil).
pub fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => &[],
    }
}

/// One stream entry as crmbus reads it back.
pub struct RawEntry {
    /// The entry's offset.
    pub offset: u64,
    /// `event` and `ts`; `None` for an entry that was deleted (a claim of a trimmed id).
    pub body: Option<(Vec<u8>, i64)>,
}

/// Parses the entries of an `XRANGE`-style reply: `[[id, [field, value, ...]], ...]`.
pub fn entries(v: &Value) -> Vec<RawEntry> {
    let mut out = Vec::new();
    for e in items(v) {
        let parts = items(e);
        let Some(offset) = parts
            .first()
            .and_then(text)
            .and_then(|id| offset_of_id(&id))
        else {
            continue;
        };
        let mut event = None;
        let mut ts = None;
        if let Some(fields) = parts.get(1) {
            for pair in items(fields).chunks(2) {
                if let [k, val] = pair {
                    match bytes(k) {
                        Some(b"event") => event = bytes(val).map(<[u8]>::to_vec),
                        Some(b"ts") => ts = int(val),
                        _ => {}
                    }
                }
            }
        }
        out.push(RawEntry {
            offset,
            body: event.map(|e| (e, ts.unwrap_or(0))),
        });
    }
    out
}

/// Decodes an entry into a [`StoredEvent`]; a body that does not parse is reported as
/// [`LogError::Corrupt`].
pub fn stored(
    topic: &str,
    partition: u32,
    offset: u64,
    json: &[u8],
    ts_us: i64,
) -> Result<StoredEvent, LogError> {
    let corrupt = |detail: String| LogError::Corrupt {
        topic: topic.to_string(),
        partition,
        offset,
        detail,
    };
    let event = Event::from_json_slice(json).map_err(|e| corrupt(e.to_string()))?;
    let timestamp: DateTime<Utc> = DateTime::from_timestamp_micros(ts_us)
        .ok_or_else(|| corrupt(format!("bad timestamp {ts_us}")))?;
    Ok(StoredEvent {
        partition,
        offset,
        timestamp,
        event,
        stored_json: None,
    })
}
