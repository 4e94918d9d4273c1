//! Choosing a backend by its configuration name (`backend = "embedded" | "memory" |
//! "noop" | "logging"`): the one place that knows every kind available to a single node.

use std::path::Path;
use std::sync::Arc;

use crmbus::{
    BackendKind, LogError, LoggingLog, MemoryLog, MemoryStateStore, NoopLog, OpenedBackend,
    StateStore,
};

use crate::{EmbeddedLog, EmbeddedOptions};

/// Opens the backend `kind`; `dir` and `opts` are used by the embedded kind only.
pub fn open_backend(
    kind: BackendKind,
    dir: &Path,
    opts: EmbeddedOptions,
) -> Result<OpenedBackend, LogError> {
    let memory_state = || Arc::new(MemoryStateStore::new()) as Arc<dyn StateStore>;
    Ok(match kind {
        BackendKind::Embedded => {
            let log = Arc::new(EmbeddedLog::open(dir, opts)?);
            OpenedBackend {
                state: log.state_store(),
                log,
            }
        }
        BackendKind::Memory => OpenedBackend {
            log: Arc::new(MemoryLog::new()),
            state: memory_state(),
        },
        BackendKind::Noop => OpenedBackend {
            log: Arc::new(NoopLog::default()),
            state: memory_state(),
        },
        BackendKind::Logging => OpenedBackend {
            log: Arc::new(LoggingLog::default()),
            state: memory_state(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_opens_its_backend() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, want) in [
            ("embedded", "embedded"),
            ("memory", "memory"),
            ("noop", "noop"),
            ("logging", "logging"),
        ] {
            let kind: BackendKind = name.parse().expect("kind");
            let sub = dir.path().join(name);
            let opened = open_backend(kind, &sub, EmbeddedOptions::default()).expect("open");
            assert_eq!(opened.log.backend_name(), want);
            assert_eq!(sub.join("meta.redb").exists(), name == "embedded");
        }
    }
}
