//! Publishing (the three CloudEvents HTTP modes, one topic or several) and reading by
//! offset or time.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use crmbus::Receipt;

use crate::api::{
    CloudEventDoc, PublishResponse, ReadQuery, ReadResponse, ReceiptView, SubjectEventsResponse,
    SubjectReadQuery,
};
use crate::cloudevents::events_from_publish;
use crate::extract::{body_bytes, parse_time, query_values};
use crate::problem::{ApiError, Problem};
use crate::render::{ReadBody, ReadEvent, SubjectBody, SubjectEventBody};
use crate::state::Shared;

/// Default and largest `limit` of a read.
const DEFAULT_READ_LIMIT: usize = 100;
const MAX_READ_LIMIT: usize = 1000;

/// The request's W3C trace headers, for the propagator.
struct HeaderCarrier<'a>(&'a HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

async fn publish_to(
    app: &Shared,
    topics: Vec<String>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<PublishResponse>), ApiError> {
    let body = body_bytes(body)?;
    // Counted until the answer, so that a publish that finds others under way (whose
    // cores are busy) reads its batch alone.
    let in_flight = app.publishes.enter();
    let mut events = events_from_publish(headers, &body, in_flight.alone()).await?;
    apply_if_match(headers, &mut events)?;
    // The publish span: a child of the caller's trace (its `traceparent` header, else the
    // first event's). Events without a trace of their own are stamped with the publish's
    // context when it is the caller's or a new one; an event's own trace parents the
    // publish but is not lent to the others.
    let span =
        tracing::info_span!("crmbus.publish", topics = %topics.join(","), events = events.len());
    // Nothing to read or stamp when no subscriber records the span (the usual case).
    if !span.is_disabled() {
        let from_header = crmbus::trace::parent_from(&HeaderCarrier(headers));
        let own = events.iter().find_map(crmbus::trace::parent_of);
        let stamp = from_header.is_some() || own.is_none();
        let parent = from_header.or(own);
        if let Some(cx) = parent {
            let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(&span, cx);
        }
        if stamp {
            span.in_scope(|| events.iter_mut().for_each(crmbus::trace::stamp_current));
        }
    }
    tracing::Instrument::instrument(store(app, topics, body, events), span).await
}

/// Stores what a publish parsed (inside its span).
async fn store(
    app: &Shared,
    topics: Vec<String>,
    body: Bytes,
    events: Vec<crmbus::Event>,
) -> Result<(StatusCode, Json<PublishResponse>), ApiError> {
    if events.is_empty() {
        // An empty batch is a valid batch (CloudEvents JSON format §4): nothing to store,
        // once every topic is known to exist.
        for topic in &topics {
            app.bus.describe_topic(topic).await?;
        }
        return Ok((
            StatusCode::CREATED,
            Json(PublishResponse {
                receipts: Vec::new(),
            }),
        ));
    }
    // Each topic's event rate ([limits]); a refused request stores nothing. Only topics
    // that exist have buckets (with auto-created topics, the publish makes them: a name
    // then gets a bucket like any topic). A request refused by one topic's limit has
    // already taken from the buckets of the topics before it.
    if app.limits.limits_topics() {
        if !app.config.server.auto_create_topics {
            for topic in &topics {
                app.bus.describe_topic(topic).await?;
            }
        }
        for topic in &topics {
            app.limits.publish(topic, events.len())?;
        }
    }
    let started = Instant::now();
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    // Flow analytics by type: each event's type, in the order of the receipts per topic.
    let types: Vec<String> = events.iter().map(|e| e.ty.clone()).collect();
    let append = tracing::info_span!("crmbus.append", events = types.len());
    let receipts: Vec<Receipt> =
        tracing::Instrument::instrument(app.bus.publish_batch(events, &refs), append).await?;
    let elapsed = started.elapsed().as_secs_f64();
    // The request's bytes, shared evenly by its events (no event is written out again to
    // be measured on the publish path).
    let per_event = body.len() as f64 / types.len().max(1) as f64;
    for (i, topic) in topics.iter().enumerate() {
        let mine = receipts.iter().skip(i * types.len()).take(types.len());
        let mut by_type: std::collections::BTreeMap<&str, u64> = Default::default();
        for (r, ty) in mine.zip(&types) {
            if !r.duplicate {
                *by_type.entry(ty.as_str()).or_default() += 1;
            }
        }
        let n: u64 = by_type.values().sum();
        let flow = crate::metrics::TopicFlow::of(topic);
        for (ty, count) in by_type {
            let of_type = flow.of_type(ty);
            of_type.events.increment(count);
            of_type
                .bytes
                .increment((per_event * count as f64).round() as u64);
        }
        flow.events.increment(n);
        flow.bytes.increment(body.len() as u64);
        flow.duration.record(elapsed);
    }
    let all_duplicates = receipts.iter().all(|r| r.duplicate);
    let status = if all_duplicates {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(PublishResponse {
            receipts: receipts
                .into_iter()
                .map(|r| ReceiptView {
                    id: r.id,
                    topic: r.topic,
                    partition: r.partition,
                    offset: r.offset,
                    duplicate: r.duplicate,
                    version: r.version,
                })
                .collect(),
        }),
    ))
}

/// `If-Match: "3"` (or `3`) on a request of one event: the event's `expectedversion`.
/// Refused on a batch (each event states its own), when it is not a whole number, or when
/// it disagrees with the event's own attribute.
fn apply_if_match(headers: &HeaderMap, events: &mut [crmbus::Event]) -> Result<(), ApiError> {
    let Some(value) = headers.get(axum::http::header::IF_MATCH) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("").trim();
    let unquoted = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    let Ok(version) = unquoted.parse::<u64>() else {
        return Err(ApiError::invalid(
            "If-Match",
            "must be the subject's version, a whole number such as \"3\"",
        ));
    };
    let [event] = events else {
        return Err(ApiError::invalid(
            "If-Match",
            "applies to a request of one event; give each event of a batch its own expectedversion",
        ));
    };
    let stated = crmbus::expected_version(event).map_err(ApiError::from)?;
    if stated.is_some_and(|v| v != version) {
        return Err(ApiError::invalid(
            "If-Match",
            "disagrees with the event's expectedversion",
        ));
    }
    event.extensions.insert(
        crmbus::EXPECTED_VERSION.to_string(),
        crmbus::ExtensionValue::Number(version.into()),
    );
    Ok(())
}

/// Publishes events to a topic: structured (`application/cloudevents+json`), binary
/// (`ce-*` headers), or a batch (`application/cloudevents-batch+json`, all or nothing).
#[utoipa::path(
    post, path = "/v1/topics/{topic}/events", tag = "events",
    params(("topic" = String, Path, description = "Topic name")),
    request_body(
        description = "A structured CloudEvent, a batch (JSON array), or the data of a binary-mode event with ce-* headers",
        content(
            (CloudEventDoc = "application/cloudevents+json"),
            (Vec<CloudEventDoc> = "application/cloudevents-batch+json"),
            (CloudEventDoc = "application/json"),
        )
    ),
    responses(
        (status = 201, description = "Stored durably", body = PublishResponse),
        (status = 200, description = "Every event was a duplicate: the first receipts", body = PublishResponse),
        (status = 400, description = "Invalid event(s); every violation listed, nothing written", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such topic", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An event's expectedversion (or the If-Match header) is not its subject's version: nothing written; the problem's current_version says the version now", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large, or a batch larger than the topic's burst ([limits] topic_burst)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not a CloudEvents content type", body = Problem, content_type = "application/problem+json"),
        (status = 501, description = "expectedversion on a backend that cannot check it atomically (every backend but the embedded log)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The log stopped accepting writes (a failed fsync); restart needed", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "The disk is full; nothing written, retry once space is freed", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn publish(
    State(app): State<Shared>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<PublishResponse>), ApiError> {
    publish_to(&app, vec![topic], &headers, body).await
}

/// Publishes one event (or batch) to several topics at once: `?topic=a&topic=b`.
#[utoipa::path(
    post, path = "/v1/events", tag = "events",
    params(("topic" = Vec<String>, Query, description = "Target topics (repeat the parameter)")),
    request_body(
        description = "As for a single topic",
        content(
            (CloudEventDoc = "application/cloudevents+json"),
            (Vec<CloudEventDoc> = "application/cloudevents-batch+json"),
        )
    ),
    responses(
        (status = 201, description = "Stored durably in every topic", body = PublishResponse),
        (status = 200, description = "Every event was a duplicate", body = PublishResponse),
        (status = 400, description = "Invalid event(s) or no topic", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "A topic does not exist; nothing written", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An event's expectedversion is not its subject's version: nothing written (current_version in the problem)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large, or a batch larger than the topic's burst ([limits] topic_burst)", body = Problem, content_type = "application/problem+json"),
        (status = 501, description = "expectedversion on a backend that cannot check it atomically (every backend but the embedded log)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The log stopped accepting writes (a failed fsync); restart needed", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "The disk is full; nothing written, retry once space is freed", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn publish_multi(
    State(app): State<Shared>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<PublishResponse>), ApiError> {
    let topics = query_values(query.as_deref(), "topic");
    if topics.is_empty() {
        return Err(ApiError::invalid(
            "topic",
            "name at least one topic: /v1/events?topic=a&topic=b",
        ));
    }
    publish_to(&app, topics, &headers, body).await
}

/// Reads events by offset or by time, one partition or all.
#[utoipa::path(
    get, path = "/v1/topics/{topic}/events", tag = "events",
    params(("topic" = String, Path, description = "Topic name"), ReadQuery),
    responses(
        (status = 200, description = "Events and where to continue", body = ReadResponse),
        (status = 400, description = "Bad parameters", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such topic or partition", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn read_events(
    State(app): State<Shared>,
    Path(topic): Path<String>,
    query: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Json<ReadBody>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid("(query)", e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_READ_LIMIT);
    if limit == 0 || limit > MAX_READ_LIMIT {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    if q.from.is_some() && q.from_time.is_some() {
        return Err(ApiError::invalid(
            "from_time",
            "give from or from_time, not both",
        ));
    }
    let from_time = match &q.from_time {
        Some(t) => Some(parse_time("from_time", t)?),
        None => None,
    };
    let info = app.bus.describe_topic(&topic).await?;
    let partitions: Vec<u32> = match q.partition {
        Some(p) if p >= info.spec.partitions => {
            return Err(crmbus::LogError::PartitionNotFound {
                topic,
                partition: p,
            }
            .into())
        }
        Some(p) => vec![p],
        None => (0..info.spec.partitions).collect(),
    };
    let mut events = Vec::new();
    let mut next = BTreeMap::new();
    for p in partitions {
        let from = match from_time {
            Some(t) => app.bus.offset_for_time(&topic, p, t).await?,
            None => q.from.unwrap_or(0),
        };
        let room = limit - events.len();
        let mut cursor = from;
        if room > 0 {
            for s in app.bus.read(&topic, p, from, room).await? {
                cursor = s.offset + 1;
                events.push(ReadEvent {
                    partition: s.partition,
                    offset: s.offset,
                    appended_at: s.timestamp.to_rfc3339(),
                    event: s.event,
                });
            }
        }
        next.insert(p.to_string(), cursor);
    }
    Ok(Json(ReadBody { events, next }))
}

/// Reads one subject's events in order, with their versions (event sourcing: rebuild an
/// entity from its stream), served from the log's subject index.
#[utoipa::path(
    get, path = "/v1/topics/{topic}/subjects/{subject}/events", tag = "events",
    params(
        ("topic" = String, Path, description = "Topic name"),
        ("subject" = String, Path, description = "The subject (business key), such as deal-42"),
        SubjectReadQuery,
    ),
    responses(
        (status = 200, description = "The subject's events from from_version on, its current version, and where to continue", body = SubjectEventsResponse,
            headers(("ETag" = String, description = "The subject's current version, quoted (\"3\"): send it back as If-Match to publish only if nothing was appended since"))),
        (status = 400, description = "Bad parameters", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such topic", body = Problem, content_type = "application/problem+json"),
        (status = 501, description = "The backend keeps no per-subject streams (every backend but the embedded log)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn read_subject(
    State(app): State<Shared>,
    Path((topic, subject)): Path<(String, String)>,
    query: Result<Query<SubjectReadQuery>, QueryRejection>,
) -> Result<([(axum::http::HeaderName, String); 1], Json<SubjectBody>), ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid("(query)", e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_READ_LIMIT);
    if limit == 0 || limit > MAX_READ_LIMIT {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let from = q.from_version.unwrap_or(1);
    if from == 0 {
        return Err(ApiError::invalid(
            "from_version",
            "versions start at 1 (a subject's first event)",
        ));
    }
    let read = app.bus.read_subject(&topic, &subject, from, limit).await?;
    let next_version = read
        .events
        .last()
        .map_or(from.max(read.version + 1), |e| e.version + 1);
    let etag = [(axum::http::header::ETAG, format!("\"{}\"", read.version))];
    Ok((
        etag,
        Json(SubjectBody {
            topic,
            subject,
            version: read.version,
            events: read
                .events
                .into_iter()
                .map(|e| SubjectEventBody {
                    version: e.version,
                    partition: e.stored.partition,
                    offset: e.stored.offset,
                    appended_at: e.stored.timestamp.to_rfc3339(),
                    event: e.stored.event,
                })
                .collect(),
            next_version,
        }),
    ))
}
