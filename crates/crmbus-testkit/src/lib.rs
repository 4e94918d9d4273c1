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
#![warn(missing_docs)]

pub mod conformance;
pub mod delivery;
pub mod state_store;
