//! RedisLeaseStore against a real Redis: the lease contract of crmbus-testkit, and fenced
//! state writes and offset commits refused once the lease is lost.

mod common;

use std::sync::Arc;

use crmbus::{EventLog, StateStore};
use crmbus_testkit::leases::check_leases;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_leases_keep_the_contract_and_fence_writes() {
    let prefix = common::unique_prefix("leases");
    let _cleanup = common::Cleanup::new(&prefix);
    let opened = crmbus_redis::open(&common::url(), &prefix)
        .await
        .expect("open");
    let state: Arc<dyn StateStore> = Arc::clone(&opened.state);
    let leases = state.leases().expect("redis has leases");
    let log: Arc<dyn EventLog> = opened.log;
    check_leases(leases, state, log, "leases-topic")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}
