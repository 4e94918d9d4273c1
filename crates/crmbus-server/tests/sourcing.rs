//! Event sourcing over HTTP on the embedded log: a subject's stream with versions
//! (`GET /v1/topics/{topic}/subjects/{subject}/events`), across a restart, and publishes
//! that state the subject's version (`expectedversion`, or `If-Match` on a single event):
//! 409 with the current version when it moved on, nothing written; two racing writers,
//! one winner. The 501 of the other backends is in http_backends.rs.

mod common;

use common::{event, status_json, TestServer};
use serde_json::{json, Value};

async fn stream(s: &TestServer, topic: &str, subject: &str, query: &str) -> Value {
    let (code, body) = s
        .get(&format!(
            "/v1/topics/{topic}/subjects/{subject}/events{query}"
        ))
        .await;
    assert_eq!(code, 200, "{body}");
    body
}

fn ids_and_versions(body: &Value) -> Vec<(u64, String)> {
    body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["version"].as_u64().expect("version"),
                e["event"]["id"].as_str().expect("id").to_string(),
            )
        })
        .collect()
}

fn want(list: &[(u64, &str)]) -> Vec<(u64, String)> {
    list.iter().map(|(v, id)| (*v, id.to_string())).collect()
}

fn expecting(mut e: Value, version: u64) -> Value {
    e["expectedversion"] = json!(version);
    e
}

async fn publish_if_match(
    s: &TestServer,
    topic: &str,
    body: &Value,
    if_match: &str,
) -> (u16, Value) {
    let r = s
        .client
        .post(s.url(&format!("/v1/topics/{topic}/events")))
        .header("content-type", "application/cloudevents+json")
        .header("if-match", if_match)
        .body(body.to_string())
        .send()
        .await
        .expect("publish");
    status_json(r).await
}

#[tokio::test]
async fn a_subject_stream_is_served_with_versions_and_a_stale_publish_gets_409() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("deals", 3).await;
    for (i, (subject, stage)) in [
        ("deal-1", "new"),
        ("deal-2", "new"),
        ("deal-1", "qualified"),
        ("deal-1", "proposal"),
    ]
    .iter()
    .enumerate()
    {
        let (code, r) = s
            .publish(
                "deals",
                &event(
                    &format!("e{i}"),
                    "deal.stage_changed",
                    subject,
                    json!({"stage": stage}),
                ),
            )
            .await;
        assert_eq!(code, 201, "{r}");
    }
    let body = stream(&s, "deals", "deal-1", "").await;
    assert_eq!(body["version"], 3);
    assert_eq!(body["next_version"], 4);
    assert_eq!(
        ids_and_versions(&body),
        want(&[(1, "e0"), (2, "e2"), (3, "e3")])
    );
    assert_eq!(body["events"][1]["event"]["data"]["stage"], "qualified");
    // The ETag is the version, to send back as If-Match.
    let r = s
        .client
        .get(s.url("/v1/topics/deals/subjects/deal-1/events"))
        .send()
        .await
        .expect("get");
    assert_eq!(
        r.headers().get("etag").and_then(|v| v.to_str().ok()),
        Some("\"3\"")
    );
    let page = stream(&s, "deals", "deal-1", "?from_version=2&limit=1").await;
    assert_eq!(ids_and_versions(&page), want(&[(2, "e2")]));
    assert_eq!(page["next_version"], 3);
    let none = stream(&s, "deals", "deal-7", "").await;
    assert_eq!(
        (none["version"].as_u64(), none["next_version"].as_u64()),
        (Some(0), Some(1))
    );

    // expectedversion 3 holds: stored as version 4, the receipt says so.
    let (code, r) = s
        .publish(
            "deals",
            &expecting(event("w1", "deal.won", "deal-1", json!({})), 3),
        )
        .await;
    assert_eq!(code, 201, "{r}");
    assert_eq!(r["receipts"][0]["version"], 4);
    // expectedversion 2 is stale: 409 with the current version, nothing written.
    let before = s.event_count("deals").await;
    let (code, p) = s
        .publish(
            "deals",
            &expecting(event("w2", "deal.lost", "deal-1", json!({})), 2),
        )
        .await;
    assert_eq!(code, 409, "{p}");
    assert_eq!(p["code"], "version_conflict");
    assert_eq!(p["current_version"], 4);
    assert_eq!(s.event_count("deals").await, before);
    // If-Match on a single event does the same.
    let (code, p) = publish_if_match(
        &s,
        "deals",
        &event("w3", "deal.lost", "deal-1", json!({})),
        "\"3\"",
    )
    .await;
    assert_eq!((code, p["current_version"].as_u64()), (409, Some(4)), "{p}");
    let (code, r) = publish_if_match(
        &s,
        "deals",
        &event("w4", "deal.invoiced", "deal-1", json!({})),
        "\"4\"",
    )
    .await;
    assert_eq!(code, 201, "{r}");
    assert_eq!(r["receipts"][0]["version"], 5);
    // Refused as requests: a batch with If-Match, a version that is not a number, an
    // If-Match that disagrees with the event, an expectation without a subject.
    let batch = json!([
        event("b1", "x", "deal-1", json!({})),
        event("b2", "x", "deal-1", json!({}))
    ]);
    let r = s
        .client
        .post(s.url("/v1/topics/deals/events"))
        .header("content-type", "application/cloudevents-batch+json")
        .header("if-match", "5")
        .body(batch.to_string())
        .send()
        .await
        .expect("post");
    let (code, p) = status_json(r).await;
    assert_eq!(code, 400, "{p}");
    assert!(
        p["detail"].as_str().unwrap_or("").contains("If-Match"),
        "{p}"
    );
    let (code, p) = publish_if_match(
        &s,
        "deals",
        &event("b3", "x", "deal-1", json!({})),
        "W/\"x\"",
    )
    .await;
    assert_eq!(code, 400, "{p}");
    let (code, p) = publish_if_match(
        &s,
        "deals",
        &expecting(event("b4", "x", "deal-1", json!({})), 5),
        "4",
    )
    .await;
    assert_eq!(code, 400, "{p}");
    let mut no_subject = event("b5", "x", "deal-1", json!({}));
    no_subject
        .as_object_mut()
        .expect("object")
        .remove("subject");
    let (code, p) = s.publish("deals", &expecting(no_subject, 0)).await;
    assert_eq!(code, 400, "{p}");
    let (code, p) = s
        .get("/v1/topics/deals/subjects/deal-1/events?from_version=0")
        .await;
    assert_eq!(code, 400, "{p}");
    let (code, p) = s.get("/v1/topics/nope/subjects/deal-1/events").await;
    assert_eq!(code, 404, "{p}");
    assert_eq!(s.event_count("deals").await, before + 1);

    // After a restart the stream and its versions are the same, rebuilt from the log.
    let dir = s.stop().await;
    let s = TestServer::start_in(dir, "embedded", &[]).await;
    let body = stream(&s, "deals", "deal-1", "").await;
    assert_eq!(body["version"], 5);
    assert_eq!(
        ids_and_versions(&body),
        want(&[(1, "e0"), (2, "e2"), (3, "e3"), (4, "w1"), (5, "w4")])
    );
    assert_eq!(
        ids_and_versions(&stream(&s, "deals", "deal-2", "").await),
        want(&[(1, "e1")])
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_racing_with_the_same_expected_version_exactly_one_wins() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("deals", 2).await;
    for round in 0..20 {
        let subject = format!("deal-{round}");
        let (code, r) = s
            .publish(
                "deals",
                &event(&format!("c{round}"), "deal.created", &subject, json!({})),
            )
            .await;
        assert_eq!(code, 201, "{r}");
        let post = |writer: u32| {
            let body = expecting(
                event(
                    &format!("w{round}-{writer}"),
                    "deal.won",
                    &subject,
                    json!({"by": writer}),
                ),
                1,
            );
            let req = s
                .client
                .post(s.url("/v1/topics/deals/events"))
                .header("content-type", "application/cloudevents+json")
                .body(body.to_string());
            async move { status_json(req.send().await.expect("publish")).await }
        };
        let ((a, ra), (b, rb)) = tokio::join!(post(1), post(2));
        let mut codes = [a, b];
        codes.sort_unstable();
        assert_eq!(codes, [201, 409], "round {round}: {ra} {rb}");
        let body = stream(&s, "deals", &subject, "").await;
        assert_eq!(body["version"], 2);
        assert_eq!(body["events"].as_array().map(Vec::len), Some(2));
    }
    s.stop().await;
}

#[tokio::test]
async fn a_backend_without_versions_refuses_them_with_501_and_writes_nothing() {
    let s = TestServer::start("memory", &[]).await;
    s.create_topic("deals", 1).await;
    let (code, p) = s
        .publish(
            "deals",
            &expecting(event("m1", "deal.won", "deal-1", json!({})), 0),
        )
        .await;
    assert_eq!(code, 501, "{p}");
    assert_eq!(p["code"], "unsupported");
    assert!(p["detail"].as_str().unwrap_or("").contains("memory"), "{p}");
    let (code, p) = publish_if_match(
        &s,
        "deals",
        &event("m2", "deal.won", "deal-1", json!({})),
        "0",
    )
    .await;
    assert_eq!(code, 501, "{p}");
    assert_eq!(s.event_count("deals").await, 0);
    let (code, p) = s.get("/v1/topics/deals/subjects/deal-1/events").await;
    assert_eq!(code, 501, "{p}");
    // Without an expectation, publishing works as ever (no versions in receipts).
    let (code, r) = s
        .publish("deals", &event("m3", "deal.won", "deal-1", json!({})))
        .await;
    assert_eq!(code, 201, "{r}");
    assert!(r["receipts"][0].get("version").is_none(), "{r}");
    s.stop().await;
}
