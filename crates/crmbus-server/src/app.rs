//! The server: starting it (backend, schema registry, bus, saved subscriptions, outbox
//! relays, listener) and stopping it gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crmbus::{EventBus, LogError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit::AuditLog;
use crate::auth::gate::Auth;
use crate::auth::keys::KeyStore;
use crate::cluster::Cluster;
use crate::config::AuthMode;
use crate::config::Config;
use crate::listener::{ApiListener, ClientAddr, TlsCertificate};
use crate::push::Push;
use crate::rate_limit::RateLimits;
use crate::router::router;
use crate::state::AppState;
use crate::subscriptions::Subscriptions;

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
    /// An `[[outbox]]` relay could not be set up (a malformed database URL).
    #[error("outbox: {0}")]
    Outbox(#[from] crmbus_postgres::OutboxError),
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    /// Serving HTTPS.
    tls: bool,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Server {
    /// Opens the configured backend, starts the saved subscriptions, binds the listen
    /// address and serves in the background.
    pub async fn start(config: Config) -> Result<Server, ServerError> {
        Server::start_with_clock(config, Arc::new(crmbus::SystemClock)).await
    }

    /// [`Server::start`] with the clock retries, breakers and webhook signatures go by:
    /// tests move a [`crmbus::ManualClock`] to make a retry due (a `Retry-After` of two
    /// minutes, say) without waiting for it.
    pub async fn start_with_clock(
        config: Config,
        clock: Arc<dyn crmbus::Clock>,
    ) -> Result<Server, ServerError> {
        crate::metrics::install();
        let storage = config
            .storage
            .resolve()
            .map_err(LogError::InvalidArgument)?;
        let opened = crate::backend::open_backend(&storage).await?;
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
            .state(Arc::clone(&opened.state))
            .clock(Arc::clone(&clock));
        if config.schemas.validate {
            builder = builder.validator(Arc::clone(&schemas) as Arc<dyn crmbus::PublishValidator>);
        }
        if config.server.auto_create_topics {
            builder = builder.auto_create_topics(config.server.default_partitions);
        }
        let bus = builder.build();
        bus.load_topic_rules().await?;
        crate::legacy::load_require_schemas(&bus).await?;
        let auth = Auth::new(
            KeyStore::new(Arc::clone(&opened.state)),
            config.auth.mode,
            Arc::clone(&clock),
        );
        // Decided before the address is bound: a server that may not serve there does not
        // listen there even for a moment.
        if config.auth.mode != AuthMode::None {
            auth.keys.prepare().await?;
        }
        let loopback = config.listen_addr().is_ok_and(|a| a.ip().is_loopback());
        let addr = &config.server.listen;
        match config.auth.mode {
            AuthMode::Auto if !loopback && !auth.keys.any_active(clock.now_micros()).await? => {
                return Err(ServerError::Config(crate::config::ConfigError::Invalid {
                    origin: String::new(),
                    message: format!(
                        "listening on {addr}, off loopback, needs API keys and none works yet: make the first on a server listening on 127.0.0.1 (crmbus keys create NAME --scope admin), or set [auth] mode = \"none\" to serve without keys"
                    ),
                }));
            }
            AuthMode::None if !loopback => {
                tracing::warn!(%addr, "[auth] mode = \"none\": anyone who reaches this address may publish, read, redrive and delete");
            }
            _ => {}
        }
        // The certificate is read before binding: a server that cannot serve HTTPS as
        // configured does not listen at all.
        let tls = if config.server.tls_cert.as_os_str().is_empty() {
            None
        } else {
            let cert = TlsCertificate::load(&config.server.tls_cert, &config.server.tls_key)
                .map_err(|e| {
                    ServerError::Config(crate::config::ConfigError::Invalid {
                        origin: String::new(),
                        message: e.to_string(),
                    })
                })?;
            Some(Arc::new(cert))
        };
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
        let cluster = match opened.state.leases() {
            Some(leases) if config.cluster.enabled => {
                if config.cluster.advertise_url.is_empty() && addr.ip().is_unspecified() {
                    return Err(ServerError::Config(crate::config::ConfigError::Invalid {
                        origin: String::new(),
                        message: format!(
                            "cluster.advertise_url is required when server.listen is {addr}: the other servers sharing the backend forward acks to this server at that URL (set it, or [cluster] enabled = false if no other server shares the backend)"
                        ),
                    }));
                }
                let url = if config.cluster.advertise_url.is_empty() {
                    let scheme = if tls.is_some() { "https" } else { "http" };
                    format!("{scheme}://{addr}")
                } else {
                    config.cluster.advertise_url.clone()
                };
                let id = uuid::Uuid::now_v7().simple().to_string();
                tracing::info!(member = %id, %url, "joining the servers that share this backend");
                // The others serve with the same kind of certificate: trust this one's.
                let trusted = match tls {
                    Some(_) => std::fs::read(&config.server.tls_cert)
                        .ok()
                        .and_then(|pem| reqwest::Certificate::from_pem_bundle(&pem).ok())
                        .unwrap_or_default(),
                    None => Vec::new(),
                };
                Some(Arc::new(Cluster::new(
                    leases,
                    id,
                    url,
                    Duration::from_millis(config.cluster.lease_ttl_ms),
                    &trusted,
                )))
            }
            _ => None,
        };
        let (push, mut gone) = Push::new(&config.push, Arc::clone(&clock)).map_err(|message| {
            ServerError::Config(crate::config::ConfigError::Invalid {
                origin: String::new(),
                message,
            })
        })?;
        let subs = Subscriptions::new(bus.clone(), cluster.clone(), Arc::new(push));
        subs.start_saved().await?;
        // A member before the first round, so that the round counts this server (it would
        // otherwise serve its first requests owning no partition, and a pull waiting on that
        // empty queue would get nothing when the next round replaced it).
        if let Some(cluster) = &cluster {
            if let Err(e) = cluster.renew_membership().await {
                tracing::warn!(error = %e, "joining the cluster; trying again every tick");
            }
        }
        subs.reconcile().await;
        let (stop, stopping) = watch::channel(false);
        let mut relays = Vec::new();
        for section in &config.outbox {
            let relay = crmbus_postgres::Relay::new(
                crmbus_postgres::RelayOptions {
                    name: section.name.clone(),
                    batch_size: section.batch_size,
                    poll_interval: Duration::from_millis(section.poll_interval_ms),
                    retention: Duration::from_secs(section.retention_hours.saturating_mul(3600)),
                    ..crmbus_postgres::RelayOptions::new(section.database_url.clone())
                },
                Arc::new(bus.clone()),
            )?;
            let stopping = stopping.clone();
            relays.push(tokio::spawn(async move { relay.run(stopping).await }));
        }
        let grace = Duration::from_millis(config.server.shutdown_timeout_ms);
        let audit = AuditLog::new(
            Arc::clone(&opened.state),
            Arc::clone(&clock),
            config.audit.clone(),
        );
        let limits = RateLimits::new(&config.limits);
        let state = Arc::new(AppState {
            bus: bus.clone(),
            subs,
            auth,
            audit,
            limits,
            schemas,
            config,
            stopping: stopping.clone(),
            publishes: Default::default(),
        });
        // Hourly upkeep: the audit log's retention, and rate-limit buckets that are idle.
        let upkeep = {
            let state = Arc::downgrade(&state);
            let mut stopping = stopping.clone();
            tokio::spawn(async move {
                loop {
                    let Some(s) = state.upgrade() else { return };
                    if let Err(e) = s.audit.prune().await {
                        tracing::warn!(error = %e, "pruning the audit log");
                    }
                    s.limits.forget_idle();
                    drop(s);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                        _ = stopping.wait_for(|s| *s) => return,
                    }
                }
            })
        };
        // A webhook that answered 410 Gone asks here for its subscription to be disabled
        // (the handler cannot stop its own engine).
        let disabler = {
            let state = Arc::downgrade(&state);
            let mut stopping = stopping.clone();
            tokio::spawn(async move {
                loop {
                    let next = tokio::select! {
                        g = gone.recv() => g,
                        _ = stopping.wait_for(|s| *s) => None,
                    };
                    let (Some(g), Some(state)) = (next, state.upgrade()) else {
                        return;
                    };
                    state.subs.disable(g).await;
                }
            })
        };
        // The membership is kept on its own, so a slow round cannot let it lapse.
        let membership = cluster.clone().map(|cluster| {
            let stopping = stopping.clone();
            tokio::spawn(async move { cluster.keep_membership(stopping).await })
        });
        let reconciler = cluster.map(|cluster| {
            let state = Arc::clone(&state);
            let mut stopping = stopping.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(cluster.next_sleep()) => {}
                        _ = cluster.kick.notified() => {}
                        _ = stopping.wait_for(|s| *s) => return,
                    }
                    state.subs.reconcile().await;
                    state.reload_shared_definitions().await;
                }
            })
        });
        let app = router(Arc::clone(&state));
        let listener = match &tls {
            Some(cert) => ApiListener::tls(listener, Arc::clone(cert)),
            None => ApiListener::plain(listener),
        }
        .map_err(|source| ServerError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let reloader = tls
            .clone()
            .map(|cert| spawn_tls_reloader(cert, stopping.clone()));
        let task = tokio::spawn(async move {
            let mut wait_stop = stopping.clone();
            // The caller's address goes into audit entries.
            let app = app.into_make_service_with_connect_info::<ClientAddr>();
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
            for relay in relays {
                let _ = relay.await;
            }
            let _ = disabler.await;
            let _ = upkeep.await;
            if let Some(r) = reloader {
                let _ = r.await;
            }
            if let Some(r) = reconciler {
                let _ = r.await;
            }
            // Ended before the membership is given up, so that it is not taken again.
            if let Some(m) = membership {
                let _ = m.await;
            }
            state.subs.stop_all().await;
            state.subs.leave_cluster().await;
            let closed = state.bus.close().await;
            served?;
            closed?;
            Ok(())
        });
        tracing::info!(%addr, "crmbus listening");
        Ok(Server {
            addr,
            tls: tls.is_some(),
            stop,
            task,
        })
    }

    /// The server's base URL: `https://<address>` when it serves TLS, else `http://…`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
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

/// Reads the API's certificate and key again on every SIGHUP until the server stops; a
/// failed reload keeps the pair in use and says why.
fn spawn_tls_reloader(
    cert: Arc<TlsCertificate>,
    mut stopping: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hangups = match signal(SignalKind::hangup()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP: the TLS certificate will not be reloaded");
                    return;
                }
            };
            loop {
                tokio::select! {
                    got = hangups.recv() => {
                        if got.is_none() {
                            return;
                        }
                        match cert.reload() {
                            Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                            Err(e) => tracing::error!(error = %e, "SIGHUP: TLS certificate not reloaded; the previous one stays"),
                        }
                    }
                    _ = stopping.wait_for(|s| *s) => return,
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (cert, stopping.wait_for(|s| *s).await);
        }
    })
}
