//! # crmbus
//!
//! The core library of crmbus, a durable event bus for CRM and business automation.
//!
//! It holds the [`Event`] envelope (CloudEvents 1.0 with crmbus's own serde), the
//! [`EventLog`] trait every storage backend implements and the in-memory backend
//! [`MemoryLog`] for tests. The conformance suite every backend runs to prove it keeps the
//! same contract lives in the `crmbus-testkit` crate (a dev-dependency, never shipped).
//!
//! [`EventBus`] is the front door: publish and subscribe, and also topic administration,
//! reads, seeks and live tails ([`Tailer`]), so callers never reach past it to the log.
//! Every reader starts from one [`Position`] type. [`BackendKind`] is the one list of
//! backends, and [`ErrorCode`] the one list of stable error codes.

pub mod backends;
pub mod bus;
pub mod clock;
pub mod cluster;
pub mod delivery;
pub mod error;
pub mod event;
pub mod log;
pub mod memory;
pub mod partition;
pub mod position;
pub mod state;
pub mod sync;
pub mod tail;
pub mod trace;
pub mod validate;

pub use backends::{BackendKind, DiscardingLog, LoggingLog, NoopLog};
pub use bus::{get_event_bus, publish_event, set_event_bus, BusError, EventBus, EventBusBuilder};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{ErrorCode, LogError};
pub use event::{
    default_source, set_default_source, Event, EventData, ExtensionValue, InvalidEvent, JsonText,
    Violation,
};
pub use log::{
    expected_version, validate_topic_name, EventLog, OffsetRange, PartitionInfo, Receipt,
    Retention, StoredEvent, SubjectEvent, SubjectRead, TopicInfo, TopicSpec, DEFAULT_DEDUPE_WINDOW,
    EXPECTED_VERSION,
};
pub use memory::MemoryLog;
pub use partition::{dedupe_hash, partition_for};
pub use position::Position;
pub use state::{MemoryStateStore, OpenedBackend, StateOp, StateStore};
pub use tail::{TailOptions, Tailer};
pub use validate::PublishValidator;
