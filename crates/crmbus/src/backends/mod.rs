//! The seed's lightweight backends: [`NoopLog`] (accepts, stores nothing) and
//! [`LoggingLog`] (one `tracing` line per event, stores nothing). Both can stand in for the
//! real log in development, or sit beside it as taps of an [`EventBus`](crate::EventBus).

mod noop;

pub use noop::{DiscardingLog, LoggingLog, NoopLog};

/// Which storage backend a bus runs on, as named in configuration
/// (`backend = "embedded" | "memory" | "noop" | "logging" | "redis" | "nats" | "kafka"`): the one
/// list of backends. Whoever opens backends matches on it, so a new kind is a compile
/// error everywhere it must be handled.
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
    /// Redis Streams (crate `crmbus-redis`).
    Redis,
    /// NATS JetStream (crate `crmbus-nats`).
    Nats,
    /// Kafka, with the delivery state in PostgreSQL (crate `crmbus-kafka`).
    Kafka,
}

impl BackendKind {
    /// Every kind, in the order configuration documents them.
    pub const ALL: [BackendKind; 7] = [
        BackendKind::Embedded,
        BackendKind::Memory,
        BackendKind::Noop,
        BackendKind::Logging,
        BackendKind::Redis,
        BackendKind::Nats,
        BackendKind::Kafka,
    ];

    /// The name configuration uses.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Embedded => "embedded",
            BackendKind::Memory => "memory",
            BackendKind::Noop => "noop",
            BackendKind::Logging => "logging",
            BackendKind::Redis => "redis",
            BackendKind::Nats => "nats",
            BackendKind::Kafka => "kafka",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BackendKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = BackendKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown backend '{s}' (expected {})", names.join(", "))
            })
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
        assert_eq!("redis".parse::<BackendKind>(), Ok(BackendKind::Redis));
        assert_eq!("nats".parse::<BackendKind>(), Ok(BackendKind::Nats));
        assert_eq!("kafka".parse::<BackendKind>(), Ok(BackendKind::Kafka));
        for k in BackendKind::ALL {
            assert_eq!(k.as_str().parse::<BackendKind>(), Ok(k));
            assert_eq!(
                serde_json::to_value(k).ok(),
                Some(serde_json::json!(k.as_str()))
            );
        }
        let err = "kafka2".parse::<BackendKind>().unwrap_err();
        assert!(err.contains("kafka2"), "{err}");
    }
}
