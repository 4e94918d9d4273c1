//! Retry policy: exponential backoff with full jitter, or a fixed schedule of delays,
//! bounded by attempts and age.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest a retry is ever put off: backoffs and the delays handlers (or pull
/// clients' nacks) ask for are capped at it.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(24 * 3600);

/// How a subscription retries a failed delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Deliveries at most, the first one included (so 1 means no retry).
    pub max_attempts: u32,
    /// Backoff before the first retry (the upper bound of its jitter).
    #[serde(with = "millis")]
    pub initial_backoff: Duration,
    /// Backoff never grows beyond this.
    #[serde(with = "millis")]
    pub max_backoff: Duration,
    /// Growth of the backoff per attempt.
    pub multiplier: f64,
    /// Give up once this long has passed since the first failure (`None`: no limit).
    #[serde(default, with = "opt_millis")]
    pub max_age: Option<Duration>,
    /// A fixed schedule instead of the exponential backoff: the delay after the first
    /// failure, after the second, and so on (the last repeats), without jitter. Empty:
    /// the exponential backoff.
    #[serde(default, with = "millis_list", skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            multiplier: 2.0,
            max_age: Some(Duration::from_secs(24 * 3600)),
            schedule: Vec::new(),
        }
    }
}

impl RetryPolicy {
    /// The upper bound of the backoff after `failures` failed attempts (1 = after the
    /// first failure): `initial * multiplier^(failures-1)`, capped at `max_backoff` and
    /// at [`MAX_RETRY_DELAY`]. Never panics, whatever the policy's numbers.
    pub fn backoff_cap(&self, failures: u32) -> Duration {
        if let Some(d) = self.scheduled(failures) {
            return d;
        }
        let cap = self.max_backoff.min(MAX_RETRY_DELAY);
        if self.initial_backoff.is_zero() {
            return Duration::ZERO;
        }
        let exp = failures.saturating_sub(1).min(64) as i32;
        // `max` passes over NaN: a NaN multiplier counts as 1.
        let secs = self.initial_backoff.as_secs_f64() * self.multiplier.max(1.0).powi(exp);
        if secs.is_nan() || secs >= cap.as_secs_f64() {
            return cap;
        }
        Duration::try_from_secs_f64(secs.max(0.0)).map_or(cap, |d| d.min(cap))
    }

    /// The delay before the next attempt after `failures` failures, with full jitter:
    /// `random` in `[0, 1)` picks a point in `[0, cap]`. A delay the handler asked for
    /// (`retry_after`, or a pull client's nack `delay_ms`) is used instead, capped at
    /// [`MAX_RETRY_DELAY`]. With a schedule, the scheduled delay is used, or the one asked
    /// for when it is longer: a receiver asking for a second (`Retry-After: 1`) at every
    /// attempt must not spend a schedule meant to last hours in seconds.
    pub fn next_delay(
        &self,
        failures: u32,
        random: f64,
        retry_after: Option<Duration>,
    ) -> Duration {
        if let Some(d) = self.scheduled(failures) {
            return retry_after.map_or(d, |asked| asked.min(MAX_RETRY_DELAY).max(d));
        }
        if let Some(d) = retry_after {
            return d.min(MAX_RETRY_DELAY);
        }
        self.backoff_cap(failures).mul_f64(random.clamp(0.0, 1.0))
    }

    /// The scheduled delay after `failures` failures (the schedule's last entry once
    /// past its end), capped at [`MAX_RETRY_DELAY`]; `None` without a schedule.
    fn scheduled(&self, failures: u32) -> Option<Duration> {
        let last = self.schedule.len().checked_sub(1)?;
        let i = (failures.max(1) as usize - 1).min(last);
        Some(self.schedule[i].min(MAX_RETRY_DELAY))
    }

    /// The schedule webhook services settled on (Svix's, which Standard Webhooks users
    /// expect): at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h after each
    /// failure — eight deliveries over about 32 hours, then the dead-letter queue.
    pub fn webhook_default() -> RetryPolicy {
        const MIN: u64 = 60;
        const HOUR: u64 = 3600;
        let schedule: Vec<Duration> = [
            5,
            5 * MIN,
            30 * MIN,
            2 * HOUR,
            5 * HOUR,
            10 * HOUR,
            10 * HOUR,
        ]
        .into_iter()
        .map(Duration::from_secs)
        .collect();
        RetryPolicy {
            max_attempts: schedule.len() as u32 + 1,
            initial_backoff: schedule[0],
            max_backoff: MAX_RETRY_DELAY,
            multiplier: 1.0,
            max_age: None,
            schedule,
        }
    }

    /// Should the event be given up after `attempts` deliveries, the first failure having
    /// been `since_first_failure` ago?
    pub fn exhausted(&self, attempts: u32, since_first_failure: Duration) -> bool {
        attempts >= self.max_attempts || self.max_age.is_some_and(|age| since_first_failure >= age)
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

mod millis_list {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(d.iter().map(|d| d.as_millis() as u64))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Ok(Vec::<u64>::deserialize(d)?
            .into_iter()
            .map(Duration::from_millis)
            .collect())
    }
}

mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(d.as_millis() as u64),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            max_age: None,
            schedule: Vec::new(),
        };
        assert_eq!(p.backoff_cap(1), Duration::from_millis(100));
        assert_eq!(p.backoff_cap(2), Duration::from_millis(200));
        assert_eq!(p.backoff_cap(4), Duration::from_millis(800));
        assert_eq!(p.backoff_cap(5), Duration::from_secs(1));
        assert_eq!(p.backoff_cap(60), Duration::from_secs(1));
        assert_eq!(p.next_delay(3, 0.5, None), Duration::from_millis(200));
        assert_eq!(p.next_delay(3, 0.0, None), Duration::ZERO);
        assert_eq!(
            p.next_delay(3, 0.9, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn backoff_never_panics_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: u32::MAX,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::MAX,
            multiplier: 1e300,
            max_age: None,
            schedule: Vec::new(),
        };
        for failures in [1, 2, 10, 64, u32::MAX] {
            assert!(p.backoff_cap(failures) <= MAX_RETRY_DELAY, "{failures}");
            assert!(p.next_delay(failures, 0.999, None) <= MAX_RETRY_DELAY);
        }
        assert_eq!(p.next_delay(1, 0.5, Some(Duration::MAX)), MAX_RETRY_DELAY);
        let f = RetryPolicy {
            multiplier: f64::NAN,
            ..p.clone()
        };
        assert!(f.backoff_cap(3) <= MAX_RETRY_DELAY);
    }

    #[test]
    fn exhaustion_by_attempts_and_age() {
        let p = RetryPolicy {
            max_attempts: 3,
            max_age: Some(Duration::from_secs(60)),
            ..RetryPolicy::default()
        };
        assert!(!p.exhausted(2, Duration::from_secs(10)));
        assert!(p.exhausted(3, Duration::from_secs(10)));
        assert!(p.exhausted(1, Duration::from_secs(60)));
    }

    #[test]
    fn policy_serde_in_millis() {
        let p: RetryPolicy = serde_json::from_str(
            r#"{"max_attempts":4,"initial_backoff":250,"max_backoff":10000,"multiplier":3.0,"max_age":null}"#,
        )
        .expect("parse");
        assert_eq!(p.initial_backoff, Duration::from_millis(250));
        assert_eq!(p.max_age, None);
    }

    #[test]
    fn a_schedule_gives_its_delays_in_order_then_repeats_its_last() {
        let p = RetryPolicy {
            schedule: vec![
                Duration::ZERO,
                Duration::from_secs(5),
                Duration::from_secs(60),
            ],
            ..RetryPolicy::default()
        };
        assert_eq!(p.next_delay(1, 0.3, None), Duration::ZERO);
        assert_eq!(p.next_delay(2, 0.3, None), Duration::from_secs(5));
        assert_eq!(p.next_delay(3, 0.9, None), Duration::from_secs(60));
        assert_eq!(p.next_delay(40, 0.1, None), Duration::from_secs(60));
        // A delay asked for wins when it is longer than the scheduled one.
        assert_eq!(
            p.next_delay(2, 0.3, Some(Duration::from_secs(9))),
            Duration::from_secs(9)
        );
        assert_eq!(
            p.next_delay(3, 0.3, Some(Duration::from_secs(1))),
            Duration::from_secs(60)
        );
        let w = RetryPolicy::webhook_default();
        let secs: Vec<u64> = (1..w.max_attempts)
            .map(|f| w.next_delay(f, 0.5, None).as_secs())
            .collect();
        assert_eq!(secs, [5, 300, 1800, 7200, 18000, 36000, 36000]);
        assert_eq!(w.max_attempts, 8);
        assert!(!w.exhausted(7, Duration::from_secs(40 * 3600)));
        assert!(w.exhausted(8, Duration::ZERO));
        let text = serde_json::to_string(&w).expect("json");
        assert!(text.contains(r#""schedule":[5000,300000,"#), "{text}");
        let back: RetryPolicy = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, w);
    }
}
