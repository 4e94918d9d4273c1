//! Trace context on events: a delivery attempt's span (`crmbus.deliver`) is a child of the
//! trace the event's `traceparent` extension names, and the handler runs inside it, so
//! spans the handler makes share the producer's trace id. Spans are exported through a
//! `tracing-opentelemetry` layer to the SDK's in-memory exporter.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crmbus::delivery::{handler_fn, Delivery, SubscribeOptions};
use crmbus::{Event, EventBus, MemoryLog};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use serde_json::json;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PRODUCER_SPAN: &str = "b7ad6b7169203331";

#[tokio::test]
async fn a_delivery_joins_the_trace_its_event_carries_and_the_handler_runs_inside_it() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let bus = EventBus::builder()
        .log(Arc::new(MemoryLog::new()))
        .auto_create_topics(1)
        .build();
    // What the handler sees: the trace id of the span it runs in, per event id.
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let s = Arc::clone(&seen);
    let handler = handler_fn(move |d: Delivery| {
        let s = Arc::clone(&s);
        async move {
            let cx = tracing::Span::current().context();
            let trace = cx.span().span_context().trace_id().to_string();
            // A span of the handler's own, to be exported under the same trace.
            tracing::info_span!("erp.sync").in_scope(|| {});
            s.lock().expect("lock").push((d.event.id.clone(), trace));
            Ok(())
        }
    });
    let traced = Event::new("deal.won", json!({"deal_id": "d-1"}))
        .id("traced")
        .subject("d-1")
        .extension(
            "traceparent",
            format!("00-{TRACE}-{PRODUCER_SPAN}-01").as_str(),
        );
    let untraced = Event::new("deal.won", json!({"deal_id": "d-2"}))
        .id("untraced")
        .subject("d-2");
    bus.publish(traced, &["deals"]).await.expect("publish");
    bus.publish(untraced, &["deals"]).await.expect("publish");
    let sub = bus
        .subscribe("deals", "erp", handler, SubscribeOptions::default())
        .await
        .expect("subscribe");
    for _ in 0..3000 {
        if seen.lock().expect("lock").len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sub.unsubscribe().await.expect("unsubscribe");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let trace_of = |id: &str| {
        seen.iter()
            .find(|(e, _)| e == id)
            .map(|(_, t)| t.clone())
            .unwrap_or_default()
    };
    assert_eq!(trace_of("traced"), TRACE);
    let other = trace_of("untraced");
    assert_ne!(other, TRACE);
    assert_ne!(
        other, "00000000000000000000000000000000",
        "a span of its own"
    );

    let spans = exporter.get_finished_spans().expect("spans");
    let deliver = spans
        .iter()
        .find(|s| s.name == "crmbus.deliver" && s.span_context.trace_id().to_string() == TRACE)
        .unwrap_or_else(|| panic!("no crmbus.deliver span in the trace: {spans:?}"));
    assert_eq!(deliver.parent_span_id.to_string(), PRODUCER_SPAN);
    let attrs: Vec<String> = deliver
        .attributes
        .iter()
        .map(|kv| format!("{}={}", kv.key, kv.value))
        .collect();
    assert!(attrs.contains(&"topic=deals".to_string()), "{attrs:?}");
    assert!(attrs.contains(&"attempt=1".to_string()), "{attrs:?}");
    let handler_span = spans
        .iter()
        .find(|s| s.name == "erp.sync" && s.span_context.trace_id().to_string() == TRACE)
        .expect("the handler's span in the producer's trace");
    assert_eq!(handler_span.parent_span_id, deliver.span_context.span_id());
}
