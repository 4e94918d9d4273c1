//! Errors a newcomer meets say what to do (issue 22): a plain JSON body that is no
//! CloudEvent names the two ways to send one, and a missing topic says how to create it.

mod common;

use common::TestServer;
use serde_json::json;

#[tokio::test]
async fn plain_json_without_ce_headers_is_told_the_two_ways_to_send_an_event() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("deals", 1).await;
    let r = s
        .client
        .post(s.url("/v1/topics/deals/events"))
        .header("content-type", "application/json")
        .body(json!({"deal_id": "deal-42", "amount": 1200}).to_string())
        .send()
        .await
        .expect("publish");
    let (status, body) = common::status_json(r).await;
    assert_eq!(status, 400, "{body}");
    let detail = body["detail"].as_str().expect("detail");
    assert!(detail.contains("structured CloudEvent"), "{detail}");
    assert!(detail.contains("ce-specversion"), "{detail}");
    assert_eq!(s.event_count("deals").await, 0);
    s.stop().await;
}

#[tokio::test]
async fn a_missing_topic_says_how_to_create_it() {
    let s = TestServer::start("embedded", &[]).await;
    let event = common::event("e-1", "deal.won", "deal-1", json!({}));
    let (status, body) = s.publish("nope", &event).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "topic_not_found");
    let detail = body["detail"].as_str().expect("detail");
    assert!(detail.contains("topic 'nope' does not exist"), "{detail}");
    assert!(detail.contains("crmbus topics create nope"), "{detail}");
    assert!(detail.contains("auto_create_topics"), "{detail}");
    s.stop().await;
}
