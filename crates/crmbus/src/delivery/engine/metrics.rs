//! The engine's counters and gauges: the snapshot [`Engine::stats`], the counters it bumps
//! as it delivers, and the gauges [`Engine::export_metrics`] sets.

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

use super::run::Engine;
use super::stats::{Parked, ParkedKey, StatsSnapshot, SubscriptionStats, PARKED_SHOWN};
use crate::error::LogError;

impl Engine {
    /// Exports the subscription's gauges, its lag (events not yet committed) and its DLQ
    /// size as metrics.
    pub async fn export_metrics(&self) -> Result<(), LogError> {
        // The gauges need the count of parked keys, not the list.
        let s = self.snapshot(false);
        let labels = [
            ("topic", self.topic.to_string()),
            ("group", self.group.to_string()),
        ];
        metrics::gauge!("crmbus_subscription_in_flight", &labels).set(s.in_flight as f64);
        metrics::gauge!("crmbus_subscription_parked_keys", &labels).set(s.parked_keys as f64);
        metrics::gauge!("crmbus_subscription_breaker_state", &labels).set(f64::from(s.breaker));
        let info = self.log.describe_topic(&self.topic).await?;
        let lag: u64 = s
            .partitions
            .iter()
            .zip(&s.committed)
            .filter_map(|(id, c)| {
                let p = info.partition_info.iter().find(|p| p.partition == *id)?;
                Some(p.next_offset.saturating_sub(*c))
            })
            .sum();
        metrics::gauge!("crmbus_subscription_lag", &labels).set(lag as f64);
        metrics::gauge!("crmbus_subscription_dlq_size", &labels).set(self.dlq_count as f64);
        Ok(())
    }

    /// The subscription's counters (shared; they keep counting).
    pub fn stats_handle(&self) -> Arc<SubscriptionStats> {
        Arc::clone(&self.stats)
    }

    /// A snapshot of the counters and the current state, with the first parked keys.
    pub fn stats(&self) -> StatsSnapshot {
        self.snapshot(true)
    }

    /// The snapshot; `parked` listed only when `list_parked`.
    fn snapshot(&self, list_parked: bool) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(AtomicOrdering::Relaxed);
        let (parked_keys, parked) = self.parked(list_parked);
        StatsSnapshot {
            delivered: g(&self.stats.delivered),
            acked: g(&self.stats.acked),
            retried: g(&self.stats.retried),
            dead_lettered: g(&self.stats.dead_lettered),
            filtered: g(&self.stats.filtered),
            deduped: g(&self.stats.deduped),
            in_flight: self.in_flight.len() as u64,
            parked_keys,
            committed: self.parts.iter().map(|p| p.committed).collect(),
            partitions: self.parts.iter().map(|p| p.id).collect(),
            breaker: self
                .breaker
                .as_ref()
                .map(|b| b.current().gauge() as u8)
                .unwrap_or(0),
            dedupe_entries: self.processed.len() as u64,
            done_entries: self.parts.iter().map(|p| p.done.range_count() as u64).sum(),
            done_markers: self
                .parts
                .iter()
                .map(|p| p.stored_done.unwrap_or(0) as u64)
                .sum(),
            dlq_entries: self.dlq_count,
            parked,
        }
    }

    /// How many keys are parked, and (when `list`) the first [`PARKED_SHOWN`] of them by
    /// partition and offset. One pass over the keys; a key past the first
    /// [`PARKED_SHOWN`] costs a comparison, and nothing is copied for it.
    fn parked(&self, list: bool) -> (u64, Vec<ParkedKey>) {
        let mut count = 0;
        let mut shown: Vec<ParkedKey> = Vec::new();
        for ((p, key), ks) in &self.keys {
            let Some(q) = ks.queue.front() else { continue };
            let at = (*p, q.offset);
            let retry = self.retries.get(&at);
            if retry.is_none() && !self.held.contains(&at) {
                continue;
            }
            count += 1;
            if !list {
                continue;
            }
            let full = shown.len() == PARKED_SHOWN;
            if full && shown.last().is_some_and(|k| (k.partition, k.offset) <= at) {
                continue;
            }
            let waiting_on = match retry {
                Some(r) => Parked::Retry {
                    attempts: r.attempts,
                    next_due_us: r.next_due_us,
                    last_error: r.last_error.clone(),
                },
                None => Parked::DeadLetter,
            };
            let place = shown.partition_point(|k| (k.partition, k.offset) < at);
            if full {
                shown.pop();
            }
            shown.insert(
                place,
                ParkedKey {
                    partition: *p,
                    key: key.to_string(),
                    offset: q.offset,
                    queued: ks.queue.len() as u64,
                    waiting_on,
                },
            );
        }
        (count, shown)
    }

    pub(super) fn count_delivered(&self) {
        self.stats.delivered.fetch_add(1, AtomicOrdering::Relaxed);
        self.metrics.delivered.increment(1);
    }

    /// Flow analytics: the time from the log's append to this ack (µs; the engine's clock
    /// against the backend's, so never below zero).
    pub(super) fn record_latency(&self, us: i64) {
        self.metrics.latency.record(us.max(0) as f64 / 1e6);
    }

    pub(super) fn count_acked(&self) {
        self.stats.acked.fetch_add(1, AtomicOrdering::Relaxed);
        self.metrics.acked.increment(1);
    }

    pub(super) fn count_retried(&self) {
        self.stats.retried.fetch_add(1, AtomicOrdering::Relaxed);
        self.metrics.retried.increment(1);
    }

    pub(super) fn count_dead_lettered(&self) {
        self.stats
            .dead_lettered
            .fetch_add(1, AtomicOrdering::Relaxed);
        self.metrics.dead_lettered.increment(1);
    }

    pub(super) fn count_filtered(&self) {
        self.stats.filtered.fetch_add(1, AtomicOrdering::Relaxed);
    }

    pub(super) fn count_deduped(&self) {
        self.stats.deduped.fetch_add(1, AtomicOrdering::Relaxed);
        self.metrics.deduped.increment(1);
    }
}
