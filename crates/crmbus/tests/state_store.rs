//! MemoryStateStore keeps the StateStore contract ("reopen" is the same store: it lives
//! only as long as the process).

use std::sync::Arc;

use crmbus::{MemoryStateStore, StateStore};
use crmbus_testkit::state_store::check_state_store;

#[tokio::test]
async fn memory_state_store_keeps_the_contract() {
    let store: Arc<dyn StateStore> = Arc::new(MemoryStateStore::new());
    check_state_store(store, |s| async move { Ok(s) })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}
