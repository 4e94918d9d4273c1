//! Validation at publish: the registry installed as the bus's validator.

use std::sync::Arc;

use crmbus::{BusError, Event, EventBus, MemoryLog, MemoryStateStore, Violation};
use crmbus_schema::SchemaRegistry;
use serde_json::{json, Value};

async fn setup() -> (EventBus, MemoryLog, Arc<SchemaRegistry>) {
    let registry = Arc::new(
        SchemaRegistry::open(Arc::new(MemoryStateStore::new()))
            .await
            .expect("open"),
    );
    registry.load_builtin_catalog().await.expect("catalog");
    let log = MemoryLog::new();
    let bus = EventBus::builder()
        .log(Arc::new(log.clone()))
        .validator(registry.clone())
        .auto_create_topics(2)
        .build();
    (bus, log, registry)
}

fn event(ty: &str, data: Value) -> Event {
    Event::new(ty, data).source("urn:test").subject("deal-42")
}

fn violations(err: BusError) -> Vec<Violation> {
    assert_eq!(err.code(), "schema_violation", "{err}");
    match err {
        BusError::Validation(invalid) => invalid.violations,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

fn attributes(v: &[Violation]) -> Vec<&str> {
    v.iter().map(|v| v.attribute.as_str()).collect()
}

#[tokio::test]
async fn a_deal_won_with_two_violations_lists_both_and_writes_nothing() {
    let (bus, log, _) = setup().await;
    let bad = event(
        "deal.won",
        json!({"deal_id": "deal-42", "amount": 1250, "currency": "euro"}),
    );
    let err = bus
        .publish(bad, &["deals", "sales"])
        .await
        .expect_err("invalid");
    let text = err.to_string();
    let found = violations(err);
    assert_eq!(
        attributes(&found),
        ["data/amount", "data/currency"],
        "{found:?}"
    );
    assert!(
        text.contains("data/amount") && text.contains("data/currency"),
        "{text}"
    );
    assert!(log.events().is_empty(), "nothing may be stored");
}

#[tokio::test]
async fn an_accepted_event_names_its_schema_version() {
    let (bus, log, _) = setup().await;
    let good = event(
        "deal.won",
        json!({"deal_id": "deal-42", "amount": "1250.00", "currency": "EUR"}),
    );
    bus.publish(good, &["deals"]).await.expect("publish");
    let stored = log.events();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].dataschema.as_deref(),
        Some("urn:crmbus:schema:deal.won:2")
    );
}

#[tokio::test]
async fn dataschema_picks_the_registered_version_it_names() {
    let (bus, log, _) = setup().await;
    // The catalog's version 1 of deal.won is closed, version 2 (the latest) open.
    let data = json!({"deal_id": "d", "amount": "1", "currency": "EUR", "region": "EMEA"});

    bus.publish(event("deal.won", data.clone()), &["deals"])
        .await
        .expect("the latest accepts a field it does not describe");
    assert_eq!(
        log.events()[0].dataschema.as_deref(),
        Some("urn:crmbus:schema:deal.won:2")
    );

    let cases = [
        ("urn:crmbus:schema:deal.won:1", "data/region"),
        ("urn:crmbus:schema:deal.won:7", "dataschema"),
        ("urn:crmbus:schema:deal.lost:1", "dataschema"),
        // This registry's prefix with no version in it names nothing it holds.
        ("urn:crmbus:schema:deal.won:latest", "dataschema"),
        ("urn:crmbus:schema:deal.won:01", "dataschema"),
    ];
    for (uri, attribute) in cases {
        let e = event("deal.won", data.clone()).dataschema(uri);
        let found = violations(bus.publish(e, &["deals"]).await.expect_err(uri));
        assert_eq!(attributes(&found), [attribute], "{uri}: {found:?}");
    }
    assert_eq!(log.events().len(), 1);
}

/// Issue 13 (CloudEvents `dataschema` belongs to the producer): a `dataschema` that is not
/// one of this registry's URIs is the producer's own; the event is validated against the
/// type's latest version and the producer's URI is stored unchanged. (It used to be
/// refused.)
#[tokio::test]
async fn a_producers_own_dataschema_is_kept_and_the_latest_version_decides() {
    let (bus, log, _) = setup().await;
    let own = "https://schemas.acme.example/deal-won.json";
    let data = json!({"deal_id": "d", "amount": "1", "currency": "EUR", "region": "EMEA"});

    bus.publish(event("deal.won", data).dataschema(own), &["deals"])
        .await
        .expect("validated against the latest (v2 is open; v1 would refuse region)");
    assert_eq!(log.events()[0].dataschema.as_deref(), Some(own));

    // The latest version still decides: data it refuses is refused.
    let bad = json!({"deal_id": "d", "amount": 5, "currency": "EUR"});
    let found = violations(
        bus.publish(event("deal.won", bad).dataschema(own), &["deals"])
            .await
            .expect_err("amount must be a decimal string"),
    );
    assert_eq!(attributes(&found), ["data/amount"], "{found:?}");
    assert_eq!(log.events().len(), 1);

    // A type without a schema keeps the producer's URI too.
    bus.publish(
        event("com.acme.custom", json!({"a": 1})).dataschema(own),
        &["deals"],
    )
    .await
    .expect("no schema");
    assert_eq!(log.events()[1].dataschema.as_deref(), Some(own));
}

#[tokio::test]
async fn types_without_a_schema_pass_unless_a_topic_requires_one() {
    let (bus, log, _) = setup().await;
    bus.set_require_schemas("strict", true);
    let custom = || event("com.acme.order.v2", json!({"anything": true}));
    bus.publish(custom(), &["lenient"])
        .await
        .expect("no schema, not required");
    assert_eq!(log.events()[0].dataschema, None);
    let found = violations(
        bus.publish(custom(), &["lenient", "strict"])
            .await
            .expect_err("required"),
    );
    assert_eq!(attributes(&found), ["type"]);
    // A type with a schema is fine on the strict topic.
    bus.publish(
        event(
            "lead.converted",
            json!({"lead_id": "l-1", "account_id": "a-1"}),
        ),
        &["strict"],
    )
    .await
    .expect("catalog type");
    // Claiming a registry schema that does not exist is rejected even without a schema.
    let found = violations(
        bus.publish(
            custom().dataschema("urn:crmbus:schema:com.acme.order.v2:1"),
            &["lenient"],
        )
        .await
        .expect_err("unknown schema"),
    );
    assert_eq!(attributes(&found), ["dataschema"]);
    assert_eq!(log.events().len(), 2);
}

#[tokio::test]
async fn a_batch_is_all_or_nothing_with_every_violation_listed() {
    let (bus, log, _) = setup().await;
    let batch = vec![
        event(
            "deal.won",
            json!({"deal_id": "d-1", "amount": "1", "currency": "EUR"}),
        ),
        event("deal.lost", json!({"deal_id": "d-2"})),
        event(
            "deal.won",
            json!({"deal_id": "d-3", "amount": "1", "close_date": "tomorrow", "x": 1}),
        ),
        event("deal.won", json!({"deal_id": "d-4"}))
            .binary_data(vec![1, 2], "application/octet-stream"),
    ];
    let found = violations(
        bus.publish_batch(batch, &["deals"])
            .await
            .expect_err("batch"),
    );
    assert_eq!(
        attributes(&found),
        [
            "events[1].data/reason",
            "events[2].data/close_date",
            "events[3].data"
        ]
    );
    assert!(log.events().is_empty());
}
