//! Rate limits (`[limits]`): requests per API key, and events published per topic, each a
//! GCRA bucket (`governor`) with a rate and a burst. A request over a limit is answered
//! 429 `rate_limited` with `Retry-After` (whole seconds until it would pass), and counted
//! in `crmbus_throttled_requests_total{limit}`. Body size and batch length limits are
//! `[server]`'s and stay as they are.
//!
//! Buckets live in this server's memory: servers sharing a backend each allow the rate.

use std::num::NonZeroU32;
use std::time::Duration;

use crmbus::ErrorCode;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use crate::problem::ApiError;

/// `[limits]`: the rates; 0 turns a limit off (the default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Requests per second each API key may make (sustained); 0: no limit. Requests
    /// let through without a key (no keys needed) are not limited by it.
    pub key_requests_per_second: f64,
    /// Requests a key may make at once above its rate (0: one second's worth, at least 1).
    pub key_burst: u64,
    /// Events per second each topic takes (sustained), whoever publishes; 0: no limit.
    pub topic_events_per_second: f64,
    /// Events a topic takes at once above its rate (0: one second's worth, at least 1);
    /// a batch larger than this is refused with 413.
    pub topic_burst: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            key_requests_per_second: 0.0,
            key_burst: 0,
            topic_events_per_second: 0.0,
            topic_burst: 0,
        }
    }
}

impl LimitsSection {
    /// What is wrong with the section, naming the key.
    pub fn check(&self) -> Result<(), String> {
        for (key, rate) in [
            (
                "limits.key_requests_per_second",
                self.key_requests_per_second,
            ),
            (
                "limits.topic_events_per_second",
                self.topic_events_per_second,
            ),
        ] {
            if !rate.is_finite() || rate < 0.0 {
                return Err(format!("{key} must be 0 (no limit) or a positive number"));
            }
            if rate > 0.0 && rate < 1e-6 {
                return Err(format!(
                    "{key} = {rate} is below one per 11 days; use 0 to turn the limit off"
                ));
            }
        }
        Ok(())
    }
}

/// A rate and burst as a quota; `None` when the rate is 0 (no limit).
fn quota(rate: f64, burst: u64) -> Option<Quota> {
    if rate <= 0.0 || !rate.is_finite() {
        return None;
    }
    let period = Duration::try_from_secs_f64(1.0 / rate).ok()?;
    let burst = if burst == 0 {
        rate.ceil().clamp(1.0, f64::from(u32::MAX)) as u32
    } else {
        u32::try_from(burst).unwrap_or(u32::MAX)
    };
    let quota = Quota::with_period(period.max(Duration::from_nanos(1)))?;
    Some(quota.allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN)))
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The API key's requests.
    Key,
    /// The topic's events.
    Topic,
}

impl Limit {
    /// The `limit` label.
    pub fn label(self) -> &'static str {
        match self {
            Limit::Key => "key",
            Limit::Topic => "topic",
        }
    }
}

/// The server's rate limiters.
pub struct RateLimits {
    keys: Option<DefaultKeyedRateLimiter<String>>,
    topics: Option<DefaultKeyedRateLimiter<String>>,
    topic_burst: u32,
}

impl RateLimits {
    /// The limiters `config` asks for.
    pub fn new(config: &LimitsSection) -> RateLimits {
        let topics = quota(config.topic_events_per_second, config.topic_burst);
        RateLimits {
            keys: quota(config.key_requests_per_second, config.key_burst).map(RateLimiter::keyed),
            topic_burst: topics.map_or(0, |q| q.burst_size().get()),
            topics: topics.map(RateLimiter::keyed),
        }
    }

    /// Takes one request of the key `key_id`, or the 429 to answer.
    pub fn request(&self, key_id: &str) -> Result<(), ApiError> {
        let Some(l) = &self.keys else {
            return Ok(());
        };
        l.check_key(&key_id.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            throttled(
                Limit::Key,
                wait,
                "this API key is over its request rate ([limits] key_requests_per_second)"
                    .to_string(),
            )
        })
    }

    /// Takes `events` events published to `topic`, or the error to answer: 429 over the
    /// rate, 413 for a batch larger than the topic's burst (it could never pass).
    pub fn publish(&self, topic: &str, events: usize) -> Result<(), ApiError> {
        let Some(l) = &self.topics else {
            return Ok(());
        };
        let Some(n) = u32::try_from(events).ok().and_then(NonZeroU32::new) else {
            return if events == 0 {
                Ok(())
            } else {
                Err(too_many(topic, events, self.topic_burst))
            };
        };
        match l.check_key_n(&topic.to_string(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(throttled(
                    Limit::Topic,
                    wait,
                    format!(
                        "topic '{topic}' is over its event rate ([limits] topic_events_per_second)"
                    ),
                ))
            }
            Err(_) => Err(too_many(topic, events, self.topic_burst)),
        }
    }

    /// Whether topics' event rates are limited (then a publish checks that its topics
    /// exist before it takes from their buckets, so no name makes a bucket).
    pub fn limits_topics(&self) -> bool {
        self.topics.is_some()
    }

    /// Forgets buckets that are full again (they hold nothing a new bucket would not).
    pub fn forget_idle(&self) {
        for l in [&self.keys, &self.topics].into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

fn too_many(topic: &str, events: usize, burst: u32) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!(
            "a batch of {events} events is more than topic '{topic}' takes at once ([limits] topic_burst = {burst}): send smaller batches"
        ),
    )
}

fn throttled(limit: Limit, wait: Duration, detail: String) -> ApiError {
    metrics::counter!("crmbus_throttled_requests_total", "limit" => limit.label()).increment(1);
    ApiError::new(ErrorCode::RateLimited, detail).with_retry_after(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_turns_a_limit_off() {
        let l = RateLimits::new(&LimitsSection::default());
        for _ in 0..1000 {
            assert!(l.request("k").is_ok());
            assert!(l.publish("deals", 500).is_ok());
        }
    }

    #[test]
    fn a_key_gets_its_burst_then_429_with_retry_after_and_keys_are_apart() {
        let l = RateLimits::new(&LimitsSection {
            key_requests_per_second: 0.01,
            key_burst: 3,
            ..LimitsSection::default()
        });
        for _ in 0..3 {
            assert!(l.request("a").is_ok());
        }
        let e = l.request("a").expect_err("over the burst");
        assert_eq!(e.code, ErrorCode::RateLimited);
        assert_eq!(e.status.as_u16(), 429);
        // One request per 100 s: the next passes in about 100 s.
        let secs = e.retry_after.map(|d| d.as_secs()).unwrap_or_default();
        assert!((90..=100).contains(&secs), "{secs}");
        assert!(l.request("b").is_ok());
    }

    #[test]
    fn a_topic_counts_events_and_refuses_a_batch_over_its_burst() {
        let l = RateLimits::new(&LimitsSection {
            topic_events_per_second: 0.01,
            topic_burst: 10,
            ..LimitsSection::default()
        });
        let e = l.publish("deals", 11).expect_err("over the burst");
        assert_eq!(e.code, ErrorCode::PayloadTooLarge);
        assert!(l.publish("deals", 6).is_ok());
        let e = l.publish("deals", 6).expect_err("over the rate");
        assert_eq!(e.code, ErrorCode::RateLimited);
        assert!(l.publish("deals", 4).is_ok());
        assert!(l.publish("tasks", 10).is_ok());
    }

    #[test]
    fn bad_rates_are_refused_naming_the_key() {
        for rate in [-1.0, f64::NAN, f64::INFINITY, 1e-9] {
            let s = LimitsSection {
                topic_events_per_second: rate,
                ..LimitsSection::default()
            };
            let e = s.check().expect_err("refused");
            assert!(e.contains("limits.topic_events_per_second"), "{e}");
        }
        assert!(LimitsSection::default().check().is_ok());
    }
}
