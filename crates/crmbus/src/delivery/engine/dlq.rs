//! The dead-letter queue's operations: listing, redrive, discard, and the audit log.

use super::records::{decode, encode, AuditRecord, DeadLetter, DlqFilter};
use super::run::{Engine, Key, Queued};
use crate::delivery::group_state::{GroupState, StateKind};
use crate::error::LogError;
use crate::state::{StateOp, StateStore};

/// A group's dead letters matching `filter`, by partition and offset, read from the store
/// (no engine needed: any server sharing the backend can list them).
pub async fn read_dead_letters(
    state: &dyn StateStore,
    group: &GroupState,
    filter: &DlqFilter,
) -> Result<Vec<DeadLetter>, LogError> {
    let ns = group.namespace(StateKind::DeadLetter);
    let mut out = Vec::new();
    for (_, v) in state.scan(&ns, "").await? {
        let d: DeadLetter = decode(&v)?;
        if filter.matches(&d) {
            out.push(d);
        }
    }
    out.sort_by_key(|d| (d.partition, d.offset));
    Ok(out)
}

/// A group's audit log of DLQ actions, oldest first, read from the store.
pub async fn read_audit_log(
    state: &dyn StateStore,
    group: &GroupState,
) -> Result<Vec<AuditRecord>, LogError> {
    let ns = group.namespace(StateKind::Audit);
    state
        .scan(&ns, "")
        .await?
        .iter()
        .map(|(_, v)| decode(v))
        .collect()
}

/// The state operation that appends `rec` to `group`'s audit log (kept in time order).
/// The engine writes its DLQ actions so; whoever acts on a subscription as a whole (the
/// server disabling a webhook that answered 410) writes its own the same way.
pub fn audit_op(group: &GroupState, rec: &AuditRecord) -> Result<StateOp, LogError> {
    Ok(StateOp::Put {
        namespace: group.namespace(StateKind::Audit),
        key: format!("{:020}-{}-{}", rec.at_us, rec.entry, rec.action),
        value: encode(rec)?,
    })
}

impl Engine {
    /// Dead letters matching `filter`, by partition and offset.
    pub async fn dead_letters(&self, filter: &DlqFilter) -> Result<Vec<DeadLetter>, LogError> {
        read_dead_letters(self.state.as_ref(), &self.stored, filter).await
    }

    /// One dead letter by entry id.
    pub async fn dead_letter_entry(&self, id: &str) -> Result<Option<DeadLetter>, LogError> {
        let ns = self.stored.namespace(StateKind::DeadLetter);
        match self.state.get(&ns, id).await? {
            Some(v) => Ok(Some(decode(&v)?)),
            None => Ok(None),
        }
    }

    fn audit(&mut self, who: &str, action: &str, d: &DeadLetter) {
        let rec = AuditRecord {
            at_us: self.clock.now_micros(),
            who: who.to_string(),
            action: action.to_string(),
            entry: d.id.clone(),
            event_id: d.event.id.clone(),
            event_type: d.event.ty.clone(),
            detail: String::new(),
        };
        match audit_op(&self.stored, &rec) {
            Ok(op) => self.ops.push(op),
            Err(err) => tracing::error!(error = %err, "cannot write an audit record"),
        }
        tracing::info!(topic = %self.topic, group = %self.group, entry = %d.id, who, action, "dead letter {action}");
    }

    /// The audit log of DLQ actions, oldest first.
    pub async fn audit_log(&self) -> Result<Vec<AuditRecord>, LogError> {
        read_audit_log(self.state.as_ref(), &self.stored).await
    }

    /// Queues a skipped dead letter for delivery again, after the key's in-flight event
    /// and before its other waiting events, in offset order among redriven ones.
    pub(super) fn enqueue_redrive(&mut self, d: DeadLetter) {
        let k = (d.partition, Key::from(d.key.as_str()));
        let ks = self.key_state(k);
        let was_idle = ks.queue.is_empty() && !ks.in_flight;
        let start = usize::from(ks.in_flight);
        let at = ks
            .queue
            .iter()
            .enumerate()
            .skip(start)
            .find(|(_, q)| !q.redrive || q.offset > d.offset)
            .map(|(i, _)| i)
            .unwrap_or(ks.queue.len());
        ks.queue.insert(
            at,
            Queued {
                offset: d.offset,
                event: std::sync::Arc::new(d.event),
                stored_json: None,
                appended_us: 0,
                redrive: true,
            },
        );
        if was_idle {
            self.schedule(d.partition, Key::from(d.key));
        }
    }

    /// Redrives the given dead letters (all matching entries when `ids` is `None` and
    /// `filter` selects them), each audited:
    /// - a held entry whose event waits in its key's queue releases its key, which
    ///   delivers it again from attempt 1;
    /// - a held entry whose offset is no longer queued (the group sought past it, or
    ///   retention removed it) and a skipped entry are delivered again from the entry's
    ///   copy of the event, in their key's order; the entry goes once delivered;
    /// - a held entry the group has not read yet (it sought back before it) is released:
    ///   its event is delivered when the group reads it.
    ///
    /// Entries of records the log could not read ([`DeadLetter::unreadable`]) have no
    /// event to deliver: a filter passes over them, and naming one in `ids` is an
    /// [`LogError::InvalidArgument`] (nothing is redriven). Returns how many entries were
    /// redriven.
    pub async fn redrive(
        &mut self,
        ids: Option<&[String]>,
        filter: &DlqFilter,
        who: &str,
    ) -> Result<usize, LogError> {
        let mut selected: Vec<DeadLetter> = self
            .dead_letters(filter)
            .await?
            .into_iter()
            .filter(|d| !d.redriving && ids.is_none_or(|ids| ids.contains(&d.id)))
            .filter(|d| self.owns(d.partition))
            .collect();
        if ids.is_some() {
            if let Some(d) = selected.iter().find(|d| d.unreadable) {
                return Err(LogError::InvalidArgument(format!(
                    "dead letter {} is a record the log cannot read; it can be discarded, not redriven",
                    d.id
                )));
            }
        }
        selected.retain(|d| !d.unreadable);
        selected.sort_by_key(|d| (d.partition, d.offset));
        let ns = self.stored.namespace(StateKind::DeadLetter);
        for d in &selected {
            self.audit(who, "redrive", d);
            let pos = (d.partition, d.offset);
            let k = (d.partition, Key::from(d.key.as_str()));
            // Is the event in its key's queue, and is it a redriven copy there?
            let queued = self
                .keys
                .get(&k)
                .and_then(|ks| ks.queue.iter().find(|q| q.offset == d.offset))
                .map(|q| q.redrive);
            let unread = self
                .parts
                .iter()
                .find(|c| c.id == d.partition)
                .is_some_and(|c| d.offset >= c.next_read);
            let held = d.held && self.held.remove(&pos);
            match (held, queued) {
                // The event itself waits in its key's queue, or will be read: release it.
                (true, Some(false)) | (true, None) if queued.is_some() || unread => {
                    self.ops.push(StateOp::Delete {
                        namespace: ns.clone(),
                        key: d.id.clone(),
                    });
                    self.dlq_count = self.dlq_count.saturating_sub(1);
                    self.schedule(d.partition, Key::from(d.key.as_str()));
                }
                (true, Some(true)) => {
                    // Its redriven copy waits at the key's head: deliver that.
                    let mut marked = d.clone();
                    marked.redriving = true;
                    marked.held = false;
                    self.ops.push(StateOp::Put {
                        namespace: ns.clone(),
                        key: d.id.clone(),
                        value: encode(&marked)?,
                    });
                    self.redriving_pos.insert(pos);
                    self.schedule(d.partition, Key::from(d.key.as_str()));
                }
                _ => {
                    let mut marked = d.clone();
                    marked.redriving = true;
                    marked.held = false;
                    self.ops.push(StateOp::Put {
                        namespace: ns.clone(),
                        key: d.id.clone(),
                        value: encode(&marked)?,
                    });
                    self.redriving_pos.insert(pos);
                    self.enqueue_redrive(marked);
                }
            }
        }
        self.persist().await?;
        Ok(selected.len())
    }

    /// Discards a dead letter (audited). Its event is not delivered again: a held entry's
    /// key moves on past it (if it waits behind an earlier event of its key, it is taken
    /// out of the queue and the key's hold stays with that earlier event), and a redrive
    /// under way that has not started is dropped. Returns false if there is no such
    /// entry.
    pub async fn discard(&mut self, id: &str, who: &str) -> Result<bool, LogError> {
        let Some(d) = self
            .dead_letter_entry(id)
            .await?
            .filter(|d| self.owns(d.partition))
        else {
            return Ok(false);
        };
        self.audit(who, "discard", &d);
        self.ops.push(StateOp::Delete {
            namespace: self.stored.namespace(StateKind::DeadLetter),
            key: d.id.clone(),
        });
        self.dlq_count = self.dlq_count.saturating_sub(1);
        let pos = (d.partition, d.offset);
        let was_held = self.held.remove(&pos);
        let was_redriving = self.redriving_pos.remove(&pos);
        if was_held || was_redriving {
            let k = (d.partition, Key::from(d.key.as_str()));
            let mut removed = None;
            if let Some(ks) = self.keys.get_mut(&k) {
                // The head is in flight (a redrive under way): its completion sees the
                // discard. Otherwise take the event out wherever it waits.
                let skip = usize::from(ks.in_flight);
                let at = ks
                    .queue
                    .iter()
                    .enumerate()
                    .skip(skip)
                    .find(|(_, q)| q.offset == d.offset && (was_held || q.redrive))
                    .map(|(i, _)| i);
                if let Some(i) = at {
                    removed = ks.queue.remove(i);
                }
                if ks.queue.is_empty() && !ks.in_flight {
                    self.forget_key(&k);
                }
            }
            if let Some(q) = removed {
                if !q.redrive {
                    self.finish_offset(d.partition, d.offset);
                }
            }
            self.schedule(d.partition, Key::from(d.key.as_str()));
        }
        self.persist().await?;
        Ok(true)
    }
}
