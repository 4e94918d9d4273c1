//! The metadata store of the embedded log: topics and consumer-group offsets, in redb
//! (copy-on-write B-trees, every commit durable before it returns).

use std::path::Path;

use crmbus::{LogError, TopicSpec};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::storage::{remove_if_exists, OpenMode, RedbBackend, Storage};

const TOPICS: TableDefinition<&str, &[u8]> = TableDefinition::new("topics");
const OFFSETS: TableDefinition<(&str, &str, u32), u64> = TableDefinition::new("group_offsets");
const STATE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("state");
const FORMAT: TableDefinition<&str, u64> = TableDefinition::new("format");
/// The key in [`FORMAT`] of the newest record layout the log may hold.
const RECORD_FORMAT_KEY: &str = "records";

/// The newest record layout this build writes and reads (see [`crate::record`]): 1, the
/// subject version in eight bytes (and logs from before this marker, which have none);
/// 2, the subject version as a varint; 3, the first record of each part of an append that
/// spans partitions names its batch journal intent. A log whose marker names a later layout was
/// written by a newer build and is refused at open, before anything is read, rather than
/// risk reading records of a layout this build does not know.
pub const RECORD_FORMAT: u64 = 3;

fn backend<E: std::fmt::Display>(e: E) -> LogError {
    let msg = format!("metadata store: {e}");
    // redb's errors carry the io::Error only as text through its several error types.
    if msg.contains(&format!("(os error {})", libc::ENOSPC)) {
        LogError::StorageFull(msg)
    } else {
        LogError::backend(msg)
    }
}

fn create_tables(db: &Database) -> Result<(), LogError> {
    let tx = db.begin_write().map_err(backend)?;
    tx.open_table(TOPICS).map_err(backend)?;
    tx.open_table(OFFSETS).map_err(backend)?;
    tx.open_table(STATE).map_err(backend)?;
    tx.open_table(FORMAT).map_err(backend)?;
    tx.commit().map_err(backend)
}

/// Refuses a store whose records are of a layout newer than [`RECORD_FORMAT`], and marks
/// an older one (or one from before the marker) as holding this build's layout from now
/// on: the records it appends are.
fn check_record_format(db: &Database, path: &Path) -> Result<(), LogError> {
    match stored_record_format(db)? {
        Some(f) if f > RECORD_FORMAT => Err(LogError::Unavailable(format!(
            "the log at {} was written by a newer crmbus: its records are of format {f}, \
             and this build reads formats up to {RECORD_FORMAT}; open it with that newer build",
            path.parent().unwrap_or(path).display()
        ))),
        Some(f) if f == RECORD_FORMAT => Ok(()),
        _ => {
            let tx = db.begin_write().map_err(backend)?;
            tx.open_table(FORMAT)
                .map_err(backend)?
                .insert(RECORD_FORMAT_KEY, RECORD_FORMAT)
                .map_err(backend)?;
            tx.commit().map_err(backend)
        }
    }
}

/// The record layout marked in the store; `None` in a store from before the marker.
fn stored_record_format(db: &Database) -> Result<Option<u64>, LogError> {
    let tx = db.begin_read().map_err(backend)?;
    let table = tx.open_table(FORMAT).map_err(backend)?;
    let found = table.get(RECORD_FORMAT_KEY).map_err(backend)?;
    Ok(found.map(|v| v.value()))
}

/// Topics and group offsets.
pub struct Metadata {
    db: Database,
}

impl Metadata {
    /// Opens or creates the store at `path`, through `storage`. A new store is built under
    /// a temporary name and renamed into place once initialised (and its name fsynced), so
    /// a crash while creating it never leaves a half-written file that later opens refuse.
    pub fn open(storage: &dyn Storage, path: &Path) -> Result<Metadata, LogError> {
        if !storage.exists(path) {
            let tmp = path.with_extension("redb.new");
            remove_if_exists(storage, &tmp)?;
            let file = storage.open(&tmp, OpenMode::Truncate)?;
            let db = redb::Builder::new()
                .create_with_backend(RedbBackend(file))
                .map_err(backend)?;
            create_tables(&db)?;
            drop(db);
            storage.rename(&tmp, path)?;
            if let Some(dir) = path.parent() {
                storage.sync_dir(dir)?;
            }
        }
        let file = storage.open(path, OpenMode::Existing)?;
        let db = redb::Builder::new()
            .create_with_backend(RedbBackend(file))
            .map_err(backend)?;
        create_tables(&db)?;
        check_record_format(&db, path)?;
        Ok(Metadata { db })
    }

    /// The newest record layout the log may hold (see [`RECORD_FORMAT`]).
    pub fn record_format(&self) -> Result<u64, LogError> {
        Ok(stored_record_format(&self.db)?.unwrap_or(1))
    }

    /// Every stored topic spec.
    pub fn topics(&self) -> Result<Vec<TopicSpec>, LogError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let table = tx.open_table(TOPICS).map_err(backend)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(backend)? {
            let (_, v) = row.map_err(backend)?;
            out.push(serde_json::from_slice(v.value()).map_err(backend)?);
        }
        Ok(out)
    }

    /// Stores a topic spec.
    pub fn put_topic(&self, spec: &TopicSpec) -> Result<(), LogError> {
        let bytes = serde_json::to_vec(spec).map_err(backend)?;
        let tx = self.db.begin_write().map_err(backend)?;
        {
            let mut t = tx.open_table(TOPICS).map_err(backend)?;
            t.insert(spec.name.as_str(), bytes.as_slice())
                .map_err(backend)?;
        }
        tx.commit().map_err(backend)
    }

    /// Removes a topic and every group offset on it, in one transaction.
    pub fn remove_topic(&self, name: &str) -> Result<(), LogError> {
        let tx = self.db.begin_write().map_err(backend)?;
        {
            let mut t = tx.open_table(TOPICS).map_err(backend)?;
            t.remove(name).map_err(backend)?;
            let mut o = tx.open_table(OFFSETS).map_err(backend)?;
            let mut doomed = Vec::new();
            for row in o.iter().map_err(backend)? {
                let (k, _) = row.map_err(backend)?;
                let (g, topic, p) = k.value();
                if topic == name {
                    doomed.push((g.to_string(), p));
                }
            }
            for (g, p) in doomed {
                o.remove((g.as_str(), name, p)).map_err(backend)?;
            }
        }
        tx.commit().map_err(backend)
    }

    /// Records a group's next offset of each partition in `offsets` (`(partition, offset)`
    /// pairs), in one transaction: all of them or none.
    pub fn commit_offsets(
        &self,
        group: &str,
        topic: &str,
        offsets: &[(u32, u64)],
    ) -> Result<(), LogError> {
        let tx = self.db.begin_write().map_err(backend)?;
        {
            let mut o = tx.open_table(OFFSETS).map_err(backend)?;
            for &(partition, offset) in offsets {
                o.insert((group, topic, partition), offset)
                    .map_err(backend)?;
            }
        }
        tx.commit().map_err(backend)
    }

    /// A group's committed offset.
    pub fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let o = tx.open_table(OFFSETS).map_err(backend)?;
        Ok(o.get((group, topic, partition))
            .map_err(backend)?
            .map(|v| v.value()))
    }

    /// A delivery-state value.
    pub fn state_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, LogError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let t = tx.open_table(STATE).map_err(backend)?;
        Ok(t.get((namespace, key))
            .map_err(backend)?
            .map(|v| v.value().to_vec()))
    }

    /// Delivery-state entries of a namespace whose key starts with `prefix`, by key.
    pub fn state_scan(
        &self,
        namespace: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, LogError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let t = tx.open_table(STATE).map_err(backend)?;
        let mut out = Vec::new();
        for row in t.range((namespace, prefix)..).map_err(backend)? {
            let (k, v) = row.map_err(backend)?;
            let (ns, key) = k.value();
            if ns != namespace || !key.starts_with(prefix) {
                break;
            }
            out.push((key.to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Applies delivery-state changes in one durable transaction.
    pub fn state_apply(&self, ops: &[crmbus::StateOp]) -> Result<(), LogError> {
        let tx = self.db.begin_write().map_err(backend)?;
        {
            let mut t = tx.open_table(STATE).map_err(backend)?;
            for op in ops {
                match op {
                    crmbus::StateOp::Put {
                        namespace,
                        key,
                        value,
                    } => {
                        t.insert((namespace.as_str(), key.as_str()), value.as_slice())
                            .map_err(backend)?;
                    }
                    crmbus::StateOp::Delete { namespace, key } => {
                        t.remove((namespace.as_str(), key.as_str()))
                            .map_err(backend)?;
                    }
                }
            }
        }
        tx.commit().map_err(backend)
    }
}
