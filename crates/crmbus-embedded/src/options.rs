//! Configuration of the embedded log.

use std::sync::Arc;
use std::time::Duration;

use crmbus::clock::{system_clock, Clock};

use crate::storage::{OsStorage, Storage};

/// When an append counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// An append returns after its data is fdatasync'ed (by group commit). Survives power loss.
    #[default]
    Fsync,
    /// An append returns once its data is in the operating system's page cache. Survives a
    /// crash of crmbus, but a power loss or kernel crash loses recent appends.
    Os,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fsync" => Ok(Durability::Fsync),
            "os" => Ok(Durability::Os),
            other => Err(format!(
                "unknown durability '{other}' (expected 'fsync' or 'os')"
            )),
        }
    }
}

/// Settings of an [`EmbeddedLog`](crate::EmbeddedLog). `Default` gives production values.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// When appends are acknowledged. Default: [`Durability::Fsync`].
    pub durability: Durability,
    /// Roll to a new segment once the active one holds this many bytes. Default 128 MiB.
    pub segment_bytes: u64,
    /// Roll to a new segment once the active one is this old. Default 1 hour.
    pub segment_max_age: Duration,
    /// Bytes between sparse index points. Default 64 KiB.
    pub index_interval_bytes: u64,
    /// How long a (topic, source, id) is remembered for producer dedupe. Default 2 minutes.
    pub dedupe_window: Duration,
    /// At most this many dedupe entries per topic; the oldest go first when it is full
    /// (a metric counts entries dropped before their window ended). Default 1,000,000.
    pub dedupe_max_entries: usize,
    /// At most this many dedupe entries across all topics of the log (topics may be
    /// created on first publish, so the per-topic cap alone bounds nothing); a topic adding
    /// one at the bound drops its own oldest. Default 4,000,000 (roughly 400 MB).
    pub dedupe_max_entries_total: usize,
    /// Once the batch journal (see [`crate::batch_journal`]) holds this many bytes, it is
    /// rewritten with only the intents still outstanding. Default 4 MiB.
    pub batch_journal_compact_bytes: u64,
    /// At most this many sealed segment files are held open at once; others are opened
    /// when a read needs them (every partition's active segment stays open besides).
    /// Default 512.
    pub max_open_segments: usize,
    /// Bytes of records the commit file holds before a checkpoint fsyncs the files they
    /// wrote (see [`crate::commit_file`]); 0 makes every round fsync each file it wrote
    /// instead. Default 8 MiB.
    pub commit_file_bytes: u64,
    /// How often retention runs in the background; `None` runs it only on request.
    /// Default every 60 s.
    pub retention_interval: Option<Duration>,
    /// The clock that stamps appends and drives retention.
    pub clock: Arc<dyn Clock>,
    /// The file system the log lives on: [`OsStorage`] (the default), or a
    /// [`SimStorage`](crate::storage::SimStorage) in power-loss tests.
    pub storage: Arc<dyn Storage>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            durability: Durability::Fsync,
            segment_bytes: 128 * 1024 * 1024,
            segment_max_age: Duration::from_secs(3600),
            index_interval_bytes: 64 * 1024,
            dedupe_window: crmbus::DEFAULT_DEDUPE_WINDOW,
            dedupe_max_entries: 1_000_000,
            dedupe_max_entries_total: 4_000_000,
            batch_journal_compact_bytes: crate::batch_journal::COMPACT_AT,
            max_open_segments: 512,
            commit_file_bytes: crate::commit_file::DEFAULT_CAPACITY,
            retention_interval: Some(Duration::from_secs(60)),
            clock: system_clock(),
            storage: Arc::new(OsStorage),
        }
    }
}
