//! The backend conformance suite against the embedded log (fsync durability, small
//! segments so that rolling and retention are exercised).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use crmbus::{EventLog, LogError};
use crmbus_embedded::{EmbeddedLog, EmbeddedOptions};
use crmbus_testkit::conformance::{Features, LogFactory};

struct EmbeddedFactory {
    root: tempfile::TempDir,
}

impl EmbeddedFactory {
    fn new() -> Self {
        EmbeddedFactory {
            root: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }
}

#[async_trait]
impl LogFactory for EmbeddedFactory {
    async fn open(&self, name: &str) -> Result<Arc<dyn EventLog>, LogError> {
        let opts = EmbeddedOptions {
            segment_bytes: 8 * 1024,
            index_interval_bytes: 1024,
            retention_interval: None,
            ..EmbeddedOptions::default()
        };
        Ok(Arc::new(EmbeddedLog::open(self.path(name), opts)?))
    }
}

crmbus_testkit::conformance_tests!(EmbeddedFactory::new(), Features { persistent: true });
