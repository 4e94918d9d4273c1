//! The delivery engine scenarios (shared with the in-memory and embedded runs) on
//! RedisLog and RedisStateStore; each world has its own key prefix, deleted at its end.

use std::sync::Arc;
use std::time::Duration;

use crmbus_redis::{RedisLog, RedisOptions};
use crmbus_testkit::delivery::Backend;

#[path = "common/mod.rs"]
mod common;

fn backend(dedupe_window: Duration) -> Backend {
    let prefix = common::unique_prefix("delivery");
    let cleanup = common::Cleanup::new(&prefix);
    let opts = RedisOptions {
        dedupe_window,
        ..RedisOptions::default()
    };
    // The scenarios build their backend synchronously, inside the test's runtime.
    let log = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(RedisLog::open_with(
            &common::url(),
            &prefix,
            opts,
        ))
    })
    .expect("open redis log");
    Backend {
        state: log.state_store(),
        log: Arc::new(log),
        keep: Box::new(cleanup),
    }
}

crmbus_testkit::delivery_scenarios!(backend);
