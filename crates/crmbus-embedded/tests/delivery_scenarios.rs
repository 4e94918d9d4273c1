//! The delivery engine scenarios (shared with the in-memory run in `crmbus`) on the
//! embedded log (fsync) and its redb state store.

use std::sync::Arc;
use std::time::Duration;

use crmbus_embedded::{EmbeddedLog, EmbeddedOptions};

fn backend(dedupe_window: Duration) -> scenarios::Backend {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = EmbeddedOptions {
        dedupe_window,
        retention_interval: None,
        ..EmbeddedOptions::default()
    };
    let log = Arc::new(EmbeddedLog::open(dir.path(), opts).expect("open log"));
    scenarios::Backend {
        state: log.state_store(),
        log,
        keep: Box::new(dir),
    }
}

#[path = "../../crmbus/tests/shared/delivery_scenarios.rs"]
mod scenarios;
