//! [`SimStorage`]: a simulated disk for power-loss tests.
//!
//! Each file keeps two images: what is on the platter (`synced`, as of its last fsync) and
//! what a reader sees (`current`), with the writes between them kept as a list of page-sized
//! pieces. Each directory likewise keeps its durable entries and the entry changes made
//! since its last fsync. A simulated power cut ([`SimStorage::crash`], or automatically at a
//! chosen operation with [`SimStorage::crash_at_op`]) builds the disk a reboot would find:
//! for every file the synced image plus a subset of its unsynced pieces (none, all, a random
//! subset, or all but a torn last one, as the [`CrashMode`] says), and for every directory
//! its durable entries plus a prefix of its unsynced changes. Files no directory names any
//! more are gone. Handles opened before the cut fail with `EIO` from then on, as a process
//! that did not survive the cut would never use them again.
//!
//! Faults: [`SimStorage::inject`] fails chosen writes or fsyncs with `EIO` or `ENOSPC` (a
//! failed fsync drops the file's unsynced writes from what can become durable, as Linux
//! may), [`SimStorage::set_capacity`] fails writes past a byte budget with `ENOSPC`, and
//! [`SimStorage::flip_bit`] damages stored bytes.
//!
//! Every random choice comes from a seed, so a run can be replayed exactly.

use crmbus::sync::LockExt;
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{OpenMode, Storage, StorageFile, StorageLock};

mod faults;
mod model;
use faults::{err, EIO, ENOSPC};
pub use faults::{CrashMode, Fault, FaultOp};
use model::{
    apply, apply_dir, components, not_found, DirNode, DirOp, FileNode, FileOp, Node, State, ROOT,
};

/// Unsynced writes are kept (and lost) in pieces of this size, aligned to file positions.
pub const PAGE: u64 = 4096;

/// A simulated disk; cheap to clone (clones share the disk). See the module doc.
///
/// A handle from [`SimStorage::new`] is the test's own view and always works. Give a log a
/// handle from [`SimStorage::mount`]: once the power is cut, every call through it fails
/// with `EIO`, so a log that did not "survive" cannot touch the disk the next one finds.
#[derive(Debug, Clone)]
pub struct SimStorage {
    state: Arc<Mutex<State>>,
    mounted: Option<u64>,
}

impl Default for SimStorage {
    fn default() -> Self {
        SimStorage::new()
    }
}

impl SimStorage {
    /// An empty simulated disk.
    pub fn new() -> SimStorage {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::Dir(DirNode::default()));
        SimStorage {
            mounted: None,
            state: Arc::new(Mutex::new(State {
                generation: 0,
                nodes,
                next_ino: ROOT + 1,
                open_handles: HashMap::new(),
                locks: HashSet::new(),
                faults: Vec::new(),
                capacity: None,
                ops: 0,
                crash_at: None,
                crashes: 0,
                syncs: 0,
                dir_syncs: 0,
            })),
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.locked()
    }

    /// A handle for one "boot" of a log: it stops working at the next power cut.
    pub fn mount(&self) -> SimStorage {
        let generation = self.lock_state().generation;
        SimStorage {
            state: Arc::clone(&self.state),
            mounted: Some(generation),
        }
    }

    /// Counts an operation through this handle (performing a planned crash when due); fails
    /// if the handle belongs to a boot that a power cut ended.
    fn begin(&self) -> io::Result<MutexGuard<'_, State>> {
        let mut s = self.lock_state();
        s.tick();
        match self.mounted {
            Some(g) if g != s.generation => Err(err(EIO)),
            _ => Ok(s),
        }
    }

    /// Cuts the power now: see the module doc. `seed` drives which unsynced writes survive.
    /// A cut planned with [`SimStorage::crash_at_op`] is called off.
    pub fn crash(&self, mode: CrashMode, seed: u64) {
        let mut s = self.lock_state();
        s.crash_at = None;
        s.power_cut(mode, seed);
    }

    /// A separate disk holding what this one holds now, durable or not, so that a test
    /// can run what follows one state many times (each cut of a recovery, say) without
    /// building the state again. Open handles, locks, planned crashes and faults stay
    /// with this disk (a file only an open handle kept is not copied); the capacity and
    /// the counters of operations, power cuts and fsyncs are copied and go on from there.
    pub fn fork(&self) -> SimStorage {
        let mut copy = self.lock_state().clone();
        copy.open_handles.clear();
        copy.locks.clear();
        copy.crash_at = None;
        copy.faults.clear();
        copy.collect_garbage();
        SimStorage {
            state: Arc::new(Mutex::new(copy)),
            mounted: None,
        }
    }

    /// Kills the process without cutting the power: handles of the current boot go stale,
    /// but what it wrote stays in the (simulated) page cache, still not durable: a power
    /// cut later can still lose it.
    pub fn kill_process(&self) {
        let mut s = self.lock_state();
        s.crash_at = None;
        s.generation += 1;
        s.open_handles.clear();
        s.locks.clear();
    }

    /// Cuts the power just before the operation numbered `op` (counting every call into
    /// the storage since it was created; see [`SimStorage::ops`]).
    pub fn crash_at_op(&self, op: u64, mode: CrashMode, seed: u64) {
        self.lock_state().crash_at = Some((op, mode, seed));
    }

    /// Whether a crash planned with [`SimStorage::crash_at_op`] is still to come.
    pub fn crash_pending(&self) -> bool {
        self.lock_state().crash_at.is_some()
    }

    /// Operations performed so far.
    pub fn ops(&self) -> u64 {
        self.lock_state().ops
    }

    /// Power cuts so far.
    pub fn crashes(&self) -> u64 {
        self.lock_state().crashes
    }

    /// File fsyncs and directory fsyncs performed so far.
    pub fn syncs(&self) -> (u64, u64) {
        let s = self.lock_state();
        (s.syncs, s.dir_syncs)
    }

    /// Plans a failure (see [`Fault`]).
    pub fn inject(&self, fault: Fault) {
        self.lock_state().faults.push(fault);
    }

    /// Removes every planned failure.
    pub fn clear_faults(&self) {
        self.lock_state().faults.clear();
    }

    /// Fails writes that would make the files hold more than `bytes` in all with `ENOSPC`
    /// (`None`: no limit).
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.lock_state().capacity = bytes;
    }

    /// Bytes held by all files now.
    pub fn used_bytes(&self) -> u64 {
        self.lock_state().total_bytes()
    }

    /// Flips bit `bit` (0-7) of byte `pos` of file `path`, on the disk and in what readers
    /// see: damage to stored data.
    pub fn flip_bit(&self, path: &Path, pos: u64, bit: u8) -> io::Result<()> {
        let mut s = self.lock_state();
        let ino = s.lookup(path).ok_or_else(|| not_found(path))?;
        let f = s.file_mut(ino)?;
        let mask = 1u8 << (bit % 8);
        for image in [&mut f.current, &mut f.synced] {
            if let Some(b) = image.get_mut(pos as usize) {
                *b ^= mask;
            }
        }
        Ok(())
    }

    /// The length of file `path` as readers see it.
    pub fn file_len(&self, path: &Path) -> io::Result<u64> {
        let mut s = self.lock_state();
        let ino = s.lookup(path).ok_or_else(|| not_found(path))?;
        Ok(s.file_mut(ino)?.current.len() as u64)
    }

    /// Every file under `dir` (recursively), as paths joined to `dir`.
    pub fn files_under(&self, dir: &Path) -> Vec<PathBuf> {
        let s = self.lock_state();
        let mut out = Vec::new();
        let Some(start) = s.lookup(dir) else {
            return out;
        };
        let mut stack = vec![(start, dir.to_path_buf())];
        while let Some((ino, path)) = stack.pop() {
            match s.nodes.get(&ino) {
                Some(Node::Dir(d)) => {
                    for (name, child) in &d.entries {
                        stack.push((*child, path.join(name)));
                    }
                }
                Some(Node::File(_)) => out.push(path),
                None => {}
            }
        }
        out.sort();
        out
    }
}

#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<State>>,
    ino: u64,
    generation: u64,
    path: PathBuf,
}

impl SimFile {
    /// Runs `f` on the file's node if the handle is still live (not from before a crash).
    fn with<T>(&self, f: impl FnOnce(&mut State) -> io::Result<T>) -> io::Result<T> {
        let mut s = self.state.locked();
        s.tick();
        if s.generation != self.generation {
            return Err(err(EIO));
        }
        f(&mut s)
    }

    fn write_op(&self, s: &mut State, op: FileOp) -> io::Result<()> {
        s.fault(FaultOp::Write, &self.path)?;
        let grows_to = match &op {
            FileOp::Write { pos, data } => pos + data.len() as u64,
            FileOp::SetLen(n) => *n,
        };
        if let Some(cap) = s.capacity {
            let now = s.file_mut(self.ino)?.footprint();
            if grows_to > now && s.total_bytes() + (grows_to - now) > cap {
                return Err(err(ENOSPC));
            }
        }
        let f = s.file_mut(self.ino)?;
        apply(&mut f.current, &op);
        match op {
            FileOp::Write { pos, data } => {
                // Kept as page-aligned pieces, so a power cut can keep some and not others.
                let mut at = 0usize;
                while at < data.len() {
                    let p = pos + at as u64;
                    let room = (PAGE - p % PAGE) as usize;
                    let end = (at + room).min(data.len());
                    f.pending.push(FileOp::Write {
                        pos: p,
                        data: data[at..end].to_vec(),
                    });
                    at = end;
                }
            }
            op => f.pending.push(op),
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.with(|s| {
            s.syncs += 1;
            if let Err(e) = s.fault(FaultOp::Sync, &self.path) {
                // The kernel may drop the dirty pages of a failed fsync: they never become
                // durable, though readers still see them.
                s.file_mut(self.ino)?.pending.clear();
                return Err(e);
            }
            let f = s.file_mut(self.ino)?;
            for op in std::mem::take(&mut f.pending) {
                apply(&mut f.synced, &op);
            }
            Ok(())
        })
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut s = self.state.locked();
        if s.generation != self.generation {
            return;
        }
        if let Some(n) = s.open_handles.get_mut(&self.ino) {
            *n -= 1;
            if *n == 0 {
                s.open_handles.remove(&self.ino);
            }
        }
    }
}

impl StorageFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.with(|s| Ok(s.file_mut(self.ino)?.current.len() as u64))
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.with(|s| {
            let f = s.file_mut(self.ino)?;
            let start = pos as usize;
            let end = start + buf.len();
            match f.current.get(start..end) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    Ok(())
                }
                None => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end of the file",
                )),
            }
        })
    }

    fn write_all_at(&self, data: &[u8], pos: u64) -> io::Result<()> {
        self.with(|s| {
            self.write_op(
                s,
                FileOp::Write {
                    pos,
                    data: data.to_vec(),
                },
            )
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|s| self.write_op(s, FileOp::SetLen(len)))
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        self.with(|s| {
            s.fault(FaultOp::Write, &self.path)?;
            let now = s.file_mut(self.ino)?.footprint();
            if let Some(cap) = s.capacity {
                if len > now && s.total_bytes() + (len - now) > cap {
                    return Err(err(ENOSPC));
                }
            }
            let f = s.file_mut(self.ino)?;
            f.reserved = f.reserved.max(len);
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }
}

#[derive(Debug)]
struct SimLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    generation: u64,
}

impl StorageLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut s = self.state.locked();
        if s.generation == self.generation {
            s.locks.remove(&self.path);
        }
    }
}

impl Storage for SimStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        let mut s = self.begin()?;
        let existing = s.lookup(path);
        let ino = match (existing, mode) {
            (Some(_), OpenMode::CreateNew) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{}: file exists", path.display()),
                ))
            }
            (Some(ino), _) => {
                if !matches!(s.nodes.get(&ino), Some(Node::File(_))) {
                    return Err(io::Error::new(
                        io::ErrorKind::IsADirectory,
                        format!("{}: is a directory", path.display()),
                    ));
                }
                if mode == OpenMode::Truncate {
                    let f = s.file_mut(ino)?;
                    f.current.clear();
                    f.pending.push(FileOp::SetLen(0));
                }
                ino
            }
            (None, OpenMode::Existing) => return Err(not_found(path)),
            (None, _) => {
                let (dir, name) = s.parent(path)?;
                let ino = s.new_node(Node::File(FileNode::default()));
                s.link(dir, name, ino)?;
                ino
            }
        };
        *s.open_handles.entry(ino).or_insert(0) += 1;
        Ok(Box::new(SimFile {
            state: Arc::clone(&self.state),
            ino,
            generation: s.generation,
            path: path.to_path_buf(),
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.begin()?;
        let mut ino = ROOT;
        for c in components(path) {
            let next = match s.nodes.get(&ino) {
                Some(Node::Dir(d)) => d.entries.get(&c).copied(),
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!("{}: not a directory", path.display()),
                    ))
                }
            };
            ino = match next {
                Some(i) => i,
                None => {
                    let child = s.new_node(Node::Dir(DirNode::default()));
                    s.link(ino, c, child)?;
                    child
                }
            };
        }
        match s.nodes.get(&ino) {
            Some(Node::Dir(_)) => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: a file is in the way", path.display()),
            )),
        }
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let s = self.begin()?;
        let ino = s.lookup(path).ok_or_else(|| not_found(path))?;
        match s.nodes.get(&ino) {
            Some(Node::Dir(d)) => Ok(d.entries.keys().cloned().collect()),
            _ => Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{}: not a directory", path.display()),
            )),
        }
    }

    fn exists(&self, path: &Path) -> bool {
        self.begin().is_ok_and(|s| s.lookup(path).is_some())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.begin()?;
        let (from_dir, from_name) = s.parent(from)?;
        let (to_dir, to_name) = s.parent(to)?;
        if from_dir != to_dir {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the simulated disk renames within one directory only",
            ));
        }
        let d = s.dir_mut(from_dir)?;
        let ino = d
            .entries
            .get(&from_name)
            .copied()
            .ok_or_else(|| not_found(from))?;
        let op = DirOp::Rename {
            from: from_name,
            to: to_name,
            ino,
        };
        apply_dir(&mut d.entries, &op);
        d.pending.push(op);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.begin()?;
        s.fault(FaultOp::Remove, path)?;
        let (dir, name) = s.parent(path)?;
        let d = s.dir_mut(dir)?;
        let Some(&ino) = d.entries.get(&name) else {
            return Err(not_found(path));
        };
        if matches!(s.nodes.get(&ino), Some(Node::Dir(_))) {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{}: is a directory", path.display()),
            ));
        }
        let d = s.dir_mut(dir)?;
        d.entries.remove(&name);
        d.pending.push(DirOp::Unlink(name));
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.begin()?;
        let (dir, name) = s.parent(path)?;
        let d = s.dir_mut(dir)?;
        if d.entries.remove(&name).is_none() {
            return Err(not_found(path));
        }
        // The subtree stays as it is inside: only its name in the parent goes, which is what
        // a power cut can take back (the contents' own unlinks would be just as unsynced).
        d.pending.push(DirOp::Unlink(name));
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = self.begin()?;
        s.dir_syncs += 1;
        s.fault(FaultOp::Sync, path)?;
        let ino = s.lookup(path).ok_or_else(|| not_found(path))?;
        match s.nodes.get_mut(&ino) {
            Some(Node::Dir(d)) => {
                for op in std::mem::take(&mut d.pending) {
                    apply_dir(&mut d.synced, &op);
                }
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{}: not a directory", path.display()),
                ))
            }
        }
        s.collect_garbage();
        Ok(())
    }

    fn concurrent(&self) -> bool {
        // One thread at a time, in a fixed order: a seed replays the same operations.
        false
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn StorageLock>> {
        {
            let s = self.begin()?;
            if s.locks.contains(path) {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "the lock is held by another opener",
                ));
            }
        }
        // The lock file exists on disk as it would with flock(2).
        drop(self.open(path, OpenMode::OpenOrCreate)?);
        let mut s = self.lock_state();
        s.locks.insert(path.to_path_buf());
        Ok(Box::new(SimLock {
            state: Arc::clone(&self.state),
            path: path.to_path_buf(),
            generation: s.generation,
        }))
    }
}

#[cfg(test)]
mod tests;
