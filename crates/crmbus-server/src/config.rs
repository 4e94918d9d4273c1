//! Server configuration: one TOML file whose every key can be overridden by an environment
//! variable `CRMBUS_<SECTION>_<KEY>` (for example `CRMBUS_SERVER_LISTEN`), and whose unknown
//! keys are errors naming the key.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:7480"      # address to listen on
//! max_body_bytes = 1048576       # larger request bodies get 413
//! auto_create_topics = false     # publishing to a missing topic creates it
//! default_partitions = 4         # partitions of topics created without a count
//! stream_buffer = 1024           # events a live stream may queue for a slow client
//! shutdown_timeout_ms = 10000    # how long a graceful stop waits for requests in flight
//! slow_client_timeout_ms = 5000  # a live client whose queue stays full this long is dropped
//! tls_cert = ""                  # PEM certificate chain: serve HTTPS (with tls_key); SIGHUP reloads
//! tls_key = ""                   # its PEM private key
//!
//! [storage]
//! backend = "embedded"           # embedded | memory | noop | logging | redis | nats | kafka
//!                                # (redis, nats and kafka: cargo features, on by default)
//! data_dir = "./crmbus-data"     # embedded: where the log lives
//! durability = "fsync"           # embedded: fsync (default) | os
//! url = ""                       # redis://127.0.0.1:6379 or nats://127.0.0.1:4222
//! prefix = "crmbus"              # redis/nats/kafka: key, stream, topic and state name prefix
//! bootstrap_servers = ""         # kafka: the brokers, host:port[,host:port…]
//! state_url = ""                 # kafka: PostgreSQL for delivery state, offsets and dedupe
//! kafka_settings = ""            # kafka: extra librdkafka settings, "key=value,key=value"
//! dedupe_window_ms = 120000      # embedded/kafka: how long a republished (source, id) is absorbed
//! commit_file_bytes = 8388608    # embedded: bytes of records commit.wal holds before a checkpoint (64 KiB-1 GiB; 0: off)
//! log_data_fields = ""           # logging: data fields shown in each line (others [redacted]); none by default
//!
//! [schemas]
//! catalog = true                 # load the built-in CRM event catalog at start
//! catalog_dir = ""               # also load <type>/<n>.json files from this directory
//! validate = true                # validate events whose type has a schema at publish
//!
//! [cluster]                      # servers sharing a Redis or NATS backend act as one bus
//! enabled = true                 # on for backends with leases (redis, nats)
//! lease_ttl_ms = 5000            # a dead server's partitions move within this
//! advertise_url = ""             # how other servers reach this one (default http://<listen>)
//!
//! [auth]
//! mode = "auto"                  # auto (keys once one exists; required off loopback) | keys | none
//! stream_recheck_ms = 5000       # how often a live stream checks its key still works
//!
//! [limits]                       # 0 turns a limit off (the default)
//! key_requests_per_second = 0    # each API key's sustained request rate (429 over it)
//! key_burst = 0                  # requests at once above the rate (0: a second's worth)
//! topic_events_per_second = 0    # each topic's sustained event rate, whoever publishes
//! topic_burst = 0                # events at once above the rate; a larger batch is 413
//!
//! [audit]
//! retention_days = 90            # 0 keeps every entry
//! auth_failure_burst = 5         # refused requests from one address in a minute that make an entry
//!
//! [tracing]                      # OpenTelemetry export of crmbus's spans; off by default
//! otlp_endpoint = ""             # e.g. http://127.0.0.1:4318/v1/traces (OTLP over HTTP)
//! service_name = "crmbus"        # the service.name of the exported spans
//!
//! [[outbox]]                     # any number: relay a PostgreSQL outbox into this bus
//! name = "crm"                   # the `outbox` label of the metrics (default "default")
//! database_url = "postgres://app@127.0.0.1:5432/crm"
//! batch_size = 256
//! poll_interval_ms = 1000        # polling when no NOTIFY arrives
//! retention_hours = 168          # published rows are deleted after this
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crmbus::BackendKind;
use crmbus_embedded::Durability;
use serde::{Deserialize, Serialize};

use crate::backend::Storage;
/// `[push]` is the push targets' own section, kept beside them.
pub use crate::push::PushSection;
/// `[audit]` and `[limits]` are kept beside what they configure.
pub use crate::{audit::AuditSection, rate_limit::LimitsSection};

/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7480";

/// A configuration problem: unreadable file, bad TOML, unknown key, bad value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML (or a value) is not valid; the message names the key.
    #[error("invalid configuration{origin}: {message}")]
    Invalid {
        /// Where it came from (` in <file>`), or empty.
        origin: String,
        /// What is wrong, naming the key.
        message: String,
    },
    /// An environment variable names a key that does not exist.
    #[error("unknown configuration key '{key}' (from environment variable {var})")]
    UnknownEnvKey {
        /// `section.key`.
        key: String,
        /// The variable.
        var: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The HTTP server.
    pub server: ServerSection,
    /// Where events are stored.
    pub storage: StorageSection,
    /// The schema registry.
    pub schemas: SchemasSection,
    /// Several servers over one shared backend.
    pub cluster: ClusterSection,
    /// Push targets (webhooks, Redis Pub/Sub) and what they may reach.
    pub push: PushSection,
    /// When requests need an API key.
    pub auth: AuthSection,
    /// Rate limits per API key and per topic.
    pub limits: LimitsSection,
    /// The audit log's retention, and when refused requests make an entry.
    pub audit: AuditSection,
    /// OpenTelemetry export of the spans (publish, append, deliver, webhook).
    pub tracing: TracingSection,
    /// Outbox relays run inside the server, one per `[[outbox]]` section (a database whose
    /// `crmbus_outbox` rows the server publishes into its own bus). Set in the file only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<OutboxSection>,
}

/// `[tracing]`: where crmbus's spans go (OTLP over HTTP); nowhere by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingSection {
    /// The OTLP/HTTP traces endpoint (`http://collector:4318/v1/traces`); empty: no
    /// export.
    pub otlp_endpoint: String,
    /// The `service.name` resource of the spans.
    pub service_name: String,
}

impl Default for TracingSection {
    fn default() -> Self {
        TracingSection {
            otlp_endpoint: String::new(),
            service_name: "crmbus".to_string(),
        }
    }
}

impl TracingSection {
    /// Whether spans are exported.
    pub fn enabled(&self) -> bool {
        !self.otlp_endpoint.is_empty()
    }

    fn check(&self) -> Result<(), String> {
        if self.enabled()
            && !url::Url::parse(&self.otlp_endpoint)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        {
            return Err(format!(
                "tracing.otlp_endpoint '{}' is not an http(s) URL (e.g. http://127.0.0.1:4318/v1/traces)",
                self.otlp_endpoint
            ));
        }
        if self.service_name.trim().is_empty() {
            return Err("tracing.service_name must not be empty".into());
        }
        Ok(())
    }
}

/// `[[outbox]]`: a PostgreSQL database whose outbox the server relays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxSection {
    /// A name for logs and metrics (the `outbox` label); default `default`.
    pub name: String,
    /// `postgres://user@host:port/db` (required).
    pub database_url: String,
    /// Rows claimed per step.
    pub batch_size: i64,
    /// How often to look for rows when no notification arrives, in milliseconds.
    pub poll_interval_ms: u64,
    /// How long published rows are kept before they are deleted, in hours.
    pub retention_hours: u64,
}

impl Default for OutboxSection {
    fn default() -> Self {
        OutboxSection {
            name: "default".into(),
            database_url: String::new(),
            batch_size: 256,
            poll_interval_ms: 1000,
            retention_hours: 168,
        }
    }
}

/// `[cluster]`: servers sharing one Redis or NATS backend act as one bus (each subscription
/// partition driven by one live server at a time; definitions shared).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// On by default for a backend with leases (Redis, NATS): a single server is a cluster of
    /// one. `false` runs every subscription on this server alone (only safe when no other
    /// server shares the backend).
    pub enabled: bool,
    /// How long a server's leases last without renewal: a dead server's partitions move
    /// to the others within this (milliseconds, at least 1000).
    pub lease_ttl_ms: u64,
    /// The URL other servers reach this one at (acks of its deliveries are forwarded
    /// there); default `http://<listen address>`, which must then not be a wildcard.
    pub advertise_url: String,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            enabled: true,
            lease_ttl_ms: 5000,
            advertise_url: String::new(),
        }
    }
}

/// `[auth]`: when requests need an API key (`Authorization: Bearer crmbus_…`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// `auto` (default): once a key that works exists, and a server listening off
    /// loopback refuses to start without one; `keys`: always; `none`: never (a warning
    /// at start when listening off loopback).
    #[serde(deserialize_with = "named::auth_mode")]
    pub mode: AuthMode,
    /// How often an open live stream checks that its key still works (or, opened without
    /// one, that the server still needs none), in milliseconds; at least 100. A key
    /// revoked on this server ends its streams at once.
    pub stream_recheck_ms: u64,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            mode: AuthMode::Auto,
            stream_recheck_ms: 5000,
        }
    }
}

/// When keys are needed (see [`AuthSection::mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Once a working key exists.
    Auto,
    /// Always, even before any key exists.
    Keys,
    /// Never.
    None,
}

/// `[schemas]`: the schema registry and validation at publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchemasSection {
    /// Load the built-in CRM event catalog at start (registered versions stay; newer
    /// catalog versions are added when compatible).
    pub catalog: bool,
    /// Also load the catalog files in this directory (`<type>/<n>.json`); empty: none.
    pub catalog_dir: PathBuf,
    /// Validate events whose type has a schema at publish (and reject violations).
    pub validate: bool,
}

impl Default for SchemasSection {
    fn default() -> Self {
        SchemasSection {
            catalog: true,
            catalog_dir: PathBuf::new(),
            validate: true,
        }
    }
}

/// `[server]`: the HTTP listener and request limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// Address to listen on; port 0 picks a free port.
    pub listen: String,
    /// Request bodies larger than this get 413.
    pub max_body_bytes: usize,
    /// Publishing to a missing topic creates it (with `default_partitions`) instead of 404.
    pub auto_create_topics: bool,
    /// Partitions of topics created without an explicit count.
    pub default_partitions: u32,
    /// Events a live stream (SSE, WebSocket) may have queued for a client; a client that
    /// falls further behind is disconnected with a reason.
    pub stream_buffer: usize,
    /// How long a graceful shutdown waits for requests in flight, in milliseconds.
    pub shutdown_timeout_ms: u64,
    /// A live client whose queue stays full this long (ms) is disconnected with a reason.
    pub slow_client_timeout_ms: u64,
    /// PEM certificate chain to serve HTTPS with (with `tls_key`); empty: plain HTTP.
    /// Read again on SIGHUP.
    pub tls_cert: PathBuf,
    /// PEM private key of `tls_cert`.
    pub tls_key: PathBuf,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: DEFAULT_LISTEN.to_string(),
            max_body_bytes: 1024 * 1024,
            auto_create_topics: false,
            default_partitions: 4,
            stream_buffer: 1024,
            shutdown_timeout_ms: 10_000,
            slow_client_timeout_ms: 5_000,
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
        }
    }
}

/// `[storage]`: which backend and where, as the file writes it (every key at one level;
/// each backend reads the keys it needs). [`StorageSection::resolve`] turns it into the
/// typed [`Storage`] the server opens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// `embedded` (default), `memory`, `noop`, `logging`, `redis`, `nats` or `kafka`.
    #[serde(deserialize_with = "named::backend")]
    pub backend: BackendKind,
    /// Directory of the embedded log.
    pub data_dir: PathBuf,
    /// Durability of the embedded log: `fsync` (every acknowledged publish is on disk) or
    /// `os` (in the page cache; lost on power loss).
    #[serde(deserialize_with = "named::durability")]
    pub durability: DurabilitySetting,
    /// Server URL for the `redis` and `nats` backends.
    pub url: String,
    /// Name prefix of keys (Redis), streams (NATS) or topics and state rows (Kafka), so
    /// several installations can share one server.
    pub prefix: String,
    /// `kafka` backend: the brokers, `host:port[,host:port…]`.
    pub bootstrap_servers: String,
    /// `kafka` backend: the PostgreSQL database (`postgres://user@host:port/db`) that keeps
    /// what Kafka has no place for: delivery state, group offsets, leases, dedupe.
    pub state_url: String,
    /// `kafka` backend: further librdkafka settings for every client, comma-separated
    /// `key=value` pairs (for example `security.protocol=SASL_SSL,sasl.mechanism=PLAIN`).
    pub kafka_settings: String,
    /// Embedded and Kafka logs: how long, in milliseconds, a republished event (same `source` and
    /// `id`) is recognised and absorbed as a duplicate (default 120000, two minutes).
    pub dedupe_window_ms: u64,
    /// Embedded log with `fsync` durability: bytes of records the commit file
    /// (`commit.wal`) holds before a checkpoint (default 8388608, 8 MiB; 64 KiB to 1 GiB,
    /// or 0). A group-commit
    /// round that writes several files fsyncs one record there instead of each file; `0`
    /// turns the commit file off, so every round fsyncs each file it wrote (better on a
    /// disk limited by bandwidth rather than by flushes, since records write each byte
    /// twice).
    pub commit_file_bytes: u64,
    /// `logging` backend: the top-level fields of each event's JSON data its log line
    /// shows, comma-separated (`deal_id, amount`); every other field is `[redacted]`.
    /// Empty (the default): no data is logged.
    pub log_data_fields: String,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            backend: BackendKind::Embedded,
            data_dir: PathBuf::from("./crmbus-data"),
            durability: DurabilitySetting::Fsync,
            url: String::new(),
            prefix: "crmbus".to_string(),
            bootstrap_servers: String::new(),
            state_url: String::new(),
            kafka_settings: String::new(),
            dedupe_window_ms: crmbus::DEFAULT_DEDUPE_WINDOW.as_millis() as u64,
            commit_file_bytes: crmbus_embedded::commit_file::DEFAULT_CAPACITY,
            log_data_fields: String::new(),
        }
    }
}

/// The sizes `storage.commit_file_bytes` may take besides 0: smaller commit files
/// checkpoint on nearly every round (worse than none), larger ones go long between
/// checkpoints and are read whole into memory when a log opens after a crash.
const COMMIT_FILE_BYTES: std::ops::RangeInclusive<u64> = (64 << 10)..=(1 << 30);

/// `storage.durability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilitySetting {
    /// Every acknowledged publish is fsynced.
    Fsync,
    /// Written to the page cache only: lost on power loss, kept on a process crash.
    Os,
}

impl StorageSection {
    /// The typed storage this section names, or what is missing (naming the key).
    pub fn resolve(&self) -> Result<Storage, String> {
        let remote = |kind: BackendKind| {
            if self.url.is_empty() {
                Err(format!(
                    "storage.url is required with storage.backend = \"{kind}\""
                ))
            } else {
                Ok((self.url.clone(), self.prefix.clone()))
            }
        };
        Ok(match self.backend {
            BackendKind::Embedded => Storage::Embedded {
                data_dir: self.data_dir.clone(),
                durability: match self.durability {
                    DurabilitySetting::Fsync => Durability::Fsync,
                    DurabilitySetting::Os => Durability::Os,
                },
                dedupe_window: std::time::Duration::from_millis(self.dedupe_window_ms),
                commit_file_bytes: self.commit_file_bytes,
            },
            BackendKind::Memory => Storage::Memory,
            BackendKind::Noop => Storage::Noop,
            BackendKind::Logging => Storage::Logging {
                data_fields: self
                    .log_data_fields
                    .split(',')
                    .map(str::trim)
                    .filter(|f| !f.is_empty())
                    .map(str::to_string)
                    .collect(),
            },
            BackendKind::Redis => {
                let (url, prefix) = remote(BackendKind::Redis)?;
                Storage::Redis { url, prefix }
            }
            BackendKind::Nats => {
                let (url, prefix) = remote(BackendKind::Nats)?;
                Storage::Nats { url, prefix }
            }
            BackendKind::Kafka => {
                for (key, value) in [
                    ("bootstrap_servers", &self.bootstrap_servers),
                    ("state_url", &self.state_url),
                ] {
                    if value.trim().is_empty() {
                        return Err(format!(
                            "storage.{key} is required with storage.backend = \"kafka\""
                        ));
                    }
                }
                let mut settings = Vec::new();
                for pair in self.kafka_settings.split(',').map(str::trim) {
                    if pair.is_empty() {
                        continue;
                    }
                    match pair.split_once('=') {
                        Some((k, v)) if !k.trim().is_empty() => {
                            settings.push((k.trim().to_string(), v.trim().to_string()))
                        }
                        _ => {
                            return Err(format!(
                                "storage.kafka_settings: '{pair}' is not key=value"
                            ))
                        }
                    }
                }
                Storage::Kafka {
                    bootstrap_servers: self.bootstrap_servers.trim().to_string(),
                    state_url: self.state_url.clone(),
                    prefix: self.prefix.clone(),
                    dedupe_window: std::time::Duration::from_millis(self.dedupe_window_ms),
                    settings,
                }
            }
        })
    }
}

const SECTIONS: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "listen",
            "max_body_bytes",
            "auto_create_topics",
            "default_partitions",
            "stream_buffer",
            "shutdown_timeout_ms",
            "slow_client_timeout_ms",
            "tls_cert",
            "tls_key",
        ],
    ),
    (
        "storage",
        &[
            "backend",
            "data_dir",
            "durability",
            "url",
            "prefix",
            "bootstrap_servers",
            "state_url",
            "kafka_settings",
            "dedupe_window_ms",
            "commit_file_bytes",
            "log_data_fields",
        ],
    ),
    ("schemas", &["catalog", "catalog_dir", "validate"]),
    ("cluster", &["enabled", "lease_ttl_ms", "advertise_url"]),
    ("auth", &["mode", "stream_recheck_ms"]),
    (
        "limits",
        &[
            "key_requests_per_second",
            "key_burst",
            "topic_events_per_second",
            "topic_burst",
        ],
    ),
    ("audit", &["retention_days", "auth_failure_burst"]),
    ("tracing", &["otlp_endpoint", "service_name"]),
    (
        "push",
        &[
            "enabled",
            "allow_private_targets",
            "allowed_targets",
            "secret_overlap_ms",
            "ca_file",
        ],
    ),
];

/// Environment variables with this prefix that are not configuration keys.
const OTHER_VARIABLES: &[&str] = &[
    "CRMBUS_LOG",
    "CRMBUS_URL",
    "CRMBUS_EVENT_SOURCE",
    // `crmbus outbox …`'s database.
    "CRMBUS_OUTBOX_DATABASE_URL",
];

impl Config {
    /// Loads the configuration: the file if given (else the defaults), then the
    /// `CRMBUS_<SECTION>_<KEY>` variables of `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (text, origin) = match file {
            Some(path) => (
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?,
                format!(" in {}", path.display()),
            ),
            None => (String::new(), String::new()),
        };
        Config::parse(&text, origin, env)
    }

    /// Reads the configuration from TOML text (what [`Config::load`] reads from the file),
    /// then the `CRMBUS_<SECTION>_<KEY>` variables of `env`.
    pub fn from_toml(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Config::parse(text, String::new(), env)
    }

    /// [`Config::from_toml`], with `origin` (` in <file>`) for the error messages.
    fn parse(
        text: &str,
        origin: String,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
        let overrides = env_overrides(env)?;
        // The defaults say which keys hold text: their variables are taken verbatim.
        let defaults =
            toml::Table::try_from(Config::default()).map_err(|e| ConfigError::Invalid {
                origin: origin.clone(),
                message: e.to_string(),
            })?;
        let mut applied = Vec::new();
        for ((section, key), (var, raw)) in overrides {
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(t) = entry else {
                return Err(ConfigError::Invalid {
                    origin: origin.clone(),
                    message: format!("'{section}' must be a table"),
                });
            };
            let is_text = matches!(
                defaults.get(&section).and_then(|s| s.get(&key)),
                Some(toml::Value::String(_))
            );
            let value = if is_text {
                toml::Value::String(raw)
            } else {
                env_value(&raw)
            };
            t.insert(key.clone(), value);
            applied.push(var);
        }
        let origin = if applied.is_empty() {
            origin
        } else {
            format!("{origin} (with {})", applied.join(", "))
        };
        // Through text again so that a type error quotes the offending `key = value` line.
        let merged = toml::to_string(&table).map_err(|e| ConfigError::Invalid {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
        let config: Config =
            toml::from_str(&merged).map_err(|e: toml::de::Error| ConfigError::Invalid {
                origin: origin.clone(),
                message: e.to_string(),
            })?;
        config
            .check()
            .map_err(|message| ConfigError::Invalid { origin, message })?;
        Ok(config)
    }

    /// Checks values that parse but make no sense, naming the key.
    fn check(&self) -> Result<(), String> {
        self.listen_addr()?;
        if self.server.max_body_bytes == 0 {
            return Err("server.max_body_bytes must be at least 1".into());
        }
        if self.server.default_partitions == 0 || self.server.default_partitions > 4096 {
            return Err("server.default_partitions must be between 1 and 4096".into());
        }
        if self.server.stream_buffer == 0 {
            return Err("server.stream_buffer must be at least 1".into());
        }
        let commit_file = self.storage.commit_file_bytes;
        if commit_file != 0 && !COMMIT_FILE_BYTES.contains(&commit_file) {
            return Err(format!(
                "storage.commit_file_bytes must be 0 (off) or between {} (64 KiB) and {} (1 GiB), not {commit_file}",
                COMMIT_FILE_BYTES.start(),
                COMMIT_FILE_BYTES.end()
            ));
        }
        self.limits.check()?;
        self.tracing.check()?;
        let tls = !self.server.tls_cert.as_os_str().is_empty();
        let advertised = &self.cluster.advertise_url;
        if !advertised.is_empty()
            && tls != advertised.starts_with("https://")
            && (advertised.starts_with("http://") || advertised.starts_with("https://"))
        {
            return Err(format!(
                "cluster.advertise_url {advertised:?} must start with {} when server.tls_cert is {}",
                if tls { "https://" } else { "http://" },
                if tls { "set (the server serves HTTPS)" } else { "not set (the server serves plain HTTP)" }
            ));
        }
        if self.auth.stream_recheck_ms < 100 {
            return Err("auth.stream_recheck_ms must be at least 100".into());
        }
        if self.server.tls_cert.as_os_str().is_empty() != self.server.tls_key.as_os_str().is_empty()
        {
            return Err(
                "server.tls_cert and server.tls_key go together: set both (HTTPS) or neither"
                    .into(),
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, outbox) in self.outbox.iter().enumerate() {
            if outbox.database_url.is_empty() {
                return Err(format!("outbox[{i}].database_url is required"));
            }
            if outbox.batch_size < 1 {
                return Err(format!("outbox[{i}].batch_size must be at least 1"));
            }
            if outbox.poll_interval_ms == 0 {
                return Err(format!("outbox[{i}].poll_interval_ms must be at least 1"));
            }
            if !names.insert(outbox.name.as_str()) {
                return Err(format!(
                    "outbox[{i}].name '{}' is used twice; give each [[outbox]] its own name",
                    outbox.name
                ));
            }
        }
        if self.cluster.lease_ttl_ms < 1000 || self.cluster.lease_ttl_ms > 600_000 {
            return Err("cluster.lease_ttl_ms must be between 1000 and 600000".into());
        }
        if !self.cluster.advertise_url.is_empty() {
            let u = url::Url::parse(&self.cluster.advertise_url).map_err(|e| {
                format!(
                    "cluster.advertise_url: '{}' is not a URL ({e})",
                    self.cluster.advertise_url
                )
            })?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err("cluster.advertise_url must be an http:// or https:// URL".into());
            }
        }
        crate::push::guard::TargetGuard::new(
            self.push.allow_private_targets,
            &self.push.allowed_targets,
        )?;
        let storage = self.storage.resolve()?;
        storage.check_built()
    }

    /// The listen address, parsed.
    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        self.server.listen.parse().map_err(|e| {
            format!(
                "server.listen: '{}' is not an address like 127.0.0.1:7480 ({e})",
                self.server.listen
            )
        })
    }
}

/// Enumerated keys read from their text, with errors that name the key and the choices
/// (serde's own "unknown variant" does not say which key it was reading).
mod named {
    use serde::de::{Deserializer, Error, IgnoredAny};
    use serde::Deserialize;

    use super::{AuthMode, BackendKind, DurabilitySetting};

    /// A string, or anything else (to report it as not a string).
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Text(String),
        Other(IgnoredAny),
    }

    fn text<'de, D: Deserializer<'de>>(d: D, key: &str, choices: &str) -> Result<String, D::Error> {
        match Text::deserialize(d)? {
            Text::Text(t) => Ok(t),
            Text::Other(_) => Err(D::Error::custom(format!(
                "{key} must be a string: one of {choices}"
            ))),
        }
    }

    /// `storage.backend`.
    pub fn backend<'de, D: Deserializer<'de>>(d: D) -> Result<BackendKind, D::Error> {
        let names: Vec<&str> = BackendKind::ALL.iter().map(|k| k.as_str()).collect();
        let t = text(d, "storage.backend", &names.join(", "))?;
        t.parse()
            .map_err(|e: String| D::Error::custom(format!("storage.backend: {e}")))
    }

    /// `auth.mode`.
    pub fn auth_mode<'de, D: Deserializer<'de>>(d: D) -> Result<AuthMode, D::Error> {
        match text(d, "auth.mode", "auto, keys, none")?.as_str() {
            "auto" => Ok(AuthMode::Auto),
            "keys" => Ok(AuthMode::Keys),
            "none" => Ok(AuthMode::None),
            other => Err(D::Error::custom(format!(
                "auth.mode: unknown mode '{other}' (expected auto, keys or none)"
            ))),
        }
    }

    /// `storage.durability`.
    pub fn durability<'de, D: Deserializer<'de>>(d: D) -> Result<DurabilitySetting, D::Error> {
        match text(d, "storage.durability", "fsync, os")?.as_str() {
            "fsync" => Ok(DurabilitySetting::Fsync),
            "os" => Ok(DurabilitySetting::Os),
            other => Err(D::Error::custom(format!(
                "storage.durability: unknown durability '{other}' (expected fsync or os)"
            ))),
        }
    }
}

/// (section, key) → (environment variable, value).
type Overrides = BTreeMap<(String, String), (String, String)>;

/// Finds `CRMBUS_<SECTION>_<KEY>` variables: (section, key) → (variable, value).
fn env_overrides(
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Overrides, ConfigError> {
    let mut out = BTreeMap::new();
    for (var, value) in env {
        let Some(rest) = var.strip_prefix("CRMBUS_") else {
            continue;
        };
        if OTHER_VARIABLES.contains(&var.as_str()) {
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        let Some((section, keys)) = SECTIONS
            .iter()
            .find(|(s, _)| lower.starts_with(&format!("{s}_")))
        else {
            continue;
        };
        let key = &lower[section.len() + 1..];
        if !keys.contains(&key) {
            return Err(ConfigError::UnknownEnvKey {
                key: format!("{section}.{key}"),
                var,
            });
        }
        out.insert((section.to_string(), key.to_string()), (var, value));
    }
    Ok(out)
}

/// An environment value for a key that is not text, as TOML: a number or boolean when it
/// reads as one, else a string (which the type check then reports, naming the key).
fn env_value(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    // Rates (`0.5`); `inf` and `nan` stay text, and are refused as such.
    if let Ok(f) = raw.parse::<f64>() {
        if f.is_finite() {
            return toml::Value::Float(f);
        }
    }
    match raw {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_without_file_or_environment() {
        let c = Config::load(None, env(&[])).expect("defaults");
        assert_eq!(c.server.listen, "127.0.0.1:7480");
        assert_eq!(c.storage.backend, BackendKind::Embedded);
        assert_eq!(c.storage.data_dir, PathBuf::from("./crmbus-data"));
        assert_eq!(c.server.max_body_bytes, 1024 * 1024);
    }

    #[test]
    fn file_then_environment_overrides() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("crmbus.toml");
        std::fs::write(
            &path,
            "[server]\nlisten = \"127.0.0.1:9000\"\nmax_body_bytes = 2048\n[storage]\nbackend = \"memory\"\n",
        )
        .expect("write");
        let c = Config::load(
            Some(&path),
            env(&[
                ("CRMBUS_SERVER_MAX_BODY_BYTES", "4096"),
                ("CRMBUS_SERVER_AUTO_CREATE_TOPICS", "true"),
                ("CRMBUS_STORAGE_DATA_DIR", "/tmp/x"),
                ("CRMBUS_LOG", "debug"),
                ("HOME", "/root"),
            ]),
        )
        .expect("load");
        assert_eq!(c.server.listen, "127.0.0.1:9000");
        assert_eq!(c.server.max_body_bytes, 4096);
        assert!(c.server.auto_create_topics);
        assert_eq!(c.storage.backend, BackendKind::Memory);
        assert_eq!(c.storage.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("crmbus.toml");
        std::fs::write(&path, "[server]\nlisten_port = 80\n").expect("write");
        let e = Config::load(Some(&path), env(&[])).expect_err("unknown key");
        assert!(e.to_string().contains("listen_port"), "{e}");

        std::fs::write(&path, "[srever]\nlisten = \"x\"\n").expect("write");
        let e = Config::load(Some(&path), env(&[])).expect_err("unknown section");
        assert!(e.to_string().contains("srever"), "{e}");

        let e = Config::load(None, env(&[("CRMBUS_SERVER_LISTN", "x")])).expect_err("env");
        assert!(e.to_string().contains("server.listn"), "{e}");
        assert!(e.to_string().contains("CRMBUS_SERVER_LISTN"), "{e}");
    }

    #[test]
    fn text_keys_take_environment_values_verbatim() {
        let c = Config::from_toml(
            "",
            env(&[
                ("CRMBUS_STORAGE_PREFIX", "2024"),
                ("CRMBUS_STORAGE_DATA_DIR", "-1"),
                ("CRMBUS_SCHEMAS_CATALOG_DIR", "true"),
                ("CRMBUS_SERVER_STREAM_BUFFER", "7"),
            ]),
        )
        .expect("load");
        assert_eq!(c.storage.prefix, "2024");
        assert_eq!(c.storage.data_dir, PathBuf::from("-1"));
        assert_eq!(c.schemas.catalog_dir, PathBuf::from("true"));
        assert_eq!(c.server.stream_buffer, 7);
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Config::load(None, env(&[("CRMBUS_SERVER_LISTEN", "nowhere")])).expect_err("addr");
        assert!(e.to_string().contains("server.listen"), "{e}");
        let e =
            Config::load(None, env(&[("CRMBUS_SERVER_MAX_BODY_BYTES", "lots")])).expect_err("type");
        assert!(e.to_string().contains("max_body_bytes"), "{e}");
        let e = Config::load(None, env(&[("CRMBUS_STORAGE_BACKEND", "redis")])).expect_err("url");
        assert!(e.to_string().contains("storage.url"), "{e}");
        let e = Config::load(None, env(&[("CRMBUS_STORAGE_BACKEND", "kafka2")])).expect_err("kind");
        assert!(e.to_string().contains("kafka2"), "{e}");
        let e = Config::load(None, env(&[("CRMBUS_STORAGE_DURABILITY", "sometimes")]))
            .expect_err("durability");
        assert!(e.to_string().contains("durability"), "{e}");
        assert!(e.to_string().contains("sometimes"), "{e}");
        // HTTPS settings go together, and the URL other servers use says the same.
        let e =
            Config::load(None, env(&[("CRMBUS_SERVER_TLS_CERT", "/etc/c.pem")])).expect_err("pair");
        assert!(e.to_string().contains("server.tls_key"), "{e}");
        let e = Config::load(
            None,
            env(&[
                ("CRMBUS_SERVER_TLS_CERT", "/etc/c.pem"),
                ("CRMBUS_SERVER_TLS_KEY", "/etc/c.key"),
                ("CRMBUS_CLUSTER_ADVERTISE_URL", "http://10.0.0.7:7480"),
            ]),
        )
        .expect_err("scheme");
        assert!(e.to_string().contains("must start with https://"), "{e}");
        let e = Config::load(
            None,
            env(&[("CRMBUS_CLUSTER_ADVERTISE_URL", "https://10.0.0.7:7480")]),
        )
        .expect_err("scheme");
        assert!(e.to_string().contains("must start with http://"), "{e}");
        let e = Config::load(None, env(&[("CRMBUS_AUTH_STREAM_RECHECK_MS", "10")]))
            .expect_err("recheck");
        assert!(e.to_string().contains("auth.stream_recheck_ms"), "{e}");
        let e = Config::load(
            None,
            env(&[("CRMBUS_LIMITS_KEY_REQUESTS_PER_SECOND", "-2")]),
        )
        .expect_err("rate");
        assert!(
            e.to_string().contains("limits.key_requests_per_second"),
            "{e}"
        );
    }

    #[test]
    fn storage_resolves_to_what_each_backend_needs() {
        let c = Config::load(
            None,
            env(&[
                ("CRMBUS_STORAGE_DATA_DIR", "/var/lib/crmbus"),
                ("CRMBUS_STORAGE_DURABILITY", "os"),
            ]),
        )
        .expect("load");
        assert_eq!(
            c.storage.resolve(),
            Ok(Storage::Embedded {
                data_dir: PathBuf::from("/var/lib/crmbus"),
                durability: Durability::Os,
                dedupe_window: crmbus::DEFAULT_DEDUPE_WINDOW,
                commit_file_bytes: crmbus_embedded::commit_file::DEFAULT_CAPACITY,
            })
        );
        let c =
            Config::load(None, env(&[("CRMBUS_STORAGE_COMMIT_FILE_BYTES", "0")])).expect("load");
        assert!(
            matches!(
                c.storage.resolve(),
                Ok(Storage::Embedded {
                    commit_file_bytes: 0,
                    ..
                })
            ),
            "{:?}",
            c.storage.resolve()
        );
        for bad in ["8 MiB", "4096", "2147483648"] {
            let e = Config::load(None, env(&[("CRMBUS_STORAGE_COMMIT_FILE_BYTES", bad)]))
                .expect_err(bad);
            assert!(e.to_string().contains("commit_file_bytes"), "{bad}: {e}");
        }
        for good in ["65536", "1073741824"] {
            Config::load(None, env(&[("CRMBUS_STORAGE_COMMIT_FILE_BYTES", good)])).expect(good);
        }
        let c = Config::load(
            None,
            env(&[
                ("CRMBUS_STORAGE_BACKEND", "nats"),
                ("CRMBUS_STORAGE_URL", "nats://127.0.0.1:4222"),
                ("CRMBUS_STORAGE_PREFIX", "123"),
            ]),
        )
        .expect("load");
        assert_eq!(
            c.storage.resolve(),
            Ok(Storage::Nats {
                url: "nats://127.0.0.1:4222".into(),
                prefix: "123".into(),
            })
        );
        let c = Config::load(
            None,
            env(&[
                ("CRMBUS_STORAGE_BACKEND", "kafka"),
                ("CRMBUS_STORAGE_BOOTSTRAP_SERVERS", "k1:9092,k2:9092"),
                ("CRMBUS_STORAGE_STATE_URL", "postgres://crm@db/crm"),
                (
                    "CRMBUS_STORAGE_KAFKA_SETTINGS",
                    "security.protocol=SASL_SSL, sasl.mechanism=PLAIN",
                ),
            ]),
        )
        .expect("load");
        assert_eq!(
            c.storage.resolve(),
            Ok(Storage::Kafka {
                bootstrap_servers: "k1:9092,k2:9092".into(),
                state_url: "postgres://crm@db/crm".into(),
                prefix: "crmbus".into(),
                dedupe_window: crmbus::DEFAULT_DEDUPE_WINDOW,
                settings: vec![
                    ("security.protocol".into(), "SASL_SSL".into()),
                    ("sasl.mechanism".into(), "PLAIN".into()),
                ],
            })
        );
    }

    #[test]
    fn kafka_needs_its_brokers_and_state_database_and_well_formed_settings() {
        let load = |vars: &[(&str, &str)]| {
            let mut all = vec![("CRMBUS_STORAGE_BACKEND", "kafka")];
            all.extend_from_slice(vars);
            Config::load(None, env(&all))
                .expect_err("refused")
                .to_string()
        };
        let missing = load(&[]);
        assert!(missing.contains("storage.bootstrap_servers"), "{missing}");
        let no_state = load(&[("CRMBUS_STORAGE_BOOTSTRAP_SERVERS", "k1:9092")]);
        assert!(no_state.contains("storage.state_url"), "{no_state}");
        let bad = load(&[
            ("CRMBUS_STORAGE_BOOTSTRAP_SERVERS", "k1:9092"),
            ("CRMBUS_STORAGE_STATE_URL", "postgres://db/crm"),
            ("CRMBUS_STORAGE_KAFKA_SETTINGS", "acks"),
        ]);
        assert!(bad.contains("'acks' is not key=value"), "{bad}");
    }
}
