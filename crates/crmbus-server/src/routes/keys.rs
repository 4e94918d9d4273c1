//! `/v1/keys`: API keys — create (the key shown once), list (without secrets), revoke.
//! `admin` scope; while a server in `auto` mode has no working key, anyone who reaches
//! it (on loopback) may create the first.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use axum::Json;
use crmbus::ErrorCode;

use crate::api::{CreateKeyRequest, CreatedKey, KeyList, KeyView, WhoAmI};
use crate::auth::keys::KeyRecord;
use crate::auth::scope::Scope;
use crate::config::AuthMode;
use crate::extract::{json_body, parse_time};
use crate::problem::{ApiError, Problem};
use crate::request_auth::Caller;
use crate::state::Shared;

use crate::render::rfc3339;

/// A key as listed.
fn key_view(r: &KeyRecord) -> KeyView {
    KeyView {
        id: r.id.clone(),
        name: r.name.clone(),
        scopes: r.scopes.clone(),
        created_at: rfc3339(r.created_at_us),
        expires_at: r.expires_at_us.map(rfc3339),
        revoked_at: r.revoked_at_us.map(rfc3339),
    }
}

/// Creates an API key with its scopes; the answer holds the key, shown this once.
#[utoipa::path(
    post, path = "/v1/keys", tag = "keys",
    request_body = CreateKeyRequest,
    responses(
        (status = 201, description = "The key, shown this once", body = CreatedKey),
        (status = 400, description = "An invalid name, scope or expiry", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the admin scope", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_key(
    State(app): State<Shared>,
    caller: Option<Extension<Caller>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let req: CreateKeyRequest = json_body(body)?;
    // Let through without a key: the first key, made one at a time, and only while none
    // exists (another request may have made it since this one was checked).
    let _bootstrap = match (&caller, app.auth.mode()) {
        (None, AuthMode::Auto) => {
            let guard = app.auth.bootstrap.lock().await;
            if app.auth.keys.any_exists().await? {
                return Err(ApiError::new(
                    ErrorCode::Unauthorized,
                    "a key exists now: making another needs an admin key (Authorization: Bearer crmbus_…)",
                ));
            }
            Some(guard)
        }
        _ => None,
    };
    let mut scopes = Vec::new();
    for s in &req.scopes {
        scopes.push(
            s.parse::<Scope>()
                .map_err(|e| ApiError::invalid("scopes", e.to_string()))?,
        );
    }
    let expires = match &req.expires_at {
        Some(t) => Some(parse_time("expires_at", t)?.timestamp_micros()),
        None => None,
    };
    let now = app.auth.clock().now_micros();
    let made = app
        .auth
        .keys
        .create(&req.name, &scopes, expires, now)
        .await
        .map_err(|e| match e {
            crmbus::LogError::InvalidArgument(m) => {
                let field = if m.contains("name") {
                    "name"
                } else if m.contains("expiry") {
                    "expires_at"
                } else {
                    "scopes"
                };
                ApiError::invalid(field, m)
            }
            e => e.into(),
        })?;
    app.auth.changed();
    tracing::info!(key = %made.record.id, name = %made.record.name, scopes = ?made.record.scopes, "API key created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: made.key,
            view: key_view(&made.record),
        }),
    ))
}

/// Lists every API key (revoked ones included), without secrets.
#[utoipa::path(
    get, path = "/v1/keys", tag = "keys",
    responses(
        (status = 200, description = "Every key", body = KeyList),
        (status = 401, description = "No valid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the admin scope", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_keys(State(app): State<Shared>) -> Result<Json<KeyList>, ApiError> {
    let keys = app.auth.keys.list().await?;
    Ok(Json(KeyList {
        keys: keys.iter().map(key_view).collect(),
    }))
}

/// Revokes an API key: it stops working at once (on every server within a second).
#[utoipa::path(
    delete, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No valid key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the admin scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such key", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn revoke_key(
    State(app): State<Shared>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let now = app.auth.clock().now_micros();
    if !app.auth.keys.revoke(&id, now).await? {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("there is no API key '{id}'"),
        ));
    }
    app.auth.changed();
    app.auth.revoked();
    tracing::info!(key = %id, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// The key this request came with, and its scopes: what a client (the console) may offer.
#[utoipa::path(
    get, path = "/v1/whoami", tag = "keys",
    responses(
        (status = 200, description = "The caller's key and scopes", body = WhoAmI),
        (status = 401, description = "No valid key", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn whoami(caller: Option<Extension<Caller>>) -> Json<WhoAmI> {
    Json(match caller {
        Some(Extension(c)) => WhoAmI {
            keys_required: true,
            key_id: Some(c.key.id.clone()),
            actor: c.actor.clone(),
            scopes: c.key.scopes.clone(),
        },
        // The check let it through without a key: none is needed now.
        None => WhoAmI {
            keys_required: false,
            key_id: None,
            actor: "anonymous".to_string(),
            scopes: vec!["admin".to_string()],
        },
    })
}
