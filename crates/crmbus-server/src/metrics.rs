//! Prometheus metrics: the process-wide recorder, the `/metrics` rendering, and the
//! per-request counters (by route template and status).

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's metrics recorder (once; later calls
/// and servers share it). If another recorder was installed first, `/metrics` says so.
pub fn install() {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0,
            ])
            .map(|b| b.build_recorder());
        match recorder {
            Ok(recorder) => {
                let handle = recorder.handle();
                match metrics::set_global_recorder(recorder) {
                    Ok(()) => Some(handle),
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
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(
        "crmbus_http_requests_total",
        "route" => route.clone(),
        "method" => method,
        "status" => status
    )
    .increment(1);
    metrics::histogram!("crmbus_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
