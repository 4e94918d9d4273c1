//! A circuit breaker per subscription: opens after consecutive failures or a high error
//! rate over a window, lets one probe through after a cool-down (half-open), and closes
//! on success. While open, delivery pauses and no attempt is spent.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When the breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BreakerPolicy {
    /// Open after this many failures in a row.
    pub consecutive_failures: u32,
    /// Or open when at least `min_requests` outcomes in `window` failed at this rate (0–1).
    pub failure_rate: f64,
    /// Outcomes needed in the window before the rate counts.
    pub min_requests: u32,
    /// The window of the rate, counted in sixtieths: outcomes leave it a sixtieth at a
    /// time, so the rate may count some up to a sixtieth older than the window.
    #[serde(with = "secs")]
    pub window: Duration,
    /// How long to stay open before a probe.
    #[serde(with = "secs")]
    pub open_for: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            consecutive_failures: 10,
            failure_rate: 0.5,
            min_requests: 20,
            window: Duration::from_secs(60),
            open_for: Duration::from_secs(30),
        }
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Deliveries flow.
    Closed,
    /// Deliveries pause until the time (µs since the epoch).
    Open {
        /// When a probe may go.
        until_us: i64,
    },
    /// One probe is allowed; its outcome closes or reopens the breaker.
    HalfOpen {
        /// A probe is under way.
        probing: bool,
    },
}

impl BreakerState {
    /// The metric value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(&self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open { .. } => 1.0,
            BreakerState::HalfOpen { .. } => 2.0,
        }
    }
}

/// Slices the rate's window is counted in.
const WINDOW_SLICES: i64 = 60;

/// The outcomes of one slice of the window: (slice number, successes, failures).
type Slice = (i64, u64, u64);

/// The breaker, driven by outcomes and a clock reading passed in (µs).
///
/// The rate's window is kept as counts per slice (a sixtieth of the window), not one
/// record per outcome: a busy group answers hundreds of thousands of deliveries a
/// minute, and each would be kept for the window and counted again at every failure. A
/// slice leaves the window once all of it is older than the window, so the rate may
/// count outcomes up to one slice older than `window`.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    policy: BreakerPolicy,
    state: BreakerState,
    consecutive: u32,
    /// The window's slices with outcomes, oldest first.
    outcomes: VecDeque<Slice>,
    /// Successes and failures in `outcomes`.
    ok_in_window: u64,
    failed_in_window: u64,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(policy: BreakerPolicy) -> Self {
        CircuitBreaker {
            policy,
            state: BreakerState::Closed,
            consecutive: 0,
            outcomes: VecDeque::new(),
            ok_in_window: 0,
            failed_in_window: 0,
        }
    }

    /// Counts an outcome at `now_us` and lets the slices that left the window go.
    fn count(&mut self, success: bool, now_us: i64) {
        let window_us = i64::try_from(self.policy.window.as_micros()).unwrap_or(i64::MAX);
        // A sixtieth of the window, at least 1 µs: the slices kept span the window and at
        // most one more, 61 for a window that is a multiple of 60 µs and never over 121.
        let width = (window_us / WINDOW_SLICES).max(1);
        let slice = now_us.div_euclid(width);
        // The slice the window starts in is kept; those before it end no later than its
        // start and hold nothing in it.
        let oldest_kept = now_us.saturating_sub(window_us).div_euclid(width);
        while let Some(&(s, ok, failed)) = self.outcomes.front() {
            if s >= oldest_kept {
                break;
            }
            self.ok_in_window -= ok;
            self.failed_in_window -= failed;
            self.outcomes.pop_front();
        }
        // A clock that stepped back counts in the newest slice.
        let (ok, failed) = (u64::from(success), u64::from(!success));
        match self.outcomes.back_mut() {
            Some(last) if last.0 >= slice => {
                last.1 += ok;
                last.2 += failed;
            }
            _ => self.outcomes.push_back((slice, ok, failed)),
        }
        self.ok_in_window += ok;
        self.failed_in_window += failed;
    }

    /// Forgets the window's outcomes.
    fn clear_window(&mut self) {
        self.outcomes.clear();
        self.ok_in_window = 0;
        self.failed_in_window = 0;
    }

    /// The current state (moving from open to half-open when the cool-down is over).
    pub fn state(&mut self, now_us: i64) -> BreakerState {
        if let BreakerState::Open { until_us } = self.state {
            if now_us >= until_us {
                self.state = BreakerState::HalfOpen { probing: false };
            }
        }
        self.state
    }

    /// Outcome records kept for the window.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.outcomes.len()
    }

    /// The state as last moved (without checking the clock).
    pub fn current(&self) -> BreakerState {
        self.state
    }

    /// May a delivery start now? In half-open state only one probe at a time may.
    pub fn try_acquire(&mut self, now_us: i64) -> bool {
        match self.state(now_us) {
            BreakerState::Closed => true,
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen { probing: true } => false,
            BreakerState::HalfOpen { probing: false } => {
                self.state = BreakerState::HalfOpen { probing: true };
                true
            }
        }
    }

    /// Records the outcome of a delivery that [`CircuitBreaker::try_acquire`] let through.
    pub fn record(&mut self, success: bool, now_us: i64) {
        self.count(success, now_us);
        if success {
            self.consecutive = 0;
            if matches!(self.state, BreakerState::HalfOpen { .. }) {
                self.state = BreakerState::Closed;
                self.clear_window();
            }
            return;
        }
        self.consecutive += 1;
        let failures = self.failed_in_window as f64;
        let total = (self.ok_in_window + self.failed_in_window) as f64;
        let rate_trips = total >= f64::from(self.policy.min_requests)
            && failures / total >= self.policy.failure_rate;
        let half_open = matches!(self.state, BreakerState::HalfOpen { .. });
        if half_open || self.consecutive >= self.policy.consecutive_failures || rate_trips {
            self.state = BreakerState::Open {
                until_us: now_us + self.policy.open_for.as_micros() as i64,
            };
            self.consecutive = 0;
            self.clear_window();
        }
    }
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            consecutive_failures: 3,
            failure_rate: 0.5,
            min_requests: 10,
            window: Duration::from_secs(60),
            open_for: Duration::from_secs(30),
        }
    }

    #[test]
    fn opens_after_consecutive_failures_half_opens_and_closes() {
        let mut b = CircuitBreaker::new(policy());
        for i in 0..3 {
            assert!(b.try_acquire(i * S));
            b.record(false, i * S);
        }
        assert!(matches!(b.state(3 * S), BreakerState::Open { .. }));
        assert!(
            !b.try_acquire(10 * S),
            "open breaker let a delivery through"
        );
        assert_eq!(b.state(32 * S), BreakerState::HalfOpen { probing: false });
        assert!(b.try_acquire(32 * S), "probe refused");
        assert!(
            !b.try_acquire(32 * S),
            "second probe allowed while one is under way"
        );
        b.record(true, 33 * S);
        assert_eq!(b.state(33 * S), BreakerState::Closed);
    }

    #[test]
    fn failed_probe_reopens() {
        let mut b = CircuitBreaker::new(policy());
        for i in 0..3 {
            b.try_acquire(i * S);
            b.record(false, i * S);
        }
        assert!(b.try_acquire(40 * S));
        b.record(false, 40 * S);
        assert_eq!(b.state(41 * S), BreakerState::Open { until_us: 70 * S });
    }

    #[test]
    fn opens_on_error_rate() {
        let mut b = CircuitBreaker::new(policy());
        // Alternate: never 3 in a row, but 50 % over 10 requests.
        for i in 0..10 {
            assert!(b.try_acquire(i * S), "closed too early at {i}");
            b.record(i % 2 == 0, i * S);
        }
        assert!(matches!(b.state(10 * S), BreakerState::Open { .. }));
    }

    #[test]
    fn a_busy_window_keeps_counts_not_every_outcome() {
        // A million acks in the 60 s window (one every 50 µs): a consumer group at 20k
        // events/s fills it so. Kept one by one they took 16 MB, and every failure
        // counted them again.
        let mut b = CircuitBreaker::new(policy());
        for i in 0..1_000_000i64 {
            b.record(true, i * 50);
        }
        assert!(
            b.kept() <= 61,
            "{} entries kept for one window of outcomes",
            b.kept()
        );
        // They all count: ten failures among them are well under half, and do not open
        // the breaker (counted alone, the last twenty outcomes are half failures)...
        let t = 50 * S;
        for i in 0..10 {
            b.record(false, t + i);
            b.record(true, t + i);
        }
        assert_eq!(b.state(t + 10), BreakerState::Closed);
        // ...and the rate is of what is in the window: a minute later, the successes
        // have left it and failures at half the outcomes open it.
        let later = t + 61 * S;
        for i in 0..10 {
            b.record(i % 2 == 0, later + i);
        }
        assert!(matches!(b.state(later + 10), BreakerState::Open { .. }));
    }

    #[test]
    fn a_window_that_is_no_whole_number_of_slices_still_counts_all_of_itself() {
        // 119 µs: slices of 1 µs. An outcome 100 µs old is in the window and counts.
        let mut b = CircuitBreaker::new(BreakerPolicy {
            window: Duration::from_micros(119),
            ..policy()
        });
        for i in 0..5 {
            b.record(false, i * 20);
            b.record(true, i * 20);
        }
        assert_eq!(b.state(100), BreakerState::Closed, "9 outcomes, under 10");
        b.record(false, 100);
        assert!(
            matches!(b.state(100), BreakerState::Open { .. }),
            "the failure at 0 µs is 100 µs old and still in the 119 µs window: 6 of 11 failed"
        );
        assert!(b.kept() <= 120);
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let mut b = CircuitBreaker::new(policy());
        for i in 0..9 {
            b.try_acquire(i * S);
            b.record(i % 2 == 0, i * S);
        }
        // Far later: the old failures no longer count.
        b.try_acquire(500 * S);
        b.record(false, 500 * S);
        assert_eq!(b.state(500 * S), BreakerState::Closed);
    }
}
