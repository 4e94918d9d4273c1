//! What is particular to the Redis backend: `open` and its errors, the durability report,
//! the stored spec, the key layout and offset ↔ id mapping as seen in Redis, namespace
//! isolation, dedupe across a topic's recreation, age retention, and `purge`.

mod common;

use std::time::Duration;

use crmbus::{Event, EventLog, LogError, Retention, TopicSpec};
use crmbus_redis::{durability_setting, purge, RedisLog};
use serde_json::json;

fn ev(key: &str, n: u64) -> Event {
    Event::new("lead.created", json!({"lead_id": key, "n": n}))
        .subject(key)
        .source("urn:test:redis")
}

fn raw() -> redis::Connection {
    redis::Client::open(common::url())
        .expect("url")
        .get_connection()
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_gives_a_log_and_a_state_store_and_names_an_unreachable_url() {
    let prefix = common::unique_prefix("open");
    let _cleanup = common::Cleanup::new(&prefix);
    let backend = crmbus_redis::open(&common::url(), &prefix)
        .await
        .expect("open");
    assert_eq!(backend.log.backend_name(), "redis");
    backend
        .state
        .put("ns", "k", b"v".to_vec())
        .await
        .expect("put");
    assert_eq!(
        backend.state.get("ns", "k").await.expect("get"),
        Some(b"v".to_vec())
    );

    match crmbus_redis::open("redis://127.0.0.1:1", "x").await {
        Err(e @ LogError::Unavailable(_)) => {
            assert!(
                e.to_string().contains("127.0.0.1:1"),
                "error hides the URL: {e}"
            );
        }
        other => panic!("expected Unavailable, got {:?}", other.err()),
    }
    match crmbus_redis::open("redis://user:hunter2@127.0.0.1:1", "x").await {
        Err(e) => assert!(!e.to_string().contains("hunter2"), "password leaked: {e}"),
        Ok(_) => panic!("connected to port 1"),
    }
    assert!(matches!(
        crmbus_redis::open("not a url", "x").await.err(),
        Some(LogError::InvalidArgument(_))
    ));
    assert!(matches!(
        crmbus_redis::open(&common::url(), "").await.err(),
        Some(LogError::InvalidArgument(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_setting_reports_the_servers_persistence() {
    let s = durability_setting(&common::url()).await;
    assert!(
        s.starts_with("appendonly=") && s.contains("appendfsync="),
        "unexpected report: {s}"
    );
    let down = durability_setting("redis://127.0.0.1:1").await;
    assert!(down.starts_with("unknown"), "{down}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn specs_offsets_and_timestamps_are_stored_as_documented() {
    let prefix = common::unique_prefix("layout");
    let _cleanup = common::Cleanup::new(&prefix);
    let log = RedisLog::open(&common::url(), &prefix).await.expect("open");
    let mut spec = TopicSpec::new("leads", 2).with_retention(Retention {
        max_age: Some(Duration::from_secs(3600)),
        max_bytes: Some(1 << 20),
    });
    spec.require_schemas = true;
    log.create_topic(spec.clone()).await.expect("create");
    let receipts = log
        .append(&["leads".to_string()], &[ev("lead-1", 0), ev("lead-1", 1)])
        .await
        .expect("append");
    let mut conn = raw();
    let stored: String = redis::cmd("HGET")
        .arg(format!("{prefix}:topics"))
        .arg("leads")
        .query(&mut conn)
        .expect("hget");
    let back: TopicSpec = serde_json::from_str(&stored).expect("spec json");
    assert_eq!(
        back, spec,
        "the whole spec (require_schemas too) round-trips"
    );

    let p = receipts[0].partition;
    assert_eq!((receipts[0].offset, receipts[1].offset), (0, 1));
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("{prefix}:stream:leads:{p}"))
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .expect("xrange");
    let ids: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(ids, ["0-1", "0-2"], "offset n is stream id 0-<n+1>");
    let fields: Vec<&str> = entries[0].1.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(fields, ["event", "ts"]);
    let json: serde_json::Value = serde_json::from_str(&entries[0].1[0].1).expect("event json");
    assert_eq!(json["specversion"], "1.0");
    let read = log.read("leads", p, 0, 10).await.expect("read");
    let ts: i64 = entries[1].1[1].1.parse().expect("ts");
    assert_eq!(read[1].timestamp.timestamp_micros(), ts);

    // The committed offset is the consumer group's position, visible to XINFO GROUPS.
    log.commit_offset("crm", "leads", p, 2)
        .await
        .expect("commit");
    let groups: Vec<Vec<redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(format!("{prefix}:stream:leads:{p}"))
        .query(&mut conn)
        .expect("xinfo");
    let shown = format!("{groups:?}");
    assert!(shown.contains("crm") && shown.contains("0-2"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_isolate_namespaces_and_purge_removes_one() {
    let a = common::unique_prefix("iso-a");
    let b = common::unique_prefix("iso-b");
    let _ca = common::Cleanup::new(&a);
    let _cb = common::Cleanup::new(&b);
    let log_a = RedisLog::open(&common::url(), &a).await.expect("open a");
    let log_b = RedisLog::open(&common::url(), &b).await.expect("open b");
    log_a
        .create_topic(TopicSpec::new("deals", 1))
        .await
        .expect("create a");
    log_b
        .create_topic(TopicSpec::new("deals", 1))
        .await
        .expect("create b");
    let e = ev("deal-1", 0);
    log_a
        .append(&["deals".to_string()], std::slice::from_ref(&e))
        .await
        .expect("append a");
    let r = log_b
        .append(&["deals".to_string()], std::slice::from_ref(&e))
        .await
        .expect("append b");
    assert!(!r[0].duplicate, "dedupe leaked across namespaces");
    log_a
        .state_store()
        .put("ns", "k", b"v".to_vec())
        .await
        .expect("put");
    assert!(common::count_keys(&a) > 0);
    let removed = purge(&common::url(), &a).await.expect("purge");
    assert!(removed > 0);
    assert_eq!(common::count_keys(&a), 0, "purge left keys behind");
    assert!(log_a.list_topics().await.expect("list").is_empty());
    assert_eq!(log_b.list_topics().await.expect("list").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_topic_does_not_inherit_dedupe_entries() {
    let prefix = common::unique_prefix("recreate");
    let _cleanup = common::Cleanup::new(&prefix);
    let log = RedisLog::open(&common::url(), &prefix).await.expect("open");
    let topics = ["deals".to_string()];
    log.create_topic(TopicSpec::new("deals", 2))
        .await
        .expect("create");
    let e = ev("deal-7", 0);
    log.append(&topics, std::slice::from_ref(&e))
        .await
        .expect("append");
    log.delete_topic("deals").await.expect("delete");
    log.create_topic(TopicSpec::new("deals", 2))
        .await
        .expect("recreate");
    let r = log
        .append(&topics, std::slice::from_ref(&e))
        .await
        .expect("append again");
    assert!(
        !r[0].duplicate,
        "a deleted topic's dedupe entry was applied"
    );
    assert_eq!(r[0].offset, 0);
    let again = log
        .append(&topics, std::slice::from_ref(&e))
        .await
        .expect("append a third time");
    assert!(again[0].duplicate && again[0].offset == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_retention_removes_old_events_and_reads_start_at_the_oldest_kept() {
    let prefix = common::unique_prefix("age");
    let _cleanup = common::Cleanup::new(&prefix);
    let log = RedisLog::open(&common::url(), &prefix).await.expect("open");
    let topics = ["audit".to_string()];
    log.create_topic(TopicSpec::new("audit", 1).with_retention(Retention {
        max_age: Some(Duration::from_secs(3600)),
        max_bytes: None,
    }))
    .await
    .expect("create");
    let batch: Vec<Event> = (0..10).map(|i| ev("k", i)).collect();
    log.append(&topics, &batch).await.expect("append");
    // Age the first four entries by two hours, as if they had been appended long ago.
    let mut conn = raw();
    let key = format!("{prefix}:stream:audit:0");
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .expect("xrange");
    let old_ts: i64 = entries[0].1[1].1.parse::<i64>().expect("ts") - 7_200_000_000;
    let _: () = redis::cmd("DEL").arg(&key).query(&mut conn).expect("del");
    for (i, (id, fields)) in entries.iter().enumerate() {
        let ts = if i < 4 {
            old_ts.to_string()
        } else {
            fields[1].1.clone()
        };
        let _: String = redis::cmd("XADD")
            .arg(&key)
            .arg(id)
            .arg("event")
            .arg(&fields[0].1)
            .arg("ts")
            .arg(ts)
            .query(&mut conn)
            .expect("xadd");
    }
    assert_eq!(log.enforce_retention().await.expect("retention"), 4);
    assert_eq!(log.enforce_retention().await.expect("again"), 0);
    let info = log.describe_topic("audit").await.expect("describe");
    assert_eq!(
        (
            info.partition_info[0].first_offset,
            info.partition_info[0].next_offset
        ),
        (4, 10)
    );
    let got = log.read("audit", 0, 0, 100).await.expect("read");
    assert_eq!(got.first().map(|s| s.offset), Some(4));
    assert_eq!(got.len(), 6);
    assert_eq!(
        log.offset_for_time("audit", 0, chrono::Utc::now() - chrono::Duration::days(1))
            .await
            .expect("time"),
        4
    );
    let r = log.append(&topics, &[ev("k", 10)]).await.expect("append");
    assert_eq!(r[0].offset, 10, "offsets continue after trimming");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_after_another_process_recreated_the_topic_uses_the_new_partition_count() {
    let prefix = common::unique_prefix("stale");
    let _cleanup = common::Cleanup::new(&prefix);
    let a = RedisLog::open(&common::url(), &prefix)
        .await
        .expect("open a");
    let b = RedisLog::open(&common::url(), &prefix)
        .await
        .expect("open b");
    let topics = ["deals".to_string()];
    a.create_topic(TopicSpec::new("deals", 2))
        .await
        .expect("create");
    a.append(&topics, &[ev("deal-1", 0)]).await.expect("append");
    b.delete_topic("deals").await.expect("delete");
    b.create_topic(TopicSpec::new("deals", 7))
        .await
        .expect("recreate");
    let events: Vec<Event> = (0..30).map(|i| ev(&format!("deal-{i}"), i)).collect();
    let receipts = a.append(&topics, &events).await.expect("append after");
    for (r, e) in receipts.iter().zip(&events) {
        assert_eq!(r.partition, crmbus::partition_for(e, 7), "stale count used");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appenders_on_separate_connections_get_contiguous_offsets() {
    let prefix = common::unique_prefix("multi-conn");
    let _cleanup = common::Cleanup::new(&prefix);
    let first = RedisLog::open(&common::url(), &prefix).await.expect("open");
    first
        .create_topic(TopicSpec::new("tasks", 1))
        .await
        .expect("create");
    let mut handles = Vec::new();
    for w in 0..4u64 {
        let prefix = prefix.clone();
        handles.push(tokio::spawn(async move {
            let log = RedisLog::open(&common::url(), &prefix).await.expect("open");
            let mut offsets = Vec::new();
            for b in 0..25u64 {
                let batch: Vec<Event> = (0..4).map(|i| ev(&format!("w{w}"), b * 4 + i)).collect();
                let r = log
                    .append(&["tasks".to_string()], &batch)
                    .await
                    .expect("append");
                assert!(
                    r.windows(2).all(|x| x[1].offset == x[0].offset + 1),
                    "a batch is not contiguous"
                );
                offsets.extend(r.into_iter().map(|r| r.offset));
            }
            offsets
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("appender"));
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (0..400).collect::<Vec<u64>>(),
        "offsets have gaps or repeats"
    );
}
