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
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::{OpenMode, Storage, StorageFile, StorageLock};

/// Unsynced writes are kept (and lost) in pieces of this size, aligned to file positions.
pub const PAGE: u64 = 4096;

const EIO: i32 = 5;
const ENOSPC: i32 = 28;

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

#[derive(Debug, Clone)]
enum FileOp {
    Write { pos: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct FileNode {
    current: Vec<u8>,
    synced: Vec<u8>,
    pending: Vec<FileOp>,
    /// Bytes reserved by `allocate` (counted against the capacity like written ones).
    reserved: u64,
}

impl FileNode {
    fn footprint(&self) -> u64 {
        (self.current.len() as u64).max(self.reserved)
    }
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(String, u64),
    Unlink(String),
    Rename { from: String, to: String, ino: u64 },
}

#[derive(Debug, Default)]
struct DirNode {
    entries: BTreeMap<String, u64>,
    synced: BTreeMap<String, u64>,
    pending: Vec<DirOp>,
}

#[derive(Debug)]
enum Node {
    File(FileNode),
    Dir(DirNode),
}

#[derive(Debug)]
struct State {
    generation: u64,
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    open_handles: HashMap<u64, usize>,
    locks: HashSet<PathBuf>,
    faults: Vec<Fault>,
    capacity: Option<u64>,
    ops: u64,
    crash_at: Option<(u64, CrashMode, u64)>,
    crashes: u64,
    syncs: u64,
    dir_syncs: u64,
}

const ROOT: u64 = 1;

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

fn err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory", path.display()),
    )
}

/// The normal components of `path` (the simulated disk has one root; `.` and `..` are
/// resolved lexically).
fn components(path: &Path) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn apply(image: &mut Vec<u8>, op: &FileOp) {
    match op {
        FileOp::Write { pos, data } => {
            let (pos, end) = (*pos as usize, *pos as usize + data.len());
            if image.len() < end {
                image.resize(end, 0);
            }
            image[pos..end].copy_from_slice(data);
        }
        FileOp::SetLen(n) => image.resize(*n as usize, 0),
    }
}

fn apply_dir(entries: &mut BTreeMap<String, u64>, op: &DirOp) {
    match op {
        DirOp::Link(name, ino) => {
            entries.insert(name.clone(), *ino);
        }
        DirOp::Unlink(name) => {
            entries.remove(name);
        }
        DirOp::Rename { from, to, ino } => {
            entries.remove(from);
            entries.insert(to.clone(), *ino);
        }
    }
}

impl State {
    fn total_bytes(&self) -> u64 {
        self.nodes
            .values()
            .map(|n| match n {
                Node::File(f) => f.footprint(),
                Node::Dir(_) => 0,
            })
            .sum()
    }

    /// Counts an operation; performs a planned crash when its number comes up. Returns the
    /// generation the operation must belong to.
    fn tick(&mut self) {
        self.ops += 1;
        if let Some((at, mode, seed)) = self.crash_at {
            if self.ops >= at {
                self.crash_at = None;
                self.power_cut(mode, seed);
            }
        }
    }

    fn fault(&mut self, op: FaultOp, path: &Path) -> io::Result<()> {
        let p = path.to_string_lossy();
        let mut hit = None;
        for (i, f) in self.faults.iter_mut().enumerate() {
            if f.op != op || !p.contains(f.path_contains.as_str()) {
                continue;
            }
            if f.skip > 0 {
                f.skip -= 1;
                continue;
            }
            hit = Some((i, f.errno, f.repeat));
            break;
        }
        match hit {
            Some((i, errno, repeat)) => {
                if !repeat {
                    self.faults.remove(i);
                }
                Err(err(errno))
            }
            None => Ok(()),
        }
    }

    fn lookup(&self, path: &Path) -> Option<u64> {
        let mut ino = ROOT;
        for c in components(path) {
            match self.nodes.get(&ino) {
                Some(Node::Dir(d)) => ino = *d.entries.get(&c)?,
                _ => return None,
            }
        }
        Some(ino)
    }

    /// The directory holding `path` and the last component's name.
    fn parent(&self, path: &Path) -> io::Result<(u64, String)> {
        let mut comps = components(path);
        let name = comps
            .pop()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the root has no parent"))?;
        let parent: PathBuf = comps.iter().collect();
        match self.lookup(&parent) {
            Some(ino) if matches!(self.nodes.get(&ino), Some(Node::Dir(_))) => Ok((ino, name)),
            Some(_) => Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{}: not a directory", parent.display()),
            )),
            None => Err(not_found(&parent)),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> io::Result<&mut DirNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(d)) => Ok(d),
            _ => Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "simulated storage: not a directory",
            )),
        }
    }

    fn link(&mut self, dir: u64, name: String, ino: u64) -> io::Result<()> {
        let d = self.dir_mut(dir)?;
        d.entries.insert(name.clone(), ino);
        d.pending.push(DirOp::Link(name, ino));
        Ok(())
    }

    fn new_node(&mut self, node: Node) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        ino
    }

    fn file_mut(&mut self, ino: u64) -> io::Result<&mut FileNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(f)) => Ok(f),
            _ => Err(err(EIO)),
        }
    }

    /// Builds the disk a reboot finds and makes it the only state; old handles go stale.
    fn power_cut(&mut self, mode: CrashMode, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let pick = |rng: &mut StdRng| match mode {
            CrashMode::Mixed => match rng.random_range(0..4u8) {
                0 => CrashMode::KeepNone,
                1 => CrashMode::KeepAll,
                2 => CrashMode::RandomPages,
                _ => CrashMode::TornTail,
            },
            m => m,
        };
        let mut inos: Vec<u64> = self.nodes.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let m = pick(&mut rng);
            match self.nodes.get_mut(&ino) {
                Some(Node::File(f)) => {
                    let mut image = std::mem::take(&mut f.synced);
                    let n = f.pending.len();
                    for (i, op) in f.pending.iter().enumerate() {
                        match m {
                            CrashMode::KeepNone => {}
                            CrashMode::KeepAll => apply(&mut image, op),
                            CrashMode::RandomPages | CrashMode::Mixed => {
                                if rng.random_bool(0.5) {
                                    apply(&mut image, op);
                                }
                            }
                            CrashMode::TornTail => match op {
                                FileOp::Write { pos, data } if i + 1 == n => {
                                    let keep = rng.random_range(0..=data.len());
                                    apply(
                                        &mut image,
                                        &FileOp::Write {
                                            pos: *pos,
                                            data: data[..keep].to_vec(),
                                        },
                                    );
                                }
                                op => apply(&mut image, op),
                            },
                        }
                    }
                    f.current = image.clone();
                    f.synced = image;
                    f.pending.clear();
                }
                Some(Node::Dir(d)) => {
                    let keep = match m {
                        CrashMode::KeepNone => 0,
                        CrashMode::KeepAll => d.pending.len(),
                        _ => rng.random_range(0..=d.pending.len()),
                    };
                    let mut entries = std::mem::take(&mut d.synced);
                    for op in &d.pending[..keep] {
                        apply_dir(&mut entries, op);
                    }
                    d.entries = entries.clone();
                    d.synced = entries;
                    d.pending.clear();
                }
                None => {}
            }
        }
        self.generation += 1;
        self.crashes += 1;
        self.open_handles.clear();
        self.locks.clear();
        self.collect_garbage();
    }

    /// Drops nodes nothing can reach any more: no directory names them (now, durably, or
    /// in an unsynced change) and no handle has them open.
    fn collect_garbage(&mut self) {
        let mut seen: HashSet<u64> = HashSet::new();
        let mut stack = vec![ROOT];
        while let Some(ino) = stack.pop() {
            if !seen.insert(ino) {
                continue;
            }
            if let Some(Node::Dir(d)) = self.nodes.get(&ino) {
                stack.extend(d.entries.values());
                stack.extend(d.synced.values());
                for op in &d.pending {
                    match op {
                        DirOp::Link(_, i) | DirOp::Rename { ino: i, .. } => stack.push(*i),
                        DirOp::Unlink(_) => {}
                    }
                }
            }
        }
        let open: Vec<u64> = self.open_handles.keys().copied().collect();
        self.nodes
            .retain(|ino, _| seen.contains(ino) || open.contains(ino));
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
mod tests {
    use super::*;

    fn write(s: &SimStorage, path: &str, data: &[u8]) -> Box<dyn StorageFile> {
        let f = s
            .open(Path::new(path), OpenMode::OpenOrCreate)
            .expect("open");
        f.write_all_at(data, 0).expect("write");
        f
    }

    #[test]
    fn unsynced_data_and_names_are_lost_by_a_power_cut() {
        let s = SimStorage::new();
        s.create_dir_all(Path::new("/d")).expect("mkdir");
        s.sync_dir(Path::new("/")).expect("sync root");
        let f = write(&s, "/d/a", b"hello");
        f.sync_data().expect("sync");
        // The file's data is durable, its name is not.
        s.crash(CrashMode::KeepNone, 1);
        assert!(!s.exists(Path::new("/d/a")));
        let f = write(&s, "/d/a", b"hello");
        f.sync_data().expect("sync");
        s.sync_dir(Path::new("/d")).expect("sync dir");
        f.write_all_at(b"J", 0).expect("write");
        s.crash(CrashMode::KeepNone, 2);
        assert_eq!(s.read(Path::new("/d/a")).expect("read"), b"hello");
        // A handle from before the cut is dead.
        assert_eq!(f.len().map_err(|e| e.raw_os_error()), Err(Some(EIO)));
    }

    #[test]
    fn keep_all_keeps_everything_and_a_failed_fsync_loses_the_dirty_pages() {
        let s = SimStorage::new();
        let f = write(&s, "/a", b"one");
        s.sync_dir(Path::new("/")).expect("sync root");
        s.crash(CrashMode::KeepAll, 3);
        assert_eq!(s.read(Path::new("/a")).expect("read"), b"one");
        let f2 = s.open(Path::new("/a"), OpenMode::Existing).expect("open");
        drop(f);
        f2.write_all_at(b"two", 0).expect("write");
        s.inject(Fault::eio(FaultOp::Sync, "/a"));
        assert!(f2.sync_data().is_err());
        assert_eq!(s.read(Path::new("/a")).expect("read"), b"two");
        f2.sync_data().expect("second sync succeeds");
        s.crash(CrashMode::KeepAll, 4);
        assert_eq!(s.read(Path::new("/a")).expect("read"), b"one");
    }

    #[test]
    fn random_pages_keep_some_pages_and_renames_are_atomic() {
        let s = SimStorage::new();
        let big = vec![7u8; (PAGE * 8) as usize];
        let f = write(&s, "/big", &big);
        drop(f);
        s.sync_dir(Path::new("/")).expect("sync");
        let mut kept = HashSet::new();
        for seed in 0..8 {
            let s2 = SimStorage::new();
            let f = write(&s2, "/big", &big);
            s2.sync_dir(Path::new("/")).expect("sync");
            drop(f);
            s2.crash(CrashMode::RandomPages, seed);
            let got = s2.read(Path::new("/big")).expect("read");
            kept.insert(got.iter().filter(|&&b| b == 7).count() as u64 / PAGE);
        }
        assert!(kept.len() > 2, "random subsets differ by seed: {kept:?}");
        write(&s, "/tmp", b"new");
        s.rename(Path::new("/tmp"), Path::new("/big"))
            .expect("rename");
        s.crash(CrashMode::RandomPages, 9);
        let names = s.list_dir(Path::new("/")).expect("list");
        assert!(
            names == vec!["big".to_string()] || names == vec!["big".to_string(), "tmp".to_string()],
            "{names:?}"
        );
    }

    #[test]
    fn capacity_and_planned_crash() {
        let s = SimStorage::new();
        s.set_capacity(Some(10));
        let f = write(&s, "/a", b"12345");
        let e = f.write_all_at(b"123456", 5).expect_err("full");
        assert_eq!(e.raw_os_error(), Some(ENOSPC));
        let at = s.ops() + 2;
        s.crash_at_op(at, CrashMode::KeepNone, 0);
        f.write_all_at(b"x", 0).expect("before the cut");
        assert!(f.write_all_at(b"y", 0).is_err(), "the cut happened");
        assert_eq!(s.crashes(), 1);
    }
}
