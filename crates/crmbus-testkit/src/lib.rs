//! # crmbus-testkit
//!
//! Test support for crmbus, kept out of the crates that ship: a dev-dependency of the
//! backends (and of `crmbus` itself for the in-memory backend), never a dependency.
//!
//! - [`conformance`]: the backend conformance suite, one check per semantic of the
//!   [`crmbus::EventLog`] contract, run against a backend's [`conformance::LogFactory`] and
//!   adjusted to the [`conformance::Features`] the backend declares (the way Watermill's
//!   pub/sub test suite takes a feature list per implementation).
//! - [`delivery`]: the delivery-engine scenarios (per-key order under random failures,
//!   retries, restarts, dead letters, dedupe, subscription options), run on a backend's
//!   log and state store with [`delivery_scenarios!`].
//! - [`state_store`]: the [`crmbus::StateStore`] contract, one function every backend's
//!   store is checked with.
//! - [`leases`]: the [`crmbus::cluster::LeaseStore`] contract and fenced writes, for the
//!   shared backends.
//! - [`embedded`]: helpers for tests that look at the embedded log's files (segments,
//!   frames, copies of a data directory).
//! - [`outbox`]: a fresh PostgreSQL database per test and the checks of a relay test.
//!
//! It also holds the `crmbus-crash-writer` binary, a process that appends to an embedded
//! log and prints every acknowledgement until it is killed, and `tests/crash_kill.rs`, which
//! kills it with SIGKILL at random moments and checks what survived: the binary lives here
//! so that it is never installed with crmbus-embedded, and the test beside it so that
//! `env!("CARGO_BIN_EXE_crmbus-crash-writer")` finds it.

pub mod conformance;
pub mod delivery;
pub mod embedded;
pub mod leases;
pub mod outbox;
pub mod state_store;
