//! The simulated disk's file model: inodes of files and directories, each with what a
//! reader sees and what is durable, and the power cut that builds the disk a reboot finds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Component, Path, PathBuf};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::faults::{err, CrashMode, Fault, FaultOp, EIO};

#[derive(Debug, Clone)]
pub(super) enum FileOp {
    Write { pos: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default, Clone)]
pub(super) struct FileNode {
    pub(super) current: Vec<u8>,
    pub(super) synced: Vec<u8>,
    pub(super) pending: Vec<FileOp>,
    /// Bytes reserved by `allocate` (counted against the capacity like written ones).
    pub(super) reserved: u64,
}

impl FileNode {
    pub(super) fn footprint(&self) -> u64 {
        (self.current.len() as u64).max(self.reserved)
    }
}

#[derive(Debug, Clone)]
pub(super) enum DirOp {
    Link(String, u64),
    Unlink(String),
    Rename { from: String, to: String, ino: u64 },
}

#[derive(Debug, Default, Clone)]
pub(super) struct DirNode {
    pub(super) entries: BTreeMap<String, u64>,
    pub(super) synced: BTreeMap<String, u64>,
    pub(super) pending: Vec<DirOp>,
}

#[derive(Debug, Clone)]
pub(super) enum Node {
    File(FileNode),
    Dir(DirNode),
}

#[derive(Debug, Clone)]
pub(super) struct State {
    pub(super) generation: u64,
    pub(super) nodes: HashMap<u64, Node>,
    pub(super) next_ino: u64,
    pub(super) open_handles: HashMap<u64, usize>,
    pub(super) locks: HashSet<PathBuf>,
    pub(super) faults: Vec<Fault>,
    pub(super) capacity: Option<u64>,
    pub(super) ops: u64,
    pub(super) crash_at: Option<(u64, CrashMode, u64)>,
    pub(super) crashes: u64,
    pub(super) syncs: u64,
    pub(super) dir_syncs: u64,
}

pub(super) const ROOT: u64 = 1;

pub(super) fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory", path.display()),
    )
}

/// The normal components of `path` (the simulated disk has one root; `.` and `..` are
/// resolved lexically).
pub(super) fn components(path: &Path) -> Vec<String> {
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

pub(super) fn apply(image: &mut Vec<u8>, op: &FileOp) {
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

pub(super) fn apply_dir(entries: &mut BTreeMap<String, u64>, op: &DirOp) {
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
    pub(super) fn total_bytes(&self) -> u64 {
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
    pub(super) fn tick(&mut self) {
        self.ops += 1;
        if let Some((at, mode, seed)) = self.crash_at {
            if self.ops >= at {
                self.crash_at = None;
                self.power_cut(mode, seed);
            }
        }
    }

    pub(super) fn fault(&mut self, op: FaultOp, path: &Path) -> io::Result<()> {
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

    pub(super) fn lookup(&self, path: &Path) -> Option<u64> {
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
    pub(super) fn parent(&self, path: &Path) -> io::Result<(u64, String)> {
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

    pub(super) fn dir_mut(&mut self, ino: u64) -> io::Result<&mut DirNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(d)) => Ok(d),
            _ => Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "simulated storage: not a directory",
            )),
        }
    }

    pub(super) fn link(&mut self, dir: u64, name: String, ino: u64) -> io::Result<()> {
        let d = self.dir_mut(dir)?;
        d.entries.insert(name.clone(), ino);
        d.pending.push(DirOp::Link(name, ino));
        Ok(())
    }

    pub(super) fn new_node(&mut self, node: Node) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        ino
    }

    pub(super) fn file_mut(&mut self, ino: u64) -> io::Result<&mut FileNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(f)) => Ok(f),
            _ => Err(err(EIO)),
        }
    }

    /// Builds the disk a reboot finds and makes it the only state; old handles go stale.
    pub(super) fn power_cut(&mut self, mode: CrashMode, seed: u64) {
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
    pub(super) fn collect_garbage(&mut self) {
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
