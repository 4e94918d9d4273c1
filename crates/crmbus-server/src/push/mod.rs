//! Push targets: subscriptions whose deliveries crmbus sends out itself instead of
//! waiting for a client to pull them — to a webhook ([`webhook`]) or a Redis Pub/Sub
//! channel ([`redis_pubsub`]). Each is a [`Handler`] of the delivery engine, so per-key
//! order, retries, the DLQ, the circuit breaker and the audit log are the engine's.
//!
//! [`Push`] holds what every target shares: the SSRF [`guard`], one HTTP client (HTTPS
//! with rustls, the guard's resolver, no redirects), the clock, and the channel on which a webhook
//! that answered 410 asks for its subscription to be disabled.

pub mod guard;
#[cfg(feature = "redis")]
pub mod redis_pubsub;
pub mod signature;
pub mod webhook;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crmbus::delivery::Handler;
use crmbus::Clock;
use tokio::sync::{mpsc, watch};

use crate::api::{PreviousSecret, SubscriptionTarget, WebhookTarget};
use crate::problem::ApiError;
use crate::render::rfc3339;
use crate::transform::Transform;
use guard::{GuardedResolver, TargetGuard};
use signature::{SigningSecret, MASKED};

/// `[push]`: subscriptions that push to webhooks or Redis Pub/Sub channels.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushSection {
    /// Push targets may be created (`false`: only pull subscriptions).
    pub enabled: bool,
    /// Webhooks may reach any address, private ones included (loopback, RFC 1918,
    /// link-local, unique-local, cloud metadata). Off by default: the SSRF guard.
    pub allow_private_targets: bool,
    /// Private addresses and networks webhooks may reach all the same, comma-separated
    /// (`127.0.0.1, 10.20.0.0/16`).
    pub allowed_targets: String,
    /// How long a rotated-out webhook secret keeps signing beside the new one (ms,
    /// default one day), unless the rotation says otherwise.
    pub secret_overlap_ms: u64,
    /// A PEM file of CA certificates HTTPS webhooks are also verified against (an internal
    /// CA), beside the platform's; empty: the platform's only.
    pub ca_file: std::path::PathBuf,
}

impl Default for PushSection {
    fn default() -> Self {
        PushSection {
            enabled: true,
            allow_private_targets: false,
            allowed_targets: String::new(),
            secret_overlap_ms: 24 * 3600 * 1000,
            ca_file: std::path::PathBuf::new(),
        }
    }
}

/// Default time one webhook attempt may take.
pub const DEFAULT_TIMEOUT_MS: u64 = 15_000;
/// The longest time one webhook attempt may be given.
pub const MAX_TIMEOUT_MS: u64 = 300_000;
/// Default deliveries in flight at once for a push target (calls to the receiver).
pub const DEFAULT_PUSH_IN_FLIGHT: usize = 32;

/// A webhook answered 410 Gone: its subscription is to be disabled.
#[derive(Debug, Clone)]
pub struct Gone {
    /// The subscription.
    pub subscription: String,
    /// Which start of the subscription the handler served (see
    /// [`Push::next_generation`]).
    pub generation: u64,
    /// The event whose delivery was answered 410.
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// What the receiver answered.
    pub detail: String,
}

/// What every push target shares.
pub struct Push {
    enabled: bool,
    guard: Arc<TargetGuard>,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
    gone: mpsc::UnboundedSender<Gone>,
    /// How long a rotated-out secret keeps signing by default.
    pub secret_overlap: Duration,
    /// The last generation handed out.
    generations: AtomicU64,
}

impl std::fmt::Debug for Push {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Push")
            .field("enabled", &self.enabled)
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

/// What a push target sends for `event`: the structured CloudEvent, or the JSON its
/// subscription's transformation shapes from it; with the body's content type.
pub(crate) fn body_of(
    event: &crmbus::Event,
    transform: Option<&Transform>,
) -> Result<(Vec<u8>, &'static str), crmbus::delivery::HandlerError> {
    let rendered = match transform {
        None => serde_json::to_vec(event).map(|b| (b, "application/cloudevents+json")),
        Some(t) => {
            serde_json::to_vec(&t.apply(&event.to_json_value())).map(|b| (b, "application/json"))
        }
    };
    rendered.map_err(|e| {
        crmbus::delivery::HandlerError::permanent(format!("cannot render the event: {e}"))
    })
}

/// Counts one attempt of a push target and times it.
pub(crate) fn record_attempt(subscription: &str, target: &str, outcome: &str, latency: Duration) {
    let labels = [
        ("subscription", subscription.to_string()),
        ("target", target.to_string()),
    ];
    metrics::counter!(
        "crmbus_push_attempts_total",
        "subscription" => subscription.to_string(),
        "target" => target.to_string(),
        "outcome" => outcome.to_string()
    )
    .increment(1);
    metrics::histogram!("crmbus_push_attempt_duration_seconds", &labels)
        .record(latency.as_secs_f64());
}

impl Push {
    /// The push context of a server configured by `config`, and the receiving end of its
    /// disable requests.
    pub fn new(
        config: &PushSection,
        clock: Arc<dyn Clock>,
    ) -> Result<(Push, mpsc::UnboundedReceiver<Gone>), String> {
        let guard = Arc::new(TargetGuard::new(
            config.allow_private_targets,
            &config.allowed_targets,
        )?);
        let mut builder = reqwest::Client::builder();
        if !config.ca_file.as_os_str().is_empty() {
            let path = config.ca_file.display();
            let pem = std::fs::read(&config.ca_file)
                .map_err(|e| format!("push.ca_file: cannot read {path}: {e}"))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("push.ca_file: {path} is not a PEM bundle: {e}"))?;
            if certs.is_empty() {
                return Err(format!("push.ca_file: {path} holds no certificate"));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder
            .dns_resolver(Arc::new(GuardedResolver::new(Arc::clone(&guard))))
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would resolve the host itself, past the guard.
            .no_proxy()
            .user_agent(concat!("crmbus/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        Ok((
            Push {
                enabled: config.enabled,
                guard,
                client,
                clock,
                gone: tx,
                secret_overlap: Duration::from_millis(config.secret_overlap_ms),
                generations: AtomicU64::new(0),
            },
            rx,
        ))
    }

    /// A number no earlier start of any subscription got: each start of a push target
    /// gets one, so that a 410 reported by the handler of an earlier start is ignored.
    pub fn next_generation(&self) -> u64 {
        self.generations.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The clock push targets sign and expire secrets by.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Checks a target given to a create and fills in what it leaves out: a webhook's
    /// secret is generated when absent. `Pull` (or none) needs nothing.
    pub fn prepare(&self, target: &mut SubscriptionTarget) -> Result<(), ApiError> {
        match target {
            SubscriptionTarget::Pull {} => Ok(()),
            _ if !self.enabled => Err(ApiError::invalid(
                "target",
                "push targets are turned off on this server ([push] enabled = false)",
            )),
            SubscriptionTarget::Webhook(w) => {
                if w.disabled.is_some() || !w.previous_secrets.is_empty() {
                    return Err(ApiError::invalid(
                        "target",
                        "disabled and previous_secrets are set by the server, not given",
                    ));
                }
                let url = url::Url::parse(&w.url)
                    .map_err(|e| ApiError::invalid("target.url", format!("not a URL: {e}")))?;
                self.guard
                    .check_url(&url)
                    .map_err(|e| ApiError::invalid("target.url", e))?;
                match &w.secret {
                    Some(s) => {
                        SigningSecret::parse(s)
                            .map_err(|e| ApiError::invalid("target.secret", e))?;
                    }
                    None => w.secret = Some(SigningSecret::generate().text().to_string()),
                }
                let timeout = w.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
                if timeout == 0 || timeout > MAX_TIMEOUT_MS {
                    return Err(ApiError::invalid(
                        "target.timeout_ms",
                        format!("must be between 1 and {MAX_TIMEOUT_MS}"),
                    ));
                }
                w.timeout_ms = Some(timeout);
                webhook::extra_headers(&w.headers)
                    .map_err(|e| ApiError::invalid("target.headers", e))?;
                Ok(())
            }
            SubscriptionTarget::RedisPubsub(r) => {
                #[cfg(feature = "redis")]
                {
                    let client = redis_pubsub::parse_url(&r.url)
                        .map_err(|e| ApiError::invalid("target.url", e))?;
                    // An address (or a Unix socket) is checked now; a name when it is
                    // resolved, before the first connection.
                    let local = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
                    let checked = match client.get_connection_info().addr() {
                        redis::ConnectionAddr::Tcp(host, _)
                        | redis::ConnectionAddr::TcpTls { host, .. } => {
                            match host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
                                Ok(ip) => self.guard.check(ip),
                                Err(_) => Ok(()),
                            }
                        }
                        _ => self.guard.check(local).map_err(|_| {
                            "a Unix socket is local: [push] allow_private_targets = true allows it"
                                .to_string()
                        }),
                    };
                    checked.map_err(|e| ApiError::invalid("target.url", e))?;
                    if r.channel.as_deref().is_some_and(str::is_empty) {
                        return Err(ApiError::invalid("target.channel", "must not be empty"));
                    }
                    Ok(())
                }
                #[cfg(not(feature = "redis"))]
                {
                    let _ = r;
                    Err(ApiError::invalid(
                        "target",
                        "this build of crmbus has no Redis support (the `redis` feature)",
                    ))
                }
            }
        }
    }

    /// The handler of a push target of subscription `name` on `topic`, for the start
    /// numbered `generation`, its attempts cancelled when `cancel` turns true; `None` for
    /// a pull target (the pull queue is the handler) and for a disabled webhook (nothing
    /// runs).
    pub fn handler(
        &self,
        name: &str,
        topic: &str,
        target: &SubscriptionTarget,
        transform: Option<Arc<Transform>>,
        generation: u64,
        cancel: watch::Receiver<bool>,
    ) -> Result<Option<Arc<dyn Handler>>, ApiError> {
        if !self.enabled && !matches!(target, SubscriptionTarget::Pull {}) {
            return Err(ApiError::new(
                crmbus::ErrorCode::Unavailable,
                "push targets are turned off on this server ([push] enabled = false)",
            ));
        }
        match target {
            SubscriptionTarget::Pull {} => Ok(None),
            SubscriptionTarget::Webhook(w) => {
                if w.disabled.is_some() {
                    return Ok(None);
                }
                let url = url::Url::parse(&w.url)
                    .map_err(|e| ApiError::invalid("target.url", format!("not a URL: {e}")))?;
                let current = w
                    .secret
                    .as_deref()
                    .ok_or_else(|| ApiError::invalid("target.secret", "missing"))
                    .and_then(|s| {
                        SigningSecret::parse(s).map_err(|e| ApiError::invalid("target.secret", e))
                    })?;
                let mut secrets = vec![(current, None)];
                for p in &w.previous_secrets {
                    let (Ok(s), Ok(until)) = (
                        SigningSecret::parse(&p.secret),
                        chrono::DateTime::parse_from_rfc3339(&p.until),
                    ) else {
                        continue;
                    };
                    secrets.push((s, Some(until.timestamp_micros())));
                }
                let headers = webhook::extra_headers(&w.headers)
                    .map_err(|e| ApiError::invalid("target.headers", e))?;
                Ok(Some(Arc::new(webhook::WebhookHandler {
                    subscription: name.to_string(),
                    url,
                    secrets,
                    headers,
                    timeout: Duration::from_millis(w.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)),
                    client: self.client.clone(),
                    guard: Arc::clone(&self.guard),
                    clock: Arc::clone(&self.clock),
                    gone: self.gone.clone(),
                    generation,
                    disabled: AtomicBool::new(false),
                    cancel,
                    transform,
                })))
            }
            SubscriptionTarget::RedisPubsub(r) => {
                #[cfg(feature = "redis")]
                {
                    let client = redis_pubsub::parse_url(&r.url)
                        .map_err(|e| ApiError::invalid("target.url", e))?;
                    let channel = redis_pubsub::channel_for(r.channel.as_deref(), topic);
                    Ok(Some(Arc::new(redis_pubsub::RedisPubsubHandler::new(
                        name,
                        client,
                        channel,
                        Arc::clone(&self.guard),
                        cancel,
                        transform,
                    ))))
                }
                #[cfg(not(feature = "redis"))]
                {
                    let _ = (r, topic, cancel, transform);
                    Err(ApiError::new(
                        crmbus::ErrorCode::Unavailable,
                        "this build of crmbus has no Redis support (the `redis` feature)",
                    ))
                }
            }
        }
    }

    /// Rotates a webhook's secret: `new` (or a generated one) signs from now on, the old
    /// one beside it until `now + overlap`; previous secrets whose time has passed are
    /// dropped.
    pub fn rotate(
        &self,
        w: &mut WebhookTarget,
        new: Option<&str>,
        overlap: Duration,
    ) -> Result<(), ApiError> {
        let next = match new {
            Some(s) => SigningSecret::parse(s).map_err(|e| ApiError::invalid("secret", e))?,
            None => SigningSecret::generate(),
        };
        let now_us = self.clock.now_micros();
        w.previous_secrets.retain(|p| {
            chrono::DateTime::parse_from_rfc3339(&p.until)
                .is_ok_and(|t| t.timestamp_micros() > now_us)
        });
        if let Some(old) = w.secret.take() {
            let until_us = now_us.saturating_add(overlap.as_micros().min(i64::MAX as u128) as i64);
            if !overlap.is_zero() {
                w.previous_secrets.push(PreviousSecret {
                    secret: old,
                    until: rfc3339(until_us),
                });
            }
        }
        w.secret = Some(next.text().to_string());
        Ok(())
    }
}

/// How a masked value is shown.
const HIDDEN: &str = "********";

/// A target as shown after its creation: secrets masked, and the values of its extra
/// headers (often credentials) and a Redis URL's password too.
pub fn masked(target: &SubscriptionTarget) -> SubscriptionTarget {
    let mut t = target.clone();
    match &mut t {
        SubscriptionTarget::Pull {} => {}
        SubscriptionTarget::Webhook(w) => {
            if w.secret.is_some() {
                w.secret = Some(MASKED.to_string());
            }
            for p in &mut w.previous_secrets {
                p.secret = MASKED.to_string();
            }
            for v in w.headers.values_mut() {
                *v = HIDDEN.to_string();
            }
        }
        SubscriptionTarget::RedisPubsub(r) => {
            if let Ok(mut url) = url::Url::parse(&r.url) {
                if url.password().is_some() {
                    let _ = url.set_password(Some(HIDDEN));
                }
                let pairs: Vec<(String, String)> = url
                    .query_pairs()
                    .map(|(k, v)| {
                        let hide = matches!(k.as_ref(), "pass" | "password");
                        (
                            k.into_owned(),
                            if hide {
                                HIDDEN.to_string()
                            } else {
                                v.into_owned()
                            },
                        )
                    })
                    .collect();
                if !pairs.is_empty() {
                    url.query_pairs_mut().clear().extend_pairs(pairs);
                }
                r.url = url.to_string();
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RedisPubsubTarget;

    fn push(allowed: &str) -> Push {
        let config = PushSection {
            allowed_targets: allowed.to_string(),
            ..PushSection::default()
        };
        Push::new(&config, Arc::new(crmbus::SystemClock))
            .expect("push")
            .0
    }

    fn webhook(url: &str) -> SubscriptionTarget {
        SubscriptionTarget::Webhook(WebhookTarget {
            url: url.to_string(),
            secret: None,
            previous_secrets: Vec::new(),
            timeout_ms: None,
            headers: Default::default(),
            disabled: None,
        })
    }

    #[test]
    fn a_webhook_gets_a_secret_and_defaults_and_is_shown_masked() {
        let p = push("");
        let mut t = webhook("https://hooks.example.com/crm");
        p.prepare(&mut t).expect("prepared");
        let SubscriptionTarget::Webhook(w) = &t else {
            panic!("kind")
        };
        let secret = w.secret.clone().expect("generated");
        assert!(SigningSecret::parse(&secret).is_ok());
        assert_eq!(w.timeout_ms, Some(DEFAULT_TIMEOUT_MS));
        let shown = serde_json::to_string(&masked(&t)).expect("json");
        assert!(!shown.contains(&secret), "{shown}");
        assert!(shown.contains(MASKED), "{shown}");
    }

    #[test]
    fn private_webhooks_are_refused_unless_listed() {
        let e = push("")
            .prepare(&mut webhook("http://127.0.0.1:9/x"))
            .expect_err("loopback");
        assert_eq!(e.status.as_u16(), 400);
        assert!(e.detail.contains("loopback"), "{}", e.detail);
        assert!(push("127.0.0.1")
            .prepare(&mut webhook("http://127.0.0.1:9/x"))
            .is_ok());
    }

    #[test]
    fn a_rotation_keeps_the_old_secret_for_the_overlap() {
        let p = push("");
        let mut t = webhook("https://hooks.example.com/crm");
        p.prepare(&mut t).expect("prepared");
        let SubscriptionTarget::Webhook(w) = &mut t else {
            panic!("kind")
        };
        let first = w.secret.clone().expect("secret");
        p.rotate(w, None, Duration::from_secs(3600))
            .expect("rotated");
        assert_ne!(w.secret.as_deref(), Some(first.as_str()));
        assert_eq!(w.previous_secrets.len(), 1);
        assert_eq!(w.previous_secrets[0].secret, first);
        p.rotate(w, None, Duration::ZERO).expect("rotated again");
        assert_eq!(w.previous_secrets.len(), 1, "no overlap keeps nothing new");
        assert!(p.rotate(w, Some("nope"), Duration::ZERO).is_err());
    }

    #[test]
    fn redis_passwords_and_header_values_are_masked() {
        for url in [
            "redis://user:hunter2@127.0.0.1:6379/0",
            "redis+unix:///run/redis.sock?db=1&pass=hunter2",
        ] {
            let t = SubscriptionTarget::RedisPubsub(RedisPubsubTarget {
                url: url.into(),
                channel: None,
            });
            let shown = serde_json::to_string(&masked(&t)).expect("json");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains(HIDDEN), "{shown}");
        }
        let mut t = webhook("https://hooks.example.com/crm");
        if let SubscriptionTarget::Webhook(w) = &mut t {
            w.headers
                .insert("authorization".into(), "Bearer tok-123".into());
        }
        let shown = serde_json::to_string(&masked(&t)).expect("json");
        assert!(!shown.contains("tok-123"), "{shown}");
        assert!(shown.contains("authorization"), "{shown}");
    }

    #[cfg(feature = "redis")]
    #[test]
    fn redis_targets_on_private_addresses_are_refused_unless_listed() {
        let target = |url: &str| {
            SubscriptionTarget::RedisPubsub(RedisPubsubTarget {
                url: url.into(),
                channel: None,
            })
        };
        for url in [
            "redis://10.0.0.5:6379",
            "redis://169.254.169.254:80",
            "redis+unix:///run/r.sock",
        ] {
            let e = push("").prepare(&mut target(url)).expect_err(url);
            assert_eq!(e.status.as_u16(), 400, "{url}");
        }
        assert!(push("127.0.0.1")
            .prepare(&mut target("redis://127.0.0.1:6379"))
            .is_ok());
        assert!(push("")
            .prepare(&mut target("redis://redis.example.com:6379"))
            .is_ok());
    }
}
