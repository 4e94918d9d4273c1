//! The request and response bodies of crmbus's HTTP API (`/v1/…`), shared by the server
//! that answers them and the clients that send them (`crmbus-client`, the CLI, the
//! benchmarks). A body changes in one place, and both sides see it.
//!
//! Each module covers one group of routes; every type is also re-exported at the root.
//! With the `openapi` feature the types carry the `utoipa` annotations the server builds
//! its OpenAPI document from; clients leave it off and do not link `utoipa`.
//!
//! Integers are read the way JSON Schema counts them ([`whole`]): `5.0` is the integer 5.

pub mod audit;
pub mod cluster;
pub mod dlq;
pub mod events;
pub mod keys;
pub mod live;
pub mod ops;
pub mod problem;
pub mod schemas;
pub mod subscriptions;
pub mod topics;
pub mod whole;

pub use audit::*;
pub use cluster::*;
pub use dlq::*;
pub use events::*;
pub use keys::*;
pub use live::*;
pub use ops::*;
pub use problem::*;
pub use schemas::*;
pub use subscriptions::*;
pub use topics::*;
