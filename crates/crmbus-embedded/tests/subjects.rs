//! Per-subject streams on the embedded log: versions 1, 2, 3 … per subject, read back from
//! the subject index after a restart and after retention removed older segments, and
//! appends that state an expected version (optimistic concurrency): refused whole when the
//! subject moved on, exactly one winner when two writers race.

use std::sync::Arc;

use crmbus::{Event, EventLog, LogError, Retention, TopicSpec, EXPECTED_VERSION};
use crmbus_embedded::{EmbeddedLog, EmbeddedOptions};
use serde_json::json;

fn opts() -> EmbeddedOptions {
    EmbeddedOptions {
        retention_interval: None,
        ..EmbeddedOptions::default()
    }
}

fn deal_event(id: &str, deal: &str, stage: &str) -> Event {
    Event::new(
        "deal.stage_changed",
        json!({"deal_id": deal, "stage": stage}),
    )
    .id(id)
    .subject(deal)
    .source("urn:crm:deals")
}

fn expecting(event: Event, version: u64) -> Event {
    let mut e = event;
    e.extensions.insert(
        EXPECTED_VERSION.to_string(),
        crmbus::ExtensionValue::Number(version.into()),
    );
    e
}

async fn topic(log: &EmbeddedLog, name: &str, partitions: u32) {
    log.create_topic(TopicSpec::new(name, partitions))
        .await
        .expect("create topic");
}

/// (version, id) of a subject's whole stream.
async fn stream(log: &EmbeddedLog, topic: &str, subject: &str) -> (u64, Vec<(u64, String)>) {
    let read = log
        .read_subject(topic, subject, 1, 10_000)
        .await
        .expect("read subject");
    for e in &read.events {
        assert_eq!(e.stored.event.subject.as_deref(), Some(subject));
    }
    (
        read.version,
        read.events
            .into_iter()
            .map(|e| (e.version, e.stored.event.id))
            .collect(),
    )
}

fn ids(list: &[(u64, &str)]) -> Vec<(u64, String)> {
    list.iter().map(|(v, id)| (*v, id.to_string())).collect()
}

#[tokio::test]
async fn a_subject_stream_holds_exactly_its_events_with_versions_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = EmbeddedLog::open(dir.path(), opts()).expect("open");
        topic(&log, "deals", 4).await;
        let t = vec!["deals".to_string()];
        // Interleaved subjects, one batch and single appends.
        let batch = vec![
            deal_event("e1", "deal-1", "new"),
            deal_event("e2", "deal-2", "new"),
            deal_event("e3", "deal-1", "qualified"),
        ];
        let receipts = log.append(&t, &batch).await.expect("append batch");
        let versions: Vec<Option<u64>> = receipts.iter().map(|r| r.version).collect();
        assert_eq!(versions, [Some(1), Some(1), Some(2)]);
        let r = log
            .append(&t, &[deal_event("e4", "deal-1", "won")])
            .await
            .expect("append");
        assert_eq!(r[0].version, Some(3));
        // An event without a subject has no version.
        let plain = Event::new("note.added", json!({}))
            .id("n1")
            .source("urn:crm");
        assert_eq!(
            log.append(&t, &[plain]).await.expect("append")[0].version,
            None
        );
        // A retried event is a duplicate with its first version.
        let again = log
            .append(&t, &[deal_event("e3", "deal-1", "qualified")])
            .await
            .expect("retry");
        assert!(again[0].duplicate);
        assert_eq!(again[0].version, Some(2));

        assert_eq!(
            stream(&log, "deals", "deal-1").await,
            (3, ids(&[(1, "e1"), (2, "e3"), (3, "e4")]))
        );
        assert_eq!(
            stream(&log, "deals", "deal-2").await,
            (1, ids(&[(1, "e2")]))
        );
        assert_eq!(stream(&log, "deals", "deal-3").await, (0, vec![]));
        let from = log
            .read_subject("deals", "deal-1", 2, 1)
            .await
            .expect("read from 2");
        assert_eq!(from.events.len(), 1);
        assert_eq!(from.events[0].version, 2);
        log.close().await.expect("close");
    }
    // The index is rebuilt from the records: the same streams, and versions go on.
    let log = EmbeddedLog::open(dir.path(), opts()).expect("reopen");
    assert_eq!(
        stream(&log, "deals", "deal-1").await,
        (3, ids(&[(1, "e1"), (2, "e3"), (3, "e4")]))
    );
    let r = log
        .append(
            &["deals".to_string()],
            &[deal_event("e5", "deal-1", "lost")],
        )
        .await
        .expect("append after restart");
    assert_eq!(r[0].version, Some(4));
    assert!(matches!(
        log.read_subject("nope", "deal-1", 1, 10).await,
        Err(LogError::TopicNotFound(_))
    ));
    log.close().await.expect("close");
}

#[tokio::test]
async fn an_append_with_a_stale_expected_version_writes_nothing_and_names_the_current_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EmbeddedLog::open(dir.path(), opts()).expect("open");
    topic(&log, "deals", 2).await;
    let t = vec!["deals".to_string()];
    for (i, stage) in ["new", "qualified", "proposal"].iter().enumerate() {
        log.append(&t, &[deal_event(&format!("e{i}"), "deal-1", stage)])
            .await
            .expect("append");
    }
    let before = log.describe_topic("deals").await.expect("describe");
    // Version 2 is stale: refused, with the current version, and nothing written.
    let stale = log
        .append(&t, &[expecting(deal_event("x1", "deal-1", "won"), 2)])
        .await;
    match stale {
        Err(LogError::VersionConflict {
            subject,
            expected,
            current,
            ..
        }) => assert_eq!((subject.as_str(), expected, current), ("deal-1", 2, 3)),
        other => panic!("expected a version conflict, got {other:?}"),
    }
    // A batch is all or nothing: its second event's expectation fails, so its first
    // (another subject, no expectation) is not written either.
    let batch = vec![
        deal_event("x2", "deal-2", "new"),
        expecting(deal_event("x3", "deal-1", "won"), 7),
    ];
    assert!(matches!(
        log.append(&t, &batch).await,
        Err(LogError::VersionConflict { current: 3, .. })
    ));
    assert_eq!(log.describe_topic("deals").await.expect("describe"), before);
    assert_eq!(stream(&log, "deals", "deal-2").await, (0, vec![]));
    // The right version succeeds; within a batch, each event counts the ones before it.
    let ok = log
        .append(
            &t,
            &[
                expecting(deal_event("y1", "deal-1", "won"), 3),
                expecting(deal_event("y2", "deal-1", "invoiced"), 4),
                expecting(deal_event("y3", "deal-9", "new"), 0),
            ],
        )
        .await
        .expect("expected versions that hold");
    let versions: Vec<Option<u64>> = ok.iter().map(|r| r.version).collect();
    assert_eq!(versions, [Some(4), Some(5), Some(1)]);
    // The expectation was the append's condition: the stored events do not carry it.
    let read = log
        .read_subject("deals", "deal-1", 4, 10)
        .await
        .expect("read");
    assert_eq!(read.events.len(), 2);
    assert!(read
        .events
        .iter()
        .all(|e| !e.stored.event.extensions.contains_key(EXPECTED_VERSION)));
    // A retry of an appended event is its duplicate, whatever it expected.
    let retry = log
        .append(&t, &[expecting(deal_event("y1", "deal-1", "won"), 3)])
        .await
        .expect("retry");
    assert!(retry[0].duplicate);
    assert_eq!(retry[0].version, Some(4));
    // Bad expectations are refused as arguments.
    let mut no_subject = Event::new("x", json!({})).id("z1").source("urn:crm");
    no_subject.extensions.insert(
        EXPECTED_VERSION.to_string(),
        crmbus::ExtensionValue::Number(1.into()),
    );
    assert!(matches!(
        log.append(&t, &[no_subject]).await,
        Err(LogError::InvalidArgument(_))
    ));
    topic(&log, "archive", 1).await;
    assert!(matches!(
        log.append(
            &["deals".to_string(), "archive".to_string()],
            &[expecting(deal_event("z2", "deal-1", "x"), 5)]
        )
        .await,
        Err(LogError::InvalidArgument(_))
    ));
    log.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_racing_with_the_same_expected_version_one_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(EmbeddedLog::open(dir.path(), opts()).expect("open"));
    topic(&log, "deals", 3).await;
    let t = vec!["deals".to_string()];
    for round in 0..50u64 {
        let subject = format!("deal-{round}");
        for i in 0..3 {
            log.append(&t, &[deal_event(&format!("r{round}-{i}"), &subject, "s")])
                .await
                .expect("append");
        }
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let log = Arc::clone(&log);
                let t = t.clone();
                let e = expecting(deal_event(&format!("w{round}-{w}"), &subject, "won"), 3);
                tokio::spawn(async move { log.append(&t, &[e]).await })
            })
            .collect();
        let mut won = 0;
        let mut conflicts = 0;
        for w in writers {
            match w.await.expect("join") {
                Ok(r) => {
                    assert_eq!(r[0].version, Some(4));
                    won += 1;
                }
                Err(LogError::VersionConflict { current: 4, .. }) => conflicts += 1,
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!((won, conflicts), (1, 1), "round {round}");
        let (version, events) = stream(&log, "deals", &subject).await;
        assert_eq!((version, events.len()), (4, 4));
    }
    log.close().await.expect("close");
}

#[tokio::test]
async fn after_retention_a_stream_keeps_its_versions_and_an_emptied_subject_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let small = || EmbeddedOptions {
        segment_bytes: 4096,
        ..opts()
    };
    let spec = TopicSpec::new("deals", 1).with_retention(Retention {
        max_age: None,
        max_bytes: Some(8192),
    });
    let t = vec!["deals".to_string()];
    {
        let log = EmbeddedLog::open(dir.path(), small()).expect("open");
        log.create_topic(spec).await.expect("create");
        // deal-old's two events come first, then enough of deal-1 to roll many segments.
        for i in 0..2 {
            log.append(&t, &[deal_event(&format!("o{i}"), "deal-old", "s")])
                .await
                .expect("append");
        }
        for i in 0..120 {
            log.append(&t, &[deal_event(&format!("d{i}"), "deal-1", "s")])
                .await
                .expect("append");
        }
        let removed = log.enforce_retention().await.expect("retention");
        assert!(removed > 2, "retention removed {removed} events");
        let (version, events) = stream(&log, "deals", "deal-1").await;
        assert_eq!(version, 120);
        // The oldest versions are gone; what is left is the newest, numbered as appended.
        let first = events.first().expect("some events are kept").0;
        assert!(first > 1);
        let want: Vec<(u64, String)> = (first..=120).map(|v| (v, format!("d{}", v - 1))).collect();
        assert_eq!(events, want);
        assert_eq!(stream(&log, "deals", "deal-old").await, (2, vec![]));
        log.close().await.expect("close");
    }
    let log = EmbeddedLog::open(dir.path(), small()).expect("reopen");
    let (version, events) = stream(&log, "deals", "deal-1").await;
    assert_eq!(version, 120);
    assert_eq!(events.last().map(|e| e.0), Some(120));
    // deal-old has no event left, and its version was kept: the next is 3, not 1.
    assert_eq!(stream(&log, "deals", "deal-old").await, (2, vec![]));
    let r = log
        .append(&t, &[expecting(deal_event("o2", "deal-old", "s"), 2)])
        .await
        .expect("append");
    assert_eq!(r[0].version, Some(3));
    log.close().await.expect("close");
}

#[tokio::test]
async fn a_stream_serves_events_larger_than_one_read_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EmbeddedLog::open(dir.path(), opts()).expect("open");
    topic(&log, "deals", 1).await;
    let t = vec!["deals".to_string()];
    let notes = "n".repeat(20_000);
    let big = Event::new("deal.updated", json!({"deal_id": "deal-1", "notes": notes}))
        .id("big")
        .subject("deal-1")
        .source("urn:crm:deals");
    for e in [
        deal_event("a", "deal-1", "new"),
        big,
        deal_event("b", "deal-1", "won"),
    ] {
        log.append(&t, &[e]).await.expect("append");
    }
    let read = log
        .read_subject("deals", "deal-1", 1, 10)
        .await
        .expect("read");
    let ids: Vec<&str> = read
        .events
        .iter()
        .map(|e| e.stored.event.id.as_str())
        .collect();
    assert_eq!(ids, ["a", "big", "b"]);
    let Some(data) = read.events[1].stored.event.data_json() else {
        panic!("the large event lost its data");
    };
    assert_eq!(data["notes"].as_str().map(str::len), Some(20_000));
    log.close().await.expect("close");
}
