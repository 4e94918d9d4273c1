//! What is particular to the Kafka backend, against the real broker and database: the
//! repair of a topic deletion a crash cut short, a Kafka topic without a crmbus record left
//! alone, one winner among racing creators, the settings crmbus's guarantees rest on
//! refused, and retention applied in the background.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crmbus::{Event, EventLog, LogError, Retention, StateStore, TopicSpec};
use crmbus_kafka::{KafkaLog, KafkaOptions};
use crmbus_postgres::PgStateStore;
use serde_json::json;

mod common;

async fn open(prefix: &str, opts: KafkaOptions) -> KafkaLog {
    let state = PgStateStore::connect(&common::state_url(), prefix)
        .await
        .expect("state");
    KafkaLog::connect(&common::bootstrap(), state, opts)
        .await
        .expect("open")
}

fn ev(n: u64) -> Event {
    Event::new(
        "deal.updated",
        json!({"deal_id": format!("d-{}", n % 7), "n": n}),
    )
    .subject(format!("d-{}", n % 7))
    .source("urn:test:kafka")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_cut_short_is_finished_at_the_next_open_and_the_name_is_free_again() {
    let cleanup = common::Cleanup::default();
    let prefix = common::unique_prefix("del-repair");
    cleanup.add(&prefix);
    let log = open(&prefix, common::options()).await;
    log.create_topic(TopicSpec::new("deals", 2))
        .await
        .expect("create");
    log.append(&["deals".to_string()], &[ev(1), ev(2)])
        .await
        .expect("append");
    log.commit_offset("erp", "deals", 0, 1)
        .await
        .expect("commit");
    // A crash right after the record was marked `deleting`: the Kafka topic, the group
    // offset and the record are all still there.
    let state = PgStateStore::connect(&common::state_url(), &prefix)
        .await
        .expect("state");
    let raw = state
        .get("kafka/topics", "deals")
        .await
        .expect("get")
        .expect("record");
    let mut rec: serde_json::Value = serde_json::from_slice(&raw).expect("json");
    rec["phase"] = json!("deleting");
    state
        .put(
            "kafka/topics",
            "deals",
            serde_json::to_vec(&rec).expect("encode"),
        )
        .await
        .expect("mark deleting");
    log.close().await.expect("close");
    drop(log);

    let log = open(&prefix, common::options()).await;
    let gone = state.get("kafka/topics", "deals").await.expect("get");
    assert_eq!(gone, None, "the deletion was finished at open");
    assert!(matches!(
        log.describe_topic("deals").await,
        Err(LogError::TopicNotFound(_))
    ));
    let info = log
        .create_topic(TopicSpec::new("deals", 3))
        .await
        .expect("the name is free again");
    assert_eq!(info.partition_info.len(), 3);
    assert_eq!(info.event_count(), 0, "the new topic starts empty");
    assert_eq!(
        log.committed_offset("erp", "deals", 0)
            .await
            .expect("offset"),
        None,
        "no group offset of the old topic survives"
    );
    log.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_topic_without_a_record_is_left_alone_and_its_name_refused() {
    let cleanup = common::Cleanup::default();
    let prefix = common::unique_prefix("orphan");
    cleanup.add(&prefix);
    let log = open(&prefix, common::options()).await;
    log.create_topic(TopicSpec::new("leads", 1))
        .await
        .expect("create");
    log.append(&["leads".to_string()], &[ev(1)])
        .await
        .expect("append");
    log.close().await.expect("close");
    // Its record lost (a database restored from an older backup, say).
    let state = PgStateStore::connect(&common::state_url(), &prefix)
        .await
        .expect("state");
    state
        .delete("kafka/topics", "leads")
        .await
        .expect("drop the record");

    let log = open(&prefix, common::options()).await;
    let err = log
        .create_topic(TopicSpec::new("leads", 1))
        .await
        .expect_err("the name is taken by a Kafka topic crmbus does not know");
    assert!(
        err.to_string().contains(&format!("{prefix}.leads")),
        "the error names the Kafka topic: {err}"
    );
    // Opening did not delete it: a crmbus topic record put back finds the event.
    state
        .put(
            "kafka/topics",
            "leads",
            serde_json::to_vec(&json!({"name": "leads", "partitions": 1})).expect("encode"),
        )
        .await
        .expect("put the record back");
    let got = log.read("leads", 0, 0, 10).await.expect("read");
    assert_eq!(
        got.len(),
        1,
        "the Kafka topic and its event survived the open"
    );
    log.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_racing_creators_exactly_one_wins() {
    let cleanup = common::Cleanup::default();
    let prefix = common::unique_prefix("race");
    cleanup.add(&prefix);
    let a = Arc::new(open(&prefix, common::options()).await);
    let b = Arc::new(open(&prefix, common::options()).await);
    let mut wins = 0;
    for round in 0..5 {
        let name = format!("t{round}");
        let (ra, rb) = tokio::join!(
            a.create_topic(TopicSpec::new(name.clone(), 2)),
            b.create_topic(TopicSpec::new(name.clone(), 2))
        );
        let won = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
        let lost = [&ra, &rb]
            .iter()
            .filter(|r| matches!(r, Err(LogError::TopicExists(_))))
            .count();
        assert_eq!((won, lost), (1, 1), "round {round}: {ra:?} / {rb:?}");
        wins += won;
    }
    assert_eq!(a.list_topics().await.expect("list").len(), wins);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_crmbus_depends_on_are_refused() {
    for key in [
        "enable.idempotence",
        "acks",
        "enable.partition.eof",
        "group.id",
    ] {
        let state = PgStateStore::connect(&common::state_url(), "t-settings")
            .await
            .expect("state");
        let opts = KafkaOptions {
            client_settings: vec![(key.to_string(), "false".to_string())],
            ..common::options()
        };
        let err = KafkaLog::connect(&common::bootstrap(), state, opts)
            .await
            .err()
            .unwrap_or_else(|| panic!("{key} was accepted"));
        assert!(
            matches!(err, LogError::InvalidArgument(_)) && err.to_string().contains(key),
            "{key}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_is_applied_in_the_background() {
    let cleanup = common::Cleanup::default();
    let prefix = common::unique_prefix("bg-retention");
    cleanup.add(&prefix);
    let log = open(
        &prefix,
        KafkaOptions {
            retention_interval: Some(Duration::from_millis(200)),
            ..common::options()
        },
    )
    .await;
    let spec = TopicSpec::new("deals", 1).with_retention(Retention {
        max_age: None,
        max_bytes: Some(4 * 1024),
    });
    log.create_topic(spec).await.expect("create");
    let events: Vec<Event> = (0..200).map(ev).collect();
    log.append(&["deals".to_string()], &events)
        .await
        .expect("append");
    // Nobody calls enforce_retention here: the log's own loop must.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut first = 0;
    while first == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        first = log
            .describe_topic("deals")
            .await
            .expect("describe")
            .partition_info[0]
            .first_offset;
    }
    assert!(first > 0, "the background loop applied no retention");
    let got = log.read("deals", 0, 0, 1000).await.expect("read");
    assert_eq!(got.first().map(|s| s.offset), Some(first));
    assert_eq!(
        got.last().map(|s| s.event.id.clone()),
        events.last().map(|e| e.id.clone())
    );
    log.close().await.expect("close");
}
