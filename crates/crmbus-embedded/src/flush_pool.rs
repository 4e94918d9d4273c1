//! [`FlushPool`]: the threads that write and fsync a round's partitions side by side.
//!
//! A round that touches several partitions flushes them concurrently, so that the device
//! sees the requests together instead of one flush latency after another. Starting a
//! thread per partition per round cost more than the flush it saved on a busy log (a
//! thread's creation, stack and allocator set-up, then its exit, for every partition of
//! every batch). The pool keeps its threads between rounds instead: a round queues all
//! but one of its tasks, runs that one on its own thread, then runs whatever no pool
//! thread has taken yet, and waits for the rest.
//!
//! Threads are started when a round finds too few of them idle (never more than
//! [`FlushPool::new`]'s limit; a thread that cannot be started leaves its tasks to the
//! round's own thread), and end after [`KEEP_ALIVE`] without work or when the pool is
//! dropped.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use crmbus::sync::LockExt;

/// How long a pool thread waits for work before it ends.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

struct Queue {
    jobs: VecDeque<Job>,
    /// Threads running (idle or not).
    threads: usize,
    /// Of those, the threads waiting for work.
    idle: usize,
    /// Set when the pool is dropped: threads end once the queue is empty.
    shutdown: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

/// Threads kept for running the tasks of a round side by side (see the module docs).
pub struct FlushPool {
    shared: Arc<Shared>,
    max_threads: usize,
}

impl FlushPool {
    /// A pool of at most `max_threads` threads, none started yet.
    pub fn new(max_threads: usize) -> FlushPool {
        FlushPool {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue {
                    jobs: VecDeque::new(),
                    threads: 0,
                    idle: 0,
                    shutdown: false,
                }),
                ready: Condvar::new(),
            }),
            max_threads,
        }
    }

    /// Runs every task and returns their results in the order of `tasks`: the first on
    /// the calling thread, the others on the pool's threads or, when it gets to them
    /// first, on the calling thread too. A task that panics gives `on_panic()`. Returns
    /// when every task has run and dropped what it held.
    pub fn run_all<T, F>(&self, tasks: Vec<F>, on_panic: fn() -> T) -> Vec<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let count = tasks.len();
        let (tx, rx) = mpsc::channel::<(usize, T)>();
        let mut tasks = tasks.into_iter().enumerate();
        let first = tasks.next();
        let queued = {
            let mut q = self.shared.queue.locked();
            for (i, task) in tasks {
                let tx = tx.clone();
                q.jobs.push_back(Box::new(move || {
                    // The task is consumed by the call: what it held is dropped before
                    // its result is sent.
                    let out = catch_unwind(AssertUnwindSafe(task)).unwrap_or_else(|_| on_panic());
                    let _ = tx.send((i, out));
                }));
            }
            let mut missing = q.jobs.len().saturating_sub(q.idle);
            while missing > 0 && q.threads < self.max_threads {
                let shared = Arc::clone(&self.shared);
                let started = std::thread::Builder::new()
                    .name("crmbus-flush".into())
                    .spawn(move || work(&shared));
                if started.is_err() {
                    // The calling thread runs what no pool thread takes.
                    break;
                }
                q.threads += 1;
                missing -= 1;
            }
            q.jobs.len()
        };
        for _ in 0..queued {
            self.shared.ready.notify_one();
        }
        if let Some((i, task)) = first {
            let out = catch_unwind(AssertUnwindSafe(task)).unwrap_or_else(|_| on_panic());
            let _ = tx.send((i, out));
        }
        // Tasks no pool thread has taken yet.
        loop {
            let job = self.shared.queue.locked().jobs.pop_front();
            match job {
                Some(job) => job(),
                None => break,
            }
        }
        drop(tx);
        let mut results: Vec<Option<T>> = (0..count).map(|_| None).collect();
        // Every job sends before it ends, and a job is only dropped unrun if a pool
        // thread dies between taking and running it (it cannot: `catch_unwind`), so the
        // channel closes once every result is in.
        for (i, out) in rx {
            results[i] = Some(out);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(on_panic))
            .collect()
    }
}

impl Drop for FlushPool {
    fn drop(&mut self) {
        self.shared.queue.locked().shutdown = true;
        self.shared.ready.notify_all();
    }
}

/// A pool thread: runs queued jobs; ends after [`KEEP_ALIVE`] without any, or at shutdown.
fn work(shared: &Shared) {
    let mut q = shared.queue.locked();
    loop {
        if let Some(job) = q.jobs.pop_front() {
            drop(q);
            job();
            q = shared.queue.locked();
            continue;
        }
        if q.shutdown {
            break;
        }
        q.idle += 1;
        let (guard, waited) = shared
            .ready
            .wait_timeout(q, KEEP_ALIVE)
            .unwrap_or_else(PoisonError::into_inner);
        q = guard;
        q.idle -= 1;
        if waited.timed_out() && q.jobs.is_empty() {
            break;
        }
    }
    q.threads -= 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn results_come_in_task_order_and_threads_are_kept_between_runs() {
        let pool = FlushPool::new(3);
        let mut threads = HashSet::new();
        for round in 0..20u64 {
            let tasks: Vec<_> = (0..4u64)
                .map(|i| move || (round * 10 + i, std::thread::current().id()))
                .collect();
            let out = pool.run_all(tasks, || (u64::MAX, std::thread::current().id()));
            let values: Vec<u64> = out.iter().map(|(v, _)| *v).collect();
            assert_eq!(values, (0..4).map(|i| round * 10 + i).collect::<Vec<_>>());
            threads.extend(out.into_iter().map(|(_, t)| t));
        }
        // The calling thread and at most three pool threads ran all 80 tasks.
        assert!(threads.len() <= 4, "{} threads", threads.len());
        assert!(pool.shared.queue.locked().threads <= 3);
    }

    #[test]
    fn tasks_run_side_by_side() {
        // Four tasks that each wait until all four have started: they all see four only
        // if they run at once (the calling thread and three pool threads). The wait is
        // bounded so that a pool that runs them one by one fails instead of hanging.
        let pool = FlushPool::new(3);
        let started = Arc::new((Mutex::new(0usize), Condvar::new()));
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let started = Arc::clone(&started);
                move || {
                    let (count, arrived) = &*started;
                    let mut n = count.locked();
                    *n += 1;
                    arrived.notify_all();
                    let (n, _) = arrived
                        .wait_timeout_while(n, Duration::from_secs(60), |n| *n < 4)
                        .unwrap_or_else(PoisonError::into_inner);
                    *n
                }
            })
            .collect();
        assert_eq!(pool.run_all(tasks, || 0), vec![4, 4, 4, 4]);
    }

    #[test]
    fn a_panicking_task_gives_its_fallback_and_the_rest_still_run() {
        let pool = FlushPool::new(2);
        let tasks: Vec<Box<dyn FnOnce() -> i32 + Send>> = vec![
            Box::new(|| 1),
            Box::new(|| panic!("task failed")),
            Box::new(|| 3),
        ];
        assert_eq!(pool.run_all(tasks, || -1), vec![1, -1, 3]);
        // The pool still works afterwards.
        let tasks: Vec<_> = (0..3).map(|i| move || i).collect();
        assert_eq!(pool.run_all(tasks, || -1), vec![0, 1, 2]);
    }

    #[test]
    fn with_no_threads_the_calling_thread_runs_everything() {
        let pool = FlushPool::new(0);
        let me = std::thread::current().id();
        let tasks: Vec<_> = (0..5)
            .map(|i| move || (i, std::thread::current().id()))
            .collect();
        let out = pool.run_all(tasks, || (-1, std::thread::current().id()));
        assert_eq!(
            out.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        assert!(out.iter().all(|(_, t)| *t == me));
    }

    #[test]
    fn dropping_the_pool_ends_its_threads() {
        let pool = FlushPool::new(2);
        let tasks: Vec<_> = (0..3).map(|i| move || i).collect();
        pool.run_all(tasks, || -1);
        let shared = Arc::clone(&pool.shared);
        drop(pool);
        // Each thread sees the shutdown, ends and lets go of the pool; wait for that, not
        // on a clock.
        while Arc::strong_count(&shared) > 1 {
            std::thread::yield_now();
        }
        assert_eq!(shared.queue.locked().threads, 0);
    }
}
