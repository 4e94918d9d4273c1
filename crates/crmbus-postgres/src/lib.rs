//! # crmbus-postgres
//!
//! The transactional outbox and inbox on PostgreSQL.
//!
//! An application publishes an event exactly when its transaction commits by inserting a
//! row into `crmbus_outbox` in that transaction (the table and its contract:
//! [`sql::OUTBOX_SQL`], created by [`sql::install`] or `crmbus outbox init`). A [`Relay`]
//! publishes committed rows into the bus in order and marks them; a crash between the two
//! is absorbed (see [`relay`]). On the consuming side, an [`Inbox`] records each event in
//! the consumer's own transaction so its side effect happens once.
//!
//! The relay publishes through an [`OutboxSink`]: the [`crmbus::EventBus`] of the same
//! process (inside `crmbus serve`, `[[outbox]]` in its configuration) or a crmbus server
//! over HTTP (`crmbus outbox relay --url`). Connections are plain TCP (no TLS).
//!
//! It also holds crmbus's delivery state for backends that have no state store of their
//! own: [`PgStateStore`] (a [`crmbus::StateStore`]) and [`PgLeaseStore`] (a
//! [`crmbus::cluster::LeaseStore`]), in the tables of [`state::STATE_SQL`]. The Kafka backend
//! keeps its retry schedules, dead letters, group offsets and leases there.

pub mod error;
pub mod inbox;
pub mod leader;
pub mod lease;
pub mod relay;
pub mod sink;
pub mod sql;
pub mod state;
pub mod store;

pub use error::OutboxError;
pub use inbox::Inbox;
pub use lease::PgLeaseStore;
pub use relay::{Relay, RelayOptions, StepReport};
pub use sink::{EventKey, OutboxSink, SinkError};
pub use state::PgStateStore;
pub use store::{connect_pool, FailedRow, OutboxRow, OutboxStatus, OutboxTable};
