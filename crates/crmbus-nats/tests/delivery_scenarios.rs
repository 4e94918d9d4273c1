//! The delivery engine scenarios (shared with the in-memory and embedded runs) on the
//! JetStream log and the JetStream state store, each in a namespace of its own.

use std::sync::Arc;
use std::time::Duration;

use crmbus_nats::{NatsOptions, NatsStateStore};
use crmbus_testkit::delivery::Backend;

mod common;

/// The scenarios ask for a backend synchronously from inside their runtime (always a
/// multi-threaded one): connect on this worker thread with `block_in_place`.
fn backend(dedupe_window: Duration) -> Backend {
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(async move {
            let cleanup = common::Cleanup::default();
            let prefix = common::unique_prefix("delivery");
            cleanup.add(&prefix);
            let opened =
                crmbus_nats::open_with(&common::url(), &prefix, NatsOptions { dedupe_window })
                    .await
                    .expect("open backend");
            // The same state store reached through its own constructor also works.
            let _: Arc<NatsStateStore> = Arc::new(
                NatsStateStore::open(&common::url(), &prefix)
                    .await
                    .expect("open state store"),
            );
            Backend {
                log: opened.log,
                state: opened.state,
                keep: Box::new(cleanup),
            }
        })
    })
}

crmbus_testkit::delivery_scenarios!(backend);
