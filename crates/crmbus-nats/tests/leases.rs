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

/// Listing leases starts no consumer on the leases bucket. A listing through a consumer
/// (`Store::keys`) could wait forever on NATS 2.9 when a key was rewritten while the
/// consumer started (its pending count stayed above zero): the server whose listing
/// waited stopped renewing its membership, and the others dropped it from the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_leases_starts_no_consumer() {
    let cleanup = common::Cleanup::default();
    let prefix = common::unique_prefix("lease-list");
    cleanup.add(&prefix);
    let opened = crmbus_nats::open(&common::url(), &prefix)
        .await
        .expect("open");
    let state: Arc<dyn StateStore> = Arc::clone(&opened.state);
    let leases = state.leases().expect("nats has leases");
    let ttl = std::time::Duration::from_secs(60);
    let mut tokens = Vec::new();
    for (name, holder) in [
        ("member/a", "a"),
        ("member/b", "b"),
        ("part/s/0", "a"),
        ("member/c", "c"),
        ("member/d", "d"),
    ] {
        let token = leases
            .acquire(name, holder, "{}", ttl)
            .await
            .expect("acquire");
        tokens.push(token.expect("the lease is free"));
    }
    // Given up and removed leases leave markers in the bucket: they are not listed.
    leases
        .release("member/c", tokens[3])
        .await
        .expect("release");
    leases.revoke("member/d").await.expect("revoke");
    let client = async_nats::connect(common::url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream(format!("KV_{prefix}_leases"))
        .await
        .expect("the leases bucket's stream");
    let before = stream.info().await.expect("info").state.consumer_count;
    let listed = leases.list("member/").await.expect("list");
    let names: Vec<&str> = listed.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["member/a", "member/b"]);
    let all = leases.list("").await.expect("list");
    let names: Vec<&str> = all.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["member/a", "member/b", "part/s/0"]);
    let after = stream.info().await.expect("info").state.consumer_count;
    assert_eq!(after, before, "listing leases started a consumer");
}
