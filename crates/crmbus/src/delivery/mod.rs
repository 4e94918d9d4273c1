//! The delivery engine and its parts: filters, retry policy, circuit breaker, handlers,
//! subscription options, and the engine that runs one subscription.

pub mod breaker;
pub mod engine;
pub mod filter;
pub mod group_state;
pub mod handler;
pub(crate) mod key;
pub mod options;
pub mod ranges;
pub mod retry;
pub mod seek;
pub mod subscription;

pub use breaker::{BreakerPolicy, BreakerState, CircuitBreaker};
pub use engine::{
    audit_op, read_audit_log, read_dead_letters, AuditRecord, DeadLetter, DlqFilter, Engine,
    Parked, ParkedKey, RetryRecord, StatsSnapshot, SubscriptionStats, PERSIST_AFTER,
    PERSIST_INTERVAL,
};
pub use filter::{glob_match, Condition, Filter, Op};
pub use group_state::{GroupState, StateKind};
pub use handler::{handler_fn, Delivery, Handler, HandlerError, Outcome};
pub use options::{OnExhausted, Ordering, StartAt, SubscribeOptions};
pub use retry::{RetryPolicy, MAX_RETRY_DELAY};
pub use seek::{seek_group, seek_group_fenced, SeekTo};
pub use subscription::{Subscription, POLL_INTERVAL};
