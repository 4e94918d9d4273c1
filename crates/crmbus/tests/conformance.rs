//! The backend conformance suite against the in-memory log. It is not persistent: each
//! case gets a fresh `MemoryLog`, and the suite keeps using it where it would reopen.

use std::sync::Arc;

use async_trait::async_trait;
use crmbus::{EventLog, LogError, MemoryLog};
use crmbus_testkit::conformance::{Features, LogFactory};

struct MemoryFactory;

#[async_trait]
impl LogFactory for MemoryFactory {
    async fn open(&self, _name: &str) -> Result<Arc<dyn EventLog>, LogError> {
        Ok(Arc::new(MemoryLog::new()))
    }
}

crmbus_testkit::conformance_tests!(MemoryFactory, Features { persistent: false });
