//! The application state every handler shares.

use std::sync::Arc;

use crmbus::EventBus;
use tokio::sync::watch;

use crate::config::Config;
use crate::subscriptions::Subscriptions;

/// What every handler shares.
pub struct AppState {
    /// The bus publishing goes through.
    pub bus: EventBus,
    /// Subscriptions.
    pub subs: Subscriptions,
    /// API keys and when they are needed.
    pub auth: crate::auth::gate::Auth,
    /// The audit log: admin actions, DLQ actions, key changes, bursts of refused requests.
    pub audit: crate::audit::AuditLog,
    /// Rate limits per key and per topic.
    pub limits: crate::rate_limit::RateLimits,
    /// The schema registry (validation at publish when `schemas.validate` is on).
    pub schemas: Arc<crmbus_schema::SchemaRegistry>,
    /// The configuration the server runs with.
    pub config: Config,
    /// Turns true when the server begins to stop; live streams and long polls end.
    pub stopping: watch::Receiver<bool>,
    /// Publish requests under way (a publish that is alone shares its parsing with a
    /// helper thread).
    pub publishes: crate::shared_work::InFlight,
}

impl AppState {
    /// Takes in what other servers sharing the backend changed: schemas and their modes,
    /// and topic rules (subscriptions are taken in by their own
    /// reconciliation). Failures are logged and tried again next time.
    pub async fn reload_shared_definitions(&self) {
        if let Err(e) = self.schemas.reload().await {
            tracing::warn!(error = %e, "reloading the schema registry");
        }
        if let Err(e) = self.bus.load_topic_rules().await {
            tracing::warn!(error = %e, "reloading the topic rules");
        }
    }
}

/// The shared state as handlers receive it.
pub type Shared = Arc<AppState>;
