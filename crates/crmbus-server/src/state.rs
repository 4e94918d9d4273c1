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
