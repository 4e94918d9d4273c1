//! [`OsStorage`]: the real file system.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{OpenMode, Storage, StorageFile, StorageLock};

/// The operating system's file system, through `std::fs`. The default [`Storage`].
#[derive(Debug, Default, Clone, Copy)]
pub struct OsStorage;

#[derive(Debug)]
struct OsFile(File);

impl StorageFile for OsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, pos)
    }
    fn write_all_at(&self, data: &[u8], pos: u64) -> io::Result<()> {
        self.0.write_all_at(data, pos)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let len = libc::off_t::try_from(len).map_err(io::Error::other)?;
        // SAFETY: fallocate on a descriptor this struct owns; no memory is passed.
        let rc = unsafe { libc::fallocate(self.0.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            // The file system cannot reserve space: go on without a reservation.
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(()),
            _ => Err(e),
        }
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
    fn start_writeback(&self, pos: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let pos = libc::off64_t::try_from(pos).map_err(io::Error::other)?;
        let len = libc::off64_t::try_from(len).map_err(io::Error::other)?;
        // SAFETY: sync_file_range on a descriptor this struct owns; no memory is passed.
        let rc = unsafe {
            libc::sync_file_range(self.0.as_raw_fd(), pos, len, libc::SYNC_FILE_RANGE_WRITE)
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[derive(Debug)]
struct OsLock(#[allow(dead_code)] File);

impl StorageLock for OsLock {}

/// Whether a file system of type `f_type` (`statfs(2)`) writes over existing bytes in
/// place: ext4 (also ext2/3), xfs and tmpfs do; copy-on-write and unknown ones are taken
/// not to.
pub fn overwrites_in_place_fs(f_type: u64) -> bool {
    const EXT4: u64 = 0xEF53;
    const XFS: u64 = 0x5846_5342;
    const TMPFS: u64 = 0x0102_1994;
    matches!(f_type, EXT4 | XFS | TMPFS)
}

impl Storage for OsStorage {
    fn overwrites_in_place(&self, dir: &Path) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: statfs reads the NUL-terminated path and writes into the zeroed struct
        // it is given, which lives for the call.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut st) };
        rc == 0 && u64::try_from(st.f_type).is_ok_and(overwrites_in_place_fs)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        match mode {
            OpenMode::Existing => {}
            OpenMode::CreateNew => {
                o.create_new(true);
            }
            OpenMode::OpenOrCreate => {
                o.create(true).truncate(false);
            }
            OpenMode::Truncate => {
                o.create(true).truncate(true);
            }
        }
        Ok(Box::new(OsFile(o.open(path)?)))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(path)? {
            out.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(out)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn StorageLock>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(OsLock(file))),
            Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the lock is held by another process",
            )),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_file_systems_that_write_in_place_get_zeros_ahead() {
        assert!(overwrites_in_place_fs(0xEF53), "ext4");
        assert!(overwrites_in_place_fs(0x5846_5342), "xfs");
        assert!(overwrites_in_place_fs(0x0102_1994), "tmpfs");
        assert!(!overwrites_in_place_fs(0x9123_683E), "btrfs");
        assert!(!overwrites_in_place_fs(0x2FC1_2FC1), "zfs");
        assert!(!overwrites_in_place_fs(0), "unknown");
    }
}
