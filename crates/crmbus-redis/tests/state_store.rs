//! RedisStateStore against a real Redis: the StateStore contract, prefix scans over many
//! keys in byte order, and atomic batches.

mod common;

use std::sync::Arc;

use crmbus::state::check_state_store;
use crmbus::{StateOp, StateStore};
use crmbus_redis::{RedisLog, RedisStateStore};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_are_sorted_by_key_and_exact_about_the_prefix() {
    let prefix = common::unique_prefix("state-scan");
    let _cleanup = common::Cleanup::new(&prefix);
    let log = RedisLog::open(&common::url(), &prefix).await.expect("open");
    let store = log.state_store();
    let ns = "sub/deals/crm-sync/retry";
    let mut ops = Vec::new();
    // More keys than one script chunk, written out of order, plus neighbours of the prefix.
    for i in (0..1200u32).rev() {
        ops.push(StateOp::Put {
            namespace: ns.into(),
            key: format!("0000000001/{i:020}"),
            value: i.to_le_bytes().to_vec(),
        });
    }
    for k in [
        "0000000000/x",
        "0000000001",
        "0000000002/a",
        "0000000001/ü",
        "00000000010",
    ] {
        ops.push(StateOp::Put {
            namespace: ns.into(),
            key: k.into(),
            value: b"n".to_vec(),
        });
    }
    store.apply(ops).await.expect("apply");
    let got = store.scan(ns, "0000000001/").await.expect("scan");
    let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    let mut want: Vec<String> = (0..1200u32)
        .map(|i| format!("0000000001/{i:020}"))
        .collect();
    want.push("0000000001/ü".into());
    assert_eq!(
        keys, want,
        "prefix scan is not exactly the keys in byte order"
    );
    assert_eq!(got[7].1, 7u32.to_le_bytes().to_vec());
    let all = store.scan(ns, "").await.expect("scan all");
    assert_eq!(all.len(), 1205);
    assert!(
        all.windows(2).all(|w| w[0].0 < w[1].0),
        "full scan unsorted"
    );
    assert!(store.scan("other", "").await.expect("scan").is_empty());
    // Binary values survive untouched.
    let bin = vec![0u8, 255, 10, 13, 0];
    store.put(ns, "bin", bin.clone()).await.expect("put");
    assert_eq!(store.get(ns, "bin").await.expect("get"), Some(bin));
}
