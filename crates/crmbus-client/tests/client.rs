//! Every method of the client against a real server (embedded log, ephemeral port):
//! topics, publish in each mode, read, a live stream, a subscription's pull, ack, nack,
//! seek and dead letters, a pull with the events as JSON text, the schema registry,
//! health, and the errors a caller sees.

use std::time::Duration;

use crmbus_client::api::{
    AckRequest, CompatibilityRequest, CreateSubscriptionRequest, CreateTopicRequest, DlqQuery,
    LiveQuery, NackRequest, PullRequest, ReadQuery, RedriveRequest, RetryBody, RotateSecretRequest,
    SchemaRequest, SeekRequest, SubjectReadQuery, SubscriptionTarget,
};
use crmbus_client::{Client, ClientError, Encoded};
use crmbus_server::{Config, Server};
use serde_json::{json, Value};

async fn start(dir: &std::path::Path) -> Server {
    start_with(dir, &[]).await
}

async fn start_with(dir: &std::path::Path, extra: &[(&str, &str)]) -> Server {
    let env = [
        ("CRMBUS_SCHEMAS_CATALOG", "false".to_string()),
        ("CRMBUS_SERVER_LISTEN", "127.0.0.1:0".to_string()),
        ("CRMBUS_STORAGE_BACKEND", "embedded".to_string()),
        (
            "CRMBUS_STORAGE_DATA_DIR",
            dir.join("data").display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Server::start(Config::load(None, env).expect("config"))
        .await
        .expect("server starts")
}

/// Waits for `f`, at most 30 s.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("the condition within 30 s")
}

fn event(id: &str, ty: &str, subject: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0", "id": id, "source": "urn:test:client",
        "type": ty, "subject": subject, "data": data
    })
}

fn topic(name: &str, partitions: u32) -> CreateTopicRequest {
    CreateTopicRequest {
        name: name.to_string(),
        partitions: Some(partitions),
        retention: None,
        require_schemas: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_with_its_typed_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path()).await;
    let client = Client::new(&format!("http://{}/", server.local_addr())).expect("client");
    assert!(!client.base_url().ends_with('/'));

    assert_eq!(client.health().await.expect("health").status, "ok");
    assert_eq!(client.ready().await.expect("ready").status, "ok");

    // Topics.
    let deals = client
        .create_topic(&topic("deals", 2))
        .await
        .expect("create");
    assert_eq!((deals.name.as_str(), deals.partitions), ("deals", 2));
    client
        .create_topic(&topic("audit", 1))
        .await
        .expect("create");
    let names: Vec<String> = client
        .list_topics()
        .await
        .expect("list")
        .topics
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["audit", "deals"]);

    // Publish: one event to two topics, a batch, pre-encoded bytes; a repeat is a duplicate.
    let won = event("e1", "deal.won", "deal-1", json!({"amount": 10}));
    let r = client
        .publish(&["deals", "audit"], &won)
        .await
        .expect("publish");
    let topics: Vec<&str> = r.receipts.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(topics, ["deals", "audit"]);
    let batch: Vec<Value> = (2..5)
        .map(|n| event(&format!("e{n}"), "deal.updated", "deal-1", json!({"n": n})))
        .collect();
    let r = client
        .publish_batch(&["deals"], &batch)
        .await
        .expect("batch");
    assert_eq!(r.receipts.len(), 3);
    let offsets: Vec<u64> = r.receipts.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [1, 2, 3], "one key, one partition, in order");
    let again = client
        .publish_encoded(&["deals"], &Encoded::structured(&won).expect("encode"))
        .await
        .expect("repeat");
    assert!(again.receipts[0].duplicate);

    // Read back, one partition.
    let p = r.receipts[0].partition;
    let read = client
        .read(
            "deals",
            &ReadQuery {
                partition: Some(p),
                from: Some(1),
                from_time: None,
                limit: Some(2),
            },
        )
        .await
        .expect("read");
    let ids: Vec<&str> = read
        .events
        .iter()
        .filter_map(|e| e.event["id"].as_str())
        .collect();
    assert_eq!(ids, ["e2", "e3"]);
    assert_eq!(read.next.get(&p.to_string()), Some(&3));

    // The subject's stream, with versions: e1..e4 are deal-1's versions 1 to 4.
    let stream = client
        .read_subject(
            "deals",
            "deal-1",
            &SubjectReadQuery {
                from_version: Some(2),
                limit: None,
            },
        )
        .await
        .expect("read subject");
    let versions: Vec<(u64, &str)> = stream
        .events
        .iter()
        .filter_map(|e| Some((e.version, e.event["id"].as_str()?)))
        .collect();
    assert_eq!(versions, [(2, "e2"), (3, "e3"), (4, "e4")]);
    assert_eq!((stream.version, stream.next_version), (4, 5));
    assert_eq!(r.receipts[2].version, Some(4));
    assert_eq!(client.topic("deals").await.expect("describe").events, 4);

    // A live stream from the start, filtered by type.
    let mut live = client
        .stream(
            "deals",
            &LiveQuery {
                from: Some("earliest".into()),
                types: vec!["deal.won".into()],
                ..LiveQuery::default()
            },
        )
        .await
        .expect("stream");
    let first = tokio::time::timeout(Duration::from_secs(30), live.next())
        .await
        .expect("a live event within 30 s")
        .expect("stream open")
        .expect("event");
    assert_eq!(first.event["id"], "e1");
    drop(live);

    // A subscription: pull, ack, nack to the dead letters, redrive, discard, seek.
    let sub = client
        .create_subscription(
            "deals",
            &CreateSubscriptionRequest {
                name: "erp".into(),
                filter: None,
                start: Some(json!("earliest")),
                retry: Some(RetryBody {
                    max_attempts: Some(1),
                    initial_backoff_ms: None,
                    max_backoff_ms: None,
                    multiplier: None,
                    max_age_ms: None,
                    schedule_ms: None,
                }),
                ordering: Some("none".into()),
                on_exhausted: None,
                ack_timeout_ms: None,
                max_in_flight: None,
                target: None,
                transform: None,
            },
        )
        .await
        .expect("subscribe");
    assert_eq!(sub.topic, "deals");
    assert_eq!(
        client
            .list_subscriptions()
            .await
            .expect("subs")
            .subscriptions
            .len(),
        1
    );
    let pull = PullRequest {
        max_events: Some(10),
        wait_ms: Some(5_000),
    };
    let got = within(async {
        let mut got = Vec::new();
        while got.len() < 4 {
            got.extend(client.pull("erp", &pull).await.expect("pull").deliveries);
        }
        got
    })
    .await;
    let (fail, rest) = got.split_at(1);
    let acked = client
        .ack(
            "erp",
            &AckRequest {
                ack_ids: rest.iter().map(|d| d.ack_id.clone()).collect(),
            },
        )
        .await
        .expect("ack");
    assert_eq!(acked.settled, 3);
    let nacked = client
        .nack(
            "erp",
            &NackRequest {
                ack_ids: vec![fail[0].ack_id.clone(), "nope".into()],
                delay_ms: None,
                error: Some("ERP down".into()),
            },
        )
        .await
        .expect("nack");
    assert_eq!(
        (nacked.settled, nacked.unknown.as_slice()),
        (1, ["nope".to_string()].as_slice())
    );
    let entry = format!("{}-{}", fail[0].partition, fail[0].offset);
    let dead = within(async {
        loop {
            let list = client
                .dead_letters("erp", &DlqQuery::default())
                .await
                .expect("dlq");
            if let Some(d) = list.entries.into_iter().next() {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        (dead.id.as_str(), dead.last_error.as_str()),
        (entry.as_str(), "ERP down")
    );
    assert_eq!(
        client
            .dead_letter("erp", &entry)
            .await
            .expect("show")
            .attempts,
        1
    );
    let redriven = client
        .redrive(
            "erp",
            &RedriveRequest {
                all: Some(true),
                ..RedriveRequest::default()
            },
            Some("tester"),
        )
        .await
        .expect("redrive");
    assert_eq!(redriven.redriven, 1);
    let again = within(async {
        loop {
            let d = client.pull("erp", &pull).await.expect("pull").deliveries;
            if let Some(d) = d.into_iter().next() {
                return d;
            }
        }
    })
    .await;
    assert_eq!(
        (again.partition, again.offset),
        (fail[0].partition, fail[0].offset)
    );
    client
        .nack(
            "erp",
            &NackRequest {
                ack_ids: vec![again.ack_id],
                delay_ms: None,
                error: Some("still down".into()),
            },
        )
        .await
        .expect("nack");
    within(async {
        loop {
            match client.discard("erp", &entry, Some("tester")).await {
                Ok(()) => return,
                Err(e) if e.code() == Some("dlq_entry_not_found") => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("discard: {e}"),
            }
        }
    })
    .await;
    // Both actions are in the audit log, with who did them.
    let audit = client.audit_log("erp").await.expect("audit");
    let actions: Vec<(&str, &str, &str)> = audit
        .entries
        .iter()
        .map(|a| (a.action.as_str(), a.who.as_str(), a.entry.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("redrive", "tester", entry.as_str()),
            ("discard", "tester", entry.as_str())
        ]
    );
    let cursor = client
        .seek(
            "erp",
            &SeekRequest {
                to: json!("earliest"),
            },
        )
        .await
        .expect("seek");
    assert_eq!(cursor.partitions.len(), 2);
    assert!(cursor.partitions.iter().all(|c| c.committed == 0));
    assert_eq!(client.subscription("erp").await.expect("show").name, "erp");
    client.delete_subscription("erp").await.expect("delete sub");

    // The schema registry.
    let schema = json!({"type": "object", "required": ["amount"],
        "properties": {"amount": {"type": "number"}}});
    let reg = client
        .register_schema(
            "deal.won",
            &SchemaRequest {
                schema: schema.clone(),
            },
        )
        .await
        .expect("register");
    assert!(reg.created);
    let check = client
        .check_schema("deal.won", &SchemaRequest { schema })
        .await
        .expect("check");
    assert_eq!(check.existing, Some(reg.version));
    let mode = client
        .set_compatibility(
            "deal.won",
            &CompatibilityRequest {
                mode: "full".into(),
            },
        )
        .await
        .expect("compatibility");
    assert_eq!(mode.mode, "full");
    assert_eq!(client.schemas().await.expect("schemas").types.len(), 1);
    let shown = client
        .schema_version("deal.won", "latest")
        .await
        .expect("show schema");
    assert_eq!(shown.uri, reg.uri);
    let bad = event("e9", "deal.won", "deal-2", json!({"amount": "ten"}));
    let v = client.validate(&bad).await.expect("validate");
    assert!(!v.valid);
    assert!(v.errors.iter().any(|e| e.field.contains("amount")), "{v:?}");

    client.delete_topic("audit").await.expect("delete topic");
    server.shutdown().await.expect("stop");
}

#[tokio::test]
async fn errors_name_the_problem_or_the_unreachable_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path()).await;
    let client = Client::new(&format!("http://{}", server.local_addr())).expect("client");

    let e = client.topic("nope").await.expect_err("no such topic");
    assert_eq!((e.code(), e.status()), (Some("topic_not_found"), Some(404)));
    assert!(e.to_string().contains("(HTTP 404)"), "{e}");

    let e = client
        .publish(&["nope"], &json!({"id": "x"}))
        .await
        .expect_err("invalid");
    let ClientError::Problem { problem } = &e else {
        panic!("expected a problem, got {e:?}");
    };
    assert!(!problem.errors.is_empty(), "{problem:?}");

    assert!(matches!(
        Client::new("localhost:7480"),
        Err(ClientError::InvalidUrl(_))
    ));
    server.shutdown().await.expect("stop");

    // A port nothing listens on.
    let gone = Client::new("http://127.0.0.1:9").expect("client");
    let e = gone.list_topics().await.expect_err("unreachable");
    assert!(matches!(e, ClientError::Unreachable { .. }), "{e:?}");
    assert!(
        e.to_string().contains("cannot reach the crmbus server"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_subscriptions_secret_is_rotated_and_it_is_enabled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_with(dir.path(), &[("CRMBUS_PUSH_ALLOWED_TARGETS", "127.0.0.1")]).await;
    let client = Client::new(&format!("http://{}/", server.local_addr())).expect("client");
    client
        .create_topic(&topic("deals", 1))
        .await
        .expect("topic");
    // A port nothing listens on: no delivery is made (the topic is empty) or needed.
    let created = client
        .create_subscription(
            "deals",
            &serde_json::from_value::<CreateSubscriptionRequest>(json!({
                "name": "erp-hook",
                "start": "latest",
                "target": {"kind": "webhook", "url": "http://127.0.0.1:9/hook"}
            }))
            .expect("request"),
        )
        .await
        .expect("webhook subscription");
    let secret = |v: &crmbus_client::api::SubscriptionView| match &v.config.target {
        Some(SubscriptionTarget::Webhook(w)) => w.secret.clone().unwrap_or_default(),
        other => panic!("not a webhook: {other:?}"),
    };
    let first = secret(&created);
    assert!(
        first.starts_with("whsec_") && first != "whsec_********",
        "{first}"
    );
    let rotated = client
        .rotate_secret(
            "erp-hook",
            &RotateSecretRequest {
                secret: None,
                overlap_ms: Some(60_000),
            },
            Some("ops@acme"),
        )
        .await
        .expect("rotated");
    let second = secret(&rotated);
    assert!(second.starts_with("whsec_") && second != first && second != "whsec_********");
    let audit = client.audit_log("erp-hook").await.expect("audit");
    assert_eq!(audit.entries[0].action, "rotate_secret");
    assert_eq!(audit.entries[0].who, "ops@acme");
    let enabled = client
        .enable_subscription("erp-hook", None)
        .await
        .expect("enable");
    assert_eq!(secret(&enabled), "whsec_********");
    // A pull subscription has no secret.
    client
        .create_subscription(
            "deals",
            &serde_json::from_value::<CreateSubscriptionRequest>(json!({"name": "puller"}))
                .expect("request"),
        )
        .await
        .expect("pull subscription");
    match client
        .rotate_secret("puller", &RotateSecretRequest::default(), None)
        .await
    {
        Err(ClientError::Problem { problem }) => assert_eq!(problem.status, 404),
        other => panic!("expected a 404 problem, got {other:?}"),
    }
    server.shutdown().await.expect("shutdown");
}

/// `pull_raw` hands each event over as the JSON text the server sent, and the shaped body
/// too: the same deliveries `pull` parses, and they ack the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_pull_gives_each_event_as_its_json_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path()).await;
    let client = Client::new(&format!("http://{}", server.local_addr())).expect("client");
    client
        .create_topic(&topic("deals", 2))
        .await
        .expect("create");
    let sent: Vec<Value> = (0..3)
        .map(|i| {
            event(
                &format!("evt-{i}"),
                "deal.won",
                &format!("deal-{i}"),
                json!({"deal_id": format!("deal-{i}"), "amount": 100 * i}),
            )
        })
        .collect();
    client
        .publish_batch(&["deals"], &sent)
        .await
        .expect("publish");
    client
        .create_subscription(
            "deals",
            &CreateSubscriptionRequest {
                name: "erp".into(),
                filter: None,
                start: Some(json!("earliest")),
                retry: None,
                ordering: Some("none".into()),
                on_exhausted: None,
                ack_timeout_ms: None,
                max_in_flight: None,
                target: None,
                transform: Some(json!({"deal": "{{ $.data.deal_id }}"})),
            },
        )
        .await
        .expect("subscribe");
    let pull = PullRequest {
        max_events: Some(10),
        wait_ms: Some(5_000),
    };
    let got = within(async {
        let mut got = Vec::new();
        while got.len() < 3 {
            got.extend(
                client
                    .pull_raw("erp", &pull)
                    .await
                    .expect("pull")
                    .deliveries,
            );
        }
        got
    })
    .await;
    let mut ids = Vec::new();
    for d in &got {
        let event: Value = serde_json::from_str(d.event.get()).expect("the event is JSON");
        let i: usize = event["id"]
            .as_str()
            .and_then(|id| id.strip_prefix("evt-"))
            .and_then(|n| n.parse().ok())
            .expect("one of the events sent");
        assert_eq!(event["data"], sent[i]["data"]);
        assert_eq!(event["subject"], sent[i]["subject"]);
        let body: Value = serde_json::from_str(d.body.as_ref().expect("shaped body").get())
            .expect("the body is JSON");
        assert_eq!(body, json!({"deal": format!("deal-{i}")}));
        assert_eq!(d.attempt, 1);
        ids.push(i);
    }
    ids.sort();
    assert_eq!(ids, [0, 1, 2]);
    let acked = client
        .ack(
            "erp",
            &AckRequest {
                ack_ids: got.iter().map(|d| d.ack_id.clone()).collect(),
            },
        )
        .await
        .expect("ack");
    assert_eq!(acked.settled, 3);
    server.shutdown().await.expect("stop");
}
