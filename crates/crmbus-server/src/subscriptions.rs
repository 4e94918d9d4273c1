//! The server's pull subscriptions: their definitions, kept in the backend's state store
//! so they survive restarts, and the running engine and pull queue of each.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use crmbus::delivery::{
    AuditRecord, DeadLetter, DlqFilter, Filter, GroupState, OnExhausted, Ordering, RetryPolicy,
    SeekTo, StartAt, StateKind, SubscribeOptions, Subscription,
};
use crmbus::sync::LockExt;
use crmbus::{ErrorCode, EventBus, LogError, Position};
use serde_json::Value;
use tokio::sync::{OwnedRwLockWriteGuard, RwLock};

use crate::api::{
    CreateSubscriptionRequest, CursorView, DlqEntryView, DlqQuery, RetryBody, SubscriptionStatus,
    SubscriptionView,
};
use crate::extract::{parse_time, variant};
use crate::problem::ApiError;
use crate::pull::PullQueue;

/// State-store namespace of the subscription definitions.
const NAMESPACE: &str = "server/subscriptions";
/// Default lease of a pulled delivery.
pub const DEFAULT_ACK_TIMEOUT_MS: u64 = 30_000;
/// Default deliveries queued or leased at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;

struct Running {
    topic: String,
    config: CreateSubscriptionRequest,
    options: SubscribeOptions,
    sub: Option<Subscription>,
    queue: Arc<PullQueue>,
    /// Set when the subscription was deleted, or its creation failed, while someone
    /// waited for it: they answer "not found".
    gone: bool,
}

/// One subscription: its topic (fixed for its life) and its running state behind a lock
/// of its own, so that a subscription busy with a slow call (an engine round trip, a
/// seek, a stop) holds up no other.
struct Entry {
    topic: String,
    running: Arc<RwLock<Running>>,
}

/// Every pull subscription of the server.
pub struct Subscriptions {
    bus: EventBus,
    /// Held only to look up, insert or remove an entry, never across an await.
    entries: Mutex<BTreeMap<String, Arc<Entry>>>,
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::SubscriptionNotFound,
        format!("subscription '{name}' does not exist"),
    )
}

fn rfc3339_us(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339()
}

/// The options a request asks for, every field checked (errors name the field).
fn options_from(req: &CreateSubscriptionRequest) -> Result<SubscribeOptions, ApiError> {
    crmbus::log::validate_topic_name(&req.name)
        .map_err(|_| ApiError::invalid("name", "must be 1–200 characters of A–Z a–z 0–9 . _ -"))?;
    let mut o = SubscribeOptions::default();
    if let Some(f) = &req.filter {
        o.filter = serde_json::from_value::<Filter>(f.clone())
            .map_err(|e| ApiError::invalid("filter", e.to_string()))?;
    }
    o.start = match &req.start {
        None => StartAt::Earliest,
        Some(Value::String(s)) if s == "earliest" => StartAt::Earliest,
        Some(Value::String(s)) if s == "latest" => StartAt::Latest,
        Some(Value::Object(m)) if m.len() == 1 && m.contains_key("time") => {
            let t = m.get("time").and_then(Value::as_str).unwrap_or("");
            StartAt::Time(parse_time("start.time", t)?.timestamp_micros())
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "start",
                "must be \"earliest\", \"latest\" or {\"time\": \"<RFC 3339>\"}",
            ))
        }
    };
    o.ordering = match &req.ordering {
        None => Ordering::default(),
        Some(text) => variant("ordering", text, "key or none")?,
    };
    o.on_exhausted = match &req.on_exhausted {
        None => OnExhausted::default(),
        Some(text) => variant("on_exhausted", text, "skip or hold")?,
    };
    if let Some(r) = &req.retry {
        o.retry = retry_from(r)?;
    }
    o.max_in_flight = req.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
    if o.max_in_flight == 0 || o.max_in_flight > 10_000 {
        return Err(ApiError::invalid(
            "max_in_flight",
            "must be between 1 and 10000",
        ));
    }
    let ack = req.ack_timeout_ms.unwrap_or(DEFAULT_ACK_TIMEOUT_MS);
    if ack == 0 || ack > 3_600_000 {
        return Err(ApiError::invalid(
            "ack_timeout_ms",
            "must be between 1 and 3600000",
        ));
    }
    Ok(o)
}

fn retry_from(r: &RetryBody) -> Result<RetryPolicy, ApiError> {
    let mut p = RetryPolicy::default();
    if let Some(n) = r.max_attempts {
        if n == 0 {
            return Err(ApiError::invalid(
                "retry.max_attempts",
                "must be at least 1",
            ));
        }
        p.max_attempts = n;
    }
    if let Some(ms) = r.initial_backoff_ms {
        p.initial_backoff = Duration::from_millis(ms);
    }
    if let Some(ms) = r.max_backoff_ms {
        p.max_backoff = Duration::from_millis(ms);
    }
    if let Some(m) = r.multiplier {
        if !(1.0..=100.0).contains(&m) {
            return Err(ApiError::invalid(
                "retry.multiplier",
                "must be between 1 and 100",
            ));
        }
        p.multiplier = m;
    }
    if let Some(ms) = r.max_age_ms {
        p.max_age = Some(Duration::from_millis(ms));
    }
    if p.max_backoff < p.initial_backoff {
        return Err(ApiError::invalid(
            "retry.max_backoff_ms",
            "must be at least initial_backoff_ms",
        ));
    }
    Ok(p)
}

/// A [`DlqFilter`] from query parameters.
pub fn dlq_filter(q: &DlqQuery) -> Result<DlqFilter, ApiError> {
    Ok(DlqFilter {
        ty: q.ty.clone(),
        error: q.error.clone(),
        since_us: match &q.since {
            Some(t) => Some(parse_time("since", t)?.timestamp_micros()),
            None => None,
        },
        until_us: match &q.until {
            Some(t) => Some(parse_time("until", t)?.timestamp_micros()),
            None => None,
        },
    })
}

/// A dead letter as the API shows it.
pub fn dlq_view(d: &DeadLetter) -> DlqEntryView {
    DlqEntryView {
        id: d.id.clone(),
        partition: d.partition,
        offset: d.offset,
        key: d.key.clone(),
        attempts: d.attempts,
        first_failure: rfc3339_us(d.first_failure_us),
        last_failure: rfc3339_us(d.last_failure_us),
        last_error: d.last_error.clone(),
        held: d.held,
        redriving: d.redriving,
        event: d.event.to_json_value(),
    }
}

fn stopped(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        format!("subscription '{name}' is not running (its topic may have been deleted)"),
    )
}

impl Subscriptions {
    /// The subscriptions of `bus`, none running yet; see [`Subscriptions::start_saved`].
    pub fn new(bus: EventBus) -> Subscriptions {
        Subscriptions {
            bus,
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    /// The entry of subscription `name`.
    fn entry(&self, name: &str) -> Result<Arc<Entry>, ApiError> {
        self.entries
            .locked()
            .get(name)
            .cloned()
            .ok_or_else(|| not_found(name))
    }

    /// Every entry, in name order.
    fn all(&self) -> Vec<(String, Arc<Entry>)> {
        self.entries
            .locked()
            .iter()
            .map(|(n, e)| (n.clone(), Arc::clone(e)))
            .collect()
    }

    /// Removes `name`'s entry if it is still `entry`.
    fn forget(&self, name: &str, entry: &Arc<Entry>) {
        let mut entries = self.entries.locked();
        if entries.get(name).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            entries.remove(name);
        }
    }

    fn insert(&self, name: String, topic: String, running: Running) {
        let entry = Arc::new(Entry {
            topic,
            running: Arc::new(RwLock::new(running)),
        });
        self.entries.locked().insert(name, entry);
    }

    async fn start(&self, topic: &str, name: &str, r: &mut Running) -> Result<(), ApiError> {
        let ack = Duration::from_millis(r.config.ack_timeout_ms.unwrap_or(DEFAULT_ACK_TIMEOUT_MS));
        r.queue = PullQueue::new(r.options.max_in_flight, ack);
        let sub = self
            .bus
            .subscribe(topic, name, r.queue.handler(), r.options.clone())
            .await?;
        r.sub = Some(sub);
        Ok(())
    }

    /// Starts every saved subscription (at server start). One whose topic is gone stays
    /// listed, not running, with a warning.
    pub async fn start_saved(&self) -> Result<usize, LogError> {
        let saved = self.bus.state().scan(NAMESPACE, "").await?;
        let mut started = 0;
        for (name, bytes) in saved {
            let (topic, config) = match saved_subscription(&bytes) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(subscription = %name, error = %e, "cannot read a saved subscription");
                    continue;
                }
            };
            let options = match options_from(&config) {
                Ok(o) => o,
                Err(e) => {
                    tracing::error!(subscription = %name, error = %e.detail, "saved subscription is invalid");
                    continue;
                }
            };
            let mut r = Running {
                topic: topic.clone(),
                config,
                options,
                sub: None,
                queue: PullQueue::new(1, Duration::from_secs(1)),
                gone: false,
            };
            match self.start(&topic, &name, &mut r).await {
                Ok(()) => {
                    self.insert(name, topic, r);
                    started += 1;
                }
                Err(e) if e.code == "topic_not_found" => {
                    // The topic was deleted while the server was down: so is the group.
                    tracing::warn!(subscription = %name, topic = %topic, "topic gone; subscription removed");
                    self.bus.state().delete(NAMESPACE, &name).await?;
                }
                Err(e) => {
                    tracing::warn!(subscription = %name, topic = %topic, error = %e.detail, "saved subscription not started");
                    self.insert(name, topic.clone(), r);
                    started += 1;
                }
            }
        }
        Ok(started)
    }

    /// Creates and starts a subscription on `topic`.
    pub async fn create(
        &self,
        topic: &str,
        mut req: CreateSubscriptionRequest,
    ) -> Result<SubscriptionView, ApiError> {
        let options = options_from(&req)?;
        req.ack_timeout_ms = Some(req.ack_timeout_ms.unwrap_or(DEFAULT_ACK_TIMEOUT_MS));
        req.max_in_flight = Some(options.max_in_flight);
        let name = req.name.clone();
        // The entry is claimed first, locked, so that a second create of the same name is
        // refused at once and other calls on it wait for the outcome.
        let entry = Arc::new(Entry {
            topic: topic.to_string(),
            running: Arc::new(RwLock::new(Running {
                topic: topic.to_string(),
                config: req.clone(),
                options: options.clone(),
                sub: None,
                queue: PullQueue::new(1, Duration::from_secs(1)),
                gone: false,
            })),
        });
        let Ok(mut r) = Arc::clone(&entry.running).try_write_owned() else {
            return Err(ApiError::new(
                ErrorCode::Internal,
                "a new entry was already locked",
            ));
        };
        {
            let mut entries = self.entries.locked();
            if entries.contains_key(&name) {
                return Err(ApiError::new(
                    ErrorCode::SubscriptionExists,
                    format!("subscription '{name}' already exists"),
                ));
            }
            entries.insert(name.clone(), Arc::clone(&entry));
        }
        let result = self.create_claimed(topic, &name, &req, &mut r).await;
        if result.is_err() {
            r.gone = true;
            self.forget(&name, &entry);
        }
        result
    }

    /// The rest of [`Subscriptions::create`], with the new entry claimed and locked.
    async fn create_claimed(
        &self,
        topic: &str,
        name: &str,
        req: &CreateSubscriptionRequest,
        r: &mut OwnedRwLockWriteGuard<Running>,
    ) -> Result<SubscriptionView, ApiError> {
        let options = r.options.clone();
        self.bus.describe_topic(topic).await?;
        // A group of this name may have left offsets behind (a deleted subscription):
        // place the cursor where this one asks to start.
        let to = Position::from(options.start);
        self.bus.seek(topic, name, &to).await?;
        self.start(topic, name, r).await?;
        let mut saved = serde_json::to_value(req).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut saved {
            m.insert("topic".into(), Value::String(topic.to_string()));
        }
        let bytes = serde_json::to_vec(&saved).unwrap_or_default();
        if let Err(e) = self.bus.state().put(NAMESPACE, name, bytes).await {
            if let Some(sub) = r.sub.take() {
                let _ = sub.unsubscribe().await;
            }
            return Err(e.into());
        }
        self.view(name, r).await
    }

    async fn view(&self, name: &str, r: &Running) -> Result<SubscriptionView, ApiError> {
        let info = self.bus.describe_topic(&r.topic).await.ok();
        // The engine counts its dead letters; no scan of the DLQ per view.
        let stats = match &r.sub {
            Some(sub) => Some(sub.stats().await?),
            None => None,
        };
        let dlq_size = stats.as_ref().map_or(0, |s| s.dlq_entries);
        let mut partitions = Vec::new();
        if let Some(info) = &info {
            for p in &info.partition_info {
                let committed = match &stats {
                    Some(s) => s.committed.get(p.partition as usize).copied().unwrap_or(0),
                    None => self
                        .bus
                        .committed_offset(name, &r.topic, p.partition)
                        .await?
                        .unwrap_or(p.first_offset),
                };
                partitions.push(CursorView {
                    partition: p.partition,
                    committed,
                    next_offset: p.next_offset,
                    lag: p.next_offset.saturating_sub(committed),
                });
            }
        }
        let s = stats.unwrap_or_default();
        Ok(SubscriptionView {
            name: name.to_string(),
            topic: r.topic.clone(),
            config: r.config.clone(),
            status: SubscriptionStatus {
                lag: partitions.iter().map(|c| c.lag).sum(),
                partitions,
                in_flight: s.in_flight,
                leased: r.queue.leased() as u64,
                parked_keys: s.parked_keys,
                dlq_size,
                delivered: s.delivered,
                acked: s.acked,
                retried: s.retried,
                dead_lettered: s.dead_lettered,
            },
        })
    }

    /// One subscription.
    pub async fn get(&self, name: &str) -> Result<SubscriptionView, ApiError> {
        let entry = self.entry(name)?;
        let r = entry.running.read().await;
        if r.gone {
            return Err(not_found(name));
        }
        self.view(name, &r).await
    }

    /// Every subscription.
    pub async fn list(&self) -> Result<Vec<SubscriptionView>, ApiError> {
        let mut out = Vec::new();
        for (name, entry) in self.all() {
            let r = entry.running.read().await;
            if !r.gone {
                out.push(self.view(&name, &r).await?);
            }
        }
        Ok(out)
    }

    async fn stop(r: &mut Running) -> Result<(), ApiError> {
        if let Some(sub) = r.sub.take() {
            let stop = tokio::spawn(sub.unsubscribe());
            r.queue.close().await;
            match stop.await {
                Ok(result) => result?,
                Err(e) => return Err(ApiError::new(ErrorCode::Internal, e.to_string())),
            }
        }
        Ok(())
    }

    /// Stops and deletes a subscription with every kind of state its group kept (retry
    /// schedule, done markers, dead letters, dedupe, the DLQ audit log), in one batch.
    /// If the state cannot be deleted, the subscription stays listed, stopped, and the
    /// delete can be tried again.
    pub async fn delete(&self, name: &str) -> Result<(), ApiError> {
        let entry = self.entry(name)?;
        let mut r = entry.running.write().await;
        if r.gone {
            return Err(not_found(name));
        }
        Self::stop(&mut r).await?;
        let state = self.bus.state();
        let mut ops = vec![crmbus::StateOp::Delete {
            namespace: NAMESPACE.to_string(),
            key: name.to_string(),
        }];
        ops.extend(
            GroupState::new(&r.topic, name)
                .purge_ops(state.as_ref(), &StateKind::ALL)
                .await?,
        );
        state.apply(ops).await?;
        r.gone = true;
        self.forget(name, &entry);
        Ok(())
    }

    /// Stops every subscription (server shutdown): leased deliveries are released to be
    /// delivered again next time, state is persisted and offsets committed.
    pub async fn stop_all(&self) {
        for (name, entry) in self.all() {
            let mut r = entry.running.write().await;
            if let Err(e) = Self::stop(&mut r).await {
                tracing::warn!(subscription = %name, error = %e.detail, "stopping subscription");
            }
        }
    }

    /// The pull queue of a running subscription.
    pub async fn queue(&self, name: &str) -> Result<Arc<PullQueue>, ApiError> {
        let entry = self.entry(name)?;
        let r = entry.running.read().await;
        if r.gone {
            return Err(not_found(name));
        }
        if r.sub.is_none() {
            return Err(stopped(name));
        }
        Ok(Arc::clone(&r.queue))
    }

    /// Moves the subscription's cursor; leased deliveries are released.
    pub async fn seek(&self, name: &str, to: SeekTo) -> Result<Vec<CursorView>, ApiError> {
        let entry = self.entry(name)?;
        let mut r = entry.running.write().await;
        if r.gone {
            return Err(not_found(name));
        }
        Self::stop(&mut r).await?;
        let topic = r.topic.clone();
        let result = self.bus.seek(&topic, name, &to).await;
        // Start again whatever the seek did, so a bad request does not stop delivery.
        let restarted = self.start(&topic, name, &mut r).await;
        let positions = result?;
        restarted?;
        let info = self.bus.describe_topic(&topic).await?;
        Ok(info
            .partition_info
            .iter()
            .zip(positions)
            .map(|(p, committed)| CursorView {
                partition: p.partition,
                committed,
                next_offset: p.next_offset,
                lag: p.next_offset.saturating_sub(committed),
            })
            .collect())
    }

    async fn with_sub<T>(
        &self,
        name: &str,
        f: impl AsyncFnOnce(&Subscription) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let entry = self.entry(name)?;
        let r = entry.running.read().await;
        if r.gone {
            return Err(not_found(name));
        }
        let sub = r.sub.as_ref().ok_or_else(|| stopped(name))?;
        f(sub).await
    }

    /// Dead letters matching `filter`.
    pub async fn dead_letters(
        &self,
        name: &str,
        filter: DlqFilter,
    ) -> Result<Vec<DeadLetter>, ApiError> {
        self.with_sub(name, async |s| Ok(s.dead_letters(filter).await?))
            .await
    }

    /// The audit log of the subscription's dead-letter actions, oldest first.
    pub async fn audit_log(&self, name: &str) -> Result<Vec<AuditRecord>, ApiError> {
        self.with_sub(name, async |s| Ok(s.audit_log().await?))
            .await
    }

    /// Redrives dead letters, audited as `who`.
    pub async fn redrive(
        &self,
        name: &str,
        ids: Option<Vec<String>>,
        filter: DlqFilter,
        who: &str,
    ) -> Result<usize, ApiError> {
        self.with_sub(name, async |s| Ok(s.redrive(ids, filter, who).await?))
            .await
    }

    /// Discards a dead letter, audited as `who`; false if there is no such entry.
    pub async fn discard(&self, name: &str, id: &str, who: &str) -> Result<bool, ApiError> {
        self.with_sub(name, async |s| Ok(s.discard(id, who).await?))
            .await
    }

    /// Deletes every subscription of `topic` with its state (the topic is being deleted:
    /// its groups go with it, as its events do).
    pub async fn delete_topic(&self, topic: &str) -> Result<(), ApiError> {
        let names: Vec<String> = self
            .all()
            .into_iter()
            .filter(|(_, e)| e.topic == topic)
            .map(|(n, _)| n)
            .collect();
        for name in names {
            self.delete(&name).await?;
        }
        Ok(())
    }
}

/// A saved subscription: its topic and the request it was created with.
fn saved_subscription(bytes: &[u8]) -> Result<(String, CreateSubscriptionRequest), String> {
    let mut v: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let topic = match &mut v {
        Value::Object(m) => match m.remove("topic") {
            Some(Value::String(t)) => t,
            _ => return Err("no topic".into()),
        },
        _ => return Err("not an object".into()),
    };
    let config = serde_json::from_value(v).map_err(|e| e.to_string())?;
    Ok((topic, config))
}
