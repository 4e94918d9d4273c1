//! The axum router: every route's handler, the OpenAPI document's, the problem answer for
//! unknown routes, request metrics and the body size limit.

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::Router;

use crate::state::Shared;
use crate::{openapi, routes};

/// The router of every route, over `state`.
pub fn router(state: Shared) -> Router {
    let limit = state.config.server.max_body_bytes;
    Router::new()
        .route(
            "/v1/topics",
            post(routes::topics::create_topic).get(routes::topics::list_topics),
        )
        .route(
            "/v1/topics/{topic}",
            get(routes::topics::get_topic).delete(routes::topics::delete_topic),
        )
        .route(
            "/v1/topics/{topic}/events",
            post(routes::events::publish).get(routes::events::read_events),
        )
        .route("/v1/events", post(routes::events::publish_multi))
        .route(
            "/v1/topics/{topic}/subjects/{subject}/events",
            get(routes::events::read_subject),
        )
        .route(
            "/v1/topics/{topic}/subscriptions",
            post(routes::subscriptions::create_subscription),
        )
        .route(
            "/v1/subscriptions",
            get(routes::subscriptions::list_subscriptions),
        )
        .route(
            "/v1/subscriptions/{name}",
            get(routes::subscriptions::get_subscription)
                .delete(routes::subscriptions::delete_subscription),
        )
        .route(
            "/v1/subscriptions/{name}/pull",
            post(routes::subscriptions::pull),
        )
        .route(
            "/v1/subscriptions/{name}/ack",
            post(routes::subscriptions::ack),
        )
        .route(
            "/v1/subscriptions/{name}/nack",
            post(routes::subscriptions::nack),
        )
        .route(
            "/v1/subscriptions/{name}/seek",
            post(routes::subscriptions::seek),
        )
        .route(
            "/v1/subscriptions/{name}/secret",
            put(routes::subscriptions::rotate_secret),
        )
        .route(
            "/v1/subscriptions/{name}/enable",
            post(routes::subscriptions::enable),
        )
        .route("/v1/subscriptions/{name}/dlq", get(routes::dlq::list_dlq))
        .route(
            "/v1/subscriptions/{name}/audit",
            get(routes::dlq::list_audit),
        )
        .route(
            "/v1/subscriptions/{name}/dlq/redrive",
            post(routes::dlq::redrive_dlq),
        )
        .route(
            "/v1/subscriptions/{name}/dlq/{entry}",
            get(routes::dlq::get_dlq_entry).delete(routes::dlq::discard_dlq_entry),
        )
        .route("/v1/topics/{topic}/stream", get(routes::live::stream_sse))
        .route("/v1/topics/{topic}/ws", get(routes::live::stream_ws))
        .route(
            "/v1/topics/{topic}/stream-token",
            post(routes::live::create_stream_token),
        )
        .route("/v1/schemas", get(routes::schemas::list_schemas))
        .route(
            "/v1/schemas/validate",
            post(routes::schemas::validate_event),
        )
        .route(
            "/v1/schemas/{type}/versions",
            post(routes::schemas::register_schema),
        )
        .route(
            "/v1/schemas/{type}/versions/{version}",
            get(routes::schemas::get_schema_version),
        )
        .route(
            "/v1/schemas/{type}/compatibility",
            put(routes::schemas::set_compatibility),
        )
        .route(
            "/v1/schemas/{type}/check",
            post(routes::schemas::check_schema),
        )
        .route(
            "/v1/keys",
            post(routes::keys::create_key).get(routes::keys::list_keys),
        )
        .route("/v1/keys/{id}", delete(routes::keys::revoke_key))
        .route("/v1/whoami", get(routes::keys::whoami))
        .route("/v1/cluster", get(routes::ops::cluster))
        .route("/v1/audit", get(routes::audit::list_audit_log))
        .route("/healthz", get(routes::ops::healthz))
        .route("/readyz", get(routes::ops::readyz))
        .route("/metrics", get(routes::ops::metrics))
        .route("/openapi.json", get(openapi::openapi))
        .route("/", get(routes::console::page))
        .route("/console/{file}", get(routes::console::file))
        // Every route above needs the key its rule says (the fallback's 404 does not).
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::request_auth::check,
        ))
        // Around the check, so that it sees refused requests as well as done ones.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::request_audit::record,
        ))
        .fallback(routes::ops::not_found)
        .layer(axum::middleware::from_fn(crate::metrics::track_requests))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}
