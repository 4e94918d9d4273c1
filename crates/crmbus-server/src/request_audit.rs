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
    // Cheap copies only (the method, the URI's shared bytes, the address): most requests
    // (publishes, pulls, reads) are neither audited nor refused, and pay for nothing more.
    let method = req.method().clone();
    let uri = req.uri().clone();
    let from = req
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|c| c.0 .0.ip());
    let template = matched.as_ref().map_or("", MatchedPath::as_str);
    let audit_this = audited(method.as_str(), template);
    // What only an audited request's entry needs, read before the request moves on.
    let (forwarded_by, claimed) = if audit_this {
        let forwarded_by = req.headers().get(FORWARDED_HEADER).map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .take(64)
                .collect::<String>()
        });
        // Without a key (none needed), the name the caller gives is all there is.
        let claimed = req
            .headers()
            .get("x-crmbus-actor")
            .and_then(|v| v.to_str().ok())
            .filter(|c| !c.is_empty())
            .map(|c| format!("anonymous ({c})"));
        (forwarded_by, claimed)
    } else {
        (None, None)
    };
    let resp = next.run(req).await;
    let status = resp.status();
    let action = if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        let action = format!("{method} {template}");
        let from = from.map(|ip| ip.to_string());
        app.audit
            .refused(from.as_deref(), status.as_u16(), &action, uri.path())
    } else if status.is_success() && audit_this {
        let caller = resp.extensions().get::<Caller>();
        Some(Action {
            actor: match caller {
                Some(c) => c.actor.clone(),
                None => claimed.unwrap_or_else(|| "anonymous".to_string()),
            },
            key_id: caller.map(|c| c.key.id.clone()),
            action: format!("{method} {template}"),
            path: uri.path().to_string(),
            status: status.as_u16(),
            from: from.map(|ip| ip.to_string()),
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
