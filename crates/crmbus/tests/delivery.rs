//! The delivery engine scenarios on MemoryLog + MemoryStateStore.

use std::sync::Arc;
use std::time::Duration;

use crmbus::{MemoryLog, MemoryStateStore};

fn backend(dedupe_window: Duration) -> scenarios::Backend {
    scenarios::Backend {
        log: Arc::new(MemoryLog::with_dedupe_window(dedupe_window)),
        state: Arc::new(MemoryStateStore::new()),
        keep: Box::new(()),
    }
}

#[path = "shared/delivery_scenarios.rs"]
mod scenarios;
