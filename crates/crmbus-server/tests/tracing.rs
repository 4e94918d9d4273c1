//! Traces over HTTP: a publish joins the caller's trace (its `traceparent` header, or the
//! event's own `traceparent` extension), stamps events that carry none with it, and a
//! webhook delivery sends the trace on to the receiver in its `traceparent` header.
//! Spans go through a `tracing-opentelemetry` layer to the SDK's in-memory exporter.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use common::{event, TestServer};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;

const EVENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const HEADER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

/// The trace id of a `traceparent` value.
fn trace_of(traceparent: &str) -> String {
    traceparent
        .split('-')
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_joins_the_callers_trace_and_a_webhook_passes_it_on() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    // A receiver that keeps each request's traceparent by webhook id.
    let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let g = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap| {
            let g = Arc::clone(&g);
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                g.lock()
                    .expect("lock")
                    .push((h("webhook-id"), h("traceparent")));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let s = TestServer::start("embedded", &[("CRMBUS_PUSH_ALLOWED_TARGETS", "127.0.0.1")]).await;
    s.create_topic("deals", 1).await;
    let (code, body) = s
        .post(
            "/v1/topics/deals/subscriptions",
            json!({"name": "erp", "target": {"kind": "webhook", "url": url}}),
        )
        .await;
    assert_eq!(code, 201, "{body}");

    // An event carrying its producer's trace.
    let mut carried = event("carried", "deal.won", "d-1", json!({}));
    carried["traceparent"] = json!(format!("00-{EVENT_TRACE}-00f067aa0ba902b7-01"));
    let (code, r) = s.publish("deals", &carried).await;
    assert_eq!(code, 201, "{r}");
    // An event without one, published inside the caller's trace (its header).
    let r = s
        .client
        .post(s.url("/v1/topics/deals/events"))
        .header("content-type", "application/cloudevents+json")
        .header(
            "traceparent",
            format!("00-{HEADER_TRACE}-b7ad6b7169203331-01"),
        )
        .body(event("stamped", "deal.won", "d-2", json!({})).to_string())
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status().as_u16(), 201);

    let mut seen = Vec::new();
    for _ in 0..1500 {
        seen = got.lock().expect("lock").clone();
        if seen.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let header_of = |id: &str| {
        seen.iter()
            .find(|(w, _)| w == id)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| panic!("{id} never reached the receiver: {seen:?}"))
    };
    // The receiver is in each event's trace, under a span of crmbus's own.
    let carried_tp = header_of("carried");
    assert_eq!(trace_of(&carried_tp), EVENT_TRACE, "{carried_tp}");
    assert!(!carried_tp.contains("00f067aa0ba902b7"), "{carried_tp}");
    assert_eq!(trace_of(&header_of("stamped")), HEADER_TRACE);

    // The stamped event keeps the trace in the log (what every consumer reads).
    let (code, read) = s
        .get("/v1/topics/deals/events?partition=0&from=1&limit=1")
        .await;
    assert_eq!(code, 200, "{read}");
    let stored = &read["events"][0]["event"];
    assert_eq!(stored["id"], "stamped");
    assert_eq!(
        trace_of(stored["traceparent"].as_str().unwrap_or_default()),
        HEADER_TRACE
    );
    // And the publisher's own is kept as it was.
    let (_, read) = s
        .get("/v1/topics/deals/events?partition=0&from=0&limit=1")
        .await;
    assert_eq!(
        read["events"][0]["event"]["traceparent"],
        carried["traceparent"]
    );

    // The spans: publish and append in the caller's trace, deliver and webhook in each
    // (the last close once the answers are in: wait for them).
    let mut spans = Vec::new();
    for _ in 0..1500 {
        spans = exporter.get_finished_spans().expect("spans");
        let delivered = spans.iter().filter(|s| s.name == "crmbus.deliver").count();
        if delivered >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let names_in = |trace: &str| {
        let mut names: Vec<String> = spans
            .iter()
            .filter(|s| s.span_context.trace_id().to_string() == trace)
            .map(|s| s.name.to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    };
    for name in [
        "crmbus.append",
        "crmbus.deliver",
        "crmbus.publish",
        "crmbus.webhook",
    ] {
        assert!(
            names_in(HEADER_TRACE).contains(&name.to_string()),
            "{name} not in the caller's trace: {:?}",
            names_in(HEADER_TRACE)
        );
        assert!(
            names_in(EVENT_TRACE).contains(&name.to_string()),
            "{name} not in the event's trace: {:?}",
            names_in(EVENT_TRACE)
        );
    }
}
