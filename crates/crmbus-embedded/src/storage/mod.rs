//! The I/O seam under the embedded log: every file, directory, fsync, rename and unlink the
//! log does goes through [`Storage`].
//!
//! Two implementations:
//! - [`OsStorage`], the real one (the default), a thin layer over `std::fs`;
//! - [`SimStorage`], a simulated disk for tests: it keeps every write that was not fsynced in
//!   a volatile layer and, at a simulated power cut, keeps an arbitrary subset of it, forgets
//!   directory entries whose directory was not fsynced, injects I/O errors and flips bits.
//!   With it, a test can see a missing fsync, which a SIGKILL (the page cache survives it)
//!   never shows.
//!
//! The contract the log relies on is the one of a POSIX file system on Linux:
//! - data written to a file is durable only after `sync_data`/`sync_all` of that file;
//! - a new, renamed or removed directory entry is durable only after `sync_dir` of its
//!   directory (fsyncing the file does not make its name durable);
//! - a failed fsync may have dropped the dirty data: nothing written before it can be
//!   trusted to be durable.

use std::fmt::Debug;
use std::io;
use std::path::Path;

mod os;
mod redb_backend;
pub mod sim;

pub use os::OsStorage;
pub use redb_backend::RedbBackend;
pub use sim::{CrashMode, Fault, FaultOp, SimStorage};

/// How [`Storage::open`] treats an existing or missing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Open an existing file; fail with `NotFound` if it is missing.
    Existing,
    /// Create the file; fail with `AlreadyExists` if it is there.
    CreateNew,
    /// Open the file, creating it empty if it is missing.
    OpenOrCreate,
    /// Create the file, or empty it if it is there.
    Truncate,
}

/// An open file, read and written at explicit positions (`pread`/`pwrite`).
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: Debug + Send + Sync {
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;
    /// Fills `buf` from `pos`; fails with `UnexpectedEof` if the file ends first.
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
    /// Writes all of `data` at `pos`, growing the file if needed.
    fn write_all_at(&self, data: &[u8], pos: u64) -> io::Result<()>;
    /// Cuts or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Reserves disk space for the file's first `len` bytes without changing its size
    /// (`fallocate` with `FALLOC_FL_KEEP_SIZE`), so later writes below `len` cannot fail
    /// for want of space. Fails with `ENOSPC` when the disk is full. A file system that
    /// cannot reserve space reserves nothing and succeeds.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data (and the size needed to read it) durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the file's data and metadata durable (`fsync`).
    fn sync_all(&self) -> io::Result<()>;
    /// Starts writing the bytes `pos..pos + len` to the disk without waiting for them
    /// (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`), so that a later fsync has less to
    /// wait for. Makes nothing durable; a storage without it does nothing.
    fn start_writeback(&self, _pos: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
}

/// A held lock on a data directory; dropping it releases the lock.
pub trait StorageLock: Debug + Send + Sync {}

/// Files and directories, as the embedded log uses them. Paths are absolute or relative to
/// the process's working directory, as `std::fs` takes them.
pub trait Storage: Debug + Send + Sync {
    /// Opens `path` as `mode` says, for reading and writing.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>>;
    /// Creates `path` and every missing parent directory.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The names of the entries in directory `path`, in no particular order.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Whether `path` names a file or directory.
    fn exists(&self, path: &Path) -> bool;
    /// Renames `from` to `to`, replacing `to` if it exists (atomically, as `rename(2)`).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes the directory `path` and everything in it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of directory `path` durable (fsync of the directory).
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Takes the exclusive lock on the data directory's lock file `path`, creating it if
    /// needed; fails with `WouldBlock` when another holder has it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn StorageLock>>;

    /// Whether the log may run I/O on several threads at once (the group commit flushes
    /// partitions concurrently). A simulation that must replay the same order of
    /// operations from a seed says no.
    fn concurrent(&self) -> bool {
        true
    }

    /// Whether a write into a file over bytes already written (the zeros the log writes
    /// ahead of a segment's records) stays in place and needs no new space. True for
    /// ext4, xfs and tmpfs; false for copy-on-write file systems (btrfs, zfs), where it
    /// would use up the space reserved for the records, and for unknown ones. The log
    /// writes zeros ahead only where this is true.
    fn overwrites_in_place(&self, _dir: &Path) -> bool {
        true
    }

    /// Reads the whole file `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let f = self.open(path, OpenMode::Existing)?;
        let len = usize::try_from(f.len()?).map_err(io::Error::other)?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

/// Whether `e` says the disk is full (`ENOSPC`).
pub fn is_no_space(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(libc::ENOSPC)
}

/// Removes `path` if it exists; a missing file is not an error.
pub fn remove_if_exists(storage: &dyn Storage, path: &Path) -> io::Result<()> {
    match storage.remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Creates `dir` and any missing parents, then fsyncs the directory holding each one it
/// created, so the new directories' names survive a power loss (what is fsynced inside
/// them later relies on that).
pub fn create_dir_all_durable(storage: &dyn Storage, dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at.filter(|d| !d.as_os_str().is_empty() && !storage.exists(d)) {
        missing.push(d);
        at = d.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    storage.create_dir_all(dir)?;
    // Deepest first: a parent's entry is made durable once what it holds is.
    for d in missing {
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            storage.sync_dir(parent)?;
        }
    }
    Ok(())
}
