//! Pull delivery: a subscription's handler that hands deliveries to HTTP clients under a
//! lease instead of calling code.
//!
//! The delivery engine hands each delivery to [`PullHandler`] with the outcome to settle
//! ([`Handler::hand_over`]: no task waits per delivery); the delivery waits in a queue
//! until a client pulls it, which gives it an `ack_id` and a lease of
//! `ack_timeout`. An ack finishes it; a nack (with an optional delay) or an expired lease
//! fails it, and the engine's retry policy delivers it again with `attempt` + 1 — so key
//! ordering, retries, the DLQ and the persisted state all come from the engine.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use crmbus::delivery::{Delivery, Handler, HandlerError, Outcome};
use crmbus::sync::LockExt;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The hasher of the lease maps: their keys are numbers this queue hands out, not input.
type FastHash = foldhash::fast::RandomState;

/// Where a delivery's result goes: the engine that handed it over (or a `handle` call).
type Reply = Outcome;

/// A delivery handed out: who to answer, and when its lease ends.
struct Lease {
    reply: Reply,
    deadline: tokio::time::Instant,
    partition: u32,
    /// The random part of its ack id (see [`AckIds`]).
    tag: u64,
}

struct Pending {
    delivery: Delivery,
    reply: Reply,
}

/// A delivery handed to a client.
#[derive(Debug, Clone)]
pub struct Leased {
    /// The id the client acks or nacks it with.
    pub ack_id: String,
    /// The delivery.
    pub delivery: Delivery,
}

/// Deliveries waiting for a puller.
#[derive(Default)]
struct Waiting {
    queue: VecDeque<Pending>,
    /// Set by [`PullQueue::close`]: nothing is queued any more.
    closed: bool,
}

/// The queue between a subscription's engine and its HTTP pullers.
///
/// Any number of pullers wait at once, each on its own deadline: a long poll holds no
/// lock while it waits, so a pull that does not wait answers at once whatever other
/// pulls are doing. The queue needs no bound of its own: the engine never has more than
/// the subscription's `max_in_flight` deliveries in flight, so never more queued.
pub struct PullQueue {
    waiting: Mutex<Waiting>,
    /// Notified when a delivery is queued (and, for every waiter, when the queue closes).
    queued: Notify,
    /// Pulls waiting for deliveries now: a pull takes its share of the queue when others
    /// wait (see [`PullQueue::take`]).
    waiting_pullers: AtomicUsize,
    leases: Mutex<Leases>,
    /// Ack ids whose lease expired, so that a late ack or nack is told it was stale.
    expired: Mutex<ExpiredLeases>,
    ack_timeout: Duration,
    /// What every ack id of this queue starts with (see [`AckIds`]).
    ack_ids: AckIds,
    /// In a cluster: until when each partition's lease is surely held (renewed in time).
    /// A delivery of a partition not listed, or past its time, is not handed out: a
    /// server that lost a lease (paused past it) never hands out what another server now
    /// delivers. `None`: every delivery is handed out.
    valid: Mutex<Option<HashMap<u32, tokio::time::Instant>>>,
}

/// How many expired ack ids a queue remembers (the oldest are forgotten first; a late
/// ack of a forgotten one is reported unknown, not stale).
const EXPIRED_REMEMBERED: usize = 65_536;

/// How many times a pull that got some deliveries looks again for more arriving (each
/// look after letting other tasks run; the first that finds none ends it).
const ARRIVING_LOOKS: usize = 64;

/// Deliveries a pull took from the queue and has not leased yet. Dropped with some left
/// (the pull was cancelled while it looked for more: its client went away, or the
/// server is stopping), they go back to the front of the queue as if never taken.
/// Dropping them instead would answer them "interrupted", which stops the subscription's
/// engine from starting deliveries until it is restarted.
struct Taken<'a> {
    queue: &'a PullQueue,
    items: Vec<Pending>,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.queue.put_back(std::mem::take(&mut self.items));
    }
}

/// The ack ids of expired leases (their numbers and tags), most recent last, at most
/// [`EXPIRED_REMEMBERED`].
#[derive(Default)]
struct ExpiredLeases {
    tags: HashMap<u64, u64, FastHash>,
    order: VecDeque<u64>,
}

impl ExpiredLeases {
    fn remember(&mut self, seq: u64, tag: u64) {
        if self.order.len() == EXPIRED_REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.tags.remove(&old);
            }
        }
        self.tags.insert(seq, tag);
        self.order.push_back(seq);
    }

    /// Whether the lease of this number and tag expired.
    fn expired(&self, seq: u64, tag: u64) -> bool {
        self.tags.get(&seq) == Some(&tag)
    }
}

/// The leases held, by the sequence number in their ack id, and the next number.
#[derive(Default)]
struct Leases {
    by_seq: HashMap<u64, Lease, FastHash>,
    next: u64,
}

/// A queue's ack ids: `[<member>.]<nonce>-<seq>-<tag>`: the member id in a cluster (so
/// that any server can tell whose delivery an ack is for), a random nonce drawn when the
/// queue is made, the lease's sequence number in the queue, and 64 random bits drawn for
/// the lease, all in lowercase hex (the tag in 16 digits).
///
/// The lease map is keyed by the number, not the text: leasing and settling a delivery
/// hash a `u64` instead of a 32-character string. The tag keeps ids unguessable: the
/// numbers are sequential, and a client that could guess the ids of deliveries another
/// client pulled could settle them; a lease settles only with its own tag. The nonce
/// keeps an id of another queue (another subscription, or this one before its engine or
/// the server restarted) from naming any lease here at the cost of a map lookup.
struct AckIds {
    /// `[<member>.]<nonce>-`.
    prefix: String,
}

impl AckIds {
    fn new(owner: Option<&str>) -> AckIds {
        let mut bytes = [0u8; 8];
        rand::fill(&mut bytes[..6]);
        let nonce = u64::from_le_bytes(bytes);
        let prefix = match owner {
            Some(owner) => format!("{owner}.{nonce:012x}-"),
            None => format!("{nonce:012x}-"),
        };
        AckIds { prefix }
    }

    /// The ack id of lease number `seq` with `tag`.
    fn format(&self, seq: u64, tag: u64) -> String {
        use std::fmt::Write as _;
        let mut id = String::with_capacity(self.prefix.len() + 33);
        id.push_str(&self.prefix);
        // Writing to a String cannot fail.
        let _ = write!(id, "{seq:x}-{tag:016x}");
        id
    }

    /// The lease number and tag `id` names, if it is one of this queue's ids, spelled
    /// exactly as [`AckIds::format`] spells it (no other spelling settles a lease).
    fn parse(&self, id: &str) -> Option<(u64, u64)> {
        let (seq, tag) = id.strip_prefix(self.prefix.as_str())?.split_once('-')?;
        let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let canonical = !seq.is_empty()
            && seq.len() <= 16
            && lower_hex(seq)
            && (seq == "0" || !seq.starts_with('0'))
            && tag.len() == 16
            && lower_hex(tag);
        if !canonical {
            return None;
        }
        Some((
            u64::from_str_radix(seq, 16).ok()?,
            u64::from_str_radix(tag, 16).ok()?,
        ))
    }
}

/// What became of the ack ids of an ack or a nack.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Settlement {
    /// The ids that settled nothing: never leased, already settled, or expired.
    pub unknown: Vec<String>,
    /// Those of `unknown` whose lease had expired: the delivery was (or will be) handed
    /// out again as a later attempt, which this late answer does not settle.
    pub stale: Vec<String>,
}

/// Counts a pull as waiting for as long as it lives (a pull cancelled while it waits
/// stops counting too).
struct WaitingPuller<'a>(&'a AtomicUsize);

impl<'a> WaitingPuller<'a> {
    fn new(count: &'a AtomicUsize) -> WaitingPuller<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        WaitingPuller(count)
    }
}

impl Drop for WaitingPuller<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a delivery queued or leased when the subscription stops gets: not a failed
/// attempt (a clean stop or restart never brings an event nearer its dead letter); it is
/// delivered again, as the same attempt, when the subscription runs next.
fn stopped() -> HandlerError {
    HandlerError::interrupted("the pull subscription stopped before the delivery was acked")
}

impl PullQueue {
    /// A queue for up to `capacity` deliveries at once (the subscription's
    /// `max_in_flight`), leasing each for `ack_timeout`.
    pub fn new(capacity: usize, ack_timeout: Duration) -> Arc<PullQueue> {
        PullQueue::with_owner(capacity, ack_timeout, None)
    }

    /// [`PullQueue::new`] for a server in a cluster: ack ids start with `owner` and a
    /// delivery is handed out only while its partition's lease is valid (see
    /// [`PullQueue::set_valid`]; none is until then).
    pub fn with_owner(
        capacity: usize,
        ack_timeout: Duration,
        owner: Option<String>,
    ) -> Arc<PullQueue> {
        let valid = owner.as_ref().map(|_| HashMap::new());
        let queue = Arc::new(PullQueue {
            waiting: Mutex::new(Waiting {
                queue: VecDeque::with_capacity(capacity.clamp(1, 1024)),
                closed: false,
            }),
            queued: Notify::new(),
            waiting_pullers: AtomicUsize::new(0),
            leases: Mutex::new(Leases::default()),
            expired: Mutex::new(ExpiredLeases::default()),
            ack_timeout,
            ack_ids: AckIds::new(owner.as_deref()),
            valid: Mutex::new(valid),
        });
        // One reaper per queue expires leases, checking a few times per ack timeout (at
        // least every 250 ms); it ends with the queue.
        let weak = Arc::downgrade(&queue);
        let tick = (ack_timeout / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                match weak.upgrade() {
                    Some(q) => q.expire(tokio::time::Instant::now()),
                    None => return,
                }
            }
        });
        queue
    }

    /// Fails every lease whose deadline has passed: the engine delivers it again.
    fn expire(&self, now: tokio::time::Instant) {
        let expired: Vec<(u64, Lease)> = {
            let mut leases = self.leases.locked();
            let expired: Vec<(u64, Lease)> =
                leases.by_seq.extract_if(|_, l| l.deadline <= now).collect();
            // Remembered before the leases are let go, so that an ack racing the expiry
            // is told it was stale.
            if !expired.is_empty() {
                let mut remembered = self.expired.locked();
                for (seq, lease) in &expired {
                    remembered.remember(*seq, lease.tag);
                }
            }
            expired
        };
        for (_, lease) in expired {
            lease.reply.settle(Err(HandlerError::transient(format!(
                "not acked within the ack timeout of {} ms",
                self.ack_timeout.as_millis()
            ))
            .retry_after(Duration::ZERO)));
        }
    }

    /// The handler to give the subscription.
    pub fn handler(self: &Arc<Self>) -> Arc<dyn Handler> {
        Arc::new(PullHandler {
            queue: Arc::clone(self),
        })
    }

    /// Up to `max` deliveries; waits up to `wait` for the first one (long poll). Empty
    /// when none came in time or the queue is closed.
    pub async fn pull(self: &Arc<Self>, max: usize, wait: Duration) -> Vec<Leased> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so a delivery queued in between still wakes us.
            let queued = self.queued.notified();
            tokio::pin!(queued);
            queued.as_mut().enable();
            let (taken, closed) = self.take(max);
            if !taken.is_empty() {
                let mut taken = Taken {
                    queue: self,
                    items: taken,
                };
                self.take_arriving(&mut taken.items, max, deadline).await;
                return self.lease_held(std::mem::take(&mut taken.items));
            }
            if closed {
                return Vec::new();
            }
            let waited = {
                let _waiting = WaitingPuller::new(&self.waiting_pullers);
                tokio::time::timeout_at(deadline, queued).await
            };
            if waited.is_err() {
                return Vec::new();
            }
        }
    }

    /// Leases `taken`, except the deliveries whose partition stopped counting as held (in
    /// a cluster) while the pull looked for more: those go back to the queue.
    fn lease_held(&self, taken: Vec<Pending>) -> Vec<Leased> {
        // Closed while this pull looked for more: the close answered every lease and
        // queued delivery, so these are answered the same way, not leased.
        if self.waiting.locked().closed {
            for p in taken {
                p.reply.settle(Err(stopped()));
            }
            return Vec::new();
        }
        let (held, lapsed): (Vec<Pending>, Vec<Pending>) = taken
            .into_iter()
            .partition(|p| self.partition_valid(p.delivery.partition));
        self.put_back(lapsed);
        self.lease(held)
    }

    /// Puts deliveries taken and not leased back at the front of the queue, in their
    /// order, and wakes a puller for them. After [`PullQueue::close`] they are answered
    /// "stopped" instead, as the close answered the rest.
    fn put_back(&self, items: Vec<Pending>) {
        if items.is_empty() {
            return;
        }
        let refused = {
            let mut waiting = self.waiting.locked();
            if waiting.closed {
                Some(items)
            } else {
                for p in items.into_iter().rev() {
                    waiting.queue.push_front(p);
                }
                None
            }
        };
        match refused {
            Some(items) => {
                for p in items {
                    p.reply.settle(Err(stopped()));
                }
            }
            None => self.queued.notify_one(),
        }
    }

    /// Adds to `taken` the deliveries that are arriving while it is taken, up to `max`.
    /// A pull that does not wait (`wait_ms` 0) answers with what it found at once.
    ///
    /// Deliveries can reach the queue a few at a time (each `handle` call from its own
    /// task, or one dispatch after another as acks come in), so a pull that answers with
    /// what is queued at the first look can get a fraction of a burst (about 170 of 1,000
    /// after an ack of 1,000, when each delivery had a task) and the client pays a round
    /// trip for each fraction. Letting the other tasks run and looking again, for as long
    /// as each look finds more, fills the batch without a timer: when nothing more is
    /// arriving the pull answers at once. While other pulls wait it does not look again:
    /// what arrives is theirs to share.
    async fn take_arriving(&self, taken: &mut Vec<Pending>, max: usize, deadline: Instant) {
        for _ in 0..ARRIVING_LOOKS {
            if taken.len() >= max
                || Instant::now() >= deadline
                || self.waiting_pullers.load(Ordering::Relaxed) > 0
            {
                return;
            }
            tokio::task::yield_now().await;
            let (more, _) = self.take(max - taken.len());
            if more.is_empty() {
                return;
            }
            taken.extend(more);
        }
    }

    /// Takes up to `max` queued deliveries whose outcome is still waited for (those of an
    /// engine that stopped are dropped), and whether the queue is closed. When some are left, the
    /// next waiting puller is woken for them.
    fn take(&self, max: usize) -> (Vec<Pending>, bool) {
        let valid = self.valid.locked().clone();
        let now = tokio::time::Instant::now();
        let may_hand_out = |p: &Pending| match &valid {
            None => true,
            Some(v) => v
                .get(&p.delivery.partition)
                .is_some_and(|until| *until > now),
        };
        let mut waiting = self.waiting.locked();
        // With other pulls waiting, each takes its share of what is queued, so that the
        // group's clients work side by side instead of one taking all while the others
        // wait for the next dispatch (the engine queues a whole dispatch at once).
        let others = self.waiting_pullers.load(Ordering::Relaxed);
        let max = if others == 0 {
            max
        } else {
            waiting.queue.len().div_ceil(others + 1).max(1).min(max)
        };
        let mut out = Vec::new();
        let mut kept = VecDeque::new();
        // Deliveries nobody waits for any more, dropped once the lock is released.
        let mut gone = Vec::new();
        while out.len() < max {
            match waiting.queue.pop_front() {
                Some(p) if p.reply.is_closed() => gone.push(p),
                Some(p) if !may_hand_out(&p) => kept.push_back(p),
                Some(p) => out.push(p),
                None => break,
            }
        }
        // What may not be handed out now keeps its place at the front.
        while let Some(p) = kept.pop_back() {
            waiting.queue.push_front(p);
        }
        if !out.is_empty() && !waiting.queue.is_empty() {
            self.queued.notify_one();
        }
        let closed = waiting.closed;
        drop(waiting);
        drop(gone);
        (out, closed)
    }

    /// Sets until when each partition's lease is surely held (in a cluster); deliveries
    /// of other partitions wait. Wakes a puller if some became deliverable.
    pub fn set_valid(&self, until: HashMap<u32, tokio::time::Instant>) {
        if let Some(v) = self.valid.locked().as_mut() {
            *v = until;
        }
        self.queued.notify_one();
    }

    /// Leases `taken` until one ack timeout from now, under one lock.
    fn lease(&self, taken: Vec<Pending>) -> Vec<Leased> {
        let deadline = tokio::time::Instant::now() + self.ack_timeout;
        let numbered: Vec<(u64, u64, Delivery)> = {
            let mut leases = self.leases.locked();
            taken
                .into_iter()
                .map(|p| {
                    let seq = leases.next;
                    leases.next += 1;
                    let tag = rand::random::<u64>();
                    let lease = Lease {
                        reply: p.reply,
                        deadline,
                        partition: p.delivery.partition,
                        tag,
                    };
                    leases.by_seq.insert(seq, lease);
                    (seq, tag, p.delivery)
                })
                .collect()
        };
        // The ids are written once the lock is let go.
        numbered
            .into_iter()
            .map(|(seq, tag, delivery)| Leased {
                ack_id: self.ack_ids.format(seq, tag),
                delivery,
            })
            .collect()
    }

    /// Settles the leases of `ack_ids`, each with the result `result_for` gives, in one
    /// batch per engine; the ids that settled nothing come back, sorted into unknown and
    /// stale.
    fn settle(
        &self,
        ack_ids: &[String],
        result_for: impl Fn() -> Result<(), HandlerError>,
    ) -> Settlement {
        let mut out = Settlement::default();
        let named: Vec<Option<(u64, u64)>> =
            ack_ids.iter().map(|id| self.ack_ids.parse(id)).collect();
        let leases: Vec<Option<Lease>> = {
            let mut leases = self.leases.locked();
            named
                .iter()
                .map(|named| {
                    let (seq, tag) = (*named)?;
                    match leases.by_seq.get(&seq) {
                        Some(lease) if lease.tag == tag => leases.by_seq.remove(&seq),
                        _ => None,
                    }
                })
                .collect()
        };
        let mut answers = Vec::with_capacity(ack_ids.len());
        // Where each answer's id is in `ack_ids`, and whether it can settle anything.
        let mut places = Vec::with_capacity(ack_ids.len());
        for (i, lease) in leases.into_iter().enumerate() {
            match lease {
                Some(l) if !self.partition_valid(l.partition) => {
                    // In a cluster, the partition's lease stopped counting as held (this
                    // server was paused or cut off past it): this answer settles nothing.
                    // The delivery fails as an attempt (as an expired lease does), so that
                    // a lease renewed late but still held delivers it again; an
                    // "interrupted" answer would stop the engine from starting deliveries
                    // until a restart.
                    if let Some((seq, tag)) = named[i] {
                        self.expired.locked().remember(seq, tag);
                    }
                    answers.push((
                        l.reply,
                        Err(HandlerError::transient(
                            "answered after this server's lease on the partition lapsed",
                        )
                        .retry_after(Duration::ZERO)),
                    ));
                    places.push((i, false));
                }
                Some(l) => {
                    answers.push((l.reply, result_for()));
                    places.push((i, true));
                }
                None => {}
            }
        }
        let taken = Outcome::settle_all(answers);
        let mut settled = vec![false; ack_ids.len()];
        for ((i, counts), taken) in places.into_iter().zip(taken) {
            settled[i] = counts && taken;
        }
        for ((id, named), settled) in ack_ids.iter().zip(&named).zip(settled) {
            if !settled {
                if named.is_some_and(|(seq, tag)| self.expired.locked().expired(seq, tag)) {
                    out.stale.push(id.clone());
                }
                out.unknown.push(id.clone());
            }
        }
        out
    }

    /// Whether deliveries of `partition` may be handed out and settled here now (always,
    /// outside a cluster).
    fn partition_valid(&self, partition: u32) -> bool {
        match self.valid.locked().as_ref() {
            None => true,
            Some(v) => v
                .get(&partition)
                .is_some_and(|until| *until > tokio::time::Instant::now()),
        }
    }

    /// Acks deliveries; the ids that were not (or no longer) leased come back.
    pub fn ack(&self, ack_ids: &[String]) -> Settlement {
        self.settle(ack_ids, || Ok(()))
    }

    /// Nacks deliveries: each is delivered again after `delay` (or the retry policy's
    /// backoff when `None`), counting an attempt; the ids that were not leased come back.
    pub fn nack(&self, ack_ids: &[String], delay: Option<Duration>, error: &str) -> Settlement {
        self.settle(ack_ids, || {
            let mut e = HandlerError::transient(error.to_string());
            e.retry_after = delay;
            Err(e)
        })
    }

    /// Leases outstanding now.
    pub fn leased(&self) -> usize {
        self.leases.locked().by_seq.len()
    }

    /// Fails every leased and queued delivery so that the engine can stop at once; they
    /// are delivered again when the subscription runs next.
    pub async fn close(&self) {
        let leases: Vec<Lease> = self
            .leases
            .locked()
            .by_seq
            .drain()
            .map(|(_, lease)| lease)
            .collect();
        for lease in leases {
            lease.reply.settle(Err(stopped()));
        }
        let queued: Vec<Pending> = {
            let mut waiting = self.waiting.locked();
            waiting.closed = true;
            waiting.queue.drain(..).collect()
        };
        for p in queued {
            p.reply.settle(Err(stopped()));
        }
        // Pullers waiting now return empty-handed.
        self.queued.notify_waiters();
    }
}

/// The [`Handler`] side of a [`PullQueue`]: deliveries are handed over
/// ([`Handler::hand_over`]), queued with their outcome, and settled by an ack, a nack, an
/// expired lease or the queue's close.
struct PullHandler {
    queue: Arc<PullQueue>,
}

#[async_trait]
impl Handler for PullHandler {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let (outcome, result) = Outcome::waiter();
        self.hand_over(vec![(delivery, outcome)]);
        result.await.unwrap_or_else(|_| Err(stopped()))
    }

    fn hands_over(&self) -> bool {
        true
    }

    /// Queues the deliveries under one lock and wakes every waiting pull: each takes its
    /// share (see [`PullQueue::take`]).
    fn hand_over(&self, deliveries: Vec<(Delivery, Outcome)>) {
        let refused = {
            let mut waiting = self.queue.waiting.locked();
            if waiting.closed {
                Some(deliveries)
            } else {
                waiting.queue.extend(
                    deliveries
                        .into_iter()
                        .map(|(delivery, reply)| Pending { delivery, reply }),
                );
                None
            }
        };
        match refused {
            // Every waiting pull looks, and each takes its share (see `PullQueue::take`).
            None => self.queue.queued.notify_waiters(),
            Some(deliveries) => {
                for (_, outcome) in deliveries {
                    outcome.settle(Err(stopped()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use crmbus::delivery::Delivery;
    use crmbus::Event;
    use serde_json::json;

    use super::PullQueue;

    fn delivery(partition: u32) -> Delivery {
        Delivery {
            topic: "deals".into(),
            group: "erp".into(),
            partition,
            offset: 7,
            attempt: 1,
            event: Event::new("deal.won", json!({"deal_id": 1})).into(),
            stored_json: None,
        }
    }

    /// A late ack after the partition's lease stopped counting as held settles nothing,
    /// and fails the delivery as an ordinary attempt: an "interrupted" answer would stop
    /// the engine from starting any delivery until a restart, which a lease renewed late
    /// (but still held) never brings.
    #[tokio::test]
    async fn an_ack_after_the_lease_lapsed_is_stale_and_fails_the_attempt_without_stopping_the_engine(
    ) {
        let queue = PullQueue::with_owner(8, Duration::from_secs(30), Some("m1".into()));
        let now = tokio::time::Instant::now();
        queue.set_valid(HashMap::from([(0, now + Duration::from_secs(60))]));
        let handler = queue.handler();
        let handled = tokio::spawn(async move { handler.handle(delivery(0)).await });
        let leased = queue.pull(1, Duration::from_secs(5)).await;
        assert_eq!(leased.len(), 1);
        assert!(leased[0].ack_id.starts_with("m1."), "{}", leased[0].ack_id);
        // The lease lapses (not renewed in time).
        queue.set_valid(HashMap::from([(0, now)]));
        let s = queue.ack(std::slice::from_ref(&leased[0].ack_id));
        assert_eq!(s.unknown, vec![leased[0].ack_id.clone()]);
        assert_eq!(s.stale, vec![leased[0].ack_id.clone()]);
        let result = handled.await.expect("handler task");
        let err = result.expect_err("the delivery must not count as acked");
        assert!(
            !err.interrupted,
            "an interrupted answer stops the engine: {err:?}"
        );
    }

    /// An ack id settles its own lease only: an id of another queue (another
    /// subscription, or this one before a restart), the same number with another tag (ids
    /// are not guessable from the numbers in them), or the same id spelled another way is
    /// unknown and leaves the lease in place; the id as handed out settles it once.
    #[tokio::test]
    async fn an_ack_id_settles_only_the_lease_it_was_handed_out_with() {
        let queue = PullQueue::new(16, Duration::from_secs(30));
        let other = PullQueue::new(8, Duration::from_secs(30));
        // Eleven leases, so that the last one's number (10) is spelled with a letter.
        let mut handled = Vec::new();
        for _ in 0..11 {
            let handler = queue.handler();
            handled.push(tokio::spawn(
                async move { handler.handle(delivery(0)).await },
            ));
        }
        let other_handler = other.handler();
        let _other_handled = tokio::spawn(async move { other_handler.handle(delivery(0)).await });
        let mut leased = Vec::new();
        while leased.len() < 11 {
            leased.extend(queue.pull(11, Duration::from_secs(5)).await);
        }
        let other_leased = other.pull(1, Duration::from_secs(5)).await;
        assert_eq!(other_leased.len(), 1);
        let rest: Vec<String> = leased[..10].iter().map(|l| l.ack_id.clone()).collect();
        assert!(queue.ack(&rest).unknown.is_empty());
        let id = leased[10].ack_id.clone();
        let parts: Vec<&str> = id.split('-').collect();
        let [nonce, seq, tag] = parts[..] else {
            panic!("<nonce>-<seq>-<tag>: {id}")
        };
        assert_eq!(seq, "a");
        assert_eq!(tag.len(), 16);
        let other_nonce = other_leased[0].ack_id.split('-').next().expect("nonce");
        assert_ne!(nonce, other_nonce, "two queues draw different nonces");
        let flipped = format!("{:016x}", u64::from_str_radix(tag, 16).expect("hex") ^ 1);
        let respelled = [
            other_leased[0].ack_id.clone(),
            format!("{other_nonce}-{seq}-{tag}"),
            format!("{nonce}-{seq}-{flipped}"),
            format!("{nonce}-0{seq}-{tag}"),
            format!("{nonce}-+{seq}-{tag}"),
            format!("{nonce}-{}-{tag}", seq.to_uppercase()),
            format!("{nonce}-{seq}-{}", tag.to_uppercase()),
            format!("{nonce}-{seq}-{}", &tag[1..]),
            format!("{nonce}-{seq}"),
            format!("{nonce}--{tag}"),
            format!("{id}0"),
            "not-an-id".to_string(),
        ];
        let s = queue.ack(&respelled);
        assert_eq!(s.unknown, respelled.to_vec());
        assert!(s.stale.is_empty());
        assert_eq!(queue.leased(), 1, "the lease is still held");
        let s = queue.ack(std::slice::from_ref(&id));
        assert!(s.unknown.is_empty(), "{s:?}");
        assert_eq!(queue.leased(), 0);
        for h in handled {
            h.await
                .expect("handler task")
                .expect("the delivery counts as acked");
        }
        assert_eq!(queue.ack(std::slice::from_ref(&id)).unknown, vec![id]);
    }

    /// Deliveries handed over in one batch while several pulls wait are shared among them,
    /// so that the group's clients work side by side; the whole batch is answered, and
    /// acking it settles every outcome in one message to their engine.
    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_handed_over_to_waiting_pulls_is_shared_among_them() {
        use crmbus::delivery::Outcome;
        let queue = PullQueue::new(64, Duration::from_secs(30));
        let handler = queue.handler();
        let first = tokio::spawn({
            let q = std::sync::Arc::clone(&queue);
            async move { q.pull(100, Duration::from_secs(30)).await }
        });
        let second = tokio::spawn({
            let q = std::sync::Arc::clone(&queue);
            async move { q.pull(100, Duration::from_secs(30)).await }
        });
        while queue.waiting_pullers.load(super::Ordering::Relaxed) < 2 {
            tokio::task::yield_now().await;
        }
        let mut waiters = Vec::new();
        let batch: Vec<_> = (0..10)
            .map(|p| {
                let (outcome, rx) = Outcome::waiter();
                waiters.push(rx);
                (delivery(p), outcome)
            })
            .collect();
        handler.hand_over(batch);
        let a = first.await.expect("first pull");
        let b = second.await.expect("second pull");
        assert!(
            !a.is_empty() && !b.is_empty(),
            "one pull took everything: {} and {}",
            a.len(),
            b.len()
        );
        let mut partitions: Vec<u32> = a.iter().chain(&b).map(|l| l.delivery.partition).collect();
        partitions.sort_unstable();
        assert_eq!(partitions, (0..10).collect::<Vec<u32>>());
        let ids: Vec<String> = a.into_iter().chain(b).map(|l| l.ack_id).collect();
        assert!(queue.ack(&ids).unknown.is_empty());
        for rx in waiters {
            assert_eq!(rx.await.expect("an answer"), Ok(()));
        }
    }

    /// A burst that reaches the queue one delivery at a time (as `handle` calls bring
    /// it) is answered in one pull, not one delivery per pull; and the pull still answers
    /// as soon as nothing more is arriving, long before its wait is over.
    #[tokio::test]
    async fn a_pull_takes_the_deliveries_arriving_while_it_answers() {
        let queue = PullQueue::new(64, Duration::from_secs(30));
        let handler = queue.handler();
        let feeder = tokio::spawn(async move {
            let mut calls = Vec::new();
            for p in 0..20 {
                let h = std::sync::Arc::clone(&handler);
                calls.push(tokio::spawn(async move { h.handle(delivery(p)).await }));
                tokio::task::yield_now().await;
            }
            calls
        });
        let started = tokio::time::Instant::now();
        let pulled = queue.pull(50, Duration::from_secs(30)).await;
        let partitions: Vec<u32> = pulled.iter().map(|l| l.delivery.partition).collect();
        assert_eq!(partitions, (0..20).collect::<Vec<u32>>());
        assert!(started.elapsed() < Duration::from_secs(30));
        let ids: Vec<String> = pulled.into_iter().map(|l| l.ack_id).collect();
        assert!(queue.ack(&ids).unknown.is_empty());
        for call in feeder.await.expect("feeder") {
            assert!(call.await.expect("handler call").is_ok());
        }
    }

    /// A pull cancelled while it looks for more deliveries (its client went away) puts
    /// what it took back: the next pull gets it as the same attempt, and the handler
    /// call is still waiting for its answer (not answered "stopped", which would stop the
    /// engine).
    #[tokio::test]
    async fn a_pull_cancelled_while_it_takes_more_puts_its_deliveries_back() {
        let queue = PullQueue::new(8, Duration::from_secs(30));
        let handler = queue.handler();
        let call = tokio::spawn(async move { handler.handle(delivery(5)).await });
        // The handler call queues the delivery.
        while queue.waiting.lock().map(|w| w.queue.len()).unwrap_or(0) == 0 {
            tokio::task::yield_now().await;
        }
        {
            let pull = queue.pull(10, Duration::from_secs(30));
            tokio::pin!(pull);
            // One poll: the pull takes the delivery and yields to look for more.
            assert!(futures_util::poll!(pull.as_mut()).is_pending());
        } // The client went away: the pull is dropped there.
        assert_eq!(queue.leased(), 0);
        let again = queue.pull(10, Duration::from_secs(5)).await;
        assert_eq!(again.len(), 1);
        assert_eq!(
            (again[0].delivery.partition, again[0].delivery.attempt),
            (5, 1)
        );
        assert!(!call.is_finished());
        assert!(queue.ack(&[again[0].ack_id.clone()]).unknown.is_empty());
        assert!(call.await.expect("handler call").is_ok());
    }

    /// Deliveries of a partition whose lease is not (or no longer) held are not handed
    /// out; they are once it is.
    #[tokio::test]
    async fn deliveries_wait_while_their_partition_is_not_held() {
        let queue = PullQueue::with_owner(8, Duration::from_secs(30), Some("m1".into()));
        let handler = queue.handler();
        let _handled = tokio::spawn(async move { handler.handle(delivery(3)).await });
        tokio::task::yield_now().await;
        assert!(queue.pull(1, Duration::from_millis(50)).await.is_empty());
        let later = tokio::time::Instant::now() + Duration::from_secs(60);
        queue.set_valid(HashMap::from([(3, later)]));
        assert_eq!(queue.pull(1, Duration::from_secs(5)).await.len(), 1);
    }
}
