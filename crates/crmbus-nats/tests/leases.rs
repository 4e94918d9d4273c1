//! NatsLeaseStore against the real server: the lease contract of crmbus-testkit, and fenced
//! state writes and offset commits refused once the lease is lost.

mod common;

use std::sync::Arc;

use crmbus::{EventLog, StateStore};
use crmbus_testkit::leases::check_leases;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_leases_keep_the_contract_and_fence_writes() {
    let cleanup = common::Cleanup::default();
    let prefix = common::unique_prefix("leases");
    cleanup.add(&prefix);
    let opened = crmbus_nats::open(&common::url(), &prefix)
        .await
        .expect("open");
    let state: Arc<dyn StateStore> = Arc::clone(&opened.state);
    let leases = state.leases().expect("nats has leases");
    let log: Arc<dyn EventLog> = opened.log;
    check_leases(leases, state, log, "leases-topic")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}
