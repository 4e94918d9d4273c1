//! Opening the configured storage backend: the one place that knows every backend the
//! server can run on.

use std::sync::Arc;

use crmbus::{BackendKind, LogError, OpenedBackend};
use crmbus_embedded::{Durability, EmbeddedOptions};

use crate::config::StorageSection;

/// Opens the backend `[storage]` names.
pub async fn open_backend(storage: &StorageSection) -> Result<OpenedBackend, LogError> {
    match storage.backend.as_str() {
        "redis" => crmbus_redis::open(&storage.url, &storage.prefix).await,
        "nats" => crmbus_nats::open(&storage.url, &storage.prefix).await,
        other => {
            let kind: BackendKind = other
                .parse()
                .map_err(|e: String| LogError::InvalidArgument(e))?;
            let opts = EmbeddedOptions {
                durability: if storage.durability == "os" {
                    Durability::Os
                } else {
                    Durability::Fsync
                },
                ..EmbeddedOptions::default()
            };
            let dir = storage.data_dir.clone();
            let opened = tokio::task::spawn_blocking(move || {
                crmbus_embedded::open_backend(kind, &dir, opts)
            })
            .await
            .map_err(|e| LogError::Backend(format!("opening the backend: {e}")))??;
            Ok(OpenedBackend {
                log: Arc::clone(&opened.log),
                state: Arc::clone(&opened.state),
            })
        }
    }
}
