//! `NatsStateStore` against the real server: the StateStore contract of crmbus-testkit, a
//! batch a crash left in the journal is applied at the next open, and `open` errors name
//! the URL.

use std::sync::Arc;

use crmbus::StateStore;
use crmbus_nats::NatsStateStore;
use crmbus_testkit::state_store::check_state_store;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_store_keeps_the_contract() {
    let cleanup = common::Cleanup::default();
    let prefix = common::unique_prefix("state");
    cleanup.add(&prefix);
    let store: Arc<dyn StateStore> = Arc::new(
        NatsStateStore::open(&common::url(), &prefix)
            .await
            .expect("open"),
    );
    let reopen_prefix = prefix.clone();
    check_state_store(store, |old| async move {
        drop(old);
        let s: Arc<dyn StateStore> =
            Arc::new(NatsStateStore::open(&common::url(), &reopen_prefix).await?);
        Ok(s)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// A crash after the journal write and before the KV writes: simulated by writing the
/// journal entry directly. The next open applies the whole batch and empties the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_left_in_the_journal_is_applied_whole_at_open() {
    let cleanup = common::Cleanup::default();
    let prefix = common::unique_prefix("state-journal");
    cleanup.add(&prefix);
    let store = NatsStateStore::open(&common::url(), &prefix)
        .await
        .expect("open");
    store
        .put("retry/g", "gone", b"old".to_vec())
        .await
        .expect("put");
    drop(store);

    let client = async_nats::connect(common::url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let batch = serde_json::json!([
        {"ns": "retry/g", "key": "a", "s": "1"},
        {"ns": "retry/g", "key": "b", "h": "00ff"},
        {"ns": "retry/g", "key": "gone"},
    ]);
    js.publish(
        format!("{prefix}._journal"),
        serde_json::to_vec(&batch).expect("json").into(),
    )
    .await
    .expect("publish")
    .await
    .expect("ack");

    let store = NatsStateStore::open(&common::url(), &prefix)
        .await
        .expect("reopen");
    assert_eq!(
        store.get("retry/g", "a").await.expect("get"),
        Some(b"1".to_vec())
    );
    assert_eq!(
        store.get("retry/g", "b").await.expect("get"),
        Some(vec![0x00, 0xff])
    );
    assert_eq!(store.get("retry/g", "gone").await.expect("get"), None);
    let mut journal = js
        .get_stream(format!("{prefix}-journal"))
        .await
        .expect("journal");
    assert_eq!(
        journal.info().await.expect("info").state.messages,
        0,
        "the applied batch is still in the journal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_an_error_naming_the_url() {
    let url = "nats://127.0.0.1:1";
    let err = match crmbus_nats::open(url, "crmbus").await {
        Ok(_) => panic!("opened a backend on a closed port"),
        Err(e) => e,
    };
    assert_eq!(err.code(), "unavailable");
    assert!(
        err.to_string().contains(url),
        "error does not name the URL: {err}"
    );
    let bad = crmbus_nats::open(&common::url(), "bad.prefix").await;
    assert!(matches!(bad, Err(crmbus::LogError::InvalidArgument(_))));
    let line = crmbus_nats::durability_setting(url).await;
    assert!(line.contains("unreachable"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_returns_a_log_and_state_store_and_durability_is_described() {
    let cleanup = common::Cleanup::default();
    let prefix = common::unique_prefix("open");
    cleanup.add(&prefix);
    let opened = crmbus_nats::open(&common::url(), &prefix)
        .await
        .expect("open");
    assert_eq!(opened.log.backend_name(), "nats");
    opened
        .state
        .put("ns", "k", b"v".to_vec())
        .await
        .expect("put");
    let spec = crmbus::TopicSpec {
        require_schemas: true,
        ..crmbus::TopicSpec::new("deals", 2)
    };
    opened.log.create_topic(spec.clone()).await.expect("create");
    let log = crmbus_nats::NatsLog::connect(&common::url(), &prefix, Default::default())
        .await
        .expect("connect");
    assert_eq!(
        log.topic_spec("deals").await.expect("spec"),
        spec,
        "the whole spec (require_schemas too) round-trips"
    );
    let line = crmbus_nats::durability_setting(&common::url()).await;
    assert!(line.starts_with("NATS "), "{line}");
    println!("{line}");
}
