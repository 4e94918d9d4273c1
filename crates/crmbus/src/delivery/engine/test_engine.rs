//! Test setup shared by the engine's unit tests: an engine over a one-partition topic
//! already holding a run of events.

use std::sync::Arc;

use crate::delivery::{Engine, Handler, SubscribeOptions};
use crate::{Event, EventLog, ManualClock, MemoryLog, MemoryStateStore, TopicSpec};

/// An engine for group `erp` over topic `deals` (one partition, in memory) holding
/// `events` `deal.won` events whose data is `{"n": i}`, delivering to `handler` with
/// `options`, on a manual clock.
pub(crate) async fn engine_over_deals(
    events: usize,
    handler: Arc<dyn Handler>,
    options: SubscribeOptions,
) -> Engine {
    let log = Arc::new(MemoryLog::new());
    log.create_topic(TopicSpec::new("deals", 1))
        .await
        .expect("topic");
    let batch: Vec<Event> = (0..events)
        .map(|i| Event::new("deal.won", serde_json::json!({ "n": i })))
        .collect();
    log.append(&["deals".to_string()], &batch)
        .await
        .expect("append");
    Engine::open(
        log,
        Arc::new(MemoryStateStore::new()),
        Arc::new(ManualClock::new(1_000_000)),
        "deals",
        "erp",
        handler,
        options,
    )
    .await
    .expect("open")
}
