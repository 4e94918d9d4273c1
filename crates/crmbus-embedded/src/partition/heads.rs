//! `subjects.heads`: the versions of a partition's subjects whose events retention removed
//! (see [`crate::subjects`]). Written whole before a segment is deleted (a temporary file,
//! fsynced, renamed over the old one, the directory fsynced), read on open.
//!
//! ```text
//! file = crc32c(json): u32 LE | json: [[subject, version], …]
//! ```

use std::io;
use std::path::Path;

use crate::storage::{OpenMode, Storage};

const FILE: &str = "subjects.heads";

/// Writes the versions of `heads` (all subjects without events) in place of the file's.
pub fn save(storage: &dyn Storage, dir: &Path, heads: &[(String, u64)]) -> io::Result<()> {
    let json = serde_json::to_vec(heads).map_err(io::Error::other)?;
    let mut bytes = crc32c::crc32c(&json).to_le_bytes().to_vec();
    bytes.extend_from_slice(&json);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let file = storage.open(&tmp, OpenMode::Truncate)?;
    file.write_all_at(&bytes, 0)?;
    file.sync_all()?;
    drop(file);
    storage.rename(&tmp, &dir.join(FILE))?;
    // Needed only where directory changes can reach the disk out of order. The only
    // caller (retention) removes the segment after this and fsyncs this same directory
    // before it returns. On ext4 and XFS, whose journals commit in order, and on the
    // simulated disk, which keeps a prefix of a directory's changes, the removal is never
    // durable without the new name, so no test here can tell this fsync is missing. POSIX
    // promises no such order, and btrfs's fsync log may not keep it: the fsync stays.
    storage.sync_dir(dir) // mutants: equivalent (on file systems that order directory changes; see above)
}

/// The versions kept in the directory's file (none when there is no file). A file whose
/// checksum fails is reported and ignored: the subjects it named start again from the
/// versions their remaining events hold.
pub fn load(
    storage: &dyn Storage,
    dir: &Path,
    topic: &str,
    partition: u32,
) -> io::Result<Vec<(String, u64)>> {
    let path = dir.join(FILE);
    if !storage.exists(&path) {
        return Ok(Vec::new());
    }
    let bytes = storage.read(&path)?;
    let parsed = bytes.split_at_checked(4).and_then(|(crc, json)| {
        let ok = crc32c::crc32c(json).to_le_bytes() == crc;
        ok.then(|| serde_json::from_slice::<Vec<(String, u64)>>(json).ok())
            .flatten()
    });
    match parsed {
        Some(heads) => Ok(heads),
        None => {
            tracing::error!(
                topic,
                partition,
                path = %path.display(),
                "the kept subject versions are damaged; ignored"
            );
            Ok(Vec::new())
        }
    }
}
