//! The delivery engine scenarios (shared with the in-memory run in `crmbus`) on the
//! embedded log (fsync) and its redb state store.

use std::sync::Arc;
use std::time::Duration;

use crmbus_embedded::{EmbeddedLog, EmbeddedOptions};
use crmbus_testkit::delivery::Backend;

fn backend(dedupe_window: Duration) -> Backend {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = EmbeddedOptions {
        dedupe_window,
        retention_interval: None,
        ..EmbeddedOptions::default()
    };
    let log = Arc::new(EmbeddedLog::open(dir.path(), opts).expect("open log"));
    Backend {
        state: log.state_store(),
        log,
        keep: Box::new(dir),
    }
}

crmbus_testkit::delivery_scenarios!(backend);
