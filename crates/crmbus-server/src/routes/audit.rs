//! `GET /v1/audit`: the server's audit log (admin).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use crmbus_api::{AuditLogPage, AuditLogQuery};

use crate::audit::MAX_PAGE;
use crate::problem::{ApiError, Problem};
use crate::state::Shared;

/// Entries in a page when the query does not say.
const DEFAULT_PAGE: u64 = 100;

/// Reads the audit log, oldest first, a page at a time: every admin action, dead-letter
/// redrive and discard, key change, and burst of refused requests, with who, when and
/// from where.
#[utoipa::path(
    get, path = "/v1/audit", tag = "audit",
    params(AuditLogQuery),
    responses(
        (status = 200, description = "A page of entries", body = AuditLogPage),
        (status = 400, description = "A bad `limit` or query", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_audit_log(
    State(app): State<Shared>,
    query: Result<Query<AuditLogQuery>, QueryRejection>,
) -> Result<Json<AuditLogPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid("(query)", e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE as u64 {
        return Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        ));
    }
    Ok(Json(
        app.audit.page(q.after.as_deref(), limit as usize).await?,
    ))
}
