//! The OpenAPI document, generated from the handlers' annotations and the API types, and
//! its own route, `/openapi.json`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
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
        routes::events::read_subject,
        routes::subscriptions::create_subscription,
        routes::subscriptions::list_subscriptions,
        routes::subscriptions::get_subscription,
        routes::subscriptions::delete_subscription,
        routes::subscriptions::pull,
        routes::subscriptions::ack,
        routes::subscriptions::nack,
        routes::subscriptions::seek,
        routes::subscriptions::rotate_secret,
        routes::subscriptions::enable,
        routes::dlq::list_dlq,
        routes::dlq::get_dlq_entry,
        routes::dlq::redrive_dlq,
        routes::dlq::discard_dlq_entry,
        routes::dlq::list_audit,
        routes::live::stream_sse,
        routes::live::stream_ws,
        routes::live::create_stream_token,
        routes::schemas::list_schemas,
        routes::schemas::register_schema,
        routes::schemas::get_schema_version,
        routes::schemas::set_compatibility,
        routes::schemas::check_schema,
        routes::schemas::validate_event,
        routes::ops::healthz,
        routes::ops::readyz,
        routes::ops::metrics,
        routes::ops::cluster,
        routes::keys::create_key,
        routes::keys::list_keys,
        routes::keys::revoke_key,
        routes::keys::whoami,
        routes::audit::list_audit_log,
        openapi,
    ),
    tags(
        (name = "topics", description = "Create, list, describe and delete topics"),
        (name = "events", description = "Publish (CloudEvents HTTP binding) and read"),
        (name = "subscriptions", description = "Subscriptions pulled (leases, ack, nack, seek) or pushed to a webhook or Redis Pub/Sub"),
        (name = "dead letters", description = "Inspect, redrive and discard dead letters"),
        (name = "schemas", description = "The schema registry: versions, compatibility, validation"),
        (name = "live", description = "Server-Sent Events and WebSocket streams"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "keys", description = "API keys and their scopes"),
        (name = "audit", description = "The audit log: admin actions, dead-letter actions, key changes, refused requests"),
    )
)]
pub struct ApiDoc;

/// The largest JSON integer the server takes for a `u64` field.
const U64_MAX: u64 = u64::MAX;
/// The largest JSON integer the server takes for a `u32` field.
const U32_MAX: u64 = u32::MAX as u64;

/// Topic and subscription names: what `crmbus::log::validate_topic_name` accepts.
const NAME_PATTERN: &str = "^[A-Za-z0-9._-]{1,200}$";
/// Event types that can have a schema (the registry's rule).
const TYPE_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$";
/// A media type: `type/subtype` of RFC 9110 tokens, then `; name=value` parameters.
const MEDIA_TYPE_PATTERN: &str = "^[A-Za-z0-9!#$%&'*+.^_`|~-]+/[A-Za-z0-9!#$%&'*+.^_`|~-]+( *; *[A-Za-z0-9!#$%&'*+.^_`|~-]+=[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$";
/// A URI-reference as `source` is checked: no whitespace, no control characters, no
/// noncharacters.
const SOURCE_PATTERN: &str =
    "^[^\\s\\u0000-\\u001f\\u007f-\\u009f\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufdd0-\\ufdef\\ufffe\\uffff]+$";
/// A CloudEvents String: no control characters (U+0000–U+001F, U+007F–U+009F) and no
/// noncharacters. The pattern language (ECMA-262 without the `u` flag) cannot name the
/// noncharacters above U+FFFF (U+1FFFE, U+1FFFF, …), which the server refuses too.
const STRING_PATTERN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f\\ufdd0-\\ufdef\\ufffe\\uffff]*$";
/// The OpenAPI document as served at `/openapi.json`: the generated one, with what the
/// annotations cannot say added — the exact constraints of the CloudEvent body and of the
/// JSON members that are read by hand (`start`, `filter`, `to`, redrive's one-of), integer
/// ranges as the server reads them, examples that name the resources of a fixture
/// (`scripts/schemathesis_seed.py`), and links from responses to the calls they enable.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
    unsigned_ranges(&mut doc);
    let schemas = &mut doc["components"]["schemas"];
    schemas["CloudEventDoc"] = cloud_event_schema();
    let sub = &mut schemas["CreateSubscriptionRequest"];
    sub["properties"]["filter"] = json!({
        "description": "Which events the subscription takes: type patterns (`*` matches any run of characters) and conditions that must all hold.",
        "oneOf": [{"$ref": "#/components/schemas/Filter"}, {"type": "null"}]
    });
    sub["properties"]["start"] = json!({
        "description": "Where a new subscription starts: `\"earliest\"` (default), `\"latest\"`, or `{\"time\": \"<RFC 3339>\"}`.",
        "oneOf": [
            {"type": "string", "enum": ["earliest", "latest"]},
            {"type": "object", "required": ["time"], "properties": {"time": {"type": "string", "format": "date-time"}}, "additionalProperties": false},
            {"type": "null"}
        ]
    });
    sub["properties"]["ordering"]["enum"] = json!(["key", "none", null]);
    sub["properties"]["on_exhausted"]["enum"] = json!(["skip", "hold", null]);
    sub["example"] = json!({"name": "orders-audit", "start": "earliest", "filter": {"types": ["order.*"]}, "retry": {"max_attempts": 3}, "ack_timeout_ms": 10000});
    schemas["RetryBody"]["description"] =
        json!("A retry policy. `max_backoff_ms` (default 300000) must be at least `initial_backoff_ms` (default 1000).");
    let schedule = &mut schemas["RetryBody"]["properties"]["schedule_ms"];
    schedule["items"]["maximum"] = json!(86_400_000u64);
    schedule["minItems"] = json!(1);
    schedule["maxItems"] = json!(100);
    schemas["SubscriptionTarget"] = target_schema();
    schemas["RotateSecretRequest"]["properties"]["overlap_ms"]["maximum"] = json!(2_592_000_000u64);
    schemas["RotateSecretRequest"]["properties"]["secret"]["pattern"] = json!(SECRET_PATTERN);
    schemas["Filter"] = filter_schema();
    schemas["SeekRequest"]["properties"]["to"] = json!({
        "description": "`\"earliest\"`, `\"latest\"`, `{\"time\": \"<RFC 3339>\"}` or `{\"offsets\": {\"<partition>\": <offset>}}`.",
        "oneOf": [
            {"type": "string", "enum": ["earliest", "latest"]},
            {"type": "object", "required": ["time"], "properties": {"time": {"type": "string", "format": "date-time"}}, "additionalProperties": false},
            {"type": "object", "required": ["offsets"], "properties": {"offsets": {
                "type": "object",
                "propertyNames": {"pattern": "^(0|[1-9][0-9]{0,8})$"},
                "additionalProperties": {"type": "integer", "minimum": 0, "maximum": U64_MAX}
            }}, "additionalProperties": false}
        ]
    });
    schemas["SeekRequest"]["example"] = json!({"to": "earliest"});
    schemas["RedriveRequest"] = json!({
        "description": "`POST /v1/subscriptions/{name}/dlq/redrive`: exactly one of `entries`, `filter`, `all: true`.",
        "oneOf": [
            {"type": "object", "required": ["entries"], "properties": {"entries": {"type": "array", "items": {"type": "string"}, "description": "Entry ids."}}, "additionalProperties": false},
            {"type": "object", "required": ["filter"], "properties": {"filter": {"$ref": "#/components/schemas/DlqQuery"}}, "additionalProperties": false},
            {"type": "object", "required": ["all"], "properties": {"all": {"const": true, "description": "Every entry."}}, "additionalProperties": false}
        ],
        "example": {"entries": ["0-2"]}
    });
    schemas["CompatibilityRequest"]["properties"]["mode"]["enum"] =
        json!(["backward", "forward", "full", "none"]);
    schemas["CompatibilityRequest"]["example"] = json!({"mode": "backward"});
    schemas["CreateTopicRequest"]["example"] =
        json!({"name": "invoices", "partitions": 2, "retention": {"max_age_ms": 604800000}});
    schemas["PullRequest"]["example"] = json!({"max_events": 10, "wait_ms": 100});
    schemas["AckRequest"]["example"] = json!({"ack_ids": ["3f9a0c12d4e5-1a-8c41d07e2b9f6a35"]});
    schemas["NackRequest"]["example"] = json!({
        "ack_ids": ["3f9a0c12d4e5-1b-05e2c7a9d13f4b80"],
        "delay_ms": 1000,
        "error": "CRM timeout"
    });
    schemas["SchemaRequest"]["example"] = json!({"schema": {
        "type": "object",
        "properties": {"ticket": {"type": "string"}},
        "required": ["ticket"]
    }});
    // Every member of a pull has a default; an empty body is read as `{}`.
    doc["paths"]["/v1/subscriptions/{name}/pull"]["post"]["requestBody"]["required"] = json!(false);
    let key = &mut doc["components"]["schemas"]["CreateKeyRequest"];
    key["properties"]["scopes"]["items"]["pattern"] =
        json!("^(admin|(publish|subscribe|dlq):[A-Za-z0-9._*-]{1,200})$");
    key["properties"]["scopes"]["minItems"] = json!(1);
    key["properties"]["expires_at"]["format"] = json!("date-time");
    key["example"] = json!({"name": "erp-sync", "scopes": ["publish:orders", "subscribe:orders*"]});
    path_examples(&mut doc);
    publish_modes(&mut doc);
    links(&mut doc);
    security(&mut doc);
    doc
}

/// The bearer key scheme, and the 401, 403 and 429 every route but the open ones may
/// answer.
fn security(doc: &mut Value) {
    doc["components"]["securitySchemes"] = json!({"api_key": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key, `Authorization: Bearer crmbus_…`, with the scope the route needs (`publish:<topic>`, `subscribe:<topic>`, `dlq:<topic>` or `admin`). Needed once a key exists, and by a server listening off loopback; `/healthz`, `/readyz` and `/openapi.json` never need one."
    }});
    // A key, or none while the server has none.
    doc["security"] = json!([{"api_key": []}, {}]);
    let problem = |what: &str| json!({"description": what, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}});
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            let rule = crate::auth::rules::rule_for(&method.to_ascii_uppercase(), path);
            if rule == Some(crate::auth::rules::Rule::Open) {
                op["security"] = json!([{}]);
                continue;
            }
            let responses = &mut op["responses"];
            responses["401"] = problem("No valid API key (none, unknown, revoked or expired)");
            responses["403"] =
                problem("The key lacks the scope the route needs (the problem names it)");
            let mut throttled = problem(
                "The key is over its request rate, or the topic over its event rate ([limits])",
            );
            throttled["headers"] = json!({"Retry-After": {
                "description": "Whole seconds until the request would pass",
                "schema": {"type": "integer", "minimum": 0}
            }});
            responses["429"] = throttled;
        }
    }
}

/// The OpenAPI 3.1 document of this API, generated from the code.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI document", content_type = "application/json", body = Object))
)]
pub async fn openapi() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        document().to_string(),
    )
        .into_response()
}

/// `u64`, `u32` and `usize` fields are generated as `int64`/`int32` with `minimum: 0`; the
/// server reads the whole unsigned range, so the document says that range.
fn unsigned_ranges(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let unsigned = m
                .get("minimum")
                .and_then(Value::as_f64)
                .is_some_and(|min| min >= 0.0)
                && m.get("type").is_some_and(|t| {
                    t == "integer"
                        || t.as_array()
                            .is_some_and(|a| a.iter().any(|x| x == "integer"))
                });
            if unsigned {
                let format = m.get("format").and_then(Value::as_str).map(str::to_string);
                let max = match format.as_deref() {
                    Some("int32") => Some(("uint32", U32_MAX)),
                    Some("int64") | None => Some(("uint64", U64_MAX)),
                    _ => None,
                };
                if let Some((name, max)) = max {
                    m.insert("format".into(), json!(name));
                    m.entry("maximum").or_insert(json!(max));
                }
            }
            for child in m.values_mut() {
                unsigned_ranges(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(unsigned_ranges),
        _ => {}
    }
}

/// A structured CloudEvent exactly as the server reads one.
fn cloud_event_schema() -> Value {
    json!({
        "type": "object",
        "description": "A CloudEvent in the structured JSON format. Extension attributes are further top-level members named with 1–20 lower-case letters and digits, whose values are strings, 32-bit signed integers or booleans (`null` unsets one). No string value may contain control characters (U+0000–U+001F, U+007F–U+009F) or Unicode noncharacters.",
        "required": ["specversion", "id", "source", "type"],
        "properties": {
            "specversion": {"type": "string", "enum": ["1.0"], "description": "Always `1.0`."},
            "id": {"type": "string", "minLength": 1, "pattern": STRING_PATTERN, "description": "Unique per `source`; with it, the dedupe key."},
            "source": {"type": "string", "pattern": SOURCE_PATTERN, "description": "Where the event happened, a URI-reference such as `urn:acme:crm`."},
            "type": {"type": "string", "minLength": 1, "pattern": STRING_PATTERN, "description": "The event type, such as `deal.won`."},
            "subject": {"type": ["string", "null"], "minLength": 1, "pattern": STRING_PATTERN, "description": "The business key (`deal-42`): it decides the partition and the ordering."},
            "time": {"type": ["string", "null"], "format": "date-time", "pattern": "^[0-9]{4}-", "description": "When it happened (RFC 3339)."},
            "datacontenttype": {"type": ["string", "null"], "pattern": MEDIA_TYPE_PATTERN, "description": "The media type of `data`."},
            "dataschema": {"type": ["string", "null"], "format": "uri", "pattern": "^[A-Za-z][A-Za-z0-9+.-]*:[^\\s]+$", "description": "The schema version `data` follows (an absolute URI)."},
            "data": {"description": "The payload: any JSON value."},
            "data_base64": {"type": ["string", "null"], "contentEncoding": "base64", "pattern": "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$", "description": "Binary payload, canonical standard base64 (unused bits of the last symbol zero), instead of `data`."}
        },
        "not": {"required": ["data", "data_base64"]},
        "propertyNames": {"pattern": "^([a-z0-9]{1,20}|data_base64)$"},
        "additionalProperties": {"anyOf": [
            {"type": "string", "pattern": STRING_PATTERN},
            {"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX},
            {"type": "boolean"},
            {"type": "null"}
        ]},
        "example": {
            "specversion": "1.0",
            "id": "evt-1001",
            "source": "urn:acme:crm",
            "type": "order.placed",
            "subject": "order-1001",
            "time": "2024-05-01T12:00:00Z",
            "datacontenttype": "application/json",
            "data": {"amount": "120.00", "currency": "EUR"}
        }
    })
}

/// A subscription filter as `crmbus::delivery::Filter` reads it.
fn filter_schema() -> Value {
    let field = json!({"type": "string", "description": "`data.<path>`, an extension name, or `subject`, `source`, `type`, `id`, `datacontenttype`, `dataschema`."});
    let condition = |op: Value, value: Value| {
        json!({
            "type": "object",
            "required": ["field", "op", "value"],
            "properties": {"field": field, "op": op, "value": value},
            "additionalProperties": false
        })
    };
    json!({
        "type": "object",
        "description": "Type patterns (the event's type must match one; none: any type) and conditions that must all hold.",
        "properties": {
            "types": {"type": "array", "items": {"type": "string"}},
            "where": {"type": "array", "items": {"oneOf": [
                condition(json!({"type": "string", "enum": ["eq", "ne"]}), json!({})),
                condition(json!({"const": "in"}), json!({"type": "array"})),
                condition(json!({"const": "exists"}), json!({"type": "boolean"})),
                condition(json!({"type": "string", "enum": ["gt", "gte", "lt", "lte"]}), json!({"type": "number"}))
            ]}}
        },
        "additionalProperties": false,
        "example": {"types": ["order.*"], "where": [{"field": "data.amount", "op": "gt", "value": 100}]}
    })
}

/// A webhook secret as the server reads it, `whsec_` and base64 (the decoded length, 24
/// to 64 bytes, is in the description), or as it shows one after the create: masked.
const SECRET_PATTERN: &str = "^whsec_([A-Za-z0-9+/]{32,88}={0,2}|\\*{8})$";

/// A subscription's target: one object per kind, each with every member it may have
/// (the generated `allOf` of a tagged enum would forbid `kind` beside the variant's
/// members).
fn target_schema() -> Value {
    json!({
        "description": "Where a subscription's deliveries go: `{\"kind\": \"pull\"}` (the default), a webhook or a Redis Pub/Sub channel. A webhook's URL must reach an address the server's SSRF guard allows (public, or listed in `[push] allowed_targets`); `disabled` and `previous_secrets` are set by the server and refused in a create.",
        "oneOf": [
            {
                "type": "object",
                "required": ["kind"],
                "properties": {"kind": {"type": "string", "enum": ["pull"]}},
                "additionalProperties": false
            },
            {
                "type": "object",
                "required": ["kind", "url"],
                "properties": {
                    "kind": {"type": "string", "enum": ["webhook"]},
                    "url": {"type": "string", "pattern": "^https?://[^\\s/?#@]+([/?#][^\\s]*)?$", "description": "Where each delivery is POSTed, signed per Standard Webhooks."},
                    "secret": {"type": ["string", "null"], "pattern": SECRET_PATTERN, "description": "`whsec_` + base64 of 24 to 64 bytes; generated when absent, shown in full only in the create's answer (then `whsec_********`)."},
                    "previous_secrets": {"type": "array", "items": {"$ref": "#/components/schemas/PreviousSecret"}},
                    "timeout_ms": {"type": ["integer", "null"], "minimum": 1, "maximum": 300000},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Extra headers; not `webhook-*`, `content-type` or hop-by-hop ones."},
                    "disabled": {"oneOf": [{"$ref": "#/components/schemas/DisabledTarget"}, {"type": "null"}]}
                },
                "additionalProperties": false
            },
            {
                "type": "object",
                "required": ["kind", "url"],
                "properties": {
                    "kind": {"type": "string", "enum": ["redis_pubsub"]},
                    "url": {"type": "string", "pattern": "^rediss?://", "description": "The Redis server (a password is masked when shown)."},
                    "channel": {"type": ["string", "null"], "minLength": 1, "description": "`{topic}` is the topic's name; default `crm:events:{topic}`."}
                },
                "additionalProperties": false
            }
        ]
    })
}

/// Each path parameter's pattern, and an example that names a fixture resource (the
/// delete operations name resources of their own, so the others still find theirs).
fn path_examples(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for op in item.values_mut() {
            let id = op
                .get("operationId")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
                continue;
            };
            for p in params.iter_mut().filter(|p| p["in"] == "path") {
                let (pattern, example) = match (p["name"].as_str().unwrap_or(""), id.as_str()) {
                    ("topic", "delete_topic") => (NAME_PATTERN, "doomed"),
                    ("topic", _) => (NAME_PATTERN, "orders"),
                    ("name", "delete_subscription") => (NAME_PATTERN, "doomed-sub"),
                    ("name", "list_dlq" | "redrive_dlq" | "list_audit") => {
                        (NAME_PATTERN, "orders-dlq")
                    }
                    ("name", "get_dlq_entry" | "discard_dlq_entry") => {
                        (NAME_PATTERN, "orders-review")
                    }
                    ("name", "rotate_secret" | "enable") => (NAME_PATTERN, "orders-hook"),
                    ("id", _) => ("^[0-9a-f]{32}$", "0123456789abcdef0123456789abcdef"),
                    ("name", _) => (NAME_PATTERN, "orders-workers"),
                    ("entry", "discard_dlq_entry") => ("^[0-9]+-[0-9]+$", "0-1"),
                    ("entry", _) => ("^[0-9]+-[0-9]+$", "0-0"),
                    ("type", "get_schema_version") => (TYPE_PATTERN, "fixture.noted"),
                    ("type", _) => (TYPE_PATTERN, "ticket.opened"),
                    ("version", _) => ("^(latest|[0-9]{1,9})$", "1"),
                    _ => continue,
                };
                p["schema"]["pattern"] = json!(pattern);
                p["example"] = json!(example);
            }
        }
    }
}

/// The publish operations: examples of the structured and batch modes, and the binary
/// mode's `ce-*` headers (read only when the content type is neither of those).
fn publish_modes(doc: &mut Value) {
    let event = cloud_event_schema()["example"].clone();
    let mut second = event.clone();
    second["id"] = json!("evt-1002");
    second["subject"] = json!("order-1002");
    for (path, op) in [
        ("/v1/topics/{topic}/events", "post"),
        ("/v1/events", "post"),
    ] {
        let o = &mut doc["paths"][path][op];
        let content = &mut o["requestBody"]["content"];
        content["application/cloudevents-batch+json"]["example"] = json!([event, second]);
        content["application/cloudevents+json"]["example"] = event.clone();
        if path == "/v1/events" {
            if let Some(params) = o["parameters"].as_array_mut() {
                for p in params.iter_mut().filter(|p| p["name"] == "topic") {
                    p["required"] = json!(true);
                    p["schema"] = json!({"type": "array", "minItems": 1, "items": {"type": "string", "pattern": NAME_PATTERN}});
                    p["example"] = json!(["orders", "orders-archive"]);
                }
            }
            continue;
        }
        content["application/json"] = json!({
            // Any JSON: the data of a binary-mode event, or (without the ce-* headers) a
            // structured event, which the server checks as such.
            "schema": {"description": "With the ce-* headers: the event's data (any JSON). Without them: a structured event (see CloudEventDoc)."},
            "example": {"amount": "99.50", "currency": "EUR"}
        });
        // Binary mode carries an event without data as headers alone (CloudEvents: data
        // is optional); structured and batch requests need their body.
        o["requestBody"]["required"] = json!(false);
        o["requestBody"]["description"] = json!("The event(s). Required except in binary mode, where an event without data has no body.");
        let header = |name: &str, required: &str, schema: Value, example: &str| {
            json!({
                "name": name,
                "in": "header",
                "required": false,
                "description": format!("Binary mode (a content type other than application/cloudevents+json and application/cloudevents-batch+json): {required} A value in double quotes is an HTTP quoted-string and is unquoted; then `%` and two hex digits is an escaped byte (a `%` without them is malformed), and the decoded bytes must be UTF-8 without control characters or noncharacters."),
                "schema": schema,
                "example": example
            })
        };
        if let Some(params) = o["parameters"].as_array_mut() {
            params.extend([
                header(
                    "ce-specversion",
                    "`1.0`; with it ce-id, ce-source and ce-type are required.",
                    json!({"type": "string", "enum": ["1.0"]}),
                    "1.0",
                ),
                header(
                    "ce-id",
                    "the event's id.",
                    json!({"type": "string", "minLength": 1}),
                    "evt-2001",
                ),
                header(
                    "ce-source",
                    "the event's source.",
                    json!({"type": "string", "minLength": 1}),
                    "urn:acme:crm",
                ),
                header(
                    "ce-type",
                    "the event's type.",
                    json!({"type": "string", "minLength": 1}),
                    "order.placed",
                ),
                header(
                    "ce-subject",
                    "the event's subject.",
                    json!({"type": "string", "minLength": 1}),
                    "order-2001",
                ),
            ]);
        }
    }
}

/// Links from a response to the calls its values enable.
fn links(doc: &mut Value) {
    let link = |op: &str, params: Value, body: Option<Value>| {
        let mut l = json!({"operationId": op, "parameters": params});
        if let Some(b) = body {
            l["requestBody"] = b;
        }
        l
    };
    let topic = json!({"topic": "$response.body#/name"});
    let sub = json!({"name": "$response.body#/name"});
    let add = |doc: &mut Value, path: &str, method: &str, status: &str, name: &str, l: Value| {
        doc["paths"][path][method]["responses"][status]["links"][name] = l;
    };
    add(
        doc,
        "/v1/topics",
        "post",
        "201",
        "GetTopic",
        link("get_topic", topic.clone(), None),
    );
    add(
        doc,
        "/v1/topics",
        "post",
        "201",
        "ReadEvents",
        link("read_events", topic.clone(), None),
    );
    add(
        doc,
        "/v1/topics",
        "post",
        "201",
        "Publish",
        link("publish", topic.clone(), None),
    );
    add(
        doc,
        "/v1/topics",
        "post",
        "201",
        "CreateSubscription",
        link("create_subscription", topic.clone(), None),
    );
    add(
        doc,
        "/v1/topics",
        "post",
        "201",
        "DeleteTopic",
        link("delete_topic", topic, None),
    );
    let from_sub = "/v1/topics/{topic}/subscriptions";
    for (name, op) in [
        ("GetSubscription", "get_subscription"),
        ("Pull", "pull"),
        ("Seek", "seek"),
        ("ListDlq", "list_dlq"),
        ("DeleteSubscription", "delete_subscription"),
    ] {
        add(
            doc,
            from_sub,
            "post",
            "201",
            name,
            link(op, sub.clone(), None),
        );
    }
    let pulled = "/v1/subscriptions/{name}/pull";
    let name = json!({"name": "$request.path.name"});
    add(
        doc,
        pulled,
        "post",
        "200",
        "Ack",
        link(
            "ack",
            name.clone(),
            Some(json!({"ack_ids": ["$response.body#/deliveries/0/ack_id"]})),
        ),
    );
    add(
        doc,
        pulled,
        "post",
        "200",
        "Nack",
        link(
            "nack",
            name.clone(),
            Some(json!({"ack_ids": ["$response.body#/deliveries/0/ack_id"], "delay_ms": 0})),
        ),
    );
    let dlq = "/v1/subscriptions/{name}/dlq";
    let entry = json!({"name": "$request.path.name", "entry": "$response.body#/entries/0/id"});
    add(
        doc,
        dlq,
        "get",
        "200",
        "GetEntry",
        link("get_dlq_entry", entry.clone(), None),
    );
    add(
        doc,
        dlq,
        "get",
        "200",
        "Redrive",
        link(
            "redrive_dlq",
            name,
            Some(json!({"entries": ["$response.body#/entries/0/id"]})),
        ),
    );
    add(
        doc,
        dlq,
        "get",
        "200",
        "Discard",
        link("discard_dlq_entry", entry, None),
    );
}
