//! The HTTP handlers, a file per group of routes.

pub mod audit;
pub mod console;
pub mod dlq;
pub mod events;
pub mod keys;
pub mod live;
pub mod ops;
pub mod schemas;
pub mod subscriptions;
pub mod topics;
