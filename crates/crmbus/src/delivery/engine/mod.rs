//! The delivery engine of one subscription (topic + group): reads the topic's partitions
//! from the group's cursor, delivers each matching event to the handler — one event per
//! key in flight, keys in parallel — retries failures on a persisted schedule, dead-letters
//! what exhausts its retries, and commits the contiguous low-water mark of finished
//! offsets.
//!
//! Durable state, in the [`StateStore`](crate::state::StateStore) under `sub/<topic>/<group>/…`:
//! - `retry`: the retry schedule of each failing event (attempts, next due time, error);
//! - `done`: per partition, one entry `<partition>` holding the ranges of offsets finished
//!   above the committed offset, so a restart does not deliver them again (see
//!   [`Engine`]'s persist for why ranges);
//! - `dlq`: dead letters ([`DeadLetter`]), including held ones that park their key.
//!
//! Each step writes its changes in one state batch, then commits the group offset.
//! Time comes from a [`Clock`](crate::clock::Clock), so tests drive retries with a manual clock.
//!
//! The engine is one struct, [`Engine`], whose methods are split by concern: `run` (the
//! struct and its run loop), `open`, `fill` (reading and key scheduling), `dispatch`,
//! `complete` (acks, retries, dead-lettering), `persist`, `dlq` (listing, redrive,
//! discard, audit) and `metrics`; `records` and `stats` hold the types it stores and
//! reports.

mod complete;
mod dispatch;
mod dlq;
mod fill;
mod in_flight;
mod metrics;
mod open;
mod persist;
mod records;
mod run;
mod stats;
#[cfg(test)]
mod test_engine;

pub use dlq::{audit_op, read_audit_log, read_dead_letters};
pub use records::{AuditRecord, DeadLetter, DlqFilter, RetryRecord, UNREADABLE_TYPE};
pub use run::{Engine, PERSIST_AFTER, PERSIST_INTERVAL};
pub use stats::{Parked, ParkedKey, StatsSnapshot, SubscriptionStats, PARKED_SHOWN};
