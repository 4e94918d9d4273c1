//! The audit layer: around the request check ([`crate::request_auth`]), it writes an
//! audit entry for every successful request to an audited route
//! ([`crate::auth::rules::audited`]) and counts refused ones (401, 403) per address, an
//! entry for each burst ([`crate::audit::AuditLog::refused`]). A request marked as
//! forwarded by another server is audited all the same, with that said in its detail: the
//! mark is a header anyone could send, so it must not hide what a request did.

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use crate::audit::Action;
use crate::auth::rules::audited;
use crate::cluster::FORWARDED_HEADER;
use crate::listener::ClientAddr;
use crate::request_auth::Caller;
use crate::state::Shared;

/// Records what the request did (see the module's documentation).
pub async fn record(
    State(app): State<Shared>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let forwarded_by = req.headers().get(FORWARDED_HEADER).map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .chars()
            .take(64)
            .collect::<String>()
    });
    let template = matched.map(|m| m.as_str().to_string()).unwrap_or_default();
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let from = req
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|c| c.0 .0.ip().to_string());
    // Without a key (none needed), the name the caller gives is all there is.
    let claimed = req
        .headers()
        .get("x-crmbus-actor")
        .and_then(|v| v.to_str().ok())
        .filter(|c| !c.is_empty())
        .map(|c| format!("anonymous ({c})"));
    let resp = next.run(req).await;
    let status = resp.status();
    let action = if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        let action = format!("{method} {template}");
        app.audit
            .refused(from.as_deref(), status.as_u16(), &action, &path)
    } else if status.is_success() && audited(&method, &template) {
        let caller = resp.extensions().get::<Caller>();
        Some(Action {
            actor: match caller {
                Some(c) => c.actor.clone(),
                None => claimed.unwrap_or_else(|| "anonymous".to_string()),
            },
            key_id: caller.map(|c| c.key.id.clone()),
            action: format!("{method} {template}"),
            path,
            status: status.as_u16(),
            from,
            detail: forwarded_by
                .map(|m| format!("marked as forwarded by server {m}"))
                .unwrap_or_default(),
        })
    } else {
        None
    };
    if let Some(a) = action {
        // The action is done; a log that cannot be written is reported, not undone.
        if let Err(e) = app.audit.record(a).await {
            tracing::error!(error = %e, "cannot write an audit entry");
            metrics::counter!("crmbus_audit_write_failures_total").increment(1);
        }
    }
    resp
}
