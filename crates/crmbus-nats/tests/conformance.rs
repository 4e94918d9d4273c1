//! The backend conformance suite against the real JetStream server: every case in a
//! namespace of its own, deleted when the case ends.

use std::sync::Arc;

use async_trait::async_trait;
use crmbus::{EventLog, LogError};
use crmbus_nats::{NatsLog, NatsOptions};
use crmbus_testkit::conformance::{Features, LogFactory};

mod common;

/// Opens `NatsLog`s whose namespace is derived from the case's storage name (so that a
/// reopen finds the same streams) plus this process and time.
#[derive(Default)]
struct NatsFactory {
    run: String,
    cleanup: common::Cleanup,
}

impl NatsFactory {
    fn new() -> Self {
        NatsFactory {
            run: common::unique_prefix("cf"),
            cleanup: common::Cleanup::default(),
        }
    }

    fn prefix(&self, name: &str) -> String {
        let h = crmbus::dedupe_hash(&self.run, name);
        let tag: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(24)
            .collect();
        format!("t-{tag}-{}-{h:016x}", std::process::id())
    }
}

#[async_trait]
impl LogFactory for NatsFactory {
    async fn open(&self, name: &str) -> Result<Arc<dyn EventLog>, LogError> {
        let prefix = self.prefix(name);
        self.cleanup.add(&prefix);
        Ok(Arc::new(
            NatsLog::connect(&common::url(), &prefix, NatsOptions::default()).await?,
        ))
    }
}

crmbus_testkit::conformance_tests!(NatsFactory::new(), Features { persistent: true });
