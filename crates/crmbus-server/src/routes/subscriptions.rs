//! Subscriptions: create, list, show, delete, pull, ack, nack, seek; a webhook target's
//! secret rotation and its enabling after a 410.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use crmbus::delivery::SeekTo;
use serde_json::Value;

use crate::api::{
    whole, AckRequest, AckResponse, CreateSubscriptionRequest, NackRequest, PullRequest,
    PullResponse, RotateSecretRequest, SeekRequest, SeekResponse, SubscriptionList,
    SubscriptionView,
};
use crate::cluster::{ack_owner, FORWARDED_HEADER};
use crate::extract::{json_body, parse_time};
use crate::problem::{ApiError, Problem};
use crate::render::{PullBody, PulledDelivery};
use crate::state::Shared;

/// Largest `max_events` and `wait_ms` of a pull.
const MAX_PULL_EVENTS: usize = 1000;
const MAX_WAIT_MS: u64 = 30_000;

/// Creates a pull subscription (a consumer group) on a topic.
#[utoipa::path(
    post, path = "/v1/topics/{topic}/subscriptions", tag = "subscriptions",
    params(("topic" = String, Path, description = "Topic name")),
    request_body = CreateSubscriptionRequest,
    responses(
        (status = 201, description = "Created and running", body = SubscriptionView),
        (status = 400, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such topic", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A subscription of that name exists", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_subscription(
    State(app): State<Shared>,
    Path(topic): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<SubscriptionView>), ApiError> {
    let req: CreateSubscriptionRequest = json_body(body)?;
    let view = app.subs.create(&topic, req).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Lists every subscription with its status.
#[utoipa::path(
    get, path = "/v1/subscriptions", tag = "subscriptions",
    responses((status = 200, description = "Every subscription", body = SubscriptionList))
)]
pub async fn list_subscriptions(
    State(app): State<Shared>,
) -> Result<Json<SubscriptionList>, ApiError> {
    Ok(Json(SubscriptionList {
        subscriptions: app.subs.list().await?,
    }))
}

/// Shows a subscription: configuration, lag per partition, in flight, parked keys, DLQ size.
#[utoipa::path(
    get, path = "/v1/subscriptions/{name}", tag = "subscriptions",
    params(("name" = String, Path, description = "Subscription name")),
    responses(
        (status = 200, description = "The subscription", body = SubscriptionView),
        (status = 404, description = "No such subscription", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_subscription(
    State(app): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<SubscriptionView>, ApiError> {
    Ok(Json(app.subs.get(&name).await?))
}

/// Deletes a subscription and its state (retry schedule, dead letters).
#[utoipa::path(
    delete, path = "/v1/subscriptions/{name}", tag = "subscriptions",
    params(("name" = String, Path, description = "Subscription name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such subscription", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_subscription(
    State(app): State<Shared>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.subs.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pulls deliveries, each leased for the subscription's `ack_timeout_ms`; waits up to
/// `wait_ms` for the first (long poll).
#[utoipa::path(
    post, path = "/v1/subscriptions/{name}/pull", tag = "subscriptions",
    params(("name" = String, Path, description = "Subscription name")),
    request_body = PullRequest,
    responses(
        (status = 200, description = "Deliveries (possibly none)", body = PullResponse),
        (status = 400, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn pull(
    State(app): State<Shared>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: PullRequest = json_body(body)?;
    let max = req.max_events.unwrap_or(10);
    if max == 0 || max > MAX_PULL_EVENTS {
        return Err(ApiError::invalid(
            "max_events",
            "must be between 1 and 1000",
        ));
    }
    let wait = req.wait_ms.unwrap_or(0);
    if wait > MAX_WAIT_MS {
        return Err(ApiError::invalid("wait_ms", "must be at most 30000"));
    }
    let (queue, transform) = app.subs.queue(&name).await?;
    let mut stopping = app.stopping.clone();
    let leased = tokio::select! {
        l = queue.pull(max, Duration::from_millis(wait)) => l,
        _ = stopping.wait_for(|s| *s) => Vec::new(),
    };
    let body = PullBody {
        deliveries: leased
            .into_iter()
            .map(|l| PulledDelivery {
                body: transform
                    .as_ref()
                    .map(|t| t.apply(&l.delivery.event.to_json_value())),
                ack_id: l.ack_id,
                attempt: l.delivery.attempt,
                partition: l.delivery.partition,
                offset: l.delivery.offset,
                event: l.delivery.event,
                stored_json: l.delivery.stored_json,
            })
            .collect(),
    }
    .to_json_vec()
    .map_err(|e| {
        // Not reachable with JSON values; the leases expire and the deliveries come again.
        ApiError::new(
            crmbus::ErrorCode::BackendError,
            format!("cannot write the pull body: {e}"),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Acknowledges deliveries.
#[utoipa::path(
    post, path = "/v1/subscriptions/{name}/ack", tag = "subscriptions",
    params(("name" = String, Path, description = "Subscription name")),
    request_body = AckRequest,
    responses(
        (status = 200, description = "Settled, and the ids that were not leased", body = AckResponse),
        (status = 400, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn ack(
    State(app): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AckResponse>, ApiError> {
    let req: AckRequest = json_body(body)?;
    let (local, remote) = split_by_server(&app, &headers, &req.ack_ids);
    let (queue, _) = app.subs.queue(&name).await?;
    let s = queue.ack(&local);
    let mut out = AckResponse {
        settled: local.len() - s.unknown.len(),
        unknown: s.unknown,
        stale: s.stale,
    };
    for (member, ids) in remote {
        let body = serde_json::json!({ "ack_ids": ids });
        forward_settle(&app, &headers, &member, &name, "ack", body, &mut out).await?;
    }
    Ok(Json(out))
}

/// Splits ack ids into this server's and, in a cluster, those another server handed out
/// (by member id). A request another server forwarded is never forwarded again.
fn split_by_server(
    app: &Shared,
    headers: &HeaderMap,
    ack_ids: &[String],
) -> (Vec<String>, BTreeMap<String, Vec<String>>) {
    let mut local = Vec::new();
    let mut remote: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let cluster = app
        .subs
        .cluster()
        .filter(|_| !headers.contains_key(FORWARDED_HEADER));
    for id in ack_ids {
        match (cluster, ack_owner(id)) {
            (Some(c), Some(owner)) if owner != c.id() => {
                remote
                    .entry(owner.to_string())
                    .or_default()
                    .push(id.clone());
            }
            _ => local.push(id.clone()),
        }
    }
    (local, remote)
}

/// Sends an ack or nack to the server that handed the deliveries out and adds its answer
/// to `out`.
async fn forward_settle(
    app: &Shared,
    headers: &HeaderMap,
    member: &str,
    name: &str,
    action: &str,
    body: Value,
    out: &mut AckResponse,
) -> Result<(), ApiError> {
    let Some(cluster) = app.subs.cluster() else {
        return Ok(());
    };
    match cluster
        .forward_settle(
            member,
            name,
            action,
            body.clone(),
            headers.get(axum::http::header::AUTHORIZATION),
        )
        .await
    {
        Ok(r) => {
            out.settled += r.settled;
            out.unknown.extend(r.unknown);
            out.stale.extend(r.stale);
        }
        Err(e) => {
            // The server that handed them out is gone or unreachable: its leases on them
            // end with it, and they are delivered again. Reported per id, so the other
            // ids of the request still settle.
            tracing::warn!(member, error = %e.detail, "forwarding a settlement");
            let ids = body["ack_ids"].as_array().cloned().unwrap_or_default();
            out.unknown
                .extend(ids.iter().filter_map(|v| v.as_str().map(String::from)));
        }
    }
    Ok(())
}

/// Rejects deliveries: each is delivered again after `delay_ms` (or the retry backoff),
/// as a new attempt; when attempts run out it goes to the DLQ with `error`.
#[utoipa::path(
    post, path = "/v1/subscriptions/{name}/nack", tag = "subscriptions",
    params(("name" = String, Path, description = "Subscription name")),
    request_body = NackRequest,
    responses(
        (status = 200, description = "Settled, and the ids that were not leased", body = AckResponse),
        (status = 400, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn nack(
    State(app): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AckResponse>, ApiError> {
    let req: NackRequest = json_body(body)?;
    let (local, remote) = split_by_server(&app, &headers, &req.ack_ids);
    let (queue, _) = app.subs.queue(&name).await?;
    let error = req.error.as_deref().unwrap_or("nacked by the client");
    let s = queue.nack(&local, req.delay_ms.map(Duration::from_millis), error);
    let mut out = AckResponse {
        settled: local.len() - s.unknown.len(),
        unknown: s.unknown,
        stale: s.stale,
    };
    for (member, ids) in remote {
        let body = serde_json::to_value(NackRequest {
            ack_ids: ids,
            delay_ms: req.delay_ms,
            error: req.error.clone(),
        })
        .unwrap_or(Value::Null);
        forward_settle(&app, &headers, &member, &name, "nack", body, &mut out).await?;
    }
    Ok(Json(out))
}

/// Reads the `to` of a seek request.
pub fn seek_target(to: &Value) -> Result<SeekTo, ApiError> {
    let bad = || {
        ApiError::invalid(
            "to",
            "must be \"earliest\", \"latest\", {\"time\": \"<RFC 3339>\"} or {\"offsets\": {\"<partition>\": <offset>}}",
        )
    };
    match to {
        Value::String(s) if s == "earliest" => Ok(SeekTo::Earliest),
        Value::String(s) if s == "latest" => Ok(SeekTo::Latest),
        Value::Object(m) if m.len() == 1 => {
            if let Some(t) = m.get("time") {
                let t = t.as_str().ok_or_else(bad)?;
                return Ok(SeekTo::Time(parse_time("to.time", t)?));
            }
            let offsets = m
                .get("offsets")
                .and_then(Value::as_object)
                .ok_or_else(bad)?;
            let mut out = BTreeMap::new();
            for (p, o) in offsets {
                let p: u32 = p.parse().map_err(|_| {
                    ApiError::invalid("to.offsets", format!("'{p}' is not a partition number"))
                })?;
                let o = o.as_number().and_then(whole::number_u64).ok_or_else(|| {
                    ApiError::invalid(
                        &format!("to.offsets.{p}"),
                        "must be an offset (integer ≥ 0)",
                    )
                })?;
                out.insert(p, o);
            }
            Ok(SeekTo::Offsets(out))
        }
        _ => Err(bad()),
    }
}

/// Moves the subscription's cursor (replay or skip): to the earliest or latest event, to
/// a time, or to offsets. Leased deliveries are released.
#[utoipa::path(
    post, path = "/v1/subscriptions/{name}/seek", tag = "subscriptions",
    params(("name" = String, Path, description = "Subscription name")),
    request_body = SeekRequest,
    responses(
        (status = 200, description = "The new cursor", body = SeekResponse),
        (status = 400, description = "Invalid target", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription or partition", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An offset past the end of its partition (`offset_out_of_range`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn seek(
    State(app): State<Shared>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SeekResponse>, ApiError> {
    let req: SeekRequest = json_body(body)?;
    let to = seek_target(&req.to)?;
    let partitions = app.subs.seek(&name, to).await?;
    Ok(Json(SeekResponse { partitions }))
}

/// Rotates a webhook target's signing secret: the new one (given, or generated) signs
/// from now on, the old one beside it for `overlap_ms` (default `[push]
/// secret_overlap_ms`, one day), so receivers can switch without losing a delivery. The
/// answer shows the new secret, once. Audited.
#[utoipa::path(
    put, path = "/v1/subscriptions/{name}/secret", tag = "subscriptions",
    params(("name" = String, Path, description = "Subscription name")),
    request_body = RotateSecretRequest,
    responses(
        (status = 200, description = "The subscription, its new secret in full", body = SubscriptionView),
        (status = 400, description = "An invalid secret or overlap", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription, or it has no webhook target", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn rotate_secret(
    State(app): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SubscriptionView>, ApiError> {
    let req: RotateSecretRequest = json_body(body)?;
    let who = crate::routes::dlq::actor(&headers);
    Ok(Json(app.subs.rotate_secret(&name, req, &who).await?))
}

/// Enables a webhook target that was disabled when its receiver answered 410 Gone: its
/// deliveries start again where they stopped. Audited. Nothing changes for a target that
/// is not disabled (or not a webhook).
#[utoipa::path(
    post, path = "/v1/subscriptions/{name}/enable", tag = "subscriptions",
    params(("name" = String, Path, description = "Subscription name")),
    responses(
        (status = 200, description = "The subscription", body = SubscriptionView),
        (status = 404, description = "No such subscription", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn enable(
    State(app): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<SubscriptionView>, ApiError> {
    let who = crate::routes::dlq::actor(&headers);
    Ok(Json(app.subs.enable(&name, &who).await?))
}
