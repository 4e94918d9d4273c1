//! The delivery engine scenarios on MemoryLog + MemoryStateStore.

use std::sync::Arc;
use std::time::Duration;

use crmbus::{MemoryLog, MemoryStateStore};
use crmbus_testkit::delivery::Backend;

fn backend(dedupe_window: Duration) -> Backend {
    Backend {
        log: Arc::new(MemoryLog::with_dedupe_window(dedupe_window)),
        state: Arc::new(MemoryStateStore::new()),
        keep: Box::new(()),
    }
}

crmbus_testkit::delivery_scenarios!(backend);
