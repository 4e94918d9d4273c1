//! Work cut into parts that a request's task shares with one helper thread from the
//! blocking pool, so that a single client's large request can use a second core; and the
//! count of requests under way ([`InFlight`]) that tells when a request is alone. That is
//! a guess at idle cores: with other requests of its kind under way the cores are likely
//! busy, and sharing would only add hand-overs and waiting (other work, such as reads
//! and deliveries, is not counted).
//!
//! Both take the next part nobody has taken until none is left. A helper that wakes late
//! takes fewer parts, and none when the task has done them all itself, so a busy server
//! loses only the hand-over. The task then waits for the part the helper is on: first by
//! spinning (a part is short, and waking a parked worker costs more than one), then, if
//! the helper was held up, by sleeping until it is done.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How long the task spins for the helper's last part before it sleeps.
const SPIN: Duration = Duration::from_micros(100);

/// The parts, and what has become of them.
struct Parts<T, F> {
    job: F,
    count: usize,
    /// The next part nobody has taken.
    next: AtomicUsize,
    /// Parts whose outcome is in `outcomes`.
    finished: AtomicUsize,
    /// Each part's outcome: `Some(None)` when its job panicked.
    outcomes: Vec<Mutex<Option<Option<T>>>>,
    /// Woken when the last part finishes.
    all_finished: Notify,
}

impl<T, F: Fn(usize) -> T> Parts<T, F> {
    /// Does parts until none is left to take.
    fn work(&self) {
        loop {
            let part = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = self.outcomes.get(part) else {
                return;
            };
            // A panicking part is recorded as such, so that the task is not left waiting.
            let outcome = catch_unwind(AssertUnwindSafe(|| (self.job)(part))).ok();
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
            if self.finished.fetch_add(1, Ordering::AcqRel) + 1 == self.count {
                self.all_finished.notify_one();
            }
        }
    }

    fn done(&self) -> bool {
        self.finished.load(Ordering::Acquire) == self.count
    }
}

/// Whether this process may run on two cores or more (read once): on one, a helper could
/// only run in turn with the task it should help.
pub fn has_second_core() -> bool {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from)) > 1
}

/// Requests of one kind under way.
#[derive(Debug, Default)]
pub struct InFlight(AtomicUsize);

impl InFlight {
    /// Counts a request in until the returned guard is dropped.
    pub fn enter(&self) -> InFlightGuard<'_> {
        let before = self.0.fetch_add(1, Ordering::Relaxed);
        InFlightGuard {
            count: self,
            alone: before == 0,
        }
    }
}

/// A request counted in [`InFlight`].
#[derive(Debug)]
pub struct InFlightGuard<'a> {
    count: &'a InFlight,
    alone: bool,
}

impl InFlightGuard<'_> {
    /// Whether no other request was under way when this one began.
    pub fn alone(&self) -> bool {
        self.alone
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.count.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `job` for each part `0..count`, on this task and on one helper thread, and gives
/// each part's result in order: `None` where the job panicked. The job must not block on
/// I/O: part of it runs on this task's runtime thread.
pub async fn run_in_parts<T, F>(count: usize, job: F) -> Vec<Option<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> T + Send + Sync + 'static,
{
    let parts = Arc::new(Parts {
        job,
        count,
        next: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        outcomes: (0..count).map(|_| Mutex::new(None)).collect(),
        all_finished: Notify::new(),
    });
    if count > 1 {
        let helper = Arc::clone(&parts);
        // Not awaited: the task waits for the parts, not for the helper, which may not
        // have started (a runtime that is stopping may never start it).
        drop(tokio::task::spawn_blocking(move || helper.work()));
    }
    parts.work();
    let spin_until = Instant::now() + SPIN;
    while !parts.done() {
        if Instant::now() < spin_until {
            std::hint::spin_loop();
        } else {
            // `notify_one` leaves a permit when nobody waits yet: no wake-up is lost.
            parts.all_finished.notified().await;
        }
    }
    parts
        .outcomes
        .iter()
        .map(|slot| {
            slot.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn a_request_is_alone_only_when_none_other_is_under_way() {
        let in_flight = InFlight::default();
        let first = in_flight.enter();
        assert!(first.alone());
        let second = in_flight.enter();
        assert!(!second.alone());
        drop(first);
        assert!(!in_flight.enter().alone());
        drop(second);
        assert!(in_flight.enter().alone());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_part_is_done_once_and_given_in_order() {
        for count in [0, 1, 2, 7, 64] {
            let runs = Arc::new(AtomicUsize::new(0));
            let counted = Arc::clone(&runs);
            let out = run_in_parts(count, move |i| {
                counted.fetch_add(1, Ordering::Relaxed);
                (i, std::thread::current().id())
            })
            .await;
            assert_eq!(runs.load(Ordering::Relaxed), count);
            let order: Vec<usize> = out
                .iter()
                .map(|o| o.as_ref().map(|(i, _)| *i).unwrap())
                .collect();
            assert_eq!(order, (0..count).collect::<Vec<_>>());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_helper_takes_parts_when_the_task_is_busy() {
        // Each part waits until it has seen two threads, or for a while: the helper must
        // take some parts while the task is on its first.
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let seen_by_job = Arc::clone(&seen);
        let out = run_in_parts(4, move |_| {
            let me = std::thread::current().id();
            seen_by_job.lock().unwrap().insert(me);
            let until = Instant::now() + Duration::from_secs(30);
            while seen_by_job.lock().unwrap().len() < 2 && Instant::now() < until {
                std::thread::yield_now();
            }
            me
        })
        .await;
        let threads: HashSet<_> = out.into_iter().map(Option::unwrap).collect();
        assert_eq!(threads.len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_part_that_panics_is_none_and_the_rest_are_kept() {
        let out = run_in_parts(5, |i| {
            if i == 3 {
                panic!("part 3 fails");
            }
            i * 10
        })
        .await;
        assert_eq!(out, vec![Some(0), Some(10), Some(20), None, Some(40)]);
    }
}
