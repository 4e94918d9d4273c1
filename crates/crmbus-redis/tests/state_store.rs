//! RedisStateStore against a real Redis: the StateStore contract of crmbus-testkit (with its
//! prefix scans over many keys in byte order, odd keys and atomic batches), across a reopen.

mod common;

use std::sync::Arc;

use crmbus::StateStore;
use crmbus_redis::RedisStateStore;
use crmbus_testkit::state_store::check_state_store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_state_store_keeps_the_contract_across_a_reopen() {
    let prefix = common::unique_prefix("state");
    let _cleanup = common::Cleanup::new(&prefix);
    let store: Arc<dyn StateStore> = Arc::new(
        RedisStateStore::open(&common::url(), &prefix)
            .await
            .expect("open"),
    );
    let reopen_prefix = prefix.clone();
    check_state_store(store, |old| async move {
        drop(old);
        let s: Arc<dyn StateStore> =
            Arc::new(RedisStateStore::open(&common::url(), &reopen_prefix).await?);
        Ok(s)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}
