//! Pull delivery: a subscription's handler that hands deliveries to HTTP clients under a
//! lease instead of calling code.
//!
//! The delivery engine calls [`PullHandler::handle`] as it would any handler; the delivery
//! waits in a queue until a client pulls it, which gives it an `ack_id` and a lease of
//! `ack_timeout`. An ack finishes it; a nack (with an optional delay) or an expired lease
//! fails it, and the engine's retry policy delivers it again with `attempt` + 1 — so key
//! ordering, retries, the DLQ and the persisted state all come from the engine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use crmbus::delivery::{Delivery, Handler, HandlerError};
use tokio::sync::{mpsc, oneshot};

type Reply = oneshot::Sender<Result<(), HandlerError>>;

/// A delivery handed out: who to answer, and when its lease ends.
struct Lease {
    reply: Reply,
    deadline: tokio::time::Instant,
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

/// The queue between a subscription's engine and its HTTP pullers.
pub struct PullQueue {
    tx: mpsc::Sender<Pending>,
    rx: tokio::sync::Mutex<mpsc::Receiver<Pending>>,
    leases: Mutex<HashMap<String, Lease>>,
    ack_timeout: Duration,
}

fn stopped() -> HandlerError {
    // Not zero: while the engine is being stopped it must not spin on instant failures.
    HandlerError::transient("the pull subscription stopped before the delivery was acked")
        .retry_after(Duration::from_secs(1))
}

impl PullQueue {
    /// A queue holding up to `capacity` deliveries (the subscription's `max_in_flight`),
    /// leasing each for `ack_timeout`.
    pub fn new(capacity: usize, ack_timeout: Duration) -> Arc<PullQueue> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let queue = Arc::new(PullQueue {
            tx,
            rx: tokio::sync::Mutex::new(rx),
            leases: Mutex::new(HashMap::new()),
            ack_timeout,
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
        let expired: Vec<Lease> = match self.leases.lock() {
            Ok(mut leases) => {
                let ids: Vec<String> = leases
                    .iter()
                    .filter(|(_, l)| l.deadline <= now)
                    .map(|(id, _)| id.clone())
                    .collect();
                ids.iter().filter_map(|id| leases.remove(id)).collect()
            }
            Err(_) => Vec::new(),
        };
        for lease in expired {
            let _ = lease.reply.send(Err(HandlerError::transient(format!(
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

    /// Up to `max` deliveries; waits up to `wait` for the first one (long poll).
    pub async fn pull(self: &Arc<Self>, max: usize, wait: Duration) -> Vec<Leased> {
        let mut rx = self.rx.lock().await;
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while out.len() < max {
            let next = if out.is_empty() {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(p)) => p,
                    Ok(None) | Err(_) => break,
                }
            } else {
                match rx.try_recv() {
                    Ok(p) => p,
                    Err(_) => break,
                }
            };
            if next.reply.is_closed() {
                continue;
            }
            out.push(self.lease(next));
        }
        out
    }

    fn lease(&self, p: Pending) -> Leased {
        let ack_id = uuid::Uuid::now_v7().simple().to_string();
        if let Ok(mut leases) = self.leases.lock() {
            leases.insert(
                ack_id.clone(),
                Lease {
                    reply: p.reply,
                    deadline: tokio::time::Instant::now() + self.ack_timeout,
                },
            );
        }
        Leased {
            ack_id,
            delivery: p.delivery,
        }
    }

    fn resolve(&self, ack_id: &str, result: Result<(), HandlerError>) -> bool {
        let lease = self.leases.lock().ok().and_then(|mut l| l.remove(ack_id));
        match lease {
            Some(l) => l.reply.send(result).is_ok(),
            None => false,
        }
    }

    /// Acks deliveries; returns the ack ids that were not (or no longer) leased.
    pub fn ack(&self, ack_ids: &[String]) -> Vec<String> {
        ack_ids
            .iter()
            .filter(|id| !self.resolve(id, Ok(())))
            .cloned()
            .collect()
    }

    /// Nacks deliveries: each is delivered again after `delay` (or the retry policy's
    /// backoff when `None`), counting an attempt; returns the unknown ack ids.
    pub fn nack(&self, ack_ids: &[String], delay: Option<Duration>, error: &str) -> Vec<String> {
        ack_ids
            .iter()
            .filter(|id| {
                let mut e = HandlerError::transient(error.to_string());
                e.retry_after = delay;
                !self.resolve(id, Err(e))
            })
            .cloned()
            .collect()
    }

    /// Leases outstanding now.
    pub fn leased(&self) -> usize {
        self.leases.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// Fails every leased and queued delivery so that the engine can stop at once; they
    /// are delivered again when the subscription runs next.
    pub async fn close(&self) {
        let leases: Vec<Lease> = self
            .leases
            .lock()
            .map(|mut l| l.drain().map(|(_, lease)| lease).collect())
            .unwrap_or_default();
        for lease in leases {
            let _ = lease.reply.send(Err(stopped()));
        }
        let mut rx = self.rx.lock().await;
        rx.close();
        while let Ok(p) = rx.try_recv() {
            let _ = p.reply.send(Err(stopped()));
        }
    }
}

/// The [`Handler`] side of a [`PullQueue`].
struct PullHandler {
    queue: Arc<PullQueue>,
}

#[async_trait]
impl Handler for PullHandler {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let (reply, result) = oneshot::channel();
        if self
            .queue
            .tx
            .send(Pending { delivery, reply })
            .await
            .is_err()
        {
            return Err(stopped());
        }
        result.await.unwrap_or_else(|_| Err(stopped()))
    }
}
