//! The delivery engine's parts: filters, retry policy, circuit breaker.

pub mod breaker;
pub mod filter;
pub mod retry;

pub use breaker::{BreakerPolicy, BreakerState, CircuitBreaker};
pub use filter::{glob_match, Condition, Filter, Op};
pub use retry::RetryPolicy;
