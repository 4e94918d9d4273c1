//! A typed async client of the crmbus HTTP API.
//!
//! Every route the server answers has one method here, taking and returning the bodies
//! `crmbus-api` defines, so a caller never writes a route or reads a field by name. The
//! CLI and the benchmarks talk to servers only through this crate.
//!
//! ```no_run
//! # async fn run() -> Result<(), crmbus_client::ClientError> {
//! use crmbus_client::{api, Client};
//! let client = Client::new("http://127.0.0.1:7480")?;
//! client
//!     .create_topic(&api::CreateTopicRequest {
//!         name: "deals".into(),
//!         partitions: Some(4),
//!         retention: None,
//!         require_schemas: false,
//!     })
//!     .await?;
//! let event = serde_json::json!({
//!     "specversion": "1.0", "id": "evt-1", "source": "urn:acme:crm",
//!     "type": "deal.won", "subject": "deal-42", "data": {"amount": 1200}
//! });
//! let receipts = client.publish(&["deals"], &event).await?;
//! println!("stored at offset {}", receipts.receipts[0].offset);
//! # Ok(()) }
//! ```
//!
//! Errors are [`ClientError`]s: a server that cannot be reached, or the problem document
//! (RFC 9457) the server answered with, whose message is the server's own `detail`.

mod client;
mod error;
mod live;
mod raw;
mod routes;

pub use client::{Client, Encoded};
pub use crmbus_api as api;
pub use error::ClientError;
pub use live::LiveStream;
pub use raw::{RawDelivery, RawPullResponse};
