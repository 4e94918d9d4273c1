//! The bus as the front door: topic administration, reads and live tails go through
//! [`EventBus`], and the topic's spec is where `require_schemas` lives.

use std::time::Duration;

use crmbus::delivery::Filter;
use crmbus::{Event, EventBus, LogError, MemoryLog, Position, TailOptions, TopicSpec};
use serde_json::json;

fn bus() -> EventBus {
    EventBus::builder()
        .log(std::sync::Arc::new(MemoryLog::new()))
        .build()
}

fn event(ty: &str, key: &str) -> Event {
    Event::new(ty, json!({})).subject(key).source("urn:test")
}

#[tokio::test]
async fn topic_rules_follow_the_topics_spec() {
    let bus = bus();
    let mut spec = TopicSpec::new("strict", 1);
    spec.require_schemas = true;
    let info = bus.create_topic(spec).await.expect("create");
    assert!(info.spec.require_schemas);
    assert!(bus.requires_schemas("strict"));

    // A second bus over the same log learns the rule from the spec.
    let log = std::sync::Arc::clone(bus.log());
    let other = EventBus::builder().log(log).build();
    assert!(!other.requires_schemas("strict"));
    other.load_topic_rules().await.expect("load");
    assert!(other.requires_schemas("strict"));

    bus.delete_topic("strict").await.expect("delete");
    assert!(!bus.requires_schemas("strict"));
    assert!(matches!(
        bus.describe_topic("strict").await,
        Err(LogError::TopicNotFound(_))
    ));
}

#[tokio::test]
async fn a_tail_returns_matching_events_and_wakes_on_publish() {
    let bus = bus();
    bus.create_topic(TopicSpec::new("deals", 2))
        .await
        .expect("create");
    bus.publish(event("deal.won", "d1"), &["deals"])
        .await
        .expect("publish");
    bus.publish(event("deal.lost", "d2"), &["deals"])
        .await
        .expect("publish");
    let opts = TailOptions {
        from: Position::Earliest,
        filter: Filter {
            types: vec!["deal.won".into()],
            ..Filter::default()
        },
        ..TailOptions::default()
    };
    let mut tail = bus.tail("deals", opts).await.expect("tail");
    let first = tail.next().await.expect("first");
    let types: Vec<&str> = first.iter().map(|s| s.event.ty.as_str()).collect();
    assert_eq!(types, ["deal.won"]);

    // Nothing more yet: the next call waits until a publish wakes it.
    let waiting = tokio::spawn(async move { tail.next().await });
    tokio::task::yield_now().await;
    bus.publish(event("deal.won", "d3"), &["deals"])
        .await
        .expect("publish");
    let next = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("woken within 30 s")
        .expect("task")
        .expect("events");
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].event.subject.as_deref(), Some("d3"));
}

#[tokio::test]
async fn a_tail_resumes_after_an_event_and_refuses_a_partition_it_lacks() {
    let bus = bus();
    bus.create_topic(TopicSpec::new("t", 1))
        .await
        .expect("create");
    for n in 0..3 {
        bus.publish(event("x", &format!("k{n}")), &["t"])
            .await
            .expect("publish");
    }
    let mut tail = bus
        .tail(
            "t",
            TailOptions {
                resume_after: Some((0, 0)),
                ..TailOptions::default()
            },
        )
        .await
        .expect("tail");
    let offsets: Vec<u64> = tail
        .next()
        .await
        .expect("events")
        .iter()
        .map(|s| s.offset)
        .collect();
    assert_eq!(offsets, [1, 2]);
    let missing = bus
        .tail(
            "t",
            TailOptions {
                resume_after: Some((5, 0)),
                ..TailOptions::default()
            },
        )
        .await;
    assert!(matches!(
        missing,
        Err(LogError::PartitionNotFound { partition: 5, .. })
    ));
}
