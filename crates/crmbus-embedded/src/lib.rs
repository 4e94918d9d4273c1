//! # crmbus-embedded
//!
//! crmbus's default storage backend: a single-node, durable, partitioned event log in one
//! directory, with nothing else to install.
//!
//! - **Records** are framed as length + CRC32C + body (see [`record`]); a record whose
//!   checksum fails is never served, and is counted in `crmbus_log_corrupt_records_total`.
//! - **Segments**: each partition is a series of segment files rolled by size and age, each
//!   with a sparse offset and time index, written to an `.idx` file when the segment is
//!   sealed and rebuilt from the segment if it is missing or stale.
//! - **Group commit**: appends write to the page cache and wait; one thread fdatasyncs
//!   everything written so far and wakes all of them (see [`syncer`]). With
//!   [`Durability::Fsync`] (the default) an append returns only once its batch is on disk;
//!   [`Durability::Os`] returns once it is in the page cache, and loses recent appends on
//!   power loss or a kernel crash (not on a crash of crmbus itself).
//! - **Commit file**: a round that wrote more than one file (several partitions, or data and
//!   journal) fdatasyncs one record of the same bytes in `commit.wal` instead of each file,
//!   since every fsync costs the disk a flush of its own; open writes the records again
//!   before it reads anything, and checkpoints fsync the files and start a new generation
//!   (see [`commit_file`]).
//! - **Recovery** on open scans the active segment, verifies every checksum, truncates a
//!   torn tail (including a batch whose end never reached the disk), and reports damage in
//!   the middle as corrupt records rather than cutting the log there.
//! - **Atomicity**: an append is checked whole before anything is written; a batch is one
//!   write per partition and recovery drops a partial batch at a partition's tail. An
//!   append that spans partitions (or topics) records where its parts went in the batch
//!   journal (see [`batch_journal`]), made durable with the parts, whose first records name
//!   it; after a crash, open rolls back every such append the crash left in some
//!   partitions only or without its journal entry, so a batch is stored whole or not at
//!   all.
//! - **Retention** by age and size deletes whole segments.
//! - **A full disk** fails only the append that does not fit, with
//!   [`LogError::StorageFull`](crmbus::LogError) (HTTP 507): space for segment data and
//!   journal frames is reserved when an append is staged, before any offset is given out,
//!   and appends succeed again once space is freed, without a restart. A failed write or
//!   fsync inside the group commit (an I/O error, or a file system that reports a full
//!   disk only then) stops the log until a restart, because the kernel may have dropped the
//!   dirty pages: nothing written after could be acknowledged honestly. The restart
//!   recovers every acknowledged event.
//! - **Storage** goes through the [`storage::Storage`] seam: the real file system, or a
//!   simulated disk that loses unsynced writes at a simulated power cut (the power-loss
//!   tests).
//! - **Metadata** (topics, group offsets) lives in redb, whose commits are durable.
//! - **Producer dedupe** remembers (topic, source, id) digests for a window; the digests are
//!   stored in the records, so the window is rebuilt on open and survives restarts.
//!
//! Layout, from the top down: the log itself (`log.rs`: its state and the `EventLog`
//! methods; `log/open.rs`: open and recovery; `log/admin.rs`: creating and deleting topics;
//! `log/append.rs`: the append path), the committer (`committer.rs`: group commit or page
//! cache, decided once), [`syncer`] (the group-commit thread), [`partition`] (the writer and
//! retention; reads in `partition/read.rs`), [`segment`] (one file and its index; the
//! recovery scan in `segment/scan.rs`), [`batch_journal`], [`commit_file`], [`metadata`], [`storage`] (the
//! I/O seam; the simulated disk's file model and faults in `storage/sim/`), [`record`].

pub mod batch_journal;
pub mod commit_file;
mod committer;
pub mod dedupe;
mod flush_pool;
pub mod handles;
mod log;
pub mod metadata;
pub mod options;
pub mod partition;
pub mod record;
pub mod segment;
pub mod storage;
pub mod subjects;
pub mod syncer;
pub mod vec_pool;

pub use crmbus::OpenedBackend;
pub use log::EmbeddedLog;
pub use options::{Durability, EmbeddedOptions};
pub use storage::{OsStorage, SimStorage, Storage};
pub use syncer::GroupCommitStats;
