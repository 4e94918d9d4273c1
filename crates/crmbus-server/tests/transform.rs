//! A subscription's transformation over HTTP: a pulled delivery carries the shaped body
//! beside the event, the template survives a restart, and a bad template is refused at
//! creation with a 400 naming where it goes wrong (the webhook case is in
//! push_targets.rs).

mod common;

use common::{event, TestServer};
use serde_json::{json, Value};

const TEMPLATE: &str = r#"{"deal": "{{ $.data.deal_id }}", "amount": "{{ $.data.amount }}",
    "line": "{{ $.data.lines[0].sku }} x{{ $.data.lines[0].qty }}", "kind": "erp.sale"}"#;

async fn pull_one(s: &TestServer, name: &str) -> Value {
    let (code, pulled) = s
        .post(
            &format!("/v1/subscriptions/{name}/pull"),
            json!({"max_events": 1, "wait_ms": 2000}),
        )
        .await;
    assert_eq!(code, 200, "{pulled}");
    let d = pulled["deliveries"][0].clone();
    assert!(d.is_object(), "nothing pulled: {pulled}");
    let (code, acked) = s
        .post(
            &format!("/v1/subscriptions/{name}/ack"),
            json!({"ack_ids": [d["ack_id"]]}),
        )
        .await;
    assert_eq!(code, 200, "{acked}");
    d
}

#[tokio::test]
async fn a_pulled_delivery_carries_the_shaped_body_beside_the_event_across_a_restart() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("deals", 1).await;
    let template: Value = serde_json::from_str(TEMPLATE).expect("template");
    let (code, body) = s
        .post(
            "/v1/topics/deals/subscriptions",
            json!({"name": "erp", "transform": template}),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = s
        .post("/v1/topics/deals/subscriptions", json!({"name": "plain"}))
        .await;
    assert_eq!(code, 201, "{body}");
    let data = json!({"deal_id": "deal-9", "amount": 310.5, "lines": [{"sku": "A-1", "qty": 3}]});
    let (code, r) = s
        .publish("deals", &event("d-1", "deal.won", "deal-9", data.clone()))
        .await;
    assert_eq!(code, 201, "{r}");

    let d = pull_one(&s, "erp").await;
    assert_eq!(
        d["body"],
        json!({"deal": "deal-9", "amount": 310.5, "line": "A-1 x3", "kind": "erp.sale"})
    );
    assert_eq!(d["event"]["id"], "d-1");
    assert_eq!(d["event"]["data"], data);
    // Without a transformation there is no body.
    let d = pull_one(&s, "plain").await;
    assert!(d.get("body").is_none(), "{d}");

    // Kept in the definition: after a restart the next delivery is shaped the same way.
    let dir = s.stop().await;
    let s = TestServer::start_in(dir, "embedded", &[]).await;
    let (code, r) = s
        .publish(
            "deals",
            &event("d-2", "deal.won", "deal-10", json!({"deal_id": "deal-10"})),
        )
        .await;
    assert_eq!(code, 201, "{r}");
    let d = pull_one(&s, "erp").await;
    assert_eq!(d["event"]["id"], "d-2");
    // Missing values: null where a whole value was asked for, nothing inside text.
    assert_eq!(
        d["body"],
        json!({"deal": "deal-10", "amount": null, "line": " x", "kind": "erp.sale"})
    );
}

#[tokio::test]
async fn a_bad_template_is_refused_at_creation_naming_where() {
    let s = TestServer::start("embedded", &[]).await;
    s.create_topic("deals", 1).await;
    let cases = [
        (
            json!({"order": {"ref": "{{ $.data.deal_id"}}),
            "transform/order/ref",
            "without its '}}'",
        ),
        (
            json!({"lines": ["{{ data.lines }}"]}),
            "transform/lines/0",
            "starts with '$'",
        ),
        (
            json!({"x": "{{ $.data.lines[first] }}"}),
            "transform/x",
            "not an index",
        ),
        (json!("{{ $.data }}"), "transform", "a JSON object"),
    ];
    for (i, (template, field, why)) in cases.into_iter().enumerate() {
        let name = format!("bad-{i}");
        let (code, problem) = s
            .post(
                "/v1/topics/deals/subscriptions",
                json!({"name": name, "transform": template}),
            )
            .await;
        assert_eq!(code, 400, "{problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
        let message = problem["errors"][0]["message"].as_str().unwrap_or("");
        assert!(message.contains(why), "{problem}");
        let (code, _) = s.get(&format!("/v1/subscriptions/{name}")).await;
        assert_eq!(code, 404, "a refused subscription was made");
    }
}
