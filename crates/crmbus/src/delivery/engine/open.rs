//! Opening an engine: the group's cursor, retry schedule, done markers, dead letters and
//! dedupe entries, loaded from the log and the state store.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use super::records::{decode, done_key, encode, parse_pos_key, DeadLetter, RetryRecord};
use super::run::{Engine, FastMap, FastSet, PartCursor};
use super::stats::{EngineMetrics, SubscriptionStats};
use crate::clock::Clock;
use crate::delivery::breaker::CircuitBreaker;
use crate::delivery::group_state::{GroupState, StateKind};
use crate::delivery::handler::Handler;
use crate::delivery::options::SubscribeOptions;
use crate::delivery::ranges::OffsetRanges;
use crate::error::LogError;
use crate::log::EventLog;
use crate::position::Position;
use crate::state::{StateOp, StateStore};

impl Engine {
    /// Opens the engine of (`topic`, `group`): loads the group's cursor (or places a new
    /// group per `opts.start` and commits it), its retry schedule, done markers and held
    /// dead letters.
    pub async fn open(
        log: Arc<dyn EventLog>,
        state: Arc<dyn StateStore>,
        clock: Arc<dyn Clock>,
        topic: &str,
        group: &str,
        handler: Arc<dyn Handler>,
        opts: SubscribeOptions,
    ) -> Result<Engine, LogError> {
        if group.is_empty() || group.contains('/') {
            return Err(LogError::InvalidArgument(format!(
                "group name '{group}' must be non-empty and without '/'"
            )));
        }
        if opts.max_in_flight == 0 || opts.read_ahead == 0 {
            return Err(LogError::InvalidArgument(
                "max_in_flight and read_ahead must be at least 1".into(),
            ));
        }
        let stored = GroupState::new(topic, group);
        let info = log.describe_topic(topic).await?;
        if let Some(owned) = &opts.partitions {
            if let Some(p) = owned
                .iter()
                .find(|p| !info.partition_info.iter().any(|x| x.partition == **p))
            {
                return Err(LogError::PartitionNotFound {
                    topic: topic.to_string(),
                    partition: *p,
                });
            }
        }
        let owns = |p: u32| opts.partitions.as_ref().is_none_or(|o| o.contains(&p));
        let fences = opts.fences.clone();
        let mut parts = Vec::with_capacity(info.partition_info.len());
        for p in info.partition_info.iter().filter(|p| owns(p.partition)) {
            let committed =
                match log.committed_offset(group, topic, p.partition).await? {
                    Some(c) if c > p.next_offset => {
                        // The log lost its tail, or the topic was made again: a cursor past the
                        // end would pass over every event appended below it.
                        tracing::warn!(topic, group, partition = p.partition, committed = c,
                        next_offset = p.next_offset,
                        "the group's offset is past the end of the partition; clamped to the end");
                        log.commit_offset_fenced(&fences, group, topic, p.partition, p.next_offset)
                            .await?;
                        p.next_offset
                    }
                    Some(c) => c,
                    None => {
                        let start = Position::from(opts.start)
                            .offset_in(log.as_ref(), topic, p)
                            .await?
                            .unwrap_or(p.first_offset);
                        log.commit_offset_fenced(&fences, group, topic, p.partition, start)
                            .await?;
                        start
                    }
                };
            parts.push(PartCursor {
                id: p.partition,
                next_read: committed,
                committed,
                done: OffsetRanges::default(),
                dirty: false,
                stored_done: None,
                buffered: 0,
                dispatched_to: committed,
                stored_dispatched: committed,
                attempted_below: committed,
            });
        }
        let mut retries = FastMap::default();
        for (k, v) in state.scan(&stored.namespace(StateKind::Retry), "").await? {
            if let Some(pos) = parse_pos_key(&k).filter(|(p, _)| owns(*p)) {
                retries.insert(pos, decode::<RetryRecord>(&v)?);
            }
        }
        // Done entries: one per partition, the ranges finished above the committed offset
        // (ranges below it are what a later commit passed). One marker per offset
        // (`<partition>/<offset>`) is how older versions stored them: folded in and
        // rewritten as ranges here.
        let done_ns = stored.namespace(StateKind::Done);
        let mut legacy = Vec::new();
        for (k, v) in state.scan(&done_ns, "").await? {
            if let Some((p, o)) = parse_pos_key(&k).filter(|(p, _)| owns(*p)) {
                if let Some(part) = parts.iter_mut().find(|c| c.id == p) {
                    if o >= part.committed {
                        part.done.insert(o);
                        part.dirty = true;
                    }
                }
                legacy.push(StateOp::Delete {
                    namespace: done_ns.clone(),
                    key: k,
                });
            } else if let Ok(p) = k.parse::<u32>() {
                let ranges: Vec<(u64, u64)> = decode(&v)?;
                if let Some(part) = parts.iter_mut().find(|c| c.id == p) {
                    for (a, b) in ranges {
                        part.done.insert_range(a.max(part.committed), b);
                    }
                    part.stored_done = Some(part.done.range_count());
                }
            }
        }
        if !legacy.is_empty() {
            let mut ops = Vec::new();
            for part in parts.iter_mut().filter(|p| p.dirty) {
                ops.push(StateOp::Put {
                    namespace: done_ns.clone(),
                    key: done_key(part.id),
                    value: encode(&part.done.to_pairs())?,
                });
                part.stored_done = Some(part.done.range_count());
                part.dirty = false;
            }
            ops.extend(legacy);
            state.apply_fenced(&fences, ops).await?;
        }
        // What a server that stopped without a clean stop had handed out: delivered again
        // as a further attempt.
        for (k, v) in state
            .scan(&stored.namespace(StateKind::Dispatched), "")
            .await?
        {
            let (Ok(p), Ok(to)) = (k.parse::<u32>(), decode::<u64>(&v)) else {
                continue;
            };
            if let Some(part) = parts.iter_mut().find(|c| c.id == p) {
                part.attempted_below = to.max(part.committed);
                part.stored_dispatched = part.attempted_below;
                part.dispatched_to = part.attempted_below;
            }
        }
        let mut held = FastSet::default();
        let mut redriving = Vec::new();
        let mut dlq_count = 0u64;
        for (_, v) in state
            .scan(&stored.namespace(StateKind::DeadLetter), "")
            .await?
        {
            let d: DeadLetter = decode(&v)?;
            dlq_count += 1;
            if !owns(d.partition) {
                continue;
            }
            if d.redriving {
                redriving.push(d);
            } else if d.held {
                held.insert((d.partition, d.offset));
            }
        }
        let mut processed = FastMap::default();
        let mut expiries = Vec::new();
        if opts.dedupe_ttl.is_some() {
            let ns = stored.namespace(StateKind::Dedupe);
            let now = clock.now_micros();
            let mut expired = Vec::new();
            for (k, v) in state.scan(&ns, "").await? {
                let expiry: i64 = decode(&v)?;
                match u64::from_str_radix(&k, 16) {
                    Ok(h) if expiry > now => {
                        processed.insert(h, expiry);
                        expiries.push((expiry, h));
                    }
                    _ => expired.push(StateOp::Delete {
                        namespace: ns.clone(),
                        key: k,
                    }),
                }
            }
            if !expired.is_empty() {
                state.apply_fenced(&fences, expired).await?;
            }
        }
        expiries.sort_unstable();
        let seed = clock.now_micros() as u64 ^ 0x9E37_79B9_7F4A_7C15;
        let caught_up = vec![false; parts.len()];
        let hands_over = handler.hands_over();
        let mut engine = Engine {
            log,
            state,
            clock,
            topic: Arc::from(topic),
            group: Arc::from(group),
            stored,
            handler,
            breaker: opts.breaker.map(CircuitBreaker::new),
            opts,
            parts,
            keys: FastMap::default(),
            finished_events: Vec::new(),
            spare_queues: Vec::new(),
            ready: VecDeque::new(),
            timers: BTreeSet::new(),
            retries,
            held,
            in_flight: super::in_flight::InFlight::new(),
            hands_over,
            rng: seed | 1,
            ops: Vec::new(),
            processed,
            expiries: expiries.into(),
            dlq_count,
            interrupted: false,
            redriving_pos: redriving.iter().map(|d| (d.partition, d.offset)).collect(),
            stats: Arc::new(SubscriptionStats::default()),
            metrics: EngineMetrics::new(topic, group),
            finished_since_persist: 0,
            last_persist: std::time::Instant::now(),
            prefetch: None,
            prefetched: None,
            caught_up,
            prefetched_batches: 0,
        };
        // Redrives that were under way when the engine stopped start again.
        for d in redriving {
            engine.enqueue_redrive(d);
        }
        Ok(engine)
    }
}
