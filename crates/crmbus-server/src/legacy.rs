//! What servers before the current data layout wrote, still read so that a data directory
//! they wrote keeps its meaning.
//!
//! Before `require_schemas` became part of the topic spec, servers recorded it in the
//! state store, in a second write after the topic's. It is read at start and cleared when
//! the topic goes; never written.

use crmbus::{EventBus, LogError};

/// The state-store namespace of the old `require_schemas` records (key: topic).
const LEGACY_REQUIRE_SCHEMAS: &str = "server/require_schemas";

/// Tells the bus which topics require schemas by an old record (at start, after
/// [`EventBus::load_topic_rules`] read every topic's spec).
pub async fn load_require_schemas(bus: &EventBus) -> Result<(), LogError> {
    for (topic, _) in bus.state().scan(LEGACY_REQUIRE_SCHEMAS, "").await? {
        bus.set_require_schemas(&topic, true);
    }
    Ok(())
}

/// Removes a deleted topic's old record, so a topic made again under its name does not
/// inherit it.
pub async fn forget_require_schemas(bus: &EventBus, topic: &str) -> Result<(), LogError> {
    bus.state().delete(LEGACY_REQUIRE_SCHEMAS, topic).await
}
