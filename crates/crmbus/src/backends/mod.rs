//! The seed's lightweight backends: [`NoopLog`] (accepts, stores nothing) and
//! [`LoggingLog`] (one `tracing` line per event, stores nothing). Both can stand in for the
//! real log in development, or sit beside it as taps of an [`EventBus`](crate::EventBus).

mod noop;

pub use noop::{DiscardingLog, LoggingLog, NoopLog};

/// Which storage backend a bus runs on, as named in configuration
/// (`backend = "embedded" | "memory" | "noop" | "logging"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The durable embedded log (crate `crmbus-embedded`).
    #[default]
    Embedded,
    /// [`crate::MemoryLog`]: everything in memory, lost at exit.
    Memory,
    /// [`NoopLog`]: accepts and forgets.
    Noop,
    /// [`LoggingLog`]: logs each event and forgets it.
    Logging,
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "embedded" => Ok(BackendKind::Embedded),
            "memory" => Ok(BackendKind::Memory),
            "noop" => Ok(BackendKind::Noop),
            "logging" => Ok(BackendKind::Logging),
            other => Err(format!(
                "unknown backend '{other}' (expected embedded, memory, noop or logging)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_kind_parses_config_names() {
        assert_eq!("noop".parse::<BackendKind>(), Ok(BackendKind::Noop));
        assert_eq!("logging".parse::<BackendKind>(), Ok(BackendKind::Logging));
        assert_eq!("memory".parse::<BackendKind>(), Ok(BackendKind::Memory));
        assert_eq!("embedded".parse::<BackendKind>(), Ok(BackendKind::Embedded));
        let err = "kafka2".parse::<BackendKind>().unwrap_err();
        assert!(err.contains("kafka2"), "{err}");
    }
}
