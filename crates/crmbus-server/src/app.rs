//! The server: shared state, the router, and starting and stopping it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::Router;
use crmbus::{EventBus, LogError};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::problem::ApiError;
use crate::routes;
use crate::subscriptions::Subscriptions;

/// What every handler shares.
pub struct AppState {
    /// The bus publishing goes through.
    pub bus: EventBus,
    /// Pull subscriptions.
    pub subs: Subscriptions,
    /// The schema registry (validation at publish when `schemas.validate` is on).
    pub schemas: Arc<crmbus_schema::SchemaRegistry>,
    /// The configuration the server runs with.
    pub config: Config,
    /// Turns true when the server begins to stop; live streams and long polls end.
    pub stopping: watch::Receiver<bool>,
}

/// The shared state as handlers receive it.
pub type Shared = Arc<AppState>;

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The storage backend failed to open or close.
    #[error("storage: {0}")]
    Storage(#[from] LogError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The schema registry or catalog failed to load.
    #[error("schemas: {0}")]
    Schema(#[from] crmbus_schema::SchemaError),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Http(std::io::Error),
}

/// The request body, or 413 / 400 as a problem.
pub fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                "payload_too_large",
                "the request body is larger than server.max_body_bytes",
            )
        } else {
            ApiError::invalid("(body)", e.body_text())
        }
    })
}

/// Parses a JSON request body, which must be an object; an empty body reads as `{}`.
pub fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body_bytes(body)?;
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    // serde reads a struct from a JSON array too (member by position); the API's bodies
    // are objects only.
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Object(_)) | Err(_) => {}
        Ok(_) => return Err(ApiError::invalid("(body)", "must be a JSON object")),
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let msg = e.to_string();
        let field = msg
            .split('`')
            .nth(1)
            .filter(|_| msg.starts_with("unknown field") || msg.starts_with("missing field"))
            .unwrap_or("(body)")
            .to_string();
        ApiError::invalid(&field, msg)
    })
}

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
        .route("/v1/subscriptions/{name}/dlq", get(routes::dlq::list_dlq))
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
        .route("/healthz", get(routes::ops::healthz))
        .route("/readyz", get(routes::ops::readyz))
        .route("/metrics", get(routes::ops::metrics))
        .route("/openapi.json", get(routes::ops::openapi))
        .fallback(routes::ops::not_found)
        .layer(axum::middleware::from_fn(crate::metrics::track_requests))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Server {
    /// Opens the configured backend, starts the saved subscriptions, binds the listen
    /// address and serves in the background.
    pub async fn start(config: Config) -> Result<Server, ServerError> {
        crate::metrics::install();
        let opened = crate::backend::open_backend(&config.storage).await?;
        let schemas =
            Arc::new(crmbus_schema::SchemaRegistry::open(Arc::clone(&opened.state)).await?);
        let mut loads = Vec::new();
        if config.schemas.catalog {
            loads.push(schemas.load_builtin_catalog().await?);
        }
        if !config.schemas.catalog_dir.as_os_str().is_empty() {
            loads.push(schemas.load_catalog(&config.schemas.catalog_dir).await?);
        }
        for skipped in loads.iter().flat_map(|l| &l.skipped) {
            tracing::warn!(file = %skipped.file, error = %skipped.error, "catalog schema not loaded");
        }
        let mut builder = EventBus::builder()
            .log(Arc::clone(&opened.log))
            .state(Arc::clone(&opened.state));
        if config.schemas.validate {
            builder = builder.validator(Arc::clone(&schemas) as Arc<dyn crmbus::PublishValidator>);
        }
        if config.server.auto_create_topics {
            builder = builder.auto_create_topics(config.server.default_partitions);
        }
        let bus = builder.build();
        crate::routes::topics::load_require_schemas(&bus).await?;
        let listen = config.server.listen.clone();
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: listen.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: listen,
            source,
        })?;
        let subs = Subscriptions::new(bus.clone());
        subs.start_saved().await?;
        let (stop, stopping) = watch::channel(false);
        let grace = Duration::from_millis(config.server.shutdown_timeout_ms);
        let state = Arc::new(AppState {
            bus: bus.clone(),
            subs,
            schemas,
            config,
            stopping: stopping.clone(),
        });
        let app = router(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let mut wait_stop = stopping.clone();
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = wait_stop.wait_for(|s| *s).await;
            });
            let mut stopped = stopping.clone();
            let served = tokio::select! {
                r = serve => r.map_err(ServerError::Http),
                // Requests still running `grace` after the stop began are cut off.
                _ = async {
                    let _ = stopped.wait_for(|s| *s).await;
                    tokio::time::sleep(grace).await;
                } => {
                    tracing::warn!("requests still running after the shutdown timeout were cut off");
                    Ok(())
                }
            };
            state.subs.stop_all().await;
            let closed = state.bus.log().close().await;
            served?;
            closed?;
            Ok(())
        });
        tracing::info!(%addr, "crmbus listening");
        Ok(Server { addr, stop, task })
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops gracefully: no new connections, requests in flight finish (publishes
    /// included), live streams end, subscriptions persist their state, the log flushes.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.stop.send(true);
        self.wait().await
    }

    /// Waits until the server stops (after [`Server::stop_handle`] is used).
    pub async fn wait(self) -> Result<(), ServerError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ServerError::Http(std::io::Error::other(e.to_string()))),
        }
    }

    /// A handle that begins a graceful stop when sent `true`.
    pub fn stop_handle(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}
