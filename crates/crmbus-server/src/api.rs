//! The request and response bodies of the HTTP API. They are defined in `crmbus-api`
//! (with its `openapi` feature on), which the clients share; re-exported here so the
//! handlers and the OpenAPI document name them as `crate::api::…`.

pub use crmbus_api::cluster::*;
pub use crmbus_api::dlq::*;
pub use crmbus_api::events::*;
pub use crmbus_api::keys::*;
pub use crmbus_api::ops::*;
pub use crmbus_api::subscriptions::*;
pub use crmbus_api::topics::*;
pub use crmbus_api::whole;
