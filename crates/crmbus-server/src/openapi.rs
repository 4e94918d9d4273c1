//! The OpenAPI document, generated from the handlers' annotations and the API types.

use utoipa::OpenApi;

use crate::routes;

/// The OpenAPI description of every route.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "crmbus",
        description = "A durable event bus for CRM and business automation: CloudEvents publish, reads, pull subscriptions, live streams, replay and dead letters."
    ),
    paths(
        routes::topics::create_topic,
        routes::topics::list_topics,
        routes::topics::get_topic,
        routes::topics::delete_topic,
        routes::events::publish,
        routes::events::publish_multi,
        routes::events::read_events,
        routes::subscriptions::create_subscription,
        routes::subscriptions::list_subscriptions,
        routes::subscriptions::get_subscription,
        routes::subscriptions::delete_subscription,
        routes::subscriptions::pull,
        routes::subscriptions::ack,
        routes::subscriptions::nack,
        routes::subscriptions::seek,
        routes::dlq::list_dlq,
        routes::dlq::get_dlq_entry,
        routes::dlq::redrive_dlq,
        routes::dlq::discard_dlq_entry,
        routes::live::stream_sse,
        routes::live::stream_ws,
        routes::schemas::list_schemas,
        routes::schemas::register_schema,
        routes::schemas::get_schema_version,
        routes::schemas::set_compatibility,
        routes::schemas::check_schema,
        routes::schemas::validate_event,
        routes::ops::healthz,
        routes::ops::readyz,
        routes::ops::metrics,
        routes::ops::openapi,
    ),
    tags(
        (name = "topics", description = "Create, list, describe and delete topics"),
        (name = "events", description = "Publish (CloudEvents HTTP binding) and read"),
        (name = "subscriptions", description = "Pull subscriptions: leases, ack, nack, seek"),
        (name = "dead letters", description = "Inspect, redrive and discard dead letters"),
        (name = "schemas", description = "The schema registry: versions, compatibility, validation"),
        (name = "live", description = "Server-Sent Events and WebSocket streams"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;
