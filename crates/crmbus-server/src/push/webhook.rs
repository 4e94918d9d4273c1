//! The webhook target: each delivery is POSTed as a structured CloudEvent, signed per the
//! Standard Webhooks spec, and the receiver's answer decides the delivery's fate.
//!
//! - 2xx: acknowledged.
//! - 410 Gone: the subscription's target is disabled (kept in its definition, audited)
//!   and the delivery is put back untouched, to go out again once the target is enabled.
//! - 429 and 503: retried after the receiver's `Retry-After` (seconds or an HTTP date)
//!   when it sends one, else per the subscription's retry policy.
//! - Anything else, a timeout, or a connection error: retried per the policy (by default
//!   the webhook schedule, [`crmbus::delivery::RetryPolicy::webhook_default`]).
//! - An address the [`TargetGuard`] forbids: retried per the policy like a connection
//!   error (a DNS answer may change back; the circuit breaker keeps a refused target from
//!   spending attempts), the refusal named in the error.
//!
//! The error kept for a failed attempt (and shown in the dead letter) names the status,
//! the latency and the first bytes of the receiver's answer, never the URL (which may
//! carry a token). A stopping subscription cancels the attempts in flight: they end at
//! once as interrupted, not failed, and go out again when it runs next.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use crmbus::delivery::{Delivery, Handler, HandlerError};
use crmbus::Clock;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use tokio::sync::{mpsc, watch};

use super::guard::{refusal_in, TargetGuard};
use super::signature::{signature_header, SigningSecret};
use super::{body_of, record_attempt, Gone};
use crate::transform::Transform;

/// The most bytes of a receiver's answer kept with a failed attempt.
const EXCERPT_BYTES: usize = 512;

/// One webhook subscription's handler.
pub struct WebhookHandler {
    /// The subscription (for the metrics and the disable notice).
    pub(super) subscription: String,
    pub(super) url: url::Url,
    /// The current secret, then those of a rotation with the time (µs) they sign until.
    pub(super) secrets: Vec<(SigningSecret, Option<i64>)>,
    pub(super) headers: HeaderMap,
    pub(super) timeout: Duration,
    pub(super) client: reqwest::Client,
    pub(super) guard: Arc<TargetGuard>,
    pub(super) clock: Arc<dyn Clock>,
    /// Where a 410 is reported, for the subscription to be disabled.
    pub(super) gone: mpsc::UnboundedSender<Gone>,
    /// Which start of the subscription this handler serves (a 410 reported late must not
    /// disable a subscription created again since).
    pub(super) generation: u64,
    /// Set at the first 410: nothing more is sent.
    pub(super) disabled: AtomicBool,
    /// Turns true when the subscription stops: attempts in flight end at once.
    pub(super) cancel: watch::Receiver<bool>,
    /// The subscription's transformation: the body is the JSON it shapes.
    pub(super) transform: Option<Arc<Transform>>,
}

/// Builds the extra headers of a target, refusing names crmbus sets itself.
pub fn extra_headers(
    headers: &std::collections::BTreeMap<String, String>,
) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("'{name}' is not a valid header name"))?;
        let lower = n.as_str();
        if lower.starts_with("webhook-")
            || matches!(
                lower,
                "content-type" | "content-length" | "host" | "transfer-encoding" | "connection"
            )
        {
            return Err(format!("'{name}' is set by crmbus and cannot be given"));
        }
        let v = HeaderValue::from_str(value)
            .map_err(|_| format!("the value of '{name}' is not a valid header value"))?;
        map.insert(n, v);
    }
    Ok(map)
}

/// The delay a `Retry-After` header asks for: whole seconds, or an HTTP date (counted
/// from `now_us`; a date in the past asks for none).
pub fn retry_after(value: &str, now_us: i64) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let wait_us = at.timestamp_micros().saturating_sub(now_us).max(0);
    Some(Duration::from_micros(wait_us as u64))
}

impl WebhookHandler {
    /// The secrets that sign at `now_us`.
    fn signing(&self, now_us: i64) -> Vec<&SigningSecret> {
        self.secrets
            .iter()
            .filter(|(_, until)| until.is_none_or(|u| u > now_us))
            .map(|(s, _)| s)
            .collect()
    }

    fn record(&self, outcome: &str, latency: Duration) {
        record_attempt(&self.subscription, "webhook", outcome, latency);
    }
}

/// An error and its causes, `: `-separated (a connection error's cause, such as a
/// certificate the verifier refused, is in its source, not its text).
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cur = c.source();
    }
    text
}

/// Up to [`EXCERPT_BYTES`] of an answer's body, as text on one line.
async fn excerpt(mut resp: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < EXCERPT_BYTES {
        match resp.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(EXCERPT_BYTES);
    let text = String::from_utf8_lossy(&bytes);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Waits until `cancel` turns true (or its sender is gone: the subscription stopped).
pub(super) async fn cancelled(cancel: &watch::Receiver<bool>) {
    let mut cancel = cancel.clone();
    let _ = cancel.wait_for(|c| *c).await;
}

#[async_trait]
impl Handler for WebhookHandler {
    async fn handle(&self, d: Delivery) -> Result<(), HandlerError> {
        tokio::select! {
            r = self.attempt(d) => r,
            _ = cancelled(&self.cancel) => {
                Err(HandlerError::interrupted("the subscription is stopping"))
            }
        }
    }
}

impl WebhookHandler {
    /// One attempt: sign, send, read the answer.
    async fn attempt(&self, d: Delivery) -> Result<(), HandlerError> {
        if self.disabled.load(Ordering::Acquire) {
            return Err(HandlerError::interrupted("the webhook target is disabled"));
        }
        let (body, content_type) = body_of(&d.event, self.transform.as_deref())?;
        let literal = match self.url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal {
            if let Err(why) = self.guard.check(ip) {
                self.record("refused", Duration::ZERO);
                return Err(HandlerError::transient(format!("webhook refused: {why}")));
            }
        }
        let now_us = self.clock.now_micros();
        let timestamp = now_us.div_euclid(1_000_000);
        let signature = signature_header(&self.signing(now_us), &d.event.id, timestamp, &body);
        // The call's span, in the delivery's trace; the receiver gets its context.
        // The origin only: a URL's path or query may hold a token.
        let span = tracing::info_span!(
            "crmbus.webhook",
            server = %self.url.origin().ascii_serialization(),
            subscription = %self.subscription,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let mut headers = self.headers.clone();
        if !span.is_disabled() {
            for (k, v) in span.in_scope(crmbus::trace::current_fields) {
                // A header the subscription sets itself is left as it is.
                if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
                    headers.entry(k).or_insert(v);
                }
            }
        }
        let started = Instant::now();
        let request = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .header(CONTENT_TYPE, content_type)
            .header("webhook-id", d.event.id.as_str())
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .timeout(self.timeout)
            .body(body)
            .send();
        let sent = tracing::Instrument::instrument(request, span.clone()).await;
        match &sent {
            Ok(r) => {
                span.record("http.response.status_code", r.status().as_u16());
                if !r.status().is_success() {
                    span.record("otel.status_code", "ERROR");
                }
            }
            Err(_) => {
                span.record("otel.status_code", "ERROR");
            }
        }
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let latency = started.elapsed();
                if let Some(why) = refusal_in(&e) {
                    self.record("refused", latency);
                    return Err(HandlerError::transient(format!("webhook refused: {why}")));
                }
                // The URL may carry a token: errors kept in the DLQ do not show it.
                let e = e.without_url();
                let (outcome, what) = if e.is_timeout() {
                    (
                        "timeout",
                        format!("webhook timed out after {} ms", self.timeout.as_millis()),
                    )
                } else if e.is_connect() {
                    (
                        "connect_error",
                        format!("webhook connection failed: {}", with_causes(&e)),
                    )
                } else {
                    (
                        "error",
                        format!("webhook request failed: {}", with_causes(&e)),
                    )
                };
                self.record(outcome, latency);
                return Err(HandlerError::transient(what));
            }
        };
        let status = resp.status();
        let asked = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, self.clock.now_micros()));
        let class = format!("{}xx", status.as_u16() / 100);
        if status.is_success() {
            let latency = started.elapsed();
            // Read (a little of) the answer so that the connection can serve the next.
            let _ = tokio::time::timeout(self.timeout, excerpt(resp)).await;
            self.record(&class, latency);
            return Ok(());
        }
        let text = tokio::time::timeout(self.timeout, excerpt(resp))
            .await
            .unwrap_or_default();
        let latency = started.elapsed();
        self.record(&class, latency);
        let message = format!(
            "webhook answered {status} in {} ms: {text}",
            latency.as_millis()
        );
        match status.as_u16() {
            410 => {
                if !self.disabled.swap(true, Ordering::AcqRel) {
                    let _ = self.gone.send(Gone {
                        subscription: self.subscription.clone(),
                        generation: self.generation,
                        event_id: d.event.id.clone(),
                        event_type: d.event.ty.clone(),
                        detail: message.clone(),
                    });
                }
                Err(HandlerError::interrupted(message))
            }
            429 | 503 => {
                let e = HandlerError::transient(message);
                Err(match asked {
                    Some(delay) => e.retry_after(delay),
                    None => e,
                })
            }
            _ => Err(HandlerError::transient(message)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = chrono::DateTime::parse_from_rfc2822("Wed, 21 Oct 2026 07:28:00 GMT")
            .expect("date")
            .timestamp_micros();
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2026 07:29:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            retry_after("Wed, 21 Oct 2026 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
    }

    #[test]
    fn extra_headers_refuse_what_crmbus_sets() {
        let h =
            |k: &str, v: &str| std::collections::BTreeMap::from([(k.to_string(), v.to_string())]);
        assert!(extra_headers(&h("x-api-key", "k1")).is_ok());
        assert!(extra_headers(&h("Webhook-Signature", "v1,x"))
            .expect_err("signature")
            .contains("set by crmbus"));
        assert!(extra_headers(&h("content-type", "text/plain"))
            .expect_err("type")
            .contains("set by crmbus"));
        assert!(extra_headers(&h("bad header", "x"))
            .expect_err("name")
            .contains("not a valid header name"));
        assert!(extra_headers(&h("x-a", "line\nbreak"))
            .expect_err("value")
            .contains("not a valid header value"));
    }
}
