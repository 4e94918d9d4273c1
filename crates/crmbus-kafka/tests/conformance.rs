//! The backend conformance suite against the real broker: every case in a namespace of its
//! own, deleted when the case ends.

use std::sync::Arc;

use async_trait::async_trait;
use crmbus::{EventLog, LogError};
use crmbus_kafka::KafkaLog;
use crmbus_postgres::PgStateStore;
use crmbus_testkit::conformance::{Features, LogFactory};

mod common;

/// Opens `KafkaLog`s whose namespace is derived from the case's storage name (so that a
/// reopen finds the same topics) plus this run.
struct KafkaFactory {
    run: String,
    cleanup: common::Cleanup,
}

impl KafkaFactory {
    fn new() -> Self {
        KafkaFactory {
            run: common::unique_prefix("cf"),
            cleanup: common::Cleanup::default(),
        }
    }

    fn prefix(&self, name: &str) -> String {
        let h = crmbus::dedupe_hash(&self.run, name);
        let tag: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(16)
            .collect();
        format!("t-{tag}-{}-{h:016x}", std::process::id())
    }
}

#[async_trait]
impl LogFactory for KafkaFactory {
    async fn open(&self, name: &str) -> Result<Arc<dyn EventLog>, LogError> {
        let prefix = self.prefix(name);
        self.cleanup.add(&prefix);
        let state = PgStateStore::connect(&common::state_url(), &prefix).await?;
        Ok(Arc::new(
            KafkaLog::connect(&common::bootstrap(), state, common::options()).await?,
        ))
    }
}

crmbus_testkit::conformance_tests!(KafkaFactory::new(), Features { persistent: true });
