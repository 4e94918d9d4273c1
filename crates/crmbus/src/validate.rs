//! [`PublishValidator`]: the hook through which an [`EventBus`](crate::EventBus) checks
//! every event before anything is written — typically the schema registry of the
//! `crmbus-schema` crate, which the core crate does not depend on.

use async_trait::async_trait;

use crate::event::{Event, InvalidEvent};

/// Checks (and may annotate) an event before the bus publishes it.
///
/// Contract: [`PublishValidator::validate`] returns every violation it finds, not just the
/// first; on success it may fill in attributes that name what it checked against (the
/// schema registry sets `dataschema`), but it never changes `id`, `source`, `type`,
/// `subject` or `data`. The bus calls it for every event of a publish before writing, and
/// writes nothing if any event is rejected.
#[async_trait]
pub trait PublishValidator: Send + Sync {
    /// Validates `event`; `require_schema` is true when a target topic demands that the
    /// event's type has a registered schema (see [`crate::TopicSpec::require_schemas`]).
    async fn validate(&self, event: &mut Event, require_schema: bool) -> Result<(), InvalidEvent>;
}
