//! Operations: liveness, readiness, Prometheus metrics, and the problem answer for unknown
//! routes. (`/openapi.json` is served by the module that builds the document.)

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use crmbus::ErrorCode;

use crate::api::{ClusterMemberView, ClusterView, Health, PartitionOwnerView};
use crate::problem::{ApiError, Problem};
use crate::state::Shared;

/// Liveness: the process answers.
#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health))
)]
pub async fn healthz(State(app): State<Shared>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        backend: app.bus.backend_name().into(),
    })
}

/// Readiness: the log is open and answers, and the state store takes a write.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready: stopping, or the storage fails", body = Health),
    )
)]
pub async fn readyz(State(app): State<Shared>) -> Response {
    let backend = app.bus.backend_name().to_string();
    let not_ready = |status: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status,
                backend: backend.clone(),
            }),
        )
            .into_response()
    };
    if *app.stopping.borrow() {
        return not_ready("stopping".into());
    }
    if let Err(e) = app.bus.list_topics().await {
        return not_ready(format!("log: {e}"));
    }
    let stamp = chrono::Utc::now().to_rfc3339().into_bytes();
    if let Err(e) = app.bus.state().put("server/readyz", "probe", stamp).await {
        return not_ready(format!("state store: {e}"));
    }
    (
        StatusCode::OK,
        Json(Health {
            status: "ok".into(),
            backend: backend.clone(),
        }),
    )
        .into_response()
}

/// Metrics in the Prometheus text format.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
pub async fn metrics() -> Response {
    match crate::metrics::render() {
        Some(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text,
        )
            .into_response(),
        None => ApiError::new(
            ErrorCode::Unavailable,
            "another metrics recorder was installed in this process",
        )
        .into_response(),
    }
}

/// Unknown routes: a problem document.
pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route; see /openapi.json")
}

/// The servers sharing this server's backend, their leases, and which server drives each
/// subscription partition.
#[utoipa::path(
    get, path = "/v1/cluster", tag = "operations",
    responses(
        (status = 200, description = "The cluster as this server sees it", body = ClusterView),
        (status = 503, description = "The backend cannot be read", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cluster(State(app): State<Shared>) -> Result<Json<ClusterView>, ApiError> {
    let Some(cluster) = app.subs.cluster() else {
        return Ok(Json(ClusterView {
            enabled: false,
            member: None,
            members: Vec::new(),
            partitions: Vec::new(),
        }));
    };
    let leases = cluster.leases().await?;
    let mut members = Vec::new();
    let mut partitions = Vec::new();
    for l in &leases {
        if let Some(rest) = l.name.strip_prefix("part/") {
            let Some((sub, p)) = rest.rsplit_once('/') else {
                continue;
            };
            let Ok(partition) = p.parse::<u32>() else {
                continue;
            };
            partitions.push(PartitionOwnerView {
                subscription: sub.to_string(),
                partition,
                owner: l.holder.clone(),
                token: l.token,
                expires_in_ms: l.expires_in_ms,
            });
        }
    }
    partitions.sort_by(|a, b| (&a.subscription, a.partition).cmp(&(&b.subscription, b.partition)));
    for l in leases.iter().filter(|l| l.name.starts_with("member/")) {
        let Ok(m) = serde_json::from_str::<crate::cluster::Member>(&l.data) else {
            continue;
        };
        members.push(ClusterMemberView {
            owned_partitions: partitions.iter().filter(|p| p.owner == m.id).count(),
            id: m.id,
            url: m.url,
            token: l.token,
            expires_in_ms: l.expires_in_ms,
        });
    }
    members.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(ClusterView {
        enabled: true,
        member: Some(cluster.id().to_string()),
        members,
        partitions,
    }))
}
