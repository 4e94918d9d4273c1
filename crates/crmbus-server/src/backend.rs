//! The storage the server runs on, typed ([`Storage`]), and opening it: the one place
//! that knows every backend. Redis, NATS and Kafka are behind the `redis`, `nats` and
//! `kafka` cargo features (on by default); a build without one refuses a configuration
//! that names it.

use std::path::PathBuf;
use std::sync::Arc;

use crmbus::{
    LogError, LoggingLog, MemoryLog, MemoryStateStore, NoopLog, OpenedBackend, StateStore,
};
use crmbus_embedded::{Durability, EmbeddedLog, EmbeddedOptions};

/// The storage the server runs on: each backend with exactly what it needs (built from
/// `[storage]` by [`crate::config::StorageSection::resolve`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Storage {
    /// The embedded log in `data_dir`.
    Embedded {
        /// Its directory.
        data_dir: PathBuf,
        /// When a publish is acknowledged.
        durability: Durability,
        /// How long a republished event (same `source` and `id`) is recognised as a
        /// duplicate.
        dedupe_window: std::time::Duration,
        /// Bytes of records the commit file holds before a checkpoint; 0 turns it off
        /// ([`EmbeddedOptions::commit_file_bytes`]).
        commit_file_bytes: u64,
    },
    /// In memory, lost at exit.
    Memory,
    /// Accepts and forgets.
    Noop,
    /// Logs each event and forgets it.
    Logging {
        /// The top-level data fields each line shows (the others `[redacted]`); none:
        /// no data.
        data_fields: Vec<String>,
    },
    /// Redis Streams.
    Redis {
        /// `redis://…`.
        url: String,
        /// Key prefix.
        prefix: String,
    },
    /// NATS JetStream.
    Nats {
        /// `nats://…`.
        url: String,
        /// Stream and bucket prefix.
        prefix: String,
    },
    /// Kafka, with the delivery state in PostgreSQL.
    Kafka {
        /// The brokers, `host:port[,host:port…]`.
        bootstrap_servers: String,
        /// The PostgreSQL database of the delivery state.
        state_url: String,
        /// Topic and state namespace prefix.
        prefix: String,
        /// How long a republished event (same `source` and `id`) is absorbed.
        dedupe_window: std::time::Duration,
        /// Extra librdkafka settings.
        settings: Vec<(String, String)>,
    },
}

impl Storage {
    /// An error naming the cargo feature when this build cannot open this storage.
    pub fn check_built(&self) -> Result<(), String> {
        let missing = match self {
            Storage::Redis { .. } if !cfg!(feature = "redis") => "redis",
            Storage::Nats { .. } if !cfg!(feature = "nats") => "nats",
            Storage::Kafka { .. } if !cfg!(feature = "kafka") => "kafka",
            _ => return Ok(()),
        };
        Err(format!(
            "storage.backend = \"{missing}\": this build has no {missing} backend (build with the `{missing}` cargo feature)"
        ))
    }

    /// Where it stores, for people: the directory or the server URL, if any.
    pub fn location(&self) -> Option<String> {
        match self {
            Storage::Embedded { data_dir, .. } => Some(data_dir.display().to_string()),
            Storage::Redis { url, .. } | Storage::Nats { url, .. } => Some(url.clone()),
            Storage::Kafka {
                bootstrap_servers, ..
            } => Some(bootstrap_servers.clone()),
            Storage::Memory | Storage::Noop | Storage::Logging { .. } => None,
        }
    }
}

/// Opens `storage`.
pub async fn open_backend(storage: &Storage) -> Result<OpenedBackend, LogError> {
    let memory_state = || Arc::new(MemoryStateStore::new()) as Arc<dyn StateStore>;
    Ok(match storage {
        Storage::Embedded {
            data_dir,
            durability,
            dedupe_window,
            commit_file_bytes,
        } => {
            let opts = EmbeddedOptions {
                durability: *durability,
                dedupe_window: *dedupe_window,
                commit_file_bytes: *commit_file_bytes,
                ..EmbeddedOptions::default()
            };
            let dir = data_dir.clone();
            let log = tokio::task::spawn_blocking(move || EmbeddedLog::open(&dir, opts))
                .await
                .map_err(|e| LogError::backend_from("opening the embedded log", e))?
                .map_err(|e| match e {
                    // Name the directory: an I/O error alone does not say where.
                    LogError::Io(io) => LogError::backend_from(
                        format!("opening the embedded log in {}", data_dir.display()),
                        io,
                    ),
                    other => other,
                })?;
            let log = Arc::new(log);
            OpenedBackend {
                state: log.state_store(),
                log,
            }
        }
        Storage::Memory => OpenedBackend {
            log: Arc::new(MemoryLog::new()),
            state: memory_state(),
        },
        Storage::Noop => OpenedBackend {
            log: Arc::new(NoopLog::default()),
            state: memory_state(),
        },
        Storage::Logging { data_fields } => OpenedBackend {
            log: Arc::new(LoggingLog::showing_data_fields(data_fields.clone())),
            state: memory_state(),
        },
        #[cfg(feature = "redis")]
        Storage::Redis { url, prefix } => crmbus_redis::open(url, prefix).await?,
        #[cfg(feature = "nats")]
        Storage::Nats { url, prefix } => crmbus_nats::open(url, prefix).await?,
        #[cfg(feature = "kafka")]
        Storage::Kafka {
            bootstrap_servers,
            state_url,
            prefix,
            dedupe_window,
            settings,
        } => {
            let opts = crmbus_kafka::KafkaOptions {
                dedupe_window: *dedupe_window,
                client_settings: settings.clone(),
                ..crmbus_kafka::KafkaOptions::default()
            };
            crmbus_kafka::open(bootstrap_servers, state_url, prefix, opts).await?
        }
        #[cfg(not(all(feature = "redis", feature = "nats", feature = "kafka")))]
        other => {
            return Err(LogError::InvalidArgument(
                other.check_built().err().unwrap_or_default(),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_local_storage_opens_its_backend() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("log");
        for (storage, want) in [
            (
                Storage::Embedded {
                    data_dir: data_dir.clone(),
                    durability: Durability::Fsync,
                    dedupe_window: crmbus::DEFAULT_DEDUPE_WINDOW,
                    commit_file_bytes: crmbus_embedded::commit_file::DEFAULT_CAPACITY,
                },
                "embedded",
            ),
            (Storage::Memory, "memory"),
            (Storage::Noop, "noop"),
            (
                Storage::Logging {
                    data_fields: Vec::new(),
                },
                "logging",
            ),
        ] {
            let opened = open_backend(&storage).await.expect("open");
            assert_eq!(opened.log.backend_name(), want);
            opened.log.close().await.expect("close");
        }
        assert!(data_dir.join("meta.redb").exists());
    }

    /// `storage.commit_file_bytes` reaches the log: a batch over several partitions is
    /// made durable by a record in `commit.wal` with the default, and by fsyncing each
    /// partition's file with `0` (the commit file keeps no record).
    #[tokio::test]
    async fn commit_file_bytes_reaches_the_embedded_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sizes = Vec::new();
        for commit_file_bytes in [crmbus_embedded::commit_file::DEFAULT_CAPACITY, 0] {
            let data_dir = dir.path().join(format!("log-{commit_file_bytes}"));
            let storage = Storage::Embedded {
                data_dir: data_dir.clone(),
                durability: Durability::Fsync,
                dedupe_window: crmbus::DEFAULT_DEDUPE_WINDOW,
                commit_file_bytes,
            };
            let opened = open_backend(&storage).await.expect("open");
            opened
                .log
                .create_topic(crmbus::TopicSpec::new("deals", 4))
                .await
                .expect("topic");
            let events: Vec<crmbus::Event> = (0..16)
                .map(|i| {
                    crmbus::Event::new("deal.won", serde_json::json!({ "n": i }))
                        .subject(format!("deal-{i}"))
                })
                .collect();
            let receipts = opened
                .log
                .append(&["deals".to_string()], &events)
                .await
                .expect("append");
            let partitions: std::collections::BTreeSet<u32> =
                receipts.iter().map(|r| r.partition).collect();
            assert!(partitions.len() > 1, "the batch spans partitions");
            let wal = std::fs::metadata(data_dir.join("commit.wal")).map_or(0, |m| m.len());
            sizes.push(wal);
            opened.log.close().await.expect("close");
        }
        let header = 4096;
        assert!(
            sizes[0] > header,
            "a record in commit.wal by default: {sizes:?}"
        );
        assert!(
            sizes[1] <= header,
            "no record with commit_file_bytes = 0: {sizes:?}"
        );
    }
}
