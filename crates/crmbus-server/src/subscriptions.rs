//! The server's subscriptions: their definitions, kept in the backend's state store so
//! they survive restarts, and the running engine of each with its target — the pull
//! queue clients pull from, or a push target ([`crate::push`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crmbus::cluster::{owner_of, partition_lease, Fence};
use crmbus::delivery::{
    read_audit_log, read_dead_letters, AuditRecord, DeadLetter, DlqFilter, Filter, GroupState,
    OnExhausted, Ordering, RetryPolicy, SeekTo, StartAt, StateKind, SubscribeOptions, Subscription,
};
use crmbus::sync::LockExt;
use crmbus::{ErrorCode, EventBus, LogError, Position};
use serde_json::Value;
use tokio::sync::{OwnedRwLockWriteGuard, RwLock};

use crate::api::{
    CreateSubscriptionRequest, CursorView, DisabledTarget, DlqEntryView, DlqQuery, ParkedKeyView,
    RetryBody, RotateSecretRequest, SubscriptionStatus, SubscriptionTarget, SubscriptionView,
};
use crate::cluster::{Cluster, Held};
use crate::extract::{parse_time, variant};
use crate::problem::ApiError;
use crate::pull::PullQueue;
use crate::push::{Gone, Push};
use crate::render::rfc3339;
use crate::transform::Transform;

/// State-store namespace of the subscription definitions.
const NAMESPACE: &str = "server/subscriptions";
/// A member id no server has: the assignment over it gives this server nothing.
const NOBODY: &str = "";
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
    /// Its definition is in the store (a subscription being created is not yet, and is
    /// not taken for one deleted elsewhere).
    saved: bool,
    /// In a cluster: the partitions this server holds the lease of, and drives.
    owned: BTreeMap<u32, Held>,
    /// A push target's cancel switch: turned on before its engine stops, so attempts in
    /// flight end at once instead of holding the stop (and this entry's lock) up.
    cancel: Option<tokio::sync::watch::Sender<bool>>,
    /// The generation of the push handler running now (0: none).
    generation: u64,
    /// The checked `transform` of its definition, if it has one.
    transform: Option<Arc<Transform>>,
}

/// One subscription: its topic (fixed for its life) and its running state behind a lock
/// of its own, so that a subscription busy with a slow call (an engine round trip, a
/// seek, a stop) holds up no other.
struct Entry {
    topic: String,
    running: Arc<RwLock<Running>>,
}

/// Every subscription of the server.
pub struct Subscriptions {
    bus: EventBus,
    /// What push targets share (their HTTP client, SSRF guard and clock).
    push: Arc<Push>,
    /// This server's cluster membership, when servers share the backend.
    cluster: Option<Arc<Cluster>>,
    /// Held only to look up, insert or remove an entry, never across an await.
    entries: Mutex<BTreeMap<String, Arc<Entry>>>,
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::SubscriptionNotFound,
        format!("subscription '{name}' does not exist"),
    )
}

/// The options a request asks for, every field checked (errors name the field).
/// The subscription's transformation, checked: a 400 naming where a template goes wrong.
fn transform_of(req: &CreateSubscriptionRequest) -> Result<Option<Arc<Transform>>, ApiError> {
    req.transform
        .as_ref()
        .map(|t| {
            Transform::parse(t)
                .map(Arc::new)
                .map_err(|e| ApiError::invalid(&format!("transform{}", e.at), e.why))
        })
        .transpose()
}

fn options_from(req: &CreateSubscriptionRequest) -> Result<SubscribeOptions, ApiError> {
    crmbus::log::validate_topic_name(&req.name)
        .map_err(|_| ApiError::invalid("name", "must be 1–200 characters of A–Z a–z 0–9 . _ -"))?;
    transform_of(req)?;
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
    let push = !matches!(req.target, None | Some(SubscriptionTarget::Pull {}));
    if matches!(req.target, Some(SubscriptionTarget::Webhook(_))) {
        o.retry = RetryPolicy::webhook_default();
    }
    if let Some(r) = &req.retry {
        o.retry = retry_from(r, o.retry.clone())?;
    }
    let default_in_flight = if push {
        crate::push::DEFAULT_PUSH_IN_FLIGHT
    } else {
        DEFAULT_MAX_IN_FLIGHT
    };
    o.max_in_flight = req.max_in_flight.unwrap_or(default_in_flight);
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

/// The retry policy a request's `retry` asks for: `base` (the target's default) with the
/// fields it gives. A schedule given replaces the base's; backoff fields given without a
/// schedule drop it, so the exponential backoff they describe applies.
fn retry_from(r: &RetryBody, base: RetryPolicy) -> Result<RetryPolicy, ApiError> {
    let mut p = base;
    let backoff_given =
        r.initial_backoff_ms.is_some() || r.max_backoff_ms.is_some() || r.multiplier.is_some();
    if backoff_given && r.schedule_ms.is_none() {
        p.schedule.clear();
        let d = RetryPolicy::default();
        p.initial_backoff = d.initial_backoff;
        p.max_backoff = d.max_backoff;
        p.multiplier = d.multiplier;
    }
    if let Some(schedule) = &r.schedule_ms {
        if schedule.is_empty() || schedule.len() > 100 {
            return Err(ApiError::invalid(
                "retry.schedule_ms",
                "must hold 1 to 100 delays",
            ));
        }
        let max = crmbus::delivery::MAX_RETRY_DELAY.as_millis() as u64;
        if schedule.iter().any(|ms| *ms > max) {
            return Err(ApiError::invalid(
                "retry.schedule_ms",
                format!("each delay must be at most {max} ms (one day)"),
            ));
        }
        p.schedule = schedule
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect();
    }
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
        first_failure: rfc3339(d.first_failure_us),
        last_failure: rfc3339(d.last_failure_us),
        last_error: d.last_error.clone(),
        recent_errors: d.recent_errors.clone(),
        held: d.held,
        redriving: d.redriving,
        event: d.event.to_json_value(),
    }
}

/// A webhook's secret asked of a subscription that has none (a 404: the resource does
/// not exist).
fn not_a_webhook(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("subscription '{name}' has no webhook target, so no signing secret"),
    )
}

fn stopped(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        format!("subscription '{name}' is not running (its topic may have been deleted)"),
    )
}

impl Subscriptions {
    /// The subscriptions of `bus`, none running yet; see [`Subscriptions::start_saved`].
    pub fn new(bus: EventBus, cluster: Option<Arc<Cluster>>, push: Arc<Push>) -> Subscriptions {
        Subscriptions {
            bus,
            push,
            cluster,
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    /// The topic of subscription `name`, if it exists.
    pub fn topic_of(&self, name: &str) -> Option<String> {
        self.entries.locked().get(name).map(|e| e.topic.clone())
    }

    /// This server's cluster membership, if it is in one.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
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
        let owner = self.cluster.as_ref().map(|c| c.id().to_string());
        r.queue = PullQueue::with_owner(r.options.max_in_flight, ack, owner);
        let mut options = r.options.clone();
        if self.cluster.is_some() {
            // In a cluster the engine drives only the partitions whose lease this server
            // holds, every write fenced by those leases; with none, no engine runs.
            r.queue
                .set_valid(r.owned.iter().map(|(p, h)| (*p, h.valid_until)).collect());
            if r.owned.is_empty() {
                return Ok(());
            }
            options.partitions = Some(r.owned.keys().copied().collect());
            options.fences = r
                .owned
                .iter()
                .map(|(p, h)| Fence {
                    lease: partition_lease(name, *p),
                    token: h.token,
                })
                .collect();
        }
        let generation = self.push.next_generation();
        let (cancel, cancelled) = tokio::sync::watch::channel(false);
        let target = target_of(&r.config);
        let handler = match self.push.handler(
            name,
            topic,
            target,
            r.transform.clone(),
            generation,
            cancelled,
        )? {
            Some(h) => h,
            None if is_pull(&r.config) => r.queue.handler(),
            // A disabled push target: nothing runs until it is enabled.
            None => return Ok(()),
        };
        let sub = self.bus.subscribe(topic, name, handler, options).await?;
        r.sub = Some(sub);
        r.cancel = Some(cancel);
        r.generation = generation;
        Ok(())
    }

    /// One round of cluster work (every [`Cluster::tick`], and at once after a create):
    /// renews this server's membership; takes in the subscriptions created and deleted on
    /// other servers; then, per subscription, renews the partition leases it holds, takes
    /// the free ones the assignment gives it, gives up those it no longer should hold, and
    /// restarts the engine on the new set when the set changed. Nothing to do outside a
    /// cluster.
    pub async fn reconcile(&self) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        let members = match cluster.heartbeat().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cluster heartbeat failed");
                Vec::new()
            }
        };
        if let Err(e) = self.load_definitions().await {
            tracing::warn!(error = %e, "reading the subscription definitions");
        }
        let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
        let seeking = cluster.seeking_elsewhere().await.unwrap_or_default();
        let mut owned_total = 0usize;
        for (name, entry) in self.all() {
            // A subscription another server is seeking: hold none of its partitions.
            let Ok(mut r) = entry.running.try_write() else {
                // Busy (a seek or a create here): next round.
                continue;
            };
            if r.gone || !r.saved {
                continue;
            }
            let ids: &[&str] = if seeking.contains(&name) {
                &[NOBODY]
            } else {
                &ids
            };
            self.reconcile_one(&cluster, ids, &name, &mut r).await;
            owned_total += r.owned.len();
        }
        metrics::gauge!("crmbus_cluster_owned_partitions").set(owned_total as f64);
    }

    /// [`Subscriptions::reconcile`] for one subscription, its entry locked.
    async fn reconcile_one(&self, cluster: &Cluster, ids: &[&str], name: &str, r: &mut Running) {
        let partitions: Vec<u32> = match self.bus.describe_topic(&r.topic).await {
            Ok(info) => info.partition_info.iter().map(|p| p.partition).collect(),
            Err(LogError::TopicNotFound(_)) => Vec::new(),
            Err(e) => {
                // The backend did not answer: keep what is held (renewed below) and take
                // nothing new.
                tracing::debug!(subscription = name, error = %e, "topic unreadable; keeping the partitions held");
                r.owned.keys().copied().collect()
            }
        };
        // With no member list (the backend unreachable), nothing new is taken and held
        // leases are kept while they count as held.
        let desired: Vec<u32> = partitions
            .into_iter()
            .filter(|p| ids.is_empty() || owner_of(ids, name, *p) == Some(cluster.id()))
            .collect();
        let mut owned = BTreeMap::new();
        let mut lost = 0u64;
        for (p, held) in &r.owned {
            match cluster.renew(name, *p, *held).await {
                Some(h) => {
                    owned.insert(*p, h);
                }
                None => lost += 1,
            }
        }
        if lost > 0 {
            tracing::warn!(
                subscription = name,
                lost,
                "partition leases lost (not renewed in time, or taken over)"
            );
            metrics::counter!("crmbus_cluster_leases_lost_total").increment(lost);
        }
        if !ids.is_empty() {
            for p in &desired {
                if !owned.contains_key(p) {
                    if let Some(h) = cluster.acquire(name, *p).await {
                        owned.insert(*p, h);
                    }
                }
            }
        }
        let release: Vec<(u32, u64)> = owned
            .iter()
            .filter(|(p, _)| !ids.is_empty() && !desired.contains(p))
            .map(|(p, h)| (*p, h.token))
            .collect();
        for (p, _) in &release {
            owned.remove(p);
        }
        let tokens = |m: &BTreeMap<u32, Held>| -> Vec<(u32, u64)> {
            m.iter().map(|(p, h)| (*p, h.token)).collect()
        };
        let idle = r.sub.is_none() && !owned.is_empty() && !is_disabled(&r.config);
        if tokens(&owned) != tokens(&r.owned) || idle {
            if let Err(e) = Self::stop(r).await {
                tracing::debug!(subscription = name, error = %e.detail, "stopping for a rebalance");
            }
            r.owned = owned;
            let topic = r.topic.clone();
            if let Err(e) = self.start(&topic, name, r).await {
                tracing::warn!(subscription = name, error = %e.detail, "starting on the partitions this server owns");
            }
            metrics::counter!("crmbus_cluster_rebalances_total").increment(1);
            tracing::info!(subscription = name, partitions = ?r.owned.keys().collect::<Vec<_>>(), "partitions owned");
        } else {
            r.owned = owned;
            r.queue
                .set_valid(r.owned.iter().map(|(p, h)| (*p, h.valid_until)).collect());
        }
        // Given up only once the engine that drove them has stopped.
        for (p, token) in release {
            cluster.release(name, p, token).await;
        }
    }

    /// Takes in the subscriptions saved or deleted by other servers: a new definition gets
    /// an entry (its partitions are taken by the reconciliation); an entry whose saved
    /// definition is gone is stopped and dropped.
    async fn load_definitions(&self) -> Result<(), LogError> {
        let saved = self.bus.state().scan(NAMESPACE, "").await?;
        let names: std::collections::BTreeSet<&str> =
            saved.iter().map(|(n, _)| n.as_str()).collect();
        for (name, bytes) in &saved {
            let existing = self.entries.locked().get(name).cloned();
            if let Some(entry) = existing {
                self.take_in_change(name, &entry, bytes).await;
                continue;
            }
            let Ok((topic, config)) = saved_subscription(bytes) else {
                continue;
            };
            let Ok(options) = options_from(&config) else {
                continue;
            };
            let mut r = self.running(topic.clone(), config, options);
            r.saved = true;
            r.queue = PullQueue::with_owner(1, Duration::from_secs(1), self.cluster_id());
            self.entries
                .locked()
                .entry(name.clone())
                .or_insert_with(|| {
                    Arc::new(Entry {
                        topic,
                        running: Arc::new(RwLock::new(r)),
                    })
                });
        }
        for (name, entry) in self.all() {
            if names.contains(name.as_str()) {
                continue;
            }
            let mut r = entry.running.write().await;
            if r.gone || !r.saved {
                continue;
            }
            // Saved after the scan (a create here finished meanwhile): not deleted.
            if self.bus.state().get(NAMESPACE, &name).await?.is_some() {
                continue;
            }
            // Deleted on another server (which purged its state and revoked its leases).
            let _ = Self::stop(&mut r).await;
            if let Some(cluster) = &self.cluster {
                for (p, h) in std::mem::take(&mut r.owned) {
                    cluster.release(&name, p, h.token).await;
                }
            }
            r.gone = true;
            self.forget(&name, &entry);
            tracing::info!(subscription = %name, "subscription deleted on another server");
        }
        Ok(())
    }

    /// Takes in a definition another server changed (a webhook's secret rotated, its
    /// target disabled or enabled): the entry gets it, and its engine, if one runs here,
    /// starts again with it. A busy entry is left for the next round.
    async fn take_in_change(&self, name: &str, entry: &Arc<Entry>, bytes: &[u8]) {
        let Ok((_, config)) = saved_subscription(bytes) else {
            return;
        };
        let Ok(mut r) = entry.running.try_write() else {
            return;
        };
        if r.gone || !r.saved || r.config == config {
            return;
        }
        let Ok(options) = options_from(&config) else {
            return;
        };
        let running = r.sub.is_some() || !r.owned.is_empty();
        if let Err(e) = Self::stop(&mut r).await {
            tracing::debug!(subscription = name, error = %e.detail, "stopping for a changed definition");
        }
        // The transformation too: the definition may have been made again with another.
        r.transform = transform_of(&config).ok().flatten();
        r.config = config;
        r.options = options;
        if running {
            let topic = r.topic.clone();
            if let Err(e) = self.start(&topic, name, &mut r).await {
                tracing::warn!(subscription = name, error = %e.detail, "starting with the changed definition");
            }
        }
        tracing::info!(
            subscription = name,
            "definition changed on another server; taken in"
        );
    }

    fn cluster_id(&self) -> Option<String> {
        self.cluster.as_ref().map(|c| c.id().to_string())
    }

    /// A new, stopped entry's running state.
    fn running(
        &self,
        topic: String,
        config: CreateSubscriptionRequest,
        options: SubscribeOptions,
    ) -> Running {
        // Checked by `options_from` before any entry is made.
        let transform = transform_of(&config).ok().flatten();
        Running {
            topic,
            config,
            transform,
            options,
            sub: None,
            queue: PullQueue::new(1, Duration::from_secs(1)),
            gone: false,
            saved: false,
            owned: BTreeMap::new(),
            cancel: None,
            generation: 0,
        }
    }

    /// Gives up every partition lease this server holds (a graceful stop, after the
    /// engines stopped) and its membership, so the others take over at once.
    pub async fn leave_cluster(&self) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        for (name, entry) in self.all() {
            let mut r = entry.running.write().await;
            let owned = std::mem::take(&mut r.owned);
            for (p, h) in owned {
                cluster.release(&name, p, h.token).await;
            }
        }
        cluster.leave().await;
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
            let mut r = self.running(topic.clone(), config, options);
            r.saved = true;
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
        if let Some(t) = &mut req.target {
            self.push.prepare(t)?;
        }
        let options = options_from(&req)?;
        req.ack_timeout_ms = Some(req.ack_timeout_ms.unwrap_or(DEFAULT_ACK_TIMEOUT_MS));
        req.max_in_flight = Some(options.max_in_flight);
        let name = req.name.clone();
        // The entry is claimed first, locked, so that a second create of the same name is
        // refused at once and other calls on it wait for the outcome.
        let entry = Arc::new(Entry {
            topic: topic.to_string(),
            running: Arc::new(RwLock::new(self.running(
                topic.to_string(),
                req.clone(),
                options.clone(),
            ))),
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
            return result;
        }
        if let Some(cluster) = self.cluster.clone() {
            // Take this server's share of the partitions before answering, so a pull
            // right after the create finds an engine; the others take theirs at their
            // next round.
            let members = cluster.members();
            let mut ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
            if !ids.contains(&cluster.id()) {
                ids.push(cluster.id());
            }
            self.reconcile_one(&cluster, &ids, &name, &mut r).await;
            cluster.kick.notify_one();
            let mut view = self.view(&name, &r).await?;
            view.config.target = r.config.target.clone();
            return Ok(view);
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
        if let Err(e) = self
            .bus
            .state()
            .put(NAMESPACE, name, definition(topic, req))
            .await
        {
            if let Some(sub) = r.sub.take() {
                let _ = sub.unsubscribe().await;
            }
            return Err(e.into());
        }
        r.saved = true;
        // The one answer that shows the target's secret in full.
        let mut view = self.view(name, r).await?;
        view.config.target = r.config.target.clone();
        Ok(view)
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
                let from_engine = stats.as_ref().and_then(|s| {
                    let i = s.partitions.iter().position(|x| *x == p.partition)?;
                    s.committed.get(i).copied()
                });
                let committed = match from_engine {
                    Some(c) => c,
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
        let mut config = r.config.clone();
        config.target = config.target.as_ref().map(crate::push::masked);
        Ok(SubscriptionView {
            name: name.to_string(),
            topic: r.topic.clone(),
            config,
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
                breaker: match s.breaker {
                    1 => "open",
                    2 => "half-open",
                    _ => "closed",
                }
                .to_string(),
                parked: s.parked.iter().map(parked_view).collect(),
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
                let mut view = self.view(&name, &r).await?;
                // Parked keys name subjects and hold receivers' errors: shown only to a
                // caller allowed to read the subscription (its own GET), never in the list
                // any key may read.
                view.status.parked.clear();
                out.push(view);
            }
        }
        Ok(out)
    }

    async fn stop(r: &mut Running) -> Result<(), ApiError> {
        if let Some(cancel) = r.cancel.take() {
            let _ = cancel.send(true);
        }
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
        if let Some(cluster) = &self.cluster {
            // The servers still driving its partitions can write nothing more; they stop
            // at their next round, when they see the definition gone.
            r.owned.clear();
            cluster.revoke_all(name).await?;
            cluster.kick.notify_one();
        }
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
    /// A pull subscription's queue, and the transformation its deliveries get.
    pub async fn queue(
        &self,
        name: &str,
    ) -> Result<(Arc<PullQueue>, Option<Arc<Transform>>), ApiError> {
        let entry = self.entry(name)?;
        let r = entry.running.read().await;
        if r.gone {
            return Err(not_found(name));
        }
        if !is_pull(&r.config) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("subscription '{name}' pushes its deliveries to its target; they are not pulled or acked"),
            ));
        }
        if r.sub.is_none() && self.cluster.is_none() {
            return Err(stopped(name));
        }
        Ok((Arc::clone(&r.queue), r.transform.clone()))
    }

    /// Moves the subscription's cursor; leased deliveries are released.
    pub async fn seek(&self, name: &str, to: SeekTo) -> Result<Vec<CursorView>, ApiError> {
        if let Some(c) = self.cluster.clone() {
            return self.seek_in_cluster(&c, name, to).await;
        }
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
        Ok(cursor_views(&info, positions))
    }

    /// Seek when servers share the backend: under the subscription's seek lock (no other
    /// server takes or keeps its partitions meanwhile), this server takes every partition's
    /// lease (revoking it from its owner, whose engine can write nothing more), moves the
    /// cursor with every write fenced, then gives everything up; the servers the
    /// assignment names take their partitions again from the new position.
    async fn seek_in_cluster(
        &self,
        cluster: &Arc<Cluster>,
        name: &str,
        to: SeekTo,
    ) -> Result<Vec<CursorView>, ApiError> {
        let entry = self.entry(name)?;
        let mut r = entry.running.write().await;
        if r.gone {
            return Err(not_found(name));
        }
        let Some(lock) = cluster.lock_for_seek(name).await? else {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("another seek of '{name}' is under way; try again"),
            ));
        };
        let result = self.seek_locked(cluster, name, &to, &mut r).await;
        cluster.unlock_seek(name, lock).await;
        cluster.kick.notify_one();
        result
    }

    /// The rest of [`Subscriptions::seek_in_cluster`], with the seek lock held.
    async fn seek_locked(
        &self,
        cluster: &Cluster,
        name: &str,
        to: &SeekTo,
        r: &mut Running,
    ) -> Result<Vec<CursorView>, ApiError> {
        Self::stop(r).await?;
        let owned = std::mem::take(&mut r.owned);
        for (p, h) in owned {
            cluster.release(name, p, h.token).await;
        }
        let topic = r.topic.clone();
        let info = self.bus.describe_topic(&topic).await?;
        let deadline = tokio::time::Instant::now() + cluster.ttl() * 2;
        let mut held = Vec::new();
        let mut taken = Ok(());
        for p in &info.partition_info {
            match cluster.take_over(name, p.partition, deadline).await {
                Ok(h) => held.push((p.partition, h)),
                Err(e) => {
                    taken = Err(e);
                    break;
                }
            }
        }
        let fences: Vec<Fence> = held
            .iter()
            .map(|(p, h)| Fence {
                lease: partition_lease(name, *p),
                token: h.token,
            })
            .collect();
        let result = match taken {
            Ok(()) => self
                .bus
                .seek_fenced(&topic, name, to, &fences)
                .await
                .map_err(ApiError::from),
            Err(e) => Err(e),
        };
        for (p, h) in held {
            cluster.release(name, p, h.token).await;
        }
        // Idle until the next round gives this server its share again.
        let restarted = self.start(&topic, name, r).await;
        let positions = result?;
        restarted?;
        Ok(cursor_views(&info, positions))
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
        let topic = self.entry(name)?.topic.clone();
        let group = GroupState::new(topic, name);
        Ok(read_dead_letters(self.bus.state().as_ref(), &group, &filter).await?)
    }

    /// The audit log of the subscription's dead-letter actions, oldest first.
    pub async fn audit_log(&self, name: &str) -> Result<Vec<AuditRecord>, ApiError> {
        let topic = self.entry(name)?.topic.clone();
        let group = GroupState::new(topic, name);
        Ok(read_audit_log(self.bus.state().as_ref(), &group).await?)
    }

    /// Redrives dead letters, audited as `who`. In a cluster, this server's engine acts on
    /// the partitions it owns (none: nothing); the route asks the other servers for theirs.
    pub async fn redrive(
        &self,
        name: &str,
        ids: Option<Vec<String>>,
        filter: DlqFilter,
        who: &str,
    ) -> Result<usize, ApiError> {
        if self.cluster.is_some() && !self.runs_locally(name).await? {
            return Ok(0);
        }
        self.with_sub(name, async |s| Ok(s.redrive(ids, filter, who).await?))
            .await
    }

    /// Discards a dead letter, audited as `who`; false if there is no such entry (in a
    /// cluster: among the partitions this server owns).
    pub async fn discard(&self, name: &str, id: &str, who: &str) -> Result<bool, ApiError> {
        if self.cluster.is_some() && !self.runs_locally(name).await? {
            return Ok(false);
        }
        self.with_sub(name, async |s| Ok(s.discard(id, who).await?))
            .await
    }

    /// Whether an engine of subscription `name` runs on this server.
    async fn runs_locally(&self, name: &str) -> Result<bool, ApiError> {
        let entry = self.entry(name)?;
        let r = entry.running.read().await;
        if r.gone {
            return Err(not_found(name));
        }
        Ok(r.sub.is_some())
    }

    /// Disables a webhook target whose receiver answered 410 Gone: its engine stops (the
    /// delivery in flight stays where it was), the definition keeps why and when, and the
    /// subscription's audit log records it (as `crmbus`). Nothing to do if the
    /// subscription is gone or already disabled.
    pub async fn disable(&self, gone: Gone) {
        let name = gone.subscription.clone();
        let Ok(entry) = self.entry(&name) else {
            return;
        };
        let mut r = entry.running.write().await;
        // A 410 answered to an earlier start (the subscription restarted, or was deleted
        // and created again, since) disables nothing.
        if r.gone || r.generation != gone.generation {
            return;
        }
        let at_us = self.push.clock().now_micros();
        let Some(SubscriptionTarget::Webhook(w)) = &mut r.config.target else {
            return;
        };
        if w.disabled.is_some() {
            return;
        }
        w.disabled = Some(DisabledTarget {
            at: rfc3339(at_us),
            reason: gone.detail.clone(),
        });
        if let Err(e) = Self::stop(&mut r).await {
            tracing::warn!(subscription = %name, error = %e.detail, "stopping a disabled webhook");
        }
        let record = AuditRecord {
            at_us,
            who: "crmbus".into(),
            action: "disable".into(),
            entry: String::new(),
            event_id: gone.event_id,
            event_type: gone.event_type,
            detail: gone.detail.clone(),
        };
        if let Err(e) = self
            .save_with_audit(&name, &r.topic, &r.config, &record)
            .await
        {
            tracing::error!(subscription = %name, error = %e.detail, "cannot save the disabled webhook; it stays stopped until the server restarts");
        }
        metrics::counter!("crmbus_push_disabled_total", "subscription" => name.clone())
            .increment(1);
        tracing::warn!(subscription = %name, reason = %gone.detail, "webhook target disabled: the receiver answered 410 Gone");
    }

    /// Saves a subscription's definition (as it now stands) and an audit record of why it
    /// changed, in one batch.
    async fn save_with_audit(
        &self,
        name: &str,
        topic: &str,
        config: &CreateSubscriptionRequest,
        record: &AuditRecord,
    ) -> Result<(), ApiError> {
        let group = GroupState::new(topic, name);
        let ops = vec![
            crmbus::StateOp::Put {
                namespace: NAMESPACE.to_string(),
                key: name.to_string(),
                value: definition(topic, config),
            },
            crmbus::delivery::audit_op(&group, record)?,
        ];
        self.bus.state().apply(ops).await?;
        Ok(())
    }

    /// Enables a disabled webhook target again, audited as `who`: its deliveries start
    /// where they stopped.
    pub async fn enable(&self, name: &str, who: &str) -> Result<SubscriptionView, ApiError> {
        let entry = self.entry(name)?;
        let mut r = entry.running.write().await;
        if r.gone {
            return Err(not_found(name));
        }
        let mut config = r.config.clone();
        let Some(SubscriptionTarget::Webhook(w)) = &mut config.target else {
            // Only a webhook is ever disabled: nothing to do.
            return self.view(name, &r).await;
        };
        if w.disabled.take().is_some() {
            let record = AuditRecord {
                at_us: self.push.clock().now_micros(),
                who: who.to_string(),
                action: "enable".into(),
                entry: String::new(),
                event_id: String::new(),
                event_type: String::new(),
                detail: String::new(),
            };
            // Saved first: the running definition changes only once it is kept.
            self.save_with_audit(name, &r.topic, &config, &record)
                .await?;
            r.config = config;
            let topic = r.topic.clone();
            if self.cluster.is_none() || !r.owned.is_empty() {
                self.start(&topic, name, &mut r).await?;
            }
        }
        self.view(name, &r).await
    }

    /// Rotates a webhook's signing secret, audited as `who`: the new one (given or
    /// generated) signs from now on, the old one beside it for the overlap. The answer
    /// shows the new secret in full, once.
    pub async fn rotate_secret(
        &self,
        name: &str,
        req: RotateSecretRequest,
        who: &str,
    ) -> Result<SubscriptionView, ApiError> {
        let entry = self.entry(name)?;
        let mut r = entry.running.write().await;
        if r.gone {
            return Err(not_found(name));
        }
        let overlap = req
            .overlap_ms
            .map(Duration::from_millis)
            .unwrap_or(self.push.secret_overlap);
        if overlap > Duration::from_secs(30 * 24 * 3600) {
            return Err(ApiError::invalid(
                "overlap_ms",
                "must be at most 2592000000 (30 days)",
            ));
        }
        let mut config = r.config.clone();
        let Some(SubscriptionTarget::Webhook(w)) = &mut config.target else {
            return Err(not_a_webhook(name));
        };
        self.push.rotate(w, req.secret.as_deref(), overlap)?;
        let record = AuditRecord {
            at_us: self.push.clock().now_micros(),
            who: who.to_string(),
            action: "rotate_secret".into(),
            entry: String::new(),
            event_id: String::new(),
            event_type: String::new(),
            detail: format!("the old secret signs for {} ms more", overlap.as_millis()),
        };
        // Saved first: the running definition changes only once it is kept.
        self.save_with_audit(name, &r.topic, &config, &record)
            .await?;
        r.config = config;
        // The engine starts again with a handler that signs with the new secrets.
        let was_running = r.sub.is_some();
        if let Err(e) = Self::stop(&mut r).await {
            tracing::warn!(subscription = name, error = %e.detail, "stopping for a rotated secret");
        }
        if was_running {
            let topic = r.topic.clone();
            self.start(&topic, name, &mut r).await?;
        }
        // The new secret in full, once; the previous ones stay masked.
        let mut view = self.view(name, &r).await?;
        if let (Some(SubscriptionTarget::Webhook(shown)), Some(SubscriptionTarget::Webhook(w))) =
            (&mut view.config.target, &r.config.target)
        {
            shown.secret = w.secret.clone();
        }
        Ok(view)
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

/// A parked key as the API shows it.
fn parked_view(k: &crmbus::delivery::ParkedKey) -> ParkedKeyView {
    let mut view = ParkedKeyView {
        partition: k.partition,
        key: k.key.clone(),
        offset: k.offset,
        queued: k.queued,
        waiting_on: "dead_letter".to_string(),
        attempts: None,
        next_attempt_at: None,
        last_error: None,
    };
    if let crmbus::delivery::Parked::Retry {
        attempts,
        next_due_us,
        last_error,
    } = &k.waiting_on
    {
        view.waiting_on = "retry".to_string();
        view.attempts = Some(*attempts);
        view.next_attempt_at = Some(crate::render::rfc3339(*next_due_us));
        view.last_error = Some(last_error.clone());
    }
    view
}

/// The cursors a seek left, partition by partition.
fn cursor_views(info: &crmbus::TopicInfo, positions: Vec<u64>) -> Vec<CursorView> {
    info.partition_info
        .iter()
        .zip(positions)
        .map(|(p, committed)| CursorView {
            partition: p.partition,
            committed,
            next_offset: p.next_offset,
            lag: p.next_offset.saturating_sub(committed),
        })
        .collect()
}

/// A subscription's definition as saved: the request it was created with (its target
/// as it now stands) and its topic.
fn definition(topic: &str, req: &CreateSubscriptionRequest) -> Vec<u8> {
    let mut saved = serde_json::to_value(req).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut saved {
        m.insert("topic".into(), Value::String(topic.to_string()));
    }
    serde_json::to_vec(&saved).unwrap_or_default()
}

/// Where a subscription's deliveries go (`Pull` when its request named no target).
fn target_of(req: &CreateSubscriptionRequest) -> &SubscriptionTarget {
    req.target.as_ref().unwrap_or(&SubscriptionTarget::Pull {})
}

/// Whether the subscription's webhook target is disabled (no engine runs).
fn is_disabled(req: &CreateSubscriptionRequest) -> bool {
    matches!(target_of(req), SubscriptionTarget::Webhook(w) if w.disabled.is_some())
}

/// Whether clients pull the subscription's deliveries.
fn is_pull(req: &CreateSubscriptionRequest) -> bool {
    matches!(target_of(req), SubscriptionTarget::Pull {})
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
