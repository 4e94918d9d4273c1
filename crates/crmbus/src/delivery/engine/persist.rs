//! Persisting a step: the state batch, the done ranges, the committed offsets, and the
//! pruning of expired dedupe entries.

use super::records::{done_key, encode};
use super::run::{Engine, PartCursor};
use crate::delivery::group_state::StateKind;
use crate::error::LogError;
use crate::state::StateOp;

/// True for the put of a done entry (rebuilt from the done set when a persist is retried).
fn is_done_put(op: &StateOp, done_ns: &str) -> bool {
    matches!(op, StateOp::Put { namespace, .. } if namespace == done_ns)
}

impl Engine {
    /// Drops the dedupe entries that expired by `now`, from memory and from the store.
    /// Each entry is looked at once when it expires: the cost follows the rate of new
    /// entries, not the size of the window.
    fn prune_processed(&mut self, now: i64) {
        let ns = self.stored.namespace(StateKind::Dedupe);
        while let Some(&(expiry, hash)) = self.expiries.front() {
            if expiry > now {
                break;
            }
            self.expiries.pop_front();
            if self.processed.get(&hash) == Some(&expiry) {
                self.processed.remove(&hash);
                self.ops.push(StateOp::Delete {
                    namespace: ns.clone(),
                    key: format!("{hash:016x}"),
                });
            }
        }
    }

    /// Writes the step's state changes in one batch, then commits the contiguous low-water
    /// marks of the partitions whose mark moved (together, or one by one under fences).
    pub(super) async fn persist(&mut self) -> Result<(), LogError> {
        // In this order, so that a crash or a failure between two steps loses nothing:
        // 1. the pending operations and, for each partition with something finished past
        //    its new low-water mark (or with a done entry stored already), its whole done
        //    set as ranges, in one batch (kept to be tried again if it fails);
        // 2. the new committed offsets, in one call (if it fails, the done sets of the
        //    partitions it covered are stored instead; a fenced engine commits partition
        //    by partition, and stores the done set of the one that failed);
        // 3. only then the done entries the committed offsets passed entirely.
        // Without a gap nothing is stored but the offset: no extra state write per event.
        self.prune_processed(self.clock.now_micros());
        let lwms: Vec<u64> = self.parts.iter().map(PartCursor::lwm).collect();
        let done_ns = self.stored.namespace(StateKind::Done);
        let mut ops = std::mem::take(&mut self.ops);
        // A fenced engine (servers sharing the backend) keeps how far it handed events
        // out, so a server taking over after a crash counts their next delivery as a
        // further attempt.
        let mut dispatched = Vec::new();
        if !self.opts.fences.is_empty() {
            for (i, part) in self.parts.iter().enumerate() {
                if part.dispatched_to > part.stored_dispatched {
                    ops.push(self.stored.put(
                        StateKind::Dispatched,
                        part.id.to_string(),
                        encode(&part.dispatched_to)?,
                    ));
                    dispatched.push((i, part.dispatched_to));
                }
            }
        }
        let mut written = Vec::new();
        for (i, part) in self.parts.iter().enumerate() {
            if part.dirty && (part.done.any_from(lwms[i]) || part.stored_done.is_some()) {
                ops.push(StateOp::Put {
                    namespace: done_ns.clone(),
                    key: done_key(part.id),
                    value: encode(&part.done.to_pairs())?,
                });
                written.push(i);
            }
        }
        if !ops.is_empty() {
            if let Err(e) = self
                .state
                .apply_fenced(&self.opts.fences, ops.clone())
                .await
            {
                // Nothing of the batch was applied: keep it (dead letters and retry
                // schedules among it) for the next persist; done entries are rebuilt.
                let later = std::mem::replace(&mut self.ops, ops);
                self.ops.extend(later);
                self.ops.retain(|op| !is_done_put(op, &done_ns));
                return Err(e);
            }
        }
        for i in written {
            let part = &mut self.parts[i];
            part.stored_done = Some(part.done.range_count());
            part.dirty = false;
        }
        for (i, to) in dispatched {
            self.parts[i].stored_dispatched = to;
        }
        // The partitions whose low-water mark moved, committed together: one write (one
        // sync on the embedded log) for all of them. A fenced engine commits each on its
        // own, under its partition's fence.
        let moved: Vec<(usize, u64)> = lwms
            .iter()
            .enumerate()
            .filter(|&(i, &lwm)| lwm != self.parts[i].committed)
            .map(|(i, &lwm)| (i, lwm))
            .collect();
        if self.opts.fences.is_empty() {
            if !moved.is_empty() {
                let offsets: Vec<(u32, u64)> = moved
                    .iter()
                    .map(|&(i, lwm)| (self.parts[i].id, lwm))
                    .collect();
                if let Err(e) = self
                    .log
                    .commit_offsets(&self.group, &self.topic, &offsets)
                    .await
                {
                    for &(i, _) in &moved {
                        self.keep_done_set(i, &done_ns).await?;
                    }
                    return Err(e);
                }
                for &(i, lwm) in &moved {
                    let part = &mut self.parts[i];
                    part.done.remove_below(lwm);
                    part.committed = lwm;
                }
            }
        } else {
            for &(i, lwm) in &moved {
                let id = self.parts[i].id;
                if let Err(e) = self
                    .log
                    .commit_offset_fenced(&self.opts.fences, &self.group, &self.topic, id, lwm)
                    .await
                {
                    self.keep_done_set(i, &done_ns).await?;
                    return Err(e);
                }
                let part = &mut self.parts[i];
                part.done.remove_below(lwm);
                part.committed = lwm;
            }
        }
        let mut deletes = Vec::new();
        for part in &self.parts {
            if part.stored_done.is_some() && part.done.is_empty() {
                deletes.push(self.stored.delete(StateKind::Done, done_key(part.id)));
            }
        }
        if !deletes.is_empty() {
            // A failure leaves the entries in place: the next persist tries again.
            self.state.apply_fenced(&self.opts.fences, deletes).await?;
            for part in &mut self.parts {
                if part.done.is_empty() {
                    part.stored_done = None;
                    part.dirty = false;
                }
            }
        }
        Ok(())
    }

    /// After a failed offset commit, stores partition `i`'s done set instead, so that what
    /// the commit would have covered is not forgotten (best effort: the next persist tries
    /// the commit again).
    async fn keep_done_set(&mut self, i: usize, done_ns: &str) -> Result<(), LogError> {
        let part = &self.parts[i];
        if part.dirty || part.stored_done.is_none() {
            let put = StateOp::Put {
                namespace: done_ns.to_string(),
                key: done_key(part.id),
                value: encode(&part.done.to_pairs())?,
            };
            if self
                .state
                .apply_fenced(&self.opts.fences, vec![put])
                .await
                .is_ok()
            {
                let part = &mut self.parts[i];
                part.stored_done = Some(part.done.range_count());
                part.dirty = false;
            }
        }
        Ok(())
    }
}
