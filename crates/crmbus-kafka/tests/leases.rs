//! The state store and leases the Kafka backend opens (PostgreSQL) against the real broker
//! and database: the lease contract of crmbus-testkit, with fenced state writes and
//! fenced offset commits of the Kafka log refused once the lease is lost.

mod common;

use std::sync::Arc;

use crmbus::{EventLog, StateStore};
use crmbus_testkit::leases::check_leases;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_backend_leases_keep_the_contract_and_fence_writes() {
    let cleanup = common::Cleanup::default();
    let prefix = common::unique_prefix("leases");
    cleanup.add(&prefix);
    let opened = crmbus_kafka::open(
        &common::bootstrap(),
        &common::state_url(),
        &prefix,
        common::options(),
    )
    .await
    .expect("open");
    let state: Arc<dyn StateStore> = Arc::clone(&opened.state);
    let leases = state.leases().expect("the Kafka backend has leases");
    let log: Arc<dyn EventLog> = opened.log;
    check_leases(leases, state, log, "leases-topic")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_backend_state_store_keeps_the_contract() {
    let cleanup = common::Cleanup::default();
    let prefix = common::unique_prefix("state");
    cleanup.add(&prefix);
    let opened = crmbus_kafka::open(
        &common::bootstrap(),
        &common::state_url(),
        &prefix,
        common::options(),
    )
    .await
    .expect("open");
    let reopen_prefix = prefix.clone();
    crmbus_testkit::state_store::check_state_store(opened.state, |old| async move {
        drop(old);
        let again = crmbus_kafka::open(
            &common::bootstrap(),
            &common::state_url(),
            &reopen_prefix,
            common::options(),
        )
        .await?;
        Ok(again.state)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}
