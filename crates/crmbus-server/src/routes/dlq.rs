//! A subscription's dead-letter queue: list, show, redrive, discard (audited).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use crmbus::delivery::DlqFilter;
use crmbus::ErrorCode;

use crate::api::{
    AuditEntryView, AuditList, DlqEntryView, DlqList, DlqQuery, RedriveRequest, RedriveResponse,
};
use crate::cluster::FORWARDED_HEADER;
use crate::extract::json_body;
use crate::problem::{ApiError, Problem};
use crate::state::Shared;
use crate::subscriptions::{dlq_filter, dlq_view};

/// Another server's refusal of a forwarded request, as this server's answer.
fn forwarded_error(status: u16, answer: &serde_json::Value) -> ApiError {
    let detail = answer["detail"].as_str().unwrap_or("no detail").to_string();
    let code = serde_json::from_value::<ErrorCode>(answer["code"].clone())
        .unwrap_or(ErrorCode::Unavailable);
    ApiError::new(code, format!("another server answered {status}: {detail}"))
}

/// Who an operator action is audited as: the `x-crmbus-actor` header, else `http`.
pub(crate) fn actor(headers: &HeaderMap) -> String {
    headers
        .get("x-crmbus-actor")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .unwrap_or("http")
        .to_string()
}

/// The audit log: every redrive and discard of the subscription's dead letters, with who
/// did it, oldest first.
#[utoipa::path(
    get, path = "/v1/subscriptions/{name}/audit", tag = "dead letters",
    params(("name" = String, Path, description = "Subscription name")),
    responses(
        (status = 200, description = "The audited actions", body = AuditList),
        (status = 404, description = "No such subscription", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_audit(
    State(app): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<AuditList>, ApiError> {
    let records = app.subs.audit_log(&name).await?;
    Ok(Json(AuditList {
        entries: records
            .into_iter()
            .map(|r| AuditEntryView {
                at: crate::render::rfc3339(r.at_us),
                who: r.who,
                action: r.action,
                entry: r.entry,
                event_id: r.event_id,
                event_type: r.event_type,
                detail: r.detail,
            })
            .collect(),
    }))
}

/// Lists dead letters, optionally filtered by type pattern, error text and time.
#[utoipa::path(
    get, path = "/v1/subscriptions/{name}/dlq", tag = "dead letters",
    params(("name" = String, Path, description = "Subscription name"), DlqQuery),
    responses(
        (status = 200, description = "Dead letters", body = DlqList),
        (status = 400, description = "Bad filter", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_dlq(
    State(app): State<Shared>,
    Path(name): Path<String>,
    query: Result<Query<DlqQuery>, QueryRejection>,
) -> Result<Json<DlqList>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid("(query)", e.body_text()))?;
    let entries = app.subs.dead_letters(&name, dlq_filter(&q)?).await?;
    Ok(Json(DlqList {
        entries: entries.iter().map(dlq_view).collect(),
    }))
}

/// Shows one dead letter: the event, attempts, last error, times.
#[utoipa::path(
    get, path = "/v1/subscriptions/{name}/dlq/{entry}", tag = "dead letters",
    params(
        ("name" = String, Path, description = "Subscription name"),
        ("entry" = String, Path, description = "Entry id, `<partition>-<offset>`"),
    ),
    responses(
        (status = 200, description = "The entry", body = DlqEntryView),
        (status = 404, description = "No such subscription or entry", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_dlq_entry(
    State(app): State<Shared>,
    Path((name, entry)): Path<(String, String)>,
) -> Result<Json<DlqEntryView>, ApiError> {
    let entries = app.subs.dead_letters(&name, DlqFilter::default()).await?;
    entries
        .iter()
        .find(|d| d.id == entry)
        .map(|d| Json(dlq_view(d)))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::DlqEntryNotFound,
                format!("subscription '{name}' has no dead letter '{entry}'"),
            )
        })
}

/// Redrives dead letters — given entries, those a filter selects, or all — for delivery
/// again; audited.
#[utoipa::path(
    post, path = "/v1/subscriptions/{name}/dlq/redrive", tag = "dead letters",
    params(("name" = String, Path, description = "Subscription name")),
    request_body = RedriveRequest,
    responses(
        (status = 200, description = "How many were redriven", body = RedriveResponse),
        (status = 400, description = "Not exactly one of entries, filter, all", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn redrive_dlq(
    State(app): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RedriveResponse>, ApiError> {
    let req: RedriveRequest = json_body(body)?;
    let chosen = [
        req.entries.is_some(),
        req.filter.is_some(),
        req.all == Some(true),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if chosen != 1 {
        return Err(ApiError::invalid(
            "(body)",
            "give exactly one of entries, filter, or all: true",
        ));
    }
    let filter = match &req.filter {
        Some(q) => dlq_filter(q)?,
        None => DlqFilter::default(),
    };
    let who = actor(&headers);
    let body = serde_json::to_value(&req).unwrap_or(serde_json::Value::Null);
    let mut redriven = app.subs.redrive(&name, req.entries, filter, &who).await?;
    // In a cluster each server redrives the dead letters of the partitions it owns.
    if let Some(cluster) = app.subs.cluster() {
        if !headers.contains_key(FORWARDED_HEADER) {
            let path = format!("/v1/subscriptions/{name}/dlq/redrive");
            for (status, answer) in cluster
                .forward_to_others(
                    reqwest::Method::POST,
                    &path,
                    Some(&body),
                    &who,
                    headers.get(axum::http::header::AUTHORIZATION),
                )
                .await?
            {
                if status != 200 {
                    return Err(forwarded_error(status, &answer));
                }
                redriven += answer["redriven"].as_u64().unwrap_or(0) as usize;
            }
        }
    }
    Ok(Json(RedriveResponse { redriven }))
}

/// Discards a dead letter (audited); a held key moves on.
#[utoipa::path(
    delete, path = "/v1/subscriptions/{name}/dlq/{entry}", tag = "dead letters",
    params(
        ("name" = String, Path, description = "Subscription name"),
        ("entry" = String, Path, description = "Entry id, `<partition>-<offset>`"),
    ),
    responses(
        (status = 204, description = "Discarded"),
        (status = 404, description = "No such subscription or entry", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn discard_dlq_entry(
    State(app): State<Shared>,
    Path((name, entry)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let who = actor(&headers);
    if app.subs.discard(&name, &entry, &who).await? {
        return Ok(StatusCode::NO_CONTENT);
    }
    // In a cluster the server owning the entry's partition discards it.
    let mut found = false;
    if let Some(cluster) = app.subs.cluster() {
        if !headers.contains_key(FORWARDED_HEADER) {
            let path = format!("/v1/subscriptions/{name}/dlq/{entry}");
            for (status, answer) in cluster
                .forward_to_others(
                    reqwest::Method::DELETE,
                    &path,
                    None,
                    &who,
                    headers.get(axum::http::header::AUTHORIZATION),
                )
                .await?
            {
                match status {
                    204 => found = true,
                    404 => {}
                    _ => return Err(forwarded_error(status, &answer)),
                }
            }
        }
    }
    if found {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            ErrorCode::DlqEntryNotFound,
            format!("subscription '{name}' has no dead letter '{entry}'"),
        ))
    }
}
