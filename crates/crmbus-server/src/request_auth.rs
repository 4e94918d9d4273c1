//! The request check: the middleware every matched route goes through. It finds the
//! route's [`Rule`], decides whether keys are needed at all ([`crate::auth::gate::Auth`]), reads
//! the `Authorization: Bearer crmbus_…` key, and answers 401 (no key, or one that is not
//! valid) or 403 (naming the scope the request needs) as problem documents. A request it
//! lets through carries the key's name as its audit actor (`x-crmbus-actor`).

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use crmbus::ErrorCode;

use crate::auth::keys::{AuthError, KeyRecord};
use crate::auth::rules::{path_param, rule_for, Rule};
use crate::auth::scope::{granted, Permission};
use crate::problem::ApiError;
use crate::state::Shared;

/// The routes a live-stream token opens (as well as a key).
pub const LIVE_ROUTES: [&str; 2] = ["/v1/topics/{topic}/stream", "/v1/topics/{topic}/ws"];

/// The key of an `Authorization: Bearer …` header.
fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?;
    let text = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, key) = text.trim().split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    Ok(key.trim())
}

fn unauthorized(e: AuthError) -> ApiError {
    match e {
        AuthError::Store(m) => ApiError::new(ErrorCode::Unavailable, m),
        e => ApiError::new(ErrorCode::Unauthorized, e.to_string()),
    }
}

fn forbidden(record: &KeyRecord, needed: &Permission) -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        format!(
            "this request needs the scope '{needed}' (or admin); the key '{}' has: {}",
            record.name,
            record.scopes.join(", ")
        ),
    )
}

/// The permissions a request under `rule` needs.
fn needed(app: &Shared, rule: Rule, template: &str, req: &Request) -> Vec<Permission> {
    let path = req.uri().path();
    match rule {
        Rule::Open | Rule::AnyKey => Vec::new(),
        Rule::Admin => vec![Permission::Admin],
        Rule::Topic(access) => {
            vec![access.on(&path_param(template, path, "topic").unwrap_or_default())]
        }
        Rule::Subscription(access) => {
            // An unknown subscription's topic is none: only admin or a `*` scope passes,
            // and the route answers 404.
            let name = path_param(template, path, "name").unwrap_or_default();
            vec![access.on(&app.subs.topic_of(&name).unwrap_or_default())]
        }
        Rule::QueryTopics => {
            let topics = crate::extract::query_values(req.uri().query(), "topic");
            if topics.is_empty() {
                vec![Permission::Publish(String::new())]
            } else {
                topics
                    .iter()
                    .map(|t| Permission::Publish(t.clone()))
                    .collect()
            }
        }
    }
}

/// Checks `req` against its route's rule (see the module's documentation).
pub async fn check(
    State(app): State<Shared>,
    matched: Option<MatchedPath>,
    mut req: Request,
    next: Next,
) -> Response {
    // Installed as a route layer, it always sees a matched route; if it ever did not, it
    // would not know what to check: refused rather than let through.
    let Some(template) = matched.map(|m| m.as_str().to_string()) else {
        return ApiError::new(
            ErrorCode::Internal,
            "the request check ran without a matched route",
        )
        .into_response();
    };
    match authorize(&app, &template, &mut req).await {
        Ok(caller) => {
            let mut resp = next.run(req).await;
            // For the audit record the layer around this one writes.
            if let Some(c) = caller {
                resp.extensions_mut().insert(c);
            }
            resp
        }
        Err(e) => e.into_response(),
    }
}

/// Lets `req` through (with the key it came with, when keys are needed) or refuses it.
async fn authorize(
    app: &Shared,
    template: &str,
    req: &mut Request,
) -> Result<Option<Caller>, ApiError> {
    // HEAD is a GET without its body.
    let method = match req.method().as_str() {
        "HEAD" => "GET",
        m => m,
    };
    let rule = rule_for(method, template).unwrap_or(Rule::Admin);
    if rule == Rule::Open || !app.auth.required().await? {
        return Ok(None);
    }
    let now = app.auth.clock().now_micros();
    let (record, scopes) = match bearer(req.headers()) {
        Ok(key) => app.auth.keys.authenticate(key, now).await,
        // A browser's EventSource and WebSocket cannot send headers: a live stream may
        // come with a short-lived token in its query instead.
        Err(AuthError::Missing) if LIVE_ROUTES.contains(&template) => {
            match crate::extract::query_values(req.uri().query(), "token").first() {
                Some(token) => {
                    let topic = path_param(template, req.uri().path(), "topic").unwrap_or_default();
                    app.auth
                        .keys
                        .authenticate_stream_token(token, &topic, now)
                        .await
                }
                None => Err(AuthError::Missing),
            }
        }
        Err(e) => Err(e),
    }
    .map_err(unauthorized)?;
    for n in needed(app, rule, template, req) {
        if !granted(&scopes, &n) {
            return Err(forbidden(&record, &n));
        }
    }
    app.limits.request(&record.id)?;
    // The key names who acts in audit records; a name the caller gives is kept beside it.
    let claimed = req
        .headers()
        .get("x-crmbus-actor")
        .and_then(|v| v.to_str().ok())
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    let name = &record.name;
    let actor = match claimed {
        // Already this key's (a request another server forwarded).
        Some(c) if c == *name || c.starts_with(&format!("{name} (")) => c,
        Some(c) => format!("{name} ({c})"),
        None => name.clone(),
    };
    // Never the caller's own claim alone.
    let actor = match HeaderValue::from_str(&actor) {
        Ok(v) => {
            req.headers_mut().insert("x-crmbus-actor", v);
            actor
        }
        Err(_) => {
            if let Ok(v) = HeaderValue::from_str(name) {
                req.headers_mut().insert("x-crmbus-actor", v);
            }
            name.clone()
        }
    };
    let caller = Caller { key: record, actor };
    req.extensions_mut().insert(caller.clone());
    Ok(Some(caller))
}

/// The key a request was let through with (absent when keys were not needed).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's record.
    pub key: KeyRecord,
    /// Who acts, as audit records name them: the key's name, with the name the caller
    /// gave in `x-crmbus-actor` beside it.
    pub actor: String,
}
