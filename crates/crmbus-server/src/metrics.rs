//! Prometheus metrics: the process-wide recorder, the `/metrics` rendering, and the
//! per-request counters (by route template and status).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use crmbus::sync::{LockExt, RwLockExt};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution of observations (seconds).
    Histogram,
}

/// Every metric crmbus exports (the README's list): name, kind, help text. Each has its
/// `# HELP` line, and counters and gauges exist from start at 0 (their labelled series
/// appear as topics, partitions and subscriptions are used).
pub const CATALOG: &[(&str, Kind, &str)] = &[
    (
        "crmbus_published_events_total",
        Kind::Counter,
        "Events stored by publishes over HTTP, by topic.",
    ),
    (
        "crmbus_published_bytes_total",
        Kind::Counter,
        "Request bytes of publishes over HTTP, by topic.",
    ),
    (
        "crmbus_type_events_total",
        Kind::Counter,
        "Events stored by publishes over HTTP, by topic and type (flow analytics; a topic's first 100 types by name, later ones and types over 128 characters as `other`).",
    ),
    (
        "crmbus_type_bytes_total",
        Kind::Counter,
        "Request bytes of publishes over HTTP, by topic and type (a request's bytes shared evenly by its events).",
    ),
    (
        "crmbus_delivery_latency_seconds",
        Kind::Histogram,
        "End to end: from the log's append to the handler's ack, by topic and group (first deliveries and retries; redriven dead letters not counted). Buckets from 1 ms to a day: a retried event counts its waits, and events read after a seek or a backlog count their whole age; the append time is the backend's clock, the ack the server's (a negative difference counts as 0).",
    ),
    (
        "crmbus_publish_duration_seconds",
        Kind::Histogram,
        "Time to store a publish (durable when it returns), by topic.",
    ),
    (
        "crmbus_http_requests_total",
        Kind::Counter,
        "HTTP requests by route template, method and status.",
    ),
    (
        "crmbus_http_request_duration_seconds",
        Kind::Histogram,
        "HTTP request time by route template.",
    ),
    (
        "crmbus_live_slow_disconnects_total",
        Kind::Counter,
        "Live stream clients disconnected for falling behind.",
    ),
    (
        "crmbus_deliveries_total",
        Kind::Counter,
        "Deliveries started, by topic and group.",
    ),
    (
        "crmbus_acks_total",
        Kind::Counter,
        "Deliveries acknowledged, by topic and group.",
    ),
    (
        "crmbus_retries_total",
        Kind::Counter,
        "Retries scheduled, by topic and group.",
    ),
    (
        "crmbus_dead_lettered_total",
        Kind::Counter,
        "Events dead-lettered, by topic and group.",
    ),
    (
        "crmbus_deduped_total",
        Kind::Counter,
        "Deliveries skipped by consumer dedupe, by topic and group.",
    ),
    (
        "crmbus_dedupe_evicted_early_total",
        Kind::Counter,
        "Producer dedupe entries evicted before their window ended (the log-wide bound).",
    ),
    (
        "crmbus_subscription_lag",
        Kind::Gauge,
        "Events not yet finished by a subscription, by topic and group.",
    ),
    (
        "crmbus_subscription_dlq_size",
        Kind::Gauge,
        "Dead letters of a subscription, by topic and group.",
    ),
    (
        "crmbus_subscription_in_flight",
        Kind::Gauge,
        "Deliveries started and not finished, by topic and group.",
    ),
    (
        "crmbus_subscription_parked_keys",
        Kind::Gauge,
        "Keys waiting on a retry or a held dead letter, by topic and group.",
    ),
    (
        "crmbus_subscription_breaker_state",
        Kind::Gauge,
        "Circuit breaker: 0 closed, 1 open, 2 half-open, by topic and group.",
    ),
    (
        "crmbus_push_attempts_total",
        Kind::Counter,
        "Push target attempts, by subscription, target (webhook, redis_pubsub) and outcome (2xx, 3xx, 4xx, 5xx, timeout, connect_error, refused, error; ok for Redis).",
    ),
    (
        "crmbus_push_attempt_duration_seconds",
        Kind::Histogram,
        "Time of one push target attempt, by subscription and target.",
    ),
    (
        "crmbus_push_disabled_total",
        Kind::Counter,
        "Webhook targets disabled because their receiver answered 410 Gone, by subscription.",
    ),
    (
        "crmbus_throttled_requests_total",
        Kind::Counter,
        "Requests answered 429 by a rate limit, by limit (key, topic).",
    ),
    (
        "crmbus_audit_write_failures_total",
        Kind::Counter,
        "Audit entries that could not be written (the action was done; the error is logged).",
    ),
    (
        "crmbus_log_corrupt_records_total",
        Kind::Counter,
        "Damaged records found by the embedded log (never served), by topic and partition.",
    ),
    (
        "crmbus_log_batches_completed_on_recovery_total",
        Kind::Counter,
        "Multi-partition batches the embedded log completed from a journal of the previous format at open.",
    ),
    (
        "crmbus_log_batches_rolled_back_on_recovery_total",
        Kind::Counter,
        "Multi-partition batches (never acknowledged) the embedded log rolled back at open because a crash left them in only some partitions.",
    ),
    (
        "crmbus_log_fsync_failures_total",
        Kind::Counter,
        "Failed fsyncs of the embedded log (each stops the log until a restart).",
    ),
    (
        "crmbus_log_commit_rounds_total",
        Kind::Counter,
        "Group-commit rounds of the embedded log (each writes what appends staged and fsyncs it before they are acknowledged).",
    ),
    (
        "crmbus_log_commit_files_synced_total",
        Kind::Counter,
        "Files the embedded log's group-commit rounds fsynced (each costs the disk a flush; divide by the rounds for files per round): one, the commit file, for a round that wrote several files; otherwise the one file written.",
    ),
    (
        "crmbus_log_commit_checkpoints_total",
        Kind::Counter,
        "Checkpoints of the embedded log's commit file: the files its records wrote fsynced, and a new generation started.",
    ),
    (
        "crmbus_log_commit_round_seconds",
        Kind::Histogram,
        "Time of one group-commit round of the embedded log: its writes and fsyncs.",
    ),
    (
        "crmbus_outbox_pending",
        Kind::Gauge,
        "Outbox rows committed and not yet published, by outbox (the [[outbox]] relays).",
    ),
    (
        "crmbus_outbox_oldest_pending_seconds",
        Kind::Gauge,
        "Age of the oldest unpublished outbox row, in seconds, by outbox.",
    ),
    (
        "crmbus_outbox_published_total",
        Kind::Counter,
        "Outbox rows the relay published, by outbox.",
    ),
    (
        "crmbus_outbox_failed_total",
        Kind::Counter,
        "Outbox rows crmbus refused and the relay set aside (failed_at), by outbox.",
    ),
    (
        "crmbus_cluster_members",
        Kind::Gauge,
        "Live servers sharing this server's backend (itself included; 0 outside a cluster).",
    ),
    (
        "crmbus_cluster_owned_partitions",
        Kind::Gauge,
        "Subscription partitions this server drives now (0 outside a cluster).",
    ),
    (
        "crmbus_cluster_rebalances_total",
        Kind::Counter,
        "Times this server's set of owned partitions of a subscription changed.",
    ),
    (
        "crmbus_cluster_leases_lost_total",
        Kind::Counter,
        "Partition leases this server lost before giving them up (not renewed in time).",
    ),
];

/// Gives every metric of [`CATALOG`] its help text, and counters and gauges a series at
/// 0, so `/metrics` lists them all from start.
fn describe_all() {
    for &(name, kind, help) in CATALOG {
        match kind {
            Kind::Counter => {
                metrics::describe_counter!(name, help);
                metrics::counter!(name).absolute(0);
            }
            Kind::Gauge => {
                metrics::describe_gauge!(name, help);
                metrics::gauge!(name).set(0.0);
            }
            Kind::Histogram => metrics::describe_histogram!(name, metrics::Unit::Seconds, help),
        }
    }
}

/// Installs the Prometheus recorder as the process's metrics recorder (once; later calls
/// and servers share it). If another recorder was installed first, `/metrics` says so.
pub fn install() {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0,
            ])
            // End to end includes retries (seconds to hours) and backlogs.
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "crmbus_delivery_latency_seconds".to_string(),
                    ),
                    &[
                        0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
                        900.0, 3600.0, 21600.0, 86400.0,
                    ],
                )
            })
            .map(|b| b.build_recorder());
        match recorder {
            Ok(recorder) => {
                let handle = recorder.handle();
                match metrics::set_global_recorder(recorder) {
                    Ok(()) => {
                        describe_all();
                        Some(handle)
                    }
                    Err(_) => None,
                }
            }
            Err(_) => None,
        }
    });
}

/// The metrics in the Prometheus text format.
pub fn render() -> Option<String> {
    HANDLE.get().and_then(|h| h.as_ref()).map(|h| h.render())
}

/// Counts every request by route template (`/v1/topics/{topic}/events`), method and
/// status, and times it.
pub async fn track_requests(req: Request, next: Next) -> Response {
    let route = RouteFlow::of(
        req.extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", |p| p.as_str()),
    );
    let method = req.method().clone();
    let started = Instant::now();
    let response = next.run(req).await;
    route
        .requests(&method, response.status().as_u16())
        .increment(1);
    route.duration.record(started.elapsed().as_secs_f64());
    response
}

/// Metric handles kept by name: what `map` holds under `name`, made by `make` the first
/// time. Before the recorder is installed nothing is kept: a handle made then counts
/// nowhere, and would stay so.
fn kept<T>(
    map: &OnceLock<RwLock<HashMap<String, Arc<T>>>>,
    name: &str,
    make: impl FnOnce() -> Arc<T>,
) -> Arc<T> {
    if HANDLE.get().is_none() {
        return make();
    }
    let map = map.get_or_init(Default::default);
    if let Some(kept) = map.read_locked().get(name) {
        return Arc::clone(kept);
    }
    let mut map = map.write_locked();
    Arc::clone(map.entry(name.to_string()).or_insert_with(make))
}

/// The request metrics of one route template, looked up in the recorder once and kept
/// (as [`TopicFlow`] is, for the same reason).
struct RouteFlow {
    route: String,
    /// `crmbus_http_request_duration_seconds` of the route.
    duration: metrics::Histogram,
    /// `crmbus_http_requests_total` of the route, by method and status.
    requests: Mutex<HashMap<(axum::http::Method, u16), metrics::Counter>>,
}

impl RouteFlow {
    fn of(route: &str) -> Arc<RouteFlow> {
        static ROUTES: OnceLock<RwLock<HashMap<String, Arc<RouteFlow>>>> = OnceLock::new();
        let make = || {
            Arc::new(RouteFlow {
                route: route.to_string(),
                duration: metrics::histogram!("crmbus_http_request_duration_seconds", "route" => route.to_string()),
                requests: Mutex::new(HashMap::new()),
            })
        };
        kept(&ROUTES, route, make)
    }

    fn requests(&self, method: &axum::http::Method, status: u16) -> metrics::Counter {
        self.requests
            .locked()
            .entry((method.clone(), status))
            .or_insert_with(|| {
                metrics::counter!(
                    "crmbus_http_requests_total",
                    "route" => self.route.clone(),
                    "method" => method.as_str().to_string(),
                    "status" => status.to_string()
                )
            })
            .clone()
    }
}

/// Most types a topic's flow counters tell apart; the rest are counted as `other`.
pub const MAX_TYPES_PER_TOPIC: usize = 100;
/// Longest type kept as a label; a longer one is counted as `other`.
const MAX_TYPE_LABEL: usize = 128;

/// The publish metrics of one topic, looked up in the recorder once and kept: looking a
/// labelled series up by name costs the label strings and a registry search on every
/// publish. Counters of the topic's event types are kept beside them, at most
/// [`MAX_TYPES_PER_TOPIC`] types (the rest share the `other` series).
pub struct TopicFlow {
    topic: String,
    /// `crmbus_published_events_total` of the topic.
    pub events: metrics::Counter,
    /// `crmbus_published_bytes_total` of the topic.
    pub bytes: metrics::Counter,
    /// `crmbus_publish_duration_seconds` of the topic.
    pub duration: metrics::Histogram,
    /// By type label: `crmbus_type_events_total` and `crmbus_type_bytes_total`.
    types: Mutex<HashMap<String, TypeFlow>>,
    /// The same for the types counted as `other`.
    other: OnceLock<TypeFlow>,
}

/// The flow counters of one event type of a topic.
#[derive(Clone)]
pub struct TypeFlow {
    /// The `type` label: the type, or `other`.
    pub label: Arc<str>,
    /// `crmbus_type_events_total`.
    pub events: metrics::Counter,
    /// `crmbus_type_bytes_total`.
    pub bytes: metrics::Counter,
}

impl TopicFlow {
    /// The kept metrics of `topic` (made on its first publish since the process started).
    pub fn of(topic: &str) -> Arc<TopicFlow> {
        static FLOWS: OnceLock<RwLock<HashMap<String, Arc<TopicFlow>>>> = OnceLock::new();
        let make = || {
            Arc::new(TopicFlow {
                topic: topic.to_string(),
                events: metrics::counter!("crmbus_published_events_total", "topic" => topic.to_string()),
                bytes: metrics::counter!("crmbus_published_bytes_total", "topic" => topic.to_string()),
                duration: metrics::histogram!("crmbus_publish_duration_seconds", "topic" => topic.to_string()),
                types: Mutex::new(HashMap::new()),
                other: OnceLock::new(),
            })
        };
        kept(&FLOWS, topic, make)
    }

    /// The counters of type `ty`: its own while the topic has fewer than
    /// [`MAX_TYPES_PER_TOPIC`] types (types are publishers' text: the series must stay
    /// few), else those of `other`, as for a type longer than a label may be.
    pub fn of_type(&self, ty: &str) -> TypeFlow {
        let mut types = self.types.locked();
        if let Some(flow) = types.get(ty) {
            return flow.clone();
        }
        if ty.len() > MAX_TYPE_LABEL || types.len() >= MAX_TYPES_PER_TOPIC {
            drop(types);
            return self.other.get_or_init(|| self.type_flow("other")).clone();
        }
        let flow = self.type_flow(ty);
        types.insert(ty.to_string(), flow.clone());
        flow
    }

    /// The counters of `label`, looked up in the recorder.
    fn type_flow(&self, label: &str) -> TypeFlow {
        let labels = [("topic", self.topic.clone()), ("type", label.to_string())];
        TypeFlow {
            label: Arc::from(label),
            events: metrics::counter!("crmbus_type_events_total", &labels),
            bytes: metrics::counter!("crmbus_type_bytes_total", &labels),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topics_type_labels_stay_few() {
        // Flows are kept once the recorder is installed.
        install();
        let flow = TopicFlow::of("type-label-test");
        let label = |ty: &str| flow.of_type(ty).label.to_string();
        for i in 0..MAX_TYPES_PER_TOPIC {
            assert_eq!(label(&format!("t.{i}")), format!("t.{i}"));
        }
        // Full: a known type keeps its label, a new one is `other`.
        assert_eq!(label("t.0"), "t.0");
        assert_eq!(label("t.new"), "other");
        // Another topic has room of its own; an over-long type is `other` anywhere.
        let another = TopicFlow::of("another-topic");
        assert_eq!(&*another.of_type("t.new").label, "t.new");
        assert_eq!(&*another.of_type(&"x".repeat(200)).label, "other");
        // The same topic's flow is kept, not made again.
        assert!(Arc::ptr_eq(&flow, &TopicFlow::of("type-label-test")));
    }
}
