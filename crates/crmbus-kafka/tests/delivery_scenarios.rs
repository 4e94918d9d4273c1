//! The delivery engine scenarios (shared with the in-memory, embedded, Redis and NATS
//! runs) on the Kafka log and its PostgreSQL state store, each in a namespace of its own.

use std::time::Duration;

use crmbus_kafka::KafkaOptions;
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
            let opened = crmbus_kafka::open(
                &common::bootstrap(),
                &common::state_url(),
                &prefix,
                KafkaOptions {
                    dedupe_window,
                    ..common::options()
                },
            )
            .await
            .expect("open backend");
            Backend {
                log: opened.log,
                state: opened.state,
                keep: Box::new(cleanup),
            }
        })
    })
}

crmbus_testkit::delivery_scenarios!(backend);
