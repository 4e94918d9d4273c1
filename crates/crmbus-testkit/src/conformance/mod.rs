//! The backend conformance suite: one check per semantic of the [`EventLog`](crmbus::EventLog) contract, run
//! against any backend through a [`LogFactory`], adjusted to what the backend declares in
//! its [`Features`].
//!
//! A backend crate runs it either as one test with [`run`], or as one `#[tokio::test]` per
//! case with the [`conformance_tests!`](crate::conformance_tests) macro:
//!
//! ```text
//! crmbus_testkit::conformance_tests!(my_backend::TestFactory::new(), Features { persistent: true });
//! ```
//!
//! The cases live by concern: topic admin in `topics`, appends and partitioning in
//! `append`, producer dedupe in `dedupe`, reads by time in `read`, group offsets in
//! `groups`, `retention`, and `reopen`; what they share (the backend they are given and
//! small helpers) in `harness`. Cases import the harness, this module imports both.

use std::sync::atomic::{AtomicU64, Ordering};

/// The suite's own `ensure!`: returns `Err(format!(...))` from the case when `$cond` is false.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

mod append;
mod dedupe;
mod groups;
mod harness;
mod read;
mod reopen;
mod retention;
mod topics;

use append::{
    append_read_order, concurrent_appenders, key_partition_stability, large_batch,
    multi_topic_append,
};
use dedupe::producer_dedupe;
use groups::{group_commit_resume, two_groups_independent};
use read::read_from_time;
use reopen::reopen_keeps_everything;
use retention::retention;
use topics::topic_lifecycle;

use harness::Target;
pub use harness::{Features, LogFactory};

macro_rules! cases {
    ($($case:ident => $doc:literal),* $(,)?) => {
        /// One semantic of the contract, checked by [`run_case`].
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Case {
            $(#[doc = $doc] $case,)*
        }

        impl Case {
            /// Every case, in the order [`run`] runs them.
            pub const ALL: &'static [Case] = &[$(Case::$case,)*];

            /// The case's name.
            pub fn name(self) -> &'static str {
                match self {
                    $(Case::$case => stringify!($case),)*
                }
            }
        }

        async fn dispatch(f: &Target<'_>, case: Case, name: &str) -> Result<(), String> {
            match case {
                $(Case::$case => $case(f, name).await,)*
            }
        }
    };
}

cases! {
    topic_lifecycle => "Create, describe, list, delete topics; the errors for bad or missing ones.",
    append_read_order => "Appended events read back in order with contiguous offsets.",
    key_partition_stability => "An event goes to partition_for(subject or id); one key, one partition, in order.",
    multi_topic_append => "One call appends to several topics; a missing topic writes nothing.",
    read_from_time => "offset_for_time finds the first event at or after a time.",
    group_commit_resume => "Committed group offsets survive a reopen and can move.",
    two_groups_independent => "Two groups on one topic keep separate offsets.",
    producer_dedupe => "Same topic + source + id appends once and returns the first receipt.",
    retention => "Size retention removes the oldest events only.",
    large_batch => "A batch of 10,000 events appends and reads back whole.",
    concurrent_appenders => "Concurrent appenders get unique offsets and keep their own order.",
    reopen_keeps_everything => "Topics, events and offsets survive close and reopen; appends continue.",
}

static RUN_ID: AtomicU64 = AtomicU64::new(0);

fn unique_name(case: Case) -> String {
    let n = RUN_ID.fetch_add(1, Ordering::Relaxed);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{}-{}-{}", case.name(), std::process::id(), stamp, n)
}

impl Case {
    /// Why the case does not apply to a backend with `features`, or `None` when it does.
    pub fn skip_reason(self, features: &Features) -> Option<&'static str> {
        match self {
            Case::reopen_keeps_everything if !features.persistent => {
                Some("the backend is not persistent (Features::persistent is false)")
            }
            _ => None,
        }
    }
}

/// Runs one case against a fresh backend from `factory`; a case that does not apply to
/// `features` (see [`Case::skip_reason`]) passes after saying so on stderr.
pub async fn run_case(
    factory: &dyn LogFactory,
    features: Features,
    case: Case,
) -> Result<(), String> {
    if let Some(reason) = case.skip_reason(&features) {
        eprintln!("conformance case {} skipped: {reason}", case.name());
        return Ok(());
    }
    let name = unique_name(case);
    let target = Target { factory, features };
    dispatch(&target, case, &name)
        .await
        .map_err(|e| format!("conformance case {} failed: {e}", case.name()))
}

/// Runs every case; returns the failures as (case, message). Empty means the backend conforms.
pub async fn run(factory: &dyn LogFactory, features: Features) -> Vec<(Case, String)> {
    let mut failures = Vec::new();
    for &case in Case::ALL {
        if let Err(e) = run_case(factory, features, case).await {
            failures.push((case, e));
        }
    }
    failures
}

/// Generates one `#[tokio::test]` per conformance case. The arguments are an expression
/// producing a [`LogFactory`] (evaluated once per test) and the backend's [`Features`].
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr, $features:expr $(,)?) => {
        $crate::conformance_tests!(@cases $factory, $features;
            topic_lifecycle, append_read_order, key_partition_stability, multi_topic_append,
            read_from_time, group_commit_resume, two_groups_independent, producer_dedupe,
            retention, large_batch, concurrent_appenders, reopen_keeps_everything);
    };
    (@cases $factory:expr, $features:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let factory = $factory;
                if let Err(e) = $crate::conformance::run_case(
                    &factory,
                    $features,
                    $crate::conformance::Case::$case,
                ).await {
                    panic!("{e}");
                }
            }
        )*
    };
}
