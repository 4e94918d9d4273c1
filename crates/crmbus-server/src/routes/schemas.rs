//! `/v1/schemas`: the schema registry — list, register a version (checked against the
//! type's compatibility mode), show a version, set the mode, check without registering,
//! and validate an event.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use crmbus_schema::{CompatibilityMode, SchemaError};

pub use crmbus_api::schemas::{
    CheckView, CompatibilityRequest, CompatibilityView, RegistrationView, SchemaList,
    SchemaRequest, SchemaTypeView, SchemaVersionView, ValidationView,
};

use crate::cloudevents::events_from_request;
use crate::extract::{body_bytes, json_body, variant};
use crate::problem::{ApiError, FieldError, Problem};
use crate::state::Shared;

fn mode_text(m: CompatibilityMode) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A registry error as a problem: each breaking change or violation becomes an entry.
pub fn schema_problem(e: SchemaError) -> ApiError {
    let errors = match &e {
        SchemaError::Incompatible { changes, .. } => changes
            .iter()
            .map(|c| FieldError {
                field: c.path.clone(),
                message: c.reason.clone(),
            })
            .collect(),
        SchemaError::Violation { violations, .. } => violations
            .iter()
            .map(|v| FieldError {
                field: format!("data{}", v.path),
                message: v.message.clone(),
            })
            .collect(),
        _ => Vec::new(),
    };
    ApiError::new(e.code(), e.to_string()).with_errors(errors)
}

fn registry(app: &Shared) -> &crmbus_schema::SchemaRegistry {
    &app.schemas
}

/// Lists every event type with a schema.
#[utoipa::path(
    get, path = "/v1/schemas", tag = "schemas",
    responses((status = 200, description = "Every type with its versions", body = SchemaList))
)]
pub async fn list_schemas(State(app): State<Shared>) -> Json<SchemaList> {
    Json(SchemaList {
        types: registry(&app)
            .list()
            .into_iter()
            .map(|t| SchemaTypeView {
                event_type: t.event_type,
                mode: mode_text(t.mode),
                versions: t.versions,
                latest: t.latest,
            })
            .collect(),
    })
}

/// Registers a new version of a type's schema, checked against its compatibility mode.
#[utoipa::path(
    post, path = "/v1/schemas/{type}/versions", tag = "schemas",
    params(("type" = String, Path, description = "Event type")),
    request_body = SchemaRequest,
    responses(
        (status = 201, description = "Registered", body = RegistrationView),
        (status = 200, description = "An identical version exists", body = RegistrationView),
        (status = 400, description = "Not a usable JSON Schema 2020-12 document", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Incompatible: every breaking change listed with its path", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn register_schema(
    State(app): State<Shared>,
    Path(ty): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<RegistrationView>), ApiError> {
    let req: SchemaRequest = json_body(body)?;
    let r = registry(&app)
        .register(&ty, req.schema)
        .await
        .map_err(schema_problem)?;
    let status = if r.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(RegistrationView {
            event_type: r.event_type,
            version: r.version,
            uri: r.uri,
            created: r.created,
            warnings: r.warnings,
        }),
    ))
}

/// Shows one version (a number, or `latest`).
#[utoipa::path(
    get, path = "/v1/schemas/{type}/versions/{version}", tag = "schemas",
    params(
        ("type" = String, Path, description = "Event type"),
        ("version" = String, Path, description = "Version number, or latest"),
    ),
    responses(
        (status = 200, description = "The version", body = SchemaVersionView),
        (status = 400, description = "Not a version number", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such type or version", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_schema_version(
    State(app): State<Shared>,
    Path((ty, version)): Path<(String, String)>,
) -> Result<Json<SchemaVersionView>, ApiError> {
    let v = if version == "latest" {
        registry(&app).latest(&ty)
    } else {
        let n: u32 = version
            .parse()
            .map_err(|_| ApiError::invalid("version", "must be a number or latest"))?;
        registry(&app).get(&ty, n)
    }
    .map_err(schema_problem)?;
    Ok(Json(SchemaVersionView {
        event_type: v.event_type.clone(),
        version: v.version,
        uri: v.uri.clone(),
        schema: v.schema.clone(),
    }))
}

/// Sets a type's compatibility mode.
#[utoipa::path(
    put, path = "/v1/schemas/{type}/compatibility", tag = "schemas",
    params(("type" = String, Path, description = "Event type")),
    request_body = CompatibilityRequest,
    responses(
        (status = 200, description = "The mode now in force", body = CompatibilityView),
        (status = 400, description = "Unknown mode", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn set_compatibility(
    State(app): State<Shared>,
    Path(ty): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CompatibilityView>, ApiError> {
    let req: CompatibilityRequest = json_body(body)?;
    let mode: CompatibilityMode = variant("mode", &req.mode, "backward, forward, full or none")?;
    registry(&app)
        .set_compatibility(&ty, mode)
        .await
        .map_err(schema_problem)?;
    Ok(Json(CompatibilityView {
        event_type: ty,
        mode: mode_text(mode),
    }))
}

/// Says whether a schema would be accepted as the type's next version, without
/// registering it.
#[utoipa::path(
    post, path = "/v1/schemas/{type}/check", tag = "schemas",
    params(("type" = String, Path, description = "Event type")),
    request_body = SchemaRequest,
    responses(
        (status = 200, description = "The verdict and every breaking change", body = CheckView),
        (status = 400, description = "Not a usable JSON Schema", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn check_schema(
    State(app): State<Shared>,
    Path(ty): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CheckView>, ApiError> {
    let req: SchemaRequest = json_body(body)?;
    let c = registry(&app)
        .check(&ty, &req.schema)
        .map_err(schema_problem)?;
    Ok(Json(CheckView {
        compatible: c.is_compatible(),
        mode: mode_text(c.mode),
        against: c.against,
        existing: c.existing,
        breaking: c
            .report
            .breaking
            .iter()
            .map(|b| FieldError {
                field: b.path.clone(),
                message: b.reason.clone(),
            })
            .collect(),
        warnings: c.report.warnings.clone(),
    }))
}

/// Validates an event (any CloudEvents HTTP mode) as a publish would, writing nothing.
#[utoipa::path(
    post, path = "/v1/schemas/validate", tag = "schemas",
    request_body(description = "A candidate CloudEvent (any JSON object): every way it falls short is reported", content((Object = "application/cloudevents+json"))),
    responses(
        (status = 200, description = "Whether it validates, and every violation", body = ValidationView),
        (status = 400, description = "Not a CloudEvent at all", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn validate_event(
    State(app): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ValidationView>, ApiError> {
    let body = body_bytes(body)?;
    let mut errors = Vec::new();
    let mut dataschema = None;
    match events_from_request(&headers, &body) {
        Ok(events) => {
            for (i, mut e) in events.into_iter().enumerate() {
                match registry(&app).validate_event(&mut e, false) {
                    Ok(()) => dataschema = e.dataschema.clone(),
                    Err(inv) => errors.extend(inv.violations.into_iter().map(|v| FieldError {
                        field: if i == 0 {
                            v.attribute
                        } else {
                            format!("[{i}].{}", v.attribute)
                        },
                        message: v.message,
                    })),
                }
            }
        }
        // A body that is not JSON, or not an object (or batch of them), is no event at all.
        Err(e)
            if e.code == "invalid_event"
                && e.errors
                    .iter()
                    .all(|f| f.field != "(body)" && f.field != "(event)") =>
        {
            errors = e.errors
        }
        Err(e) if e.code == "invalid_event" => {
            let message = e
                .errors
                .first()
                .map(|f| f.message.clone())
                .unwrap_or_default();
            return Err(ApiError::invalid("(body)", message));
        }
        Err(e) => return Err(e),
    }
    Ok(Json(ValidationView {
        valid: errors.is_empty(),
        dataschema,
        errors,
    }))
}
