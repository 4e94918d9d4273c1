//! `/v1/topics`: create, list, describe, delete.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use crmbus::{Retention, TopicInfo, TopicSpec};

use crate::api::{
    CreateTopicRequest, OffsetRangeView, PartitionView, RetentionBody, TopicList, TopicView,
};
use crate::extract::json_body;
use crate::problem::{ApiError, Problem};
use crate::state::Shared;

/// A topic as the API shows it.
pub fn topic_view(app: &Shared, info: &TopicInfo) -> TopicView {
    TopicView {
        name: info.spec.name.clone(),
        partitions: info.spec.partitions,
        // The spec says so, or (data written by older servers) the legacy record did.
        require_schemas: info.spec.require_schemas || app.bus.requires_schemas(&info.spec.name),
        retention: RetentionBody {
            max_age_ms: info.spec.retention.max_age.map(|d| d.as_millis() as u64),
            max_bytes: info.spec.retention.max_bytes,
        },
        events: info.event_count(),
        partition_info: info
            .partition_info
            .iter()
            .map(|p| PartitionView {
                partition: p.partition,
                first_offset: p.first_offset,
                next_offset: p.next_offset,
                events: p.next_offset - p.first_offset,
                corrupt: p
                    .corrupt
                    .iter()
                    .map(|r| OffsetRangeView {
                        first: r.first,
                        count: r.count,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Creates a topic.
#[utoipa::path(
    post, path = "/v1/topics", tag = "topics",
    request_body = CreateTopicRequest,
    responses(
        (status = 201, description = "Created", body = TopicView),
        (status = 400, description = "Invalid name, partitions or retention", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A topic of that name exists", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_topic(
    State(app): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<TopicView>), ApiError> {
    let req: CreateTopicRequest = json_body(body)?;
    let partitions = req
        .partitions
        .unwrap_or(app.config.server.default_partitions);
    if partitions == 0 || partitions > 4096 {
        return Err(ApiError::invalid(
            "partitions",
            "must be between 1 and 4096",
        ));
    }
    crmbus::log::validate_topic_name(&req.name)
        .map_err(|_| ApiError::invalid("name", "must be 1–200 characters of A–Z a–z 0–9 . _ -"))?;
    let retention = req.retention.unwrap_or_default();
    let mut spec = TopicSpec::new(req.name, partitions).with_retention(Retention {
        max_age: retention.max_age_ms.map(Duration::from_millis),
        max_bytes: retention.max_bytes,
    });
    // Part of the spec: written with the topic, in one step.
    spec.require_schemas = req.require_schemas;
    let info = app.bus.create_topic(spec).await?;
    Ok((StatusCode::CREATED, Json(topic_view(&app, &info))))
}

/// Lists every topic.
#[utoipa::path(
    get, path = "/v1/topics", tag = "topics",
    responses((status = 200, description = "Every topic", body = TopicList))
)]
pub async fn list_topics(State(app): State<Shared>) -> Result<Json<TopicList>, ApiError> {
    let topics = app.bus.list_topics().await?;
    Ok(Json(TopicList {
        topics: topics.iter().map(|t| topic_view(&app, t)).collect(),
    }))
}

/// Describes a topic: partitions, first and next offsets, counts.
#[utoipa::path(
    get, path = "/v1/topics/{topic}", tag = "topics",
    params(("topic" = String, Path, description = "Topic name")),
    responses(
        (status = 200, description = "The topic", body = TopicView),
        (status = 404, description = "No such topic", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_topic(
    State(app): State<Shared>,
    Path(topic): Path<String>,
) -> Result<Json<TopicView>, ApiError> {
    let info = app.bus.describe_topic(&topic).await?;
    Ok(Json(topic_view(&app, &info)))
}

/// Deletes a topic with its events and its subscriptions.
#[utoipa::path(
    delete, path = "/v1/topics/{topic}", tag = "topics",
    params(("topic" = String, Path, description = "Topic name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such topic", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_topic(
    State(app): State<Shared>,
    Path(topic): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.bus.describe_topic(&topic).await?;
    app.subs.delete_topic(&topic).await?;
    app.bus.delete_topic(&topic).await?;
    crate::legacy::forget_require_schemas(&app.bus, &topic).await?;
    Ok(StatusCode::NO_CONTENT)
}
