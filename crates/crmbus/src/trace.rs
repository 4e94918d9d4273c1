//! Trace context carried on events: the W3C `traceparent` and `tracestate` as CloudEvents
//! extension attributes (the distributed-tracing extension). A publisher that sets them,
//! or a server that stamps them from its publish span, links each delivery attempt's span
//! (`crmbus.deliver`) to the producer's trace; the handler runs inside that span, so its
//! own spans, and a webhook's outgoing `traceparent`, share the trace id.
//!
//! The spans are `tracing` spans; they reach OpenTelemetry through a
//! `tracing-opentelemetry` layer when the application (or `crmbus serve` with
//! `[tracing]`) installs one, and cost next to nothing otherwise.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::event::{Event, ExtensionValue};

/// The extension attributes of the trace context.
pub const TRACEPARENT: &str = "traceparent";
/// The vendor part of the trace context.
pub const TRACESTATE: &str = "tracestate";

struct EventCarrier<'a>(&'a Event);

impl Extractor for EventCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.extensions.get(key) {
            Some(ExtensionValue::String(s)) => Some(s.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        [TRACEPARENT, TRACESTATE]
            .into_iter()
            .filter(|k| self.0.extensions.contains_key(*k))
            .collect()
    }
}

/// A text map (header names to values) for injecting a context.
#[derive(Default)]
struct Fields(HashMap<String, String>);

impl Injector for Fields {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

/// The remote context an event's `traceparent` names, if it holds a valid one.
pub fn parent_of(event: &Event) -> Option<Context> {
    if !event.extensions.contains_key(TRACEPARENT) {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&EventCarrier(event));
    cx.span().span_context().is_valid().then_some(cx)
}

/// The context of an extractor (HTTP headers, say), if it holds a valid `traceparent`.
pub fn parent_from(carrier: &dyn Extractor) -> Option<Context> {
    let cx = TraceContextPropagator::new().extract(carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// `traceparent` and `tracestate` of the current `tracing` span's OpenTelemetry context
/// (empty when no OpenTelemetry layer records it).
pub fn current_fields() -> Vec<(String, String)> {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut fields = Fields::default();
    TraceContextPropagator::new().inject_context(&cx, &mut fields);
    // The propagator writes an empty `tracestate` too: nothing to carry.
    let mut out: Vec<(String, String)> = fields
        .0
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    out.sort();
    out
}

/// Stamps the current span's trace context on `event` unless it carries one already, so
/// its deliveries join the publisher's trace. Nothing happens without a recorded span.
pub fn stamp_current(event: &mut Event) {
    if event.extensions.contains_key(TRACEPARENT) {
        return;
    }
    for (k, v) in current_fields() {
        event
            .extensions
            .entry(k)
            .or_insert(ExtensionValue::String(v));
    }
}

/// Makes `span`'s parent the context `event` carries, if it carries one (nothing is read
/// for a span no subscriber records). The application's OpenTelemetry layer must be
/// `tracing-opentelemetry` 0.34 over `opentelemetry` 0.33 (the versions crmbus links);
/// with another, deliveries start traces of their own.
pub fn follow(span: &tracing::Span, event: &Event) {
    if span.is_disabled() {
        return;
    }
    if let Some(cx) = parent_of(event) {
        let _ = span.set_parent(cx);
    }
}
