//! [`EventBus`]: the application's entry point — publish business events to topics on a
//! log, with optional taps beside it — and the optional process-wide default bus behind
//! [`publish_event`] for code that wants the seed's `publish_event(...)` style.

use crate::sync::RwLockExt;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;
use tokio::sync::Notify;

use crate::clock::{system_clock, Clock};
use crate::delivery::{seek_group, Engine, Handler, SubscribeOptions, Subscription};
use crate::state::{MemoryStateStore, StateStore};

use crate::error::{ErrorCode, LogError};
use crate::event::{Event, InvalidEvent, Violation};
use crate::log::{EventLog, Receipt, StoredEvent, TopicInfo, TopicSpec};
use crate::memory::MemoryLog;
use crate::position::Position;
use crate::tail::{TailOptions, Tailer};
use crate::validate::PublishValidator;

/// An error from the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The log refused or failed the operation.
    #[error(transparent)]
    Log(#[from] LogError),
    /// [`publish_event`] was called before [`set_event_bus`].
    #[error("no default event bus is set (call crmbus::set_event_bus first)")]
    NoDefaultBus,
    /// The bus's [`PublishValidator`] rejected events (every violation is listed; in a
    /// batch of several events each attribute is prefixed `events[i].`); nothing was
    /// written.
    #[error("rejected by validation: {0}")]
    Validation(InvalidEvent),
}

impl BusError {
    /// A stable machine-readable code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            BusError::Log(e) => e.code(),
            BusError::NoDefaultBus => ErrorCode::NoDefaultBus,
            BusError::Validation(_) => ErrorCode::SchemaViolation,
        }
    }
}

struct BusInner {
    log: Arc<dyn EventLog>,
    taps: Vec<Arc<dyn EventLog>>,
    auto_create_partitions: Option<u32>,
    state: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    /// Wakes this bus's subscriptions when it publishes.
    published: Arc<Notify>,
    /// Checks every event before it is written, if set.
    validator: Option<Arc<dyn PublishValidator>>,
    /// `require_schemas` per topic name, as recorded with [`EventBus::set_require_schemas`].
    require_schemas: RwLock<HashMap<String, bool>>,
}

/// Publishes events to topics on an [`EventLog`]. Cheap to clone; clones share the log.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<BusInner>,
}

/// Builds an [`EventBus`]; see [`EventBus::builder`].
#[derive(Default)]
pub struct EventBusBuilder {
    log: Option<Arc<dyn EventLog>>,
    state: Option<Arc<dyn StateStore>>,
    clock: Option<Arc<dyn Clock>>,
    taps: Vec<Arc<dyn EventLog>>,
    auto_create_partitions: Option<u32>,
    source: Option<String>,
    validator: Option<Arc<dyn PublishValidator>>,
}

impl EventBusBuilder {
    /// The log the bus stores events in. Default: a new [`MemoryLog`].
    pub fn log(mut self, log: Arc<dyn EventLog>) -> Self {
        self.log = Some(log);
        self
    }

    /// Where subscriptions keep their retry schedules, dead letters and dedupe records.
    /// Default: a new [`MemoryStateStore`] (use the embedded log's store for durability).
    pub fn state(mut self, state: Arc<dyn StateStore>) -> Self {
        self.state = Some(state);
        self
    }

    /// The clock of retries and breakers. Default: the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Adds a tap: every successful publish is also appended there (for example a
    /// [`crate::backends::LoggingLog`] or a [`MemoryLog`] for tests). A tap's failure is
    /// logged and never fails the publish.
    pub fn tap(mut self, tap: Arc<dyn EventLog>) -> Self {
        self.taps.push(tap);
        self
    }

    /// Creates topics that do not exist yet, with `partitions` partitions, on first
    /// publish. Default: publishing to a missing topic fails with `topic_not_found`.
    pub fn auto_create_topics(mut self, partitions: u32) -> Self {
        self.auto_create_partitions = Some(partitions);
        self
    }

    /// The `source` that [`Event::new`] gives events in this process (sets
    /// [`crate::set_default_source`]).
    pub fn default_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Checks every published event with `validator` first (for example the schema
    /// registry of `crmbus-schema`); a rejected publish writes nothing. Default: none.
    pub fn validator(mut self, validator: Arc<dyn PublishValidator>) -> Self {
        self.validator = Some(validator);
        self
    }

    /// Builds the bus.
    pub fn build(self) -> EventBus {
        if let Some(s) = self.source {
            crate::event::set_default_source(s);
        }
        EventBus {
            inner: Arc::new(BusInner {
                log: self.log.unwrap_or_else(|| Arc::new(MemoryLog::new())),
                taps: self.taps,
                auto_create_partitions: self.auto_create_partitions,
                state: self
                    .state
                    .unwrap_or_else(|| Arc::new(MemoryStateStore::new())),
                clock: self.clock.unwrap_or_else(system_clock),
                published: Arc::new(Notify::new()),
                validator: self.validator,
                require_schemas: RwLock::new(HashMap::new()),
            }),
        }
    }
}

impl EventBus {
    /// Starts building a bus.
    pub fn builder() -> EventBusBuilder {
        EventBusBuilder::default()
    }

    /// The log this bus stores events in.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.inner.log
    }

    /// The state store subscriptions use.
    pub fn state(&self) -> &Arc<dyn StateStore> {
        &self.inner.state
    }

    /// The clock of retries and breakers.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Notified each time this bus publishes; live readers wait on it rather than poll.
    pub fn published_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.inner.published)
    }

    // Topics: the bus is the front door for administration and reads too, so callers
    // never reach past it to the log.

    /// The backend's name (`embedded`, `redis`, …).
    pub fn backend_name(&self) -> &'static str {
        self.inner.log.backend_name()
    }

    /// Creates a topic, and records whether it requires schemas.
    pub async fn create_topic(&self, spec: TopicSpec) -> Result<TopicInfo, LogError> {
        let info = self.inner.log.create_topic(spec).await?;
        self.set_require_schemas(&info.spec.name, info.spec.require_schemas);
        Ok(info)
    }

    /// Deletes a topic and its events (subscriptions are their owner's to delete).
    pub async fn delete_topic(&self, name: &str) -> Result<(), LogError> {
        self.inner.log.delete_topic(name).await?;
        self.inner.require_schemas.write_locked().remove(name);
        Ok(())
    }

    /// One topic: its spec and each partition's offsets.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo, LogError> {
        self.inner.log.describe_topic(name).await
    }

    /// Every topic, by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        self.inner.log.list_topics().await
    }

    /// Records, for every topic, whether its spec requires schemas (at start, before any
    /// publish: the flags live with the topics, this is their cache).
    pub async fn load_topic_rules(&self) -> Result<(), LogError> {
        for info in self.inner.log.list_topics().await? {
            self.set_require_schemas(&info.spec.name, info.spec.require_schemas);
        }
        Ok(())
    }

    /// Up to `max` stored events of one partition from offset `from`.
    pub async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, LogError> {
        self.inner.log.read(topic, partition, from, max).await
    }

    /// Up to `max` events of one subject's stream from version `from_version` on, with
    /// their versions and the subject's current version ([`EventLog::read_subject`]; the
    /// embedded log serves it, other backends answer [`LogError::Unsupported`]).
    pub async fn read_subject(
        &self,
        topic: &str,
        subject: &str,
        from_version: u64,
        max: usize,
    ) -> Result<crate::log::SubjectRead, LogError> {
        self.inner
            .log
            .read_subject(topic, subject, from_version, max)
            .await
    }

    /// The offset of the first event of a partition appended at or after `time` (its end
    /// when there is none).
    pub async fn offset_for_time(
        &self,
        topic: &str,
        partition: u32,
        time: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, LogError> {
        self.inner.log.offset_for_time(topic, partition, time).await
    }

    /// Follows `topic` live from `opts.from` (see [`Tailer`]).
    pub async fn tail(&self, topic: &str, opts: TailOptions) -> Result<Tailer, LogError> {
        Tailer::open(
            Arc::clone(&self.inner.log),
            Arc::clone(&self.inner.published),
            topic,
            opts,
        )
        .await
    }

    /// Moves `group`'s cursor on `topic` (see [`crate::delivery::seek_group`]: call it while
    /// the group's subscription is stopped). Returns each partition's new committed offset.
    pub async fn seek(
        &self,
        topic: &str,
        group: &str,
        to: &Position,
    ) -> Result<Vec<u64>, LogError> {
        seek_group(
            self.inner.log.as_ref(),
            self.inner.state.as_ref(),
            topic,
            group,
            to,
        )
        .await
    }

    /// [`EventBus::seek`] with every write fenced by `fences` (see
    /// [`crate::cluster`]): servers sharing a backend seek while holding the leases of every
    /// partition of the group.
    pub async fn seek_fenced(
        &self,
        topic: &str,
        group: &str,
        to: &Position,
        fences: &[crate::cluster::Fence],
    ) -> Result<Vec<u64>, LogError> {
        crate::delivery::seek_group_fenced(
            self.inner.log.as_ref(),
            self.inner.state.as_ref(),
            topic,
            group,
            to,
            fences,
        )
        .await
    }

    /// The offset `group` will deliver next in one partition, if it has one.
    pub async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError> {
        self.inner
            .log
            .committed_offset(group, topic, partition)
            .await
    }

    /// Flushes and closes the log; later calls fail.
    pub async fn close(&self) -> Result<(), LogError> {
        self.inner.log.close().await
    }

    /// Records whether `topic` requires a registered schema for every event's type (its
    /// [`TopicSpec::require_schemas`]); the bus's validator is told so at publish.
    /// [`EventBus::create_topic`] and [`EventBus::load_topic_rules`] record it from the
    /// topic's spec; call this only for rules kept elsewhere. Unrecorded topics
    /// (including auto-created ones) do not require schemas.
    pub fn set_require_schemas(&self, topic: &str, require: bool) {
        let mut map = self.inner.require_schemas.write_locked();
        map.insert(topic.to_string(), require);
    }

    /// Whether `topic` requires schemas, as recorded with [`EventBus::set_require_schemas`].
    pub fn requires_schemas(&self, topic: &str) -> bool {
        let map = self.inner.require_schemas.read_locked();
        map.get(topic).copied().unwrap_or(false)
    }

    /// Runs the validator, if any, over every event; collects every violation.
    async fn validate_all(&self, events: &mut [Event], topics: &[String]) -> Result<(), BusError> {
        let Some(validator) = &self.inner.validator else {
            return Ok(());
        };
        let require = topics.iter().any(|t| self.requires_schemas(t));
        let several = events.len() > 1;
        let mut violations: Vec<Violation> = Vec::new();
        for (i, event) in events.iter_mut().enumerate() {
            if let Err(invalid) = validator.validate(event, require).await {
                violations.extend(invalid.violations.into_iter().map(|mut v| {
                    if several {
                        v.attribute = format!("events[{i}].{}", v.attribute);
                    }
                    v
                }));
            }
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(BusError::Validation(InvalidEvent { violations }))
        }
    }

    /// Subscribes `group` to `topic`: `handler` gets every matching event, in key order,
    /// with retries and a DLQ per `options`. The subscription runs in the background until
    /// [`Subscription::unsubscribe`] (or until its handle is dropped).
    pub async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        handler: Arc<dyn Handler>,
        options: SubscribeOptions,
    ) -> Result<Subscription, BusError> {
        let engine = Engine::open(
            Arc::clone(&self.inner.log),
            Arc::clone(&self.inner.state),
            Arc::clone(&self.inner.clock),
            topic,
            group,
            handler,
            options,
        )
        .await?;
        Ok(Subscription::start(
            engine,
            Arc::clone(&self.inner.clock),
            Arc::clone(&self.inner.published),
        ))
    }

    /// Publishes one event to one or more topics. Returns when the event is durable under
    /// the log's durability, with one receipt per topic (`duplicate: true` where the same
    /// `source` + `id` was already there).
    pub async fn publish(&self, event: Event, topics: &[&str]) -> Result<Vec<Receipt>, BusError> {
        self.publish_batch(vec![event], topics).await
    }

    /// Publishes a batch of events to one or more topics, all-or-nothing per the log's
    /// contract. Receipts come topic-major (every event for the first topic, then the next).
    /// With a validator (see [`EventBusBuilder::validator`]) every event is checked first;
    /// any violation fails the whole batch with [`BusError::Validation`] and writes nothing.
    pub async fn publish_batch(
        &self,
        mut events: Vec<Event>,
        topics: &[&str],
    ) -> Result<Vec<Receipt>, BusError> {
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        self.refuse_unkept_versions(&events)?;
        self.validate_all(&mut events, &topics).await?;
        let receipts = append_creating(
            self.inner.log.as_ref(),
            &topics,
            &events,
            self.inner.auto_create_partitions,
        )
        .await?;
        self.inner.published.notify_waiters();
        if !self.inner.taps.is_empty() {
            // An expected version was this log's condition, not part of the events.
            for e in &mut events {
                e.extensions.remove(crate::log::EXPECTED_VERSION);
            }
        }
        for tap in &self.inner.taps {
            // A tap mirrors whatever the bus publishes, so it creates topics as it goes.
            if let Err(e) = append_creating(tap.as_ref(), &topics, &events, Some(1)).await {
                tracing::warn!(tap = tap.backend_name(), error = %e, "event tap failed");
            }
        }
        Ok(receipts)
    }
}

impl EventBus {
    /// Refuses events that state an expected version when the log cannot check it
    /// atomically with the append (it would be ignored, not faked).
    fn refuse_unkept_versions(&self, events: &[Event]) -> Result<(), LogError> {
        if self.inner.log.supports_versions() {
            return Ok(());
        }
        for e in events {
            if crate::log::expected_version(e)?.is_some() {
                return Err(LogError::Unsupported {
                    backend: self.inner.log.backend_name(),
                    what: format!(
                        "{}: this backend cannot check a subject's version atomically with \
                         the append (the embedded log can)",
                        crate::log::EXPECTED_VERSION
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Appends; if a topic is missing and `create` is set, creates the missing topics with
/// that many partitions and appends again.
async fn append_creating(
    log: &dyn EventLog,
    topics: &[String],
    events: &[Event],
    create: Option<u32>,
) -> Result<Vec<Receipt>, LogError> {
    match (log.append(topics, events).await, create) {
        (Err(LogError::TopicNotFound(_)), Some(partitions)) => {
            for t in topics {
                match log
                    .create_topic(TopicSpec::new(t.clone(), partitions))
                    .await
                {
                    Ok(_) | Err(LogError::TopicExists(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            log.append(topics, events).await
        }
        (result, _) => result,
    }
}

static DEFAULT_BUS: RwLock<Option<EventBus>> = RwLock::new(None);

/// Makes `bus` the process-wide default used by [`publish_event`] and [`get_event_bus`].
pub fn set_event_bus(bus: EventBus) {
    *DEFAULT_BUS.write_locked() = Some(bus);
}

/// The process-wide default bus, if one was set.
pub fn get_event_bus() -> Option<EventBus> {
    DEFAULT_BUS.read_locked().clone()
}

/// Publishes a new business event (`Event::new(event_type, data)`) to `topics` on the
/// process-wide default bus — the seed's `publish_event(event_type=..., data=..., topics=[...])`.
pub async fn publish_event(
    event_type: &str,
    data: Value,
    topics: &[&str],
) -> Result<Vec<Receipt>, BusError> {
    let bus = get_event_bus().ok_or(BusError::NoDefaultBus)?;
    bus.publish(Event::new(event_type, data), topics).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::{LoggingLog, NoopLog};
    use serde_json::json;

    fn deal(n: u32) -> Event {
        Event::new(
            "deal.won",
            json!({"deal_id": format!("deal-{n}"), "amount": "10.00"}),
        )
        .subject(format!("deal-{n}"))
        .source("urn:test")
    }

    #[tokio::test]
    async fn publish_to_several_topics_and_tap_records_once() {
        let log = MemoryLog::new();
        let tap = MemoryLog::new();
        let bus = EventBus::builder()
            .log(Arc::new(log.clone()))
            .tap(Arc::new(tap.clone()))
            .auto_create_topics(2)
            .build();
        let r = bus
            .publish(deal(1), &["deals", "sales"])
            .await
            .expect("publish");
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].topic.as_str(), r[1].topic.as_str()),
            ("deals", "sales")
        );
        assert_eq!(log.events_of_type("deal.won").len(), 1);
        assert_eq!(
            tap.events().len(),
            1,
            "the tap sees each published event once"
        );
        let again = bus
            .publish(deal(1).id(r[0].id.clone()), &["deals"])
            .await
            .expect("again");
        assert!(again[0].duplicate);
    }

    #[tokio::test]
    async fn missing_topic_fails_without_auto_create() {
        let bus = EventBus::builder().build();
        match bus.publish(deal(1), &["nope"]).await {
            Err(BusError::Log(LogError::TopicNotFound(t))) => assert_eq!(t, "nope"),
            other => panic!("expected topic_not_found, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn invalid_event_is_rejected_and_nothing_stored() {
        let log = MemoryLog::new();
        let bus = EventBus::builder()
            .log(Arc::new(log.clone()))
            .auto_create_topics(1)
            .build();
        let bad = deal(1).extension("Bad-Name", "x");
        let err = bus.publish(bad, &["deals"]).await.expect_err("invalid");
        assert_eq!(err.code(), "invalid_event");
        assert!(err.to_string().contains("Bad-Name"), "{err}");
        assert!(log.events().is_empty());
    }

    #[tokio::test]
    async fn noop_and_logging_backends_accept_and_store_nothing() {
        for log in [
            Arc::new(NoopLog::default()) as Arc<dyn EventLog>,
            Arc::new(LoggingLog::default()),
        ] {
            let bus = EventBus::builder().log(Arc::clone(&log)).build();
            let r = bus
                .publish(deal(2), &["deals", "notifications"])
                .await
                .expect("publish");
            assert_eq!(r.len(), 2, "{}", log.backend_name());
            assert!(log.read("deals", 0, 0, 10).await.expect("read").is_empty());
            assert!(bus
                .publish(deal(3).extension("BAD", 1), &["deals"])
                .await
                .is_err());
        }
    }

    #[tokio::test]
    async fn default_bus_publish_event() {
        // The only test touching the process-wide default.
        let log = MemoryLog::new();
        set_event_bus(
            EventBus::builder()
                .log(Arc::new(log.clone()))
                .auto_create_topics(1)
                .build(),
        );
        let r = publish_event(
            "lead.converted",
            json!({"lead_id": "l-1", "account_id": "a-1"}),
            &["leads", "conversions"],
        )
        .await
        .expect("publish_event");
        assert_eq!(r.len(), 2);
        let got = log.events_of_type("lead.converted");
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].data_json().and_then(|d| d["lead_id"].as_str()),
            Some("l-1")
        );
        assert!(get_event_bus().is_some());
    }
}

#[cfg(test)]
mod validator_tests {
    use super::*;
    use async_trait::async_trait;
    use serde_json::json;
    use std::sync::Mutex;

    /// Rejects events without `data.amount` (and, when a schema is required, events of
    /// types other than `deal.won`); stamps accepted events with a `dataschema`.
    #[derive(Default)]
    struct FakeValidator {
        seen_require: Mutex<Vec<bool>>,
    }

    #[async_trait]
    impl PublishValidator for FakeValidator {
        async fn validate(
            &self,
            event: &mut Event,
            require_schema: bool,
        ) -> Result<(), InvalidEvent> {
            self.seen_require.lock().expect("seen").push(require_schema);
            let mut violations = Vec::new();
            if require_schema && event.ty != "deal.won" {
                violations.push(Violation {
                    attribute: "type".into(),
                    message: "no schema".into(),
                });
            }
            if event.data_json().and_then(|d| d.get("amount")).is_none() {
                violations.push(Violation {
                    attribute: "data/amount".into(),
                    message: "required".into(),
                });
                violations.push(Violation {
                    attribute: "data/currency".into(),
                    message: "required".into(),
                });
            }
            if violations.is_empty() {
                event.dataschema = Some("urn:test:schema:1".into());
                Ok(())
            } else {
                Err(InvalidEvent { violations })
            }
        }
    }

    fn bus_with(validator: Arc<FakeValidator>, log: &MemoryLog) -> EventBus {
        EventBus::builder()
            .log(Arc::new(log.clone()))
            .validator(validator)
            .auto_create_topics(1)
            .build()
    }

    fn event(ty: &str, data: Value) -> Event {
        Event::new(ty, data).source("urn:test").subject("deal-1")
    }

    #[tokio::test]
    async fn accepted_event_is_stamped_by_the_validator() {
        let log = MemoryLog::new();
        let validator = Arc::new(FakeValidator::default());
        let bus = bus_with(Arc::clone(&validator), &log);
        bus.publish(event("deal.won", json!({"amount": "1.00"})), &["deals"])
            .await
            .expect("publish");
        let stored = log.events();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].dataschema.as_deref(), Some("urn:test:schema:1"));
        assert_eq!(*validator.seen_require.lock().expect("lock"), vec![false]);
    }

    #[tokio::test]
    async fn any_violation_in_a_batch_writes_nothing_and_lists_everything() {
        let log = MemoryLog::new();
        let bus = bus_with(Arc::new(FakeValidator::default()), &log);
        let batch = vec![
            event("deal.won", json!({"amount": "1.00"})),
            event("deal.won", json!({})),
            event("deal.lost", json!({})),
        ];
        let err = bus
            .publish_batch(batch, &["deals", "sales"])
            .await
            .expect_err("rejected");
        assert_eq!(err.code(), "schema_violation");
        let BusError::Validation(invalid) = err else {
            panic!("expected a validation error, got {err:?}");
        };
        let attrs: Vec<&str> = invalid
            .violations
            .iter()
            .map(|v| v.attribute.as_str())
            .collect();
        assert_eq!(
            attrs,
            [
                "events[1].data/amount",
                "events[1].data/currency",
                "events[2].data/amount",
                "events[2].data/currency"
            ]
        );
        assert!(log.events().is_empty(), "nothing may be written");
        assert!(log.list_topics().await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn single_event_violations_keep_their_attribute_names() {
        let log = MemoryLog::new();
        let bus = bus_with(Arc::new(FakeValidator::default()), &log);
        let err = bus
            .publish(event("deal.won", json!({})), &["deals"])
            .await
            .expect_err("rejected");
        let BusError::Validation(invalid) = &err else {
            panic!("expected a validation error, got {err:?}");
        };
        assert_eq!(invalid.violations[0].attribute, "data/amount");
        assert!(err.to_string().contains("data/currency"), "{err}");
    }

    #[tokio::test]
    async fn require_schemas_is_true_when_any_target_topic_requires_them() {
        let log = MemoryLog::new();
        let validator = Arc::new(FakeValidator::default());
        let bus = bus_with(Arc::clone(&validator), &log);
        bus.set_require_schemas("strict", true);
        bus.set_require_schemas("lenient", false);
        assert!(bus.requires_schemas("strict"));
        assert!(!bus.requires_schemas("lenient"));
        assert!(!bus.requires_schemas("never-recorded"));
        let lost = || event("deal.lost", json!({"amount": "1.00"}));
        bus.publish(lost(), &["lenient"]).await.expect("lenient");
        let err = bus
            .publish(lost(), &["lenient", "strict"])
            .await
            .expect_err("strict topic requires a schema");
        assert_eq!(err.code(), "schema_violation");
        bus.set_require_schemas("strict", false);
        bus.publish(lost(), &["strict"]).await.expect("relaxed");
        assert_eq!(
            *validator.seen_require.lock().expect("lock"),
            vec![false, true, false]
        );
        assert_eq!(log.events().len(), 2);
    }

    #[tokio::test]
    async fn without_a_validator_nothing_is_checked() {
        let log = MemoryLog::new();
        let bus = EventBus::builder()
            .log(Arc::new(log.clone()))
            .auto_create_topics(1)
            .build();
        bus.set_require_schemas("deals", true);
        bus.publish(event("deal.won", json!({})), &["deals"])
            .await
            .expect("no validator, no check");
        assert_eq!(log.events()[0].dataschema, None);
    }
}
