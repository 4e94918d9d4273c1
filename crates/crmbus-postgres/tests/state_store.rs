//! The state-store contract on PostgreSQL (`PgStateStore`), in a database of its own; two
//! namespaces in one database stay apart.

use std::sync::Arc;

use crmbus::StateStore;
use crmbus_postgres::PgStateStore;
use crmbus_testkit::outbox::TestDb;

#[tokio::test]
async fn the_postgres_state_store_keeps_the_contract() {
    let db = TestDb::create().await;
    let store = PgStateStore::connect(&db.url, "crmbus")
        .await
        .expect("open");
    let url = db.url.clone();
    let result =
        crmbus_testkit::state_store::check_state_store(Arc::new(store), |old| async move {
            drop(old);
            Ok(Arc::new(PgStateStore::connect(&url, "crmbus").await?) as Arc<dyn StateStore>)
        })
        .await;
    db.drop_db().await;
    result.expect("state store contract");
}

#[tokio::test]
async fn namespaces_of_two_deployments_in_one_database_stay_apart() {
    let db = TestDb::create().await;
    let a = PgStateStore::connect(&db.url, "a").await.expect("open a");
    let b = PgStateStore::connect(&db.url, "b").await.expect("open b");
    a.put("retry/g", "k", b"from a".to_vec())
        .await
        .expect("put");
    let seen_by_b = b.get("retry/g", "k").await.expect("get");
    let scan_b = b.scan("retry/g", "").await.expect("scan");
    let purged = b.purge().await.expect("purge b");
    let kept = a.get("retry/g", "k").await.expect("get a");
    db.drop_db().await;
    assert_eq!(seen_by_b, None, "a key of namespace a is visible in b");
    assert!(scan_b.is_empty(), "b's scan shows a's keys: {scan_b:?}");
    assert_eq!(purged, 0, "purging b removed rows of a");
    assert_eq!(kept, Some(b"from a".to_vec()));
}

#[tokio::test]
async fn claims_and_conditional_updates_take_effect_only_once() {
    let db = TestDb::create().await;
    let store = PgStateStore::connect(&db.url, "crmbus")
        .await
        .expect("open");
    let first = store
        .insert_new("topics", "deals", b"a")
        .await
        .expect("claim");
    let second = store
        .insert_new("topics", "deals", b"b")
        .await
        .expect("claim again");
    let stale_swap = store
        .compare_and_swap("topics", "deals", b"b", b"c")
        .await
        .expect("swap with a stale value");
    let swap = store
        .compare_and_swap("topics", "deals", b"a", b"c")
        .await
        .expect("swap");
    let after_swap = store.get("topics", "deals").await.expect("get");
    let stale_delete = store
        .delete_if("topics", "deals", b"a")
        .await
        .expect("delete stale");
    let delete = store
        .delete_if("topics", "deals", b"c")
        .await
        .expect("delete");
    let gone = store.get("topics", "deals").await.expect("get");
    let swap_gone = store
        .compare_and_swap("topics", "deals", b"c", b"d")
        .await
        .expect("swap a removed key");
    db.drop_db().await;
    assert!(first && !second, "only the first claim wins");
    assert!(!stale_swap && swap, "a swap needs the current value");
    assert_eq!(after_swap, Some(b"c".to_vec()));
    assert!(
        !stale_delete && delete,
        "a conditional delete needs the current value"
    );
    assert_eq!(gone, None);
    assert!(!swap_gone, "a removed key is not brought back by a swap");
}
