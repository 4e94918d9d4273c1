//! Reading: events by offset (a pooled consumer assigned to the one partition), the offset
//! for a time (a binary search over the records' timestamps), and the sizes retention by
//! bytes needs.

use std::time::Instant;

use chrono::{DateTime, Utc};
use crmbus::sync::LockExt;
use crmbus::{Event, LogError, StoredEvent};
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message, Timestamp};
use rdkafka::{Offset, TopicPartitionList};

use super::Inner;
use crate::conn::{kafka_err, Reader};

/// How long one read keeps fetching once it has records: it returns what it has then,
/// so a caller is never held long by a slow partition.
const READ_BUDGET: std::time::Duration = std::time::Duration::from_millis(500);

/// One record as a read sees it: its offset, timestamp (ms) and value.
pub(crate) struct RawRecord {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub value: Vec<u8>,
}

/// What a fetch returns.
#[derive(Default)]
pub(crate) struct Fetched {
    /// The records, in offset order.
    pub records: Vec<RawRecord>,
    /// A record that could not be read: its offset and why (the fetch stopped before it).
    pub failed: Option<(u64, String)>,
    /// The partition's end (high watermark), when the fetch reached it.
    pub end: Option<u64>,
    /// The start offset lies outside what the partition holds (below its first or past
    /// its end).
    pub out_of_range: bool,
}

/// Which records a [`fetch`] asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Want {
    /// The first offset.
    pub from: u64,
    /// At most this many records.
    pub max: usize,
    /// Only records before this offset.
    pub stop: Option<u64>,
    /// Whether to keep the values (false: only the offsets matter).
    pub keep_values: bool,
}

impl Want {
    /// Up to `max` records from `from`, values kept.
    pub fn records(from: u64, max: usize, stop: Option<u64>) -> Want {
        Want {
            from,
            max,
            stop,
            keep_values: true,
        }
    }

    /// Everything from `from` to the end, to learn where the end is.
    pub fn end_from(from: u64) -> Want {
        Want {
            from,
            max: usize::MAX,
            stop: None,
            keep_values: false,
        }
    }
}

fn timestamp_ms(m: &BorrowedMessage<'_>) -> i64 {
    match m.timestamp() {
        Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => t,
        Timestamp::NotAvailable => 0,
    }
}

/// Reads records of `topic`/`partition` from `want.from` with consumer `c` (blocking),
/// until `want.max` records, the record before `want.stop` (when given), or the
/// partition's end. Without `want.keep_values` the values are not kept (a fetch for the
/// end offset only).
///
/// The end comes from the fetch responses' high watermark (librdkafka's partition-EOF
/// event), never from ListOffsets, which some Kafka-protocol brokers (tansu 0.6) answer
/// with the last batch's base offset. A record that fails its CRC ends the fetch and is
/// named in `failed`.
pub(crate) fn fetch(
    c: &Reader,
    timeout: std::time::Duration,
    topic: &str,
    partition: u32,
    want: Want,
) -> Result<Fetched, KafkaError> {
    let Want {
        from,
        max,
        stop,
        keep_values,
    } = want;
    let mut out = Fetched::default();
    if max == 0 || stop.is_some_and(|s| s <= from) {
        return Ok(out);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition as i32, Offset::Offset(from as i64))?;
    c.assign(&tpl)?;
    let started = Instant::now();
    // The request timeout bounds the wait for progress, not the whole read: a partition of
    // many small record batches takes a fetch round trip per batch on some brokers.
    let mut deadline = started + timeout;
    let mut next = from;
    let mut count = 0usize;
    let result = loop {
        if count > 0 && started.elapsed() >= READ_BUDGET {
            // Enough for one call: the caller reads on from here.
            break Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            if count > 0 {
                break Ok(());
            }
            break Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        let left = if count > 0 {
            left.min(READ_BUDGET.saturating_sub(started.elapsed()))
        } else {
            left
        };
        match c.poll(left) {
            None => continue,
            Some(Ok(m)) => {
                if m.topic() != topic || m.partition() != partition as i32 {
                    continue;
                }
                let off = m.offset().max(0) as u64;
                if off < next {
                    continue;
                }
                if stop.is_some_and(|s| off >= s) {
                    break Ok(());
                }
                next = off + 1;
                count += 1;
                deadline = Instant::now() + timeout;
                out.records.push(RawRecord {
                    offset: off,
                    timestamp_ms: timestamp_ms(&m),
                    value: if keep_values {
                        m.payload().map(<[u8]>::to_vec).unwrap_or_default()
                    } else {
                        Vec::new()
                    },
                });
                if count >= max || stop.is_some_and(|s| next >= s) {
                    break Ok(());
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) if p == partition as i32 => {
                out.end = Some(next);
                break Ok(());
            }
            Some(Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset,
            ))) => {
                out.out_of_range = true;
                break Ok(());
            }
            Some(Err(KafkaError::MessageConsumption(code)))
                if matches!(
                    code,
                    RDKafkaErrorCode::BadMessage | RDKafkaErrorCode::InvalidMessage
                ) =>
            {
                out.failed = Some((next, format!("the record failed its check: {code}")));
                break Ok(());
            }
            Some(Err(e)) => break Err(e),
        }
    };
    let unassigned = c.unassign();
    result?;
    unassigned?;
    if !keep_values {
        // Only the last offset matters to a caller that wants the end.
        let last = out.records.pop();
        out.records.clear();
        out.records.extend(last);
    }
    Ok(out)
}

/// A partition's (first, end) offsets: the first from ListOffsets, the end from a fetch
/// that reads to the high watermark, starting at ListOffsets' own answer for the end
/// (right on Kafka, so the fetch returns at once; at worst the last batch's start).
pub(crate) fn watermarks(
    c: &Reader,
    timeout: std::time::Duration,
    topic: &str,
    partition: u32,
) -> Result<(u64, u64), KafkaError> {
    let (lo, hint) = c.fetch_watermarks(topic, partition as i32, timeout)?;
    let (lo, hint) = (lo.max(0) as u64, hint.max(0) as u64);
    let mut from = hint.max(lo);
    loop {
        let f = fetch(c, timeout, topic, partition, Want::end_from(from))?;
        if let Some(end) = f.end {
            return Ok((lo.min(end), end));
        }
        if f.out_of_range {
            // The hint lies past the end (the topic changed under us): count from the start.
            if from == lo {
                return Ok((lo, lo));
            }
            from = lo;
            continue;
        }
        match (f.records.last(), f.failed) {
            (_, Some((offset, _))) => from = offset + 1,
            (Some(r), None) => from = r.offset + 1,
            (None, None) => return Ok((lo, from)),
        }
    }
}

/// Decodes a record into a [`StoredEvent`].
fn stored_event(topic: &str, partition: u32, r: RawRecord) -> Result<StoredEvent, LogError> {
    let event = Event::from_json_slice(&r.value).map_err(|e| LogError::Corrupt {
        topic: topic.to_string(),
        partition,
        offset: r.offset,
        detail: e.to_string(),
    })?;
    let timestamp = DateTime::<Utc>::from_timestamp_millis(r.timestamp_ms).unwrap_or_default();
    Ok(StoredEvent {
        partition,
        offset: r.offset,
        timestamp,
        event,
        stored_json: None,
    })
}

impl Inner {
    /// Records of a crmbus topic's partition from `from`: at most `max`, before `stop`.
    async fn raw(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        stop: Option<u64>,
    ) -> Result<Fetched, LogError> {
        let name = self.kafka_topic(topic);
        let what = format!("reading {name}/{partition}");
        self.conn
            .with_reader(&what, move |c, timeout| {
                fetch(c, timeout, &name, partition, Want::records(from, max, stop))
            })
            .await
    }

    pub(super) async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, LogError> {
        let rec = self.record_partition(topic, partition).await?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut start = from.max(rec.floor(partition));
        let key = (topic.to_string(), partition);
        let known_end = self.ends.locked().get(&key).copied();
        if known_end.is_none_or(|end| start > end) {
            let (_, hi) = self.watermarks_of(topic, partition).await?;
            if start >= hi {
                return Ok(Vec::new());
            }
        }
        let mut raw = match self.raw(topic, partition, start, max, None).await {
            Ok(raw) => raw,
            Err(e) => {
                // The end we knew may belong to a topic of the same name deleted since (a
                // fetch past the end waits instead of failing on some brokers): look again.
                let (_, hi) = self.watermarks_uncached(topic, partition).await?;
                if start >= hi {
                    self.ends.locked().insert(key, hi);
                    return Ok(Vec::new());
                }
                return Err(e);
            }
        };
        if raw.out_of_range {
            // Below the first offset (retention), or past the end (nothing to read).
            let (lo, hi) = self.watermarks_of(topic, partition).await?;
            // What we knew of the end may be stale (a topic of the same name deleted
            // since): take the brokers' answer as it is.
            self.ends.locked().insert(key.clone(), hi);
            if start >= hi {
                return Ok(Vec::new());
            }
            start = start.max(lo);
            raw = self.raw(topic, partition, start, max, None).await?;
            if raw.out_of_range {
                return Ok(Vec::new());
            }
        }
        let seen_end = raw.end.or(raw.records.last().map(|r| r.offset + 1));
        if let Some(end) = seen_end {
            self.note_end(topic, partition, end);
        }
        let mut out = Vec::with_capacity(raw.records.len());
        for r in raw.records {
            let offset = r.offset;
            match stored_event(topic, partition, r) {
                Ok(s) => out.push(s),
                Err(e) if out.is_empty() => return Err(e),
                Err(_) => {
                    tracing::warn!(
                        topic,
                        partition,
                        offset,
                        "a record does not decode as an event"
                    );
                    break;
                }
            }
        }
        if out.is_empty() {
            if let Some((offset, detail)) = raw.failed {
                return Err(LogError::Corrupt {
                    topic: topic.to_string(),
                    partition,
                    offset,
                    detail,
                });
            }
        }
        Ok(out)
    }

    /// Remembers that `topic`/`partition` reaches at least `end`.
    pub(super) fn note_end(&self, topic: &str, partition: u32, end: u64) {
        let mut ends = self.ends.locked();
        let known = ends.entry((topic.to_string(), partition)).or_insert(end);
        *known = (*known).max(end);
    }

    /// One partition's (first, end) offsets.
    pub(super) async fn watermarks_of(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(u64, u64), LogError> {
        let marks = self.watermarks_uncached(topic, partition).await?;
        self.note_end(topic, partition, marks.1);
        Ok(marks)
    }

    async fn watermarks_uncached(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(u64, u64), LogError> {
        let name = self.kafka_topic(topic);
        let topic_owned = topic.to_string();
        self.conn
            .with_reader_log("reading watermarks", move |c, timeout| {
                match watermarks(c, timeout, &name, partition) {
                    Ok(marks) => Ok(marks),
                    Err(e)
                        if e.rdkafka_error_code()
                            == Some(RDKafkaErrorCode::UnknownTopicOrPartition) =>
                    {
                        Err(LogError::TopicNotFound(topic_owned))
                    }
                    Err(e) => Err(kafka_err(
                        &format!("reading the offsets of {name}/{partition}"),
                        e,
                    )),
                }
            })
            .await
    }

    pub(super) async fn offset_for_time(
        &self,
        topic: &str,
        partition: u32,
        time: DateTime<Utc>,
    ) -> Result<u64, LogError> {
        let rec = self.record_partition(topic, partition).await?;
        let (lo, hi) = self.watermarks_of(topic, partition).await?;
        let first = lo.max(rec.floor(partition)).min(hi);
        self.time_search(topic, partition, first, hi, time).await
    }

    /// The first offset in `[lo, hi)` whose timestamp is at or after `time` (`hi` when
    /// none is): a binary search reading one record per step. Kafka's own
    /// offsets-for-times (ListOffsets by timestamp) is not used: some Kafka-protocol brokers
    /// (tansu 0.6) answer it wrongly, and timestamps within a partition do not decrease, so
    /// the search is exact on every broker.
    pub(super) async fn time_search(
        &self,
        topic: &str,
        partition: u32,
        mut lo: u64,
        mut hi: u64,
        time: DateTime<Utc>,
    ) -> Result<u64, LogError> {
        let want = time.timestamp_millis();
        let want_sub_ms = !time.timestamp_subsec_nanos().is_multiple_of(1_000_000);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let raw = self.raw(topic, partition, mid, 1, Some(mid + 1)).await?;
            let Some(r) = raw.records.into_iter().next() else {
                // Gone to retention meanwhile, or unreadable: look after it.
                lo = mid + 1;
                continue;
            };
            // A record stamped in millisecond `t` is at or after `time` when t > want, or
            // t == want and `time` has no fraction of a millisecond.
            let at_or_after = r.timestamp_ms > want || (r.timestamp_ms == want && !want_sub_ms);
            if at_or_after {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(lo)
    }

    /// The smallest offset `f` in `[lo, hi]` such that the values of `[f, hi)` add up to at
    /// most `max_bytes`, keeping at least the newest record.
    pub(super) async fn bytes_floor(
        &self,
        topic: &str,
        partition: u32,
        lo: u64,
        hi: u64,
        max_bytes: u64,
    ) -> Result<u64, LogError> {
        if lo >= hi {
            return Ok(lo);
        }
        let mut sizes: Vec<(u64, u64)> = Vec::new();
        let mut at = lo;
        while at < hi {
            let raw = self.raw(topic, partition, at, 10_000, Some(hi)).await?;
            let Some(last) = raw.records.last().map(|r| r.offset) else {
                // Nothing readable here (the brokers' own retention moved the start, or a
                // record is damaged): count nothing rather than guess.
                return Ok(lo);
            };
            sizes.extend(raw.records.iter().map(|r| (r.offset, r.value.len() as u64)));
            at = last + 1;
        }
        let mut total = 0u64;
        let mut floor = hi;
        for &(offset, size) in sizes.iter().rev() {
            if total + size > max_bytes && floor < hi {
                break;
            }
            total += size;
            floor = offset;
        }
        Ok(floor.max(lo))
    }
}
