//! # crmbus-server
//!
//! crmbus's HTTP API (`crmbus serve`): publish in the three CloudEvents HTTP modes, read by
//! offset or time, pull subscriptions with leases, Server-Sent Events and WebSocket
//! streams, replay (seek), dead letters, health, readiness, Prometheus metrics and an
//! OpenAPI document generated from the code. Errors are RFC 9457 problem documents.
//!
//! The server is a thin layer: every handler goes through the same front door as
//! application code ([`crmbus::EventBus`]: publish, topics, reads, seek, live tails), and
//! the request and response bodies are `crmbus-api`'s, which clients share. The storage is
//! chosen by [`backend::Storage`], the typed form of `[storage]`; Redis and NATS are the
//! `redis` and `nats` features (on by default).
//!
//! Its modules import downward only: [`app`] starts and stops the [`Server`] and uses
//! [`router`], which wires the [`routes`] and the [`openapi`] document's own route; each
//! route file uses [`state`] (what handlers share), [`extract`] (reading bodies, queries,
//! times and enum names), [`problem`] and [`api`], never another route file, the router or
//! the app.
//!
//! ```no_run
//! # async fn run() -> Result<(), crmbus_server::ServerError> {
//! let config = crmbus_server::Config::load(None, std::env::vars())?;
//! let server = crmbus_server::Server::start(config).await?;
//! println!("listening on {}", server.local_addr());
//! server.shutdown().await
//! # }
//! ```

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod backend;
pub mod cloudevents;
pub mod cluster;
pub mod config;
pub mod extract;
pub mod lease_deadline;
pub mod legacy;
pub mod listener;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod pull;
pub mod push;
pub mod rate_limit;
pub mod render;
pub mod request_audit;
pub mod request_auth;
pub mod router;
pub mod routes;
pub mod shared_work;
pub mod state;
pub mod subscriptions;
pub mod transform;

pub use app::{Server, ServerError};
pub use config::Config;
pub use problem::{ApiError, Problem};
