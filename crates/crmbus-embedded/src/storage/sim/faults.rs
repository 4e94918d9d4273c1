//! The faults a [`SimStorage`](super::SimStorage) can be told to cause: which unsynced
//! writes a power cut keeps, and planned I/O errors.

use std::io;

pub(super) const EIO: i32 = 5;
pub(super) const ENOSPC: i32 = 28;

pub(super) fn err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// Which unsynced writes a power cut keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Nothing that was not fsynced survives.
    KeepNone,
    /// Everything written survives (as after a crash of the process only).
    KeepAll,
    /// Each unsynced page-sized piece survives or not at random; each directory keeps a
    /// random prefix of its unsynced entry changes.
    RandomPages,
    /// Every unsynced piece survives but the last of each file, which is cut short at a
    /// random byte; directories keep a random prefix of their changes.
    TornTail,
    /// Each file and directory picks one of the modes above at random.
    Mixed,
}

/// Which operations a [`Fault`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// `write_all_at` and `set_len` growing a file.
    Write,
    /// `sync_data`, `sync_all` and `sync_dir`.
    Sync,
    /// `remove_file` (unlinking a file).
    Remove,
}

/// A planned failure: the `skip`+1-th matching operation on a path containing
/// `path_contains` fails with `errno` (and, if `repeat`, every one after it too).
#[derive(Debug, Clone)]
pub struct Fault {
    /// The kind of operation that fails.
    pub op: FaultOp,
    /// Only paths containing this string match (empty: every path).
    pub path_contains: String,
    /// Matching operations to let through first.
    pub skip: u64,
    /// The error number returned (5 = EIO, 28 = ENOSPC).
    pub errno: i32,
    /// Keep failing after the first failure.
    pub repeat: bool,
}

impl Fault {
    /// A fault that fails the next matching operation with `EIO`.
    pub fn eio(op: FaultOp, path_contains: &str) -> Fault {
        Fault {
            op,
            path_contains: path_contains.to_string(),
            skip: 0,
            errno: EIO,
            repeat: false,
        }
    }

    /// A fault that fails the next matching operation with `ENOSPC`.
    pub fn enospc(op: FaultOp, path_contains: &str) -> Fault {
        Fault {
            errno: ENOSPC,
            ..Fault::eio(op, path_contains)
        }
    }
}
