//! The events our users already publish validate against the built-in catalog.
//!
//! Every example and every table row of the users' own documents about their event bus
//! (the Django `core.events` document: its code examples and its tables of data fields per
//! type; the platform document: the types it names without fields) is published through a
//! real server with the catalog loaded and validation on, with its data exactly as written
//! there and only the ids, names and values the document leaves to the code filled in. Each
//! must be accepted (201), stored with the data it was sent with, and tagged with the type's
//! latest catalog version. Ids are filled in both as Django's default integer primary keys
//! and as UUID strings, because the documents' code passes `deal.id` as well as
//! `str(deal.id)`.

mod common;

use std::collections::BTreeMap;

use common::{error_fields, TestServer};
use serde_json::{json, Value};

const CATALOG: &[(&str, &str)] = &[
    ("CRMBUS_SCHEMAS_CATALOG", "true"),
    ("CRMBUS_SCHEMAS_VALIDATE", "true"),
];

/// One event as a document shows it: where it is, its type, the topics it goes to and its
/// data.
struct DocumentEvent {
    place: &'static str,
    event_type: &'static str,
    topics: &'static [&'static str],
    data: Value,
}

/// How the code in the documents fills in an id.
#[derive(Clone, Copy, Debug)]
enum Ids {
    /// `deal.id` with Django's default `AutoField` primary key.
    Integer,
    /// `str(deal.id)` with a `UUIDField` primary key.
    Uuid,
}

impl Ids {
    fn id(self, n: u32) -> Value {
        match self {
            Ids::Integer => json!(1000 + n),
            Ids::Uuid => json!(uuid(n)),
        }
    }

    /// `str(deal.id)`.
    fn text(self, n: u32) -> Value {
        match self {
            Ids::Integer => json!((1000 + n).to_string()),
            Ids::Uuid => json!(uuid(n)),
        }
    }
}

fn uuid(n: u32) -> String {
    format!("0190c5d2-7a41-7c3e-9f00-{n:012}")
}

/// A value for a field that a table names without saying what it holds.
fn table_value(field: &str, ids: Ids, n: u32) -> Value {
    match field {
        f if f.ends_with("_id") => ids.id(n),
        "name" => json!("Acme Corp renewal"),
        // `str(deal.amount)` of a Django DecimalField.
        "amount" => json!("1250.00"),
        "close_date" => json!("2026-11-20"),
        "old_stage" => json!("prospecting"),
        "new_stage" => json!("qualification"),
        "reason" => json!("Chose a competitor"),
        "changed_fields" => json!(["amount", "stage"]),
        "source" => json!("webinar"),
        "score" => json!(82),
        "email" => json!("sam@acme.example"),
        other => panic!("the test has no value for a table field named {other}"),
    }
}

/// The Django document's tables of standard event types: type, topic, data fields.
const DJANGO_TABLES: &[(&str, &str, &[&str])] = &[
    ("deal.created", "deals", &["deal_id", "name", "amount"]),
    ("deal.updated", "deals", &["deal_id", "changed_fields"]),
    (
        "deal.stage_changed",
        "deals",
        &["deal_id", "old_stage", "new_stage"],
    ),
    ("deal.won", "deals", &["deal_id", "amount", "close_date"]),
    ("deal.lost", "deals", &["deal_id", "reason"]),
    ("deal.deleted", "deals", &["deal_id", "name"]),
    ("lead.created", "leads", &["lead_id", "name", "source"]),
    ("lead.qualified", "leads", &["lead_id", "score"]),
    (
        "lead.converted",
        "leads",
        &["lead_id", "account_id", "contact_id"],
    ),
    ("lead.rejected", "leads", &["lead_id", "reason"]),
    ("account.created", "accounts", &["account_id", "name"]),
    (
        "account.updated",
        "accounts",
        &["account_id", "changed_fields"],
    ),
    ("account.merged", "accounts", &["source_id", "target_id"]),
    (
        "contact.created",
        "contacts",
        &["contact_id", "name", "email"],
    ),
    (
        "contact.updated",
        "contacts",
        &["contact_id", "changed_fields"],
    ),
    ("contact.bounced", "contacts", &["contact_id", "email"]),
];

/// The platform document's event categories: the types it names without fields anywhere,
/// each published with only the id its name implies. (Its CRM category's `lead.*` and
/// `deal.*` types have their fields in the Django document's tables, above.)
const PLATFORM_CATEGORIES: &[(&str, &str, &str)] = &[
    ("user.created", "users", "user_id"),
    ("user.updated", "users", "user_id"),
    ("user.deleted", "users", "user_id"),
    ("user.login", "users", "user_id"),
    ("user.logout", "users", "user_id"),
    ("order.created", "erp", "order_id"),
    ("invoice.generated", "erp", "invoice_id"),
    ("payment.processed", "erp", "payment_id"),
    ("inventory.updated", "erp", "sku"),
    ("workflow.started", "workflow", "workflow_id"),
    ("workflow.completed", "workflow", "workflow_id"),
    ("task.assigned", "workflow", "task_id"),
    ("task.completed", "workflow", "task_id"),
    ("threat.detected", "security", "threat_id"),
    ("incident.created", "security", "incident_id"),
    ("alert.triggered", "security", "alert_id"),
];

/// Every event the documents show, with ids filled in as `ids`.
fn document_events(ids: Ids) -> Vec<DocumentEvent> {
    let mut events = vec![
        // `Event(event_type='deal.stage_changed', data={'deal_id': 'uuid', ...})`
        DocumentEvent {
            place: "Django: Core Components / Event",
            event_type: "deal.stage_changed",
            topics: &["deals", "notifications"],
            data: json!({"deal_id": ids.id(1), "old_stage": "prospecting",
                "new_stage": "qualification"}),
        },
        // `publish_event(event_type='lead.converted', data={'lead_id': lead.id,
        // 'account_id': account.id}, topics=['leads', 'conversions'])`
        DocumentEvent {
            place: "Django: Usage / Simple Publishing",
            event_type: "lead.converted",
            topics: &["leads", "conversions"],
            data: json!({"lead_id": ids.id(2), "account_id": ids.id(3)}),
        },
        // `publish_event(event_type='deal.won', data={'deal_id': deal.id,
        // 'amount': str(deal.amount)}, metadata=..., topics=['deals', 'sales'])`
        DocumentEvent {
            place: "Django: Usage / With Metadata",
            event_type: "deal.won",
            topics: &["deals", "sales"],
            data: json!({"deal_id": ids.id(4), "amount": "1250.00"}),
        },
        // `post_save` receiver: `'deal.created' if created else 'deal.updated'` with
        // `{'deal_id': str(instance.id), 'name': instance.name, 'amount': str(instance.amount)}`
        DocumentEvent {
            place: "Django: Integration Examples / Django Signal Integration (created)",
            event_type: "deal.created",
            topics: &["deals"],
            data: json!({"deal_id": ids.text(5),
                "name": "Acme Corp renewal", "amount": "1250.00"}),
        },
        DocumentEvent {
            place: "Django: Integration Examples / Django Signal Integration (updated)",
            event_type: "deal.updated",
            topics: &["deals"],
            data: json!({"deal_id": ids.text(5),
                "name": "Acme Corp renewal", "amount": "1300.00"}),
        },
        // `DealViewSet.move`: `{'deal_id': str(deal.id), 'old_stage': old_stage,
        // 'new_stage': new_stage}`, topics=['deals', 'notifications']
        DocumentEvent {
            place: "Django: Integration Examples / View Integration",
            event_type: "deal.stage_changed",
            topics: &["deals", "notifications"],
            data: json!({"deal_id": ids.text(6),
                "old_stage": "qualification", "new_stage": "proposal"}),
        },
        // `Event('test.event', {'key': 'value'})`, topics=['test']: a type with no schema.
        DocumentEvent {
            place: "Django: Testing Events / Unit Test Example",
            event_type: "test.event",
            topics: &["test"],
            data: json!({"key": "value"}),
        },
    ];
    for (n, (ty, topic, fields)) in DJANGO_TABLES.iter().enumerate() {
        let data: serde_json::Map<String, Value> = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.to_string(), table_value(f, ids, (n * 10 + i) as u32)))
            .collect();
        events.push(DocumentEvent {
            place: "Django: Standard Event Types (table row)",
            event_type: ty,
            topics: std::slice::from_ref(topic),
            data: Value::Object(data),
        });
    }
    for (n, (ty, topic, id)) in PLATFORM_CATEGORIES.iter().enumerate() {
        let value = if *id == "sku" {
            json!(format!("SKU-{n}"))
        } else {
            ids.id(500 + n as u32)
        };
        let mut data = serde_json::Map::new();
        data.insert(id.to_string(), value);
        events.push(DocumentEvent {
            place: "Platform: Event Categories",
            event_type: ty,
            topics: std::slice::from_ref(topic),
            data: Value::Object(data),
        });
    }
    events
}

fn cloud_event(id: String, ty: &str, data: &Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "/crm/django",
        "type": ty,
        "data": data,
    })
}

/// Publishes one structured event to several topics at once (`POST /v1/events?topic=…`).
async fn publish_to(s: &TestServer, topics: &[&str], event: &Value) -> (u16, Value) {
    let query: Vec<String> = topics.iter().map(|t| format!("topic={t}")).collect();
    let r = s
        .client
        .post(s.url(&format!("/v1/events?{}", query.join("&"))))
        .header("content-type", "application/cloudevents+json")
        .body(event.to_string())
        .send()
        .await
        .expect("publish");
    common::status_json(r).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_in_the_users_documents_is_accepted_with_validation_on() {
    let s = TestServer::start("embedded", CATALOG).await;
    let (st, schemas) = s.get("/v1/schemas").await;
    assert_eq!(st, 200);
    let latest: BTreeMap<String, u64> = schemas["types"]
        .as_array()
        .expect("types")
        .iter()
        .map(|t| {
            (
                t["event_type"].as_str().expect("type").to_string(),
                t["latest"].as_u64().expect("latest"),
            )
        })
        .collect();

    let mut created = std::collections::BTreeSet::new();
    let mut covered: BTreeMap<&str, std::collections::BTreeSet<String>> = BTreeMap::new();
    let mut listed: Vec<String> = Vec::new();
    let mut published = 0;
    for ids in [Ids::Integer, Ids::Uuid] {
        for (n, e) in document_events(ids).into_iter().enumerate() {
            for topic in e.topics {
                if created.insert(*topic) {
                    s.create_topic(topic, 2).await;
                }
            }
            // `bus.publish(event, topics=[...])`: one request to every topic.
            let id = format!("{ids:?}-{n}");
            let (st, body) = publish_to(
                &s,
                e.topics,
                &cloud_event(id.clone(), e.event_type, &e.data),
            )
            .await;
            assert_eq!(
                st, 201,
                "{} ({}) with {ids:?} ids, data {}: {body}",
                e.event_type, e.place, e.data
            );
            let receipts = body["receipts"].as_array().expect("receipts");
            assert_eq!(receipts.len(), e.topics.len(), "{body}");
            for receipt in receipts {
                let (st, stored) = s
                    .get(&format!(
                        "/v1/topics/{}/events?partition={}&from={}&limit=1",
                        receipt["topic"].as_str().expect("topic"),
                        receipt["partition"],
                        receipt["offset"]
                    ))
                    .await;
                assert_eq!(st, 200, "{stored}");
                let stored = &stored["events"][0]["event"];
                assert_eq!(stored["id"], json!(id));
                assert_eq!(stored["data"], e.data, "stored as sent");
                if let Some(version) = latest.get(e.event_type) {
                    assert_eq!(
                        stored["dataschema"],
                        json!(format!("urn:crmbus:schema:{}:{version}", e.event_type)),
                        "validated against the latest version"
                    );
                }
                published += 1;
            }
            let fields: Vec<&str> = e
                .data
                .as_object()
                .expect("object")
                .keys()
                .map(String::as_str)
                .collect();
            let line = format!("{:<18} {:<36} {}", e.event_type, fields.join(", "), e.place);
            if !listed.contains(&line) {
                listed.push(line);
            }
            covered
                .entry(e.event_type)
                .or_default()
                .extend(e.data.as_object().expect("object").keys().cloned());
        }
    }

    eprintln!(
        "published {published} events ({} types), each with integer and with UUID ids:",
        covered.len()
    );
    for line in &listed {
        eprintln!("  {line}");
    }
    let mut named: Vec<&str> = DJANGO_TABLES.iter().map(|(t, _, _)| *t).collect();
    named.extend(PLATFORM_CATEGORIES.iter().map(|(t, _, _)| *t));
    for ty in named {
        assert!(
            latest.contains_key(ty),
            "{ty} is named by the documents but has no catalog schema"
        );
        assert!(covered.contains_key(ty), "{ty} not covered");
    }
    assert_eq!(covered.len(), 33, "{:?}", covered.keys());
    s.stop().await;
}

/// Validation is on in the test above: the same documents' events with a value of the
/// wrong type are still refused, naming the field, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_event_with_a_wrong_type_is_still_refused() {
    let s = TestServer::start("embedded", CATALOG).await;
    s.create_topic("deals", 1).await;
    let cases = [
        // `amount` as a float instead of `str(deal.amount)`.
        (
            "deal.won",
            json!({"deal_id": 7, "amount": 1250.0}),
            "data/amount",
        ),
        // An id that is neither a string nor an integer.
        (
            "deal.stage_changed",
            json!({"deal_id": 7.5, "old_stage": "a", "new_stage": "b"}),
            "data/deal_id",
        ),
        // A described optional field is validated when present.
        (
            "deal.won",
            json!({"deal_id": 7, "amount": "10", "currency": "euro"}),
            "data/currency",
        ),
        (
            "deal.won",
            json!({"deal_id": 7, "amount": "10", "close_date": "20/11/2026"}),
            "data/close_date",
        ),
        // A required field missing.
        ("deal.created", json!({"deal_id": 7}), "data/name"),
    ];
    for (n, (ty, data, field)) in cases.into_iter().enumerate() {
        let (st, body) = s
            .publish("deals", &cloud_event(format!("bad-{n}"), ty, &data))
            .await;
        assert_eq!(st, 400, "{ty} {data}: {body}");
        assert_eq!(body["code"], "schema_violation");
        assert_eq!(error_fields(&body), [field], "{ty} {data}: {body}");
    }
    assert_eq!(s.event_count("deals").await, 0);
    s.stop().await;
}
