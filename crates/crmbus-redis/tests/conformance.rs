//! The backend conformance suite against a real Redis: every case gets its own key prefix
//! (`crmbus-test:conformance:<pid>-<time>-<n>:<case name>`), deleted when the case ends.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use crmbus::{EventLog, LogError};
use crmbus_redis::RedisLog;
use crmbus_testkit::conformance::{Features, LogFactory};

struct RedisFactory {
    base: String,
    _cleanup: common::Cleanup,
}

impl RedisFactory {
    fn new() -> Self {
        let base = common::unique_prefix("conformance");
        RedisFactory {
            _cleanup: common::Cleanup::new(&base),
            base,
        }
    }
}

#[async_trait]
impl LogFactory for RedisFactory {
    async fn open(&self, name: &str) -> Result<Arc<dyn EventLog>, LogError> {
        let prefix = format!("{}:{name}", self.base);
        Ok(Arc::new(RedisLog::open(&common::url(), &prefix).await?))
    }
}

crmbus_testkit::conformance_tests!(RedisFactory::new(), Features { persistent: true });
