//! The [`StateStore`] contract, written once and run by every backend against its store
//! (`tests/state_store.rs` of crmbus, Redis and NATS; the embedded log's in
//! `embedded_behaviour.rs`) with [`check_state_store`].

use std::sync::Arc;

use crmbus::{LogError, StateOp, StateStore};

/// Checks a [`StateStore`] against its contract: atomic batches, sorted prefix scans,
/// namespaces kept apart, and what was applied surviving `reopen`, which must return a
/// store over the same durable state (for an in-memory store, the same store). Then, on
/// the reopened store, [`sorted_prefix_scans`] and [`odd_keys_values_and_batches`]. Returns
/// the first rule broken.
pub async fn check_state_store<F, Fut>(store: Arc<dyn StateStore>, reopen: F) -> Result<(), String>
where
    F: FnOnce(Arc<dyn StateStore>) -> Fut,
    Fut: std::future::Future<Output = Result<Arc<dyn StateStore>, LogError>>,
{
    let err = |what: &str, e: LogError| format!("{what}: {e}");
    let put = |ns: &str, k: &str, v: &str| StateOp::Put {
        namespace: ns.into(),
        key: k.into(),
        value: v.as_bytes().to_vec(),
    };
    if store
        .get("retry/g", "a")
        .await
        .map_err(|e| err("get", e))?
        .is_some()
    {
        return Err("a new store is not empty".into());
    }
    store
        .apply(vec![
            put("retry/g", "k/2", "two"),
            put("retry/g", "k/1", "one"),
            put("retry/g", "other", "x"),
            put("retry/h", "k/1", "h"),
        ])
        .await
        .map_err(|e| err("apply", e))?;
    let scanned = store
        .scan("retry/g", "k/")
        .await
        .map_err(|e| err("scan", e))?;
    let keys: Vec<&str> = scanned.iter().map(|(k, _)| k.as_str()).collect();
    if keys != ["k/1", "k/2"] || scanned[0].1 != b"one" {
        return Err(format!("scan gave {keys:?}"));
    }
    store
        .apply(vec![
            StateOp::Delete {
                namespace: "retry/g".into(),
                key: "k/1".into(),
            },
            put("retry/g", "k/2", "TWO"),
        ])
        .await
        .map_err(|e| err("apply", e))?;
    let store = reopen(store).await.map_err(|e| err("reopen", e))?;
    if store
        .get("retry/g", "k/1")
        .await
        .map_err(|e| err("get", e))?
        .is_some()
    {
        return Err("deleted key came back".into());
    }
    if store
        .get("retry/g", "k/2")
        .await
        .map_err(|e| err("get", e))?
        != Some(b"TWO".to_vec())
    {
        return Err("overwritten value lost on reopen".into());
    }
    if store
        .get("retry/h", "k/1")
        .await
        .map_err(|e| err("get", e))?
        != Some(b"h".to_vec())
    {
        return Err("namespaces mixed up".into());
    }
    store
        .put("n", "k", b"v".to_vec())
        .await
        .map_err(|e| err("put", e))?;
    store.delete("n", "k").await.map_err(|e| err("delete", e))?;
    if store
        .get("n", "k")
        .await
        .map_err(|e| err("get", e))?
        .is_some()
    {
        return Err("delete did not remove".into());
    }
    sorted_prefix_scans(store.as_ref()).await?;
    odd_keys_values_and_batches(store.as_ref()).await
}

/// Prefix scans over many keys (more than one Redis script chunk), written out of order
/// beside neighbours of the prefix, return exactly the keys under the prefix in byte
/// order; binary values come back untouched.
pub async fn sorted_prefix_scans(store: &dyn StateStore) -> Result<(), String> {
    let err = |what: &str, e: LogError| format!("{what}: {e}");
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
    store.apply(ops).await.map_err(|e| err("apply", e))?;
    let got = store
        .scan(ns, "0000000001/")
        .await
        .map_err(|e| err("scan", e))?;
    let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    let mut want: Vec<String> = (0..1200u32)
        .map(|i| format!("0000000001/{i:020}"))
        .collect();
    want.push("0000000001/ü".into());
    if keys != want {
        return Err(format!(
            "prefix scan is not exactly the keys in byte order: {} keys, first {:?}, last {:?}",
            keys.len(),
            keys.first(),
            keys.last()
        ));
    }
    if got[7].1 != 7u32.to_le_bytes().to_vec() {
        return Err(format!("scan gave value {:?} for key 7", got[7].1));
    }
    let all = store.scan(ns, "").await.map_err(|e| err("scan all", e))?;
    if all.len() != 1205 {
        return Err(format!("full scan gave {} entries, want 1205", all.len()));
    }
    if !all.windows(2).all(|w| w[0].0 < w[1].0) {
        return Err("full scan unsorted".into());
    }
    if !store
        .scan("other", "")
        .await
        .map_err(|e| err("scan", e))?
        .is_empty()
    {
        return Err("a namespace nothing was written to is not empty".into());
    }
    // Binary values survive untouched.
    let bin = vec![0u8, 255, 10, 13, 0];
    store
        .put(ns, "bin", bin.clone())
        .await
        .map_err(|e| err("put", e))?;
    let back = store.get(ns, "bin").await.map_err(|e| err("get", e))?;
    if back != Some(bin) {
        return Err(format!("binary value read back as {back:?}"));
    }
    Ok(())
}

/// Binary values, keys with dots and spaces, an empty key and a batch of 300 keys round
/// trip; a namespace is not a prefix of a longer one; a put and a delete of one key in one
/// batch leave it absent.
pub async fn odd_keys_values_and_batches(store: &dyn StateStore) -> Result<(), String> {
    let err = |what: &str, e: LogError| format!("{what}: {e}");
    let mut ops = Vec::new();
    for i in 0..300u32 {
        ops.push(StateOp::Put {
            namespace: "sub/deals/crm.sync/dedupe".into(),
            key: format!("{i:04}.x y"),
            value: vec![0xff, 0x00, (i % 256) as u8],
        });
    }
    ops.push(StateOp::Put {
        namespace: "sub/deals/crm.sync/dedupe".into(),
        key: String::new(),
        value: b"empty key".to_vec(),
    });
    store.apply(ops).await.map_err(|e| err("apply", e))?;
    let all = store
        .scan("sub/deals/crm.sync/dedupe", "")
        .await
        .map_err(|e| err("scan", e))?;
    if all.len() != 301 {
        return Err(format!("scan gave {} entries, want 301", all.len()));
    }
    if all[0] != (String::new(), b"empty key".to_vec()) {
        return Err(format!("first entry {:?}, want the empty key", all[0]));
    }
    if all[1] != ("0000.x y".to_string(), vec![0xff, 0x00, 0]) {
        return Err(format!("second entry {:?}", all[1]));
    }
    let some = store
        .scan("sub/deals/crm.sync/dedupe", "02")
        .await
        .map_err(|e| err("scan", e))?;
    if some.len() != 100 {
        return Err(format!(
            "scan of prefix 02 gave {} entries, want 100",
            some.len()
        ));
    }
    if !store
        .scan("sub/deals/crm.sync", "")
        .await
        .map_err(|e| err("scan", e))?
        .is_empty()
    {
        return Err("a namespace's scan returned entries of a longer namespace".into());
    }
    // Put then delete of one key in one batch leaves it absent.
    store
        .apply(vec![
            StateOp::Put {
                namespace: "n".into(),
                key: "k".into(),
                value: b"v".to_vec(),
            },
            StateOp::Delete {
                namespace: "n".into(),
                key: "k".into(),
            },
            StateOp::Put {
                namespace: "n".into(),
                key: "j".into(),
                value: b"w".to_vec(),
            },
        ])
        .await
        .map_err(|e| err("apply", e))?;
    if store
        .get("n", "k")
        .await
        .map_err(|e| err("get", e))?
        .is_some()
    {
        return Err("a key put and deleted in one batch is present".into());
    }
    if store.get("n", "j").await.map_err(|e| err("get", e))? != Some(b"w".to_vec()) {
        return Err("the batch's last put is missing".into());
    }
    Ok(())
}
