//! The embedded log never blocks an async worker thread on disk I/O (issue 13, item 7).
//!
//! Each test runs the log on a single-threaded runtime over a file system whose chosen
//! operation stops at a gate. While one call of the log is held there, another task on the
//! same runtime must still run: if the held call blocked the runtime's one thread (I/O
//! inline) or held a lock the other needs across its I/O, the other task cannot. A
//! watchdog thread opens the gate if that task has not finished within a bound, so a
//! failure ends the test instead of hanging it, and reports what was blocked.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crmbus::{Event, EventLog, StateOp, TopicSpec};
use crmbus_embedded::storage::{OpenMode, StorageFile, StorageLock};
use crmbus_embedded::{EmbeddedLog, EmbeddedOptions, OsStorage, Storage};
use serde_json::json;

type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;

/// The bound after which the watchdog calls the runtime blocked.
const BLOCKED: Duration = Duration::from_secs(30);

/// Which operation stops at the gate.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    SyncDir,
    RemoveDir,
    FileSync,
    FileRead,
}

/// A gate that operations matching `(op, path suffix or part)` wait at while it is armed.
#[derive(Default)]
struct Gate {
    armed: Mutex<Option<(Op, String)>>,
    released: Mutex<bool>,
    cond: Condvar,
    entered: tokio::sync::Notify,
    was_entered: AtomicBool,
}

impl Gate {
    fn arm(&self, op: Op, path_part: &str) {
        *self.released.lock().expect("gate") = false;
        *self.armed.lock().expect("gate") = Some((op, path_part.to_string()));
    }

    fn release(&self) {
        *self.armed.lock().expect("gate") = None;
        *self.released.lock().expect("gate") = true;
        self.cond.notify_all();
    }

    fn pass(&self, op: Op, path: &Path) {
        let hit = matches!(
            &*self.armed.lock().expect("gate"),
            Some((o, part)) if *o == op && path.to_string_lossy().contains(part.as_str())
        );
        if !hit {
            return;
        }
        self.was_entered.store(true, Ordering::SeqCst);
        self.entered.notify_one();
        let mut released = self.released.lock().expect("gate");
        while !*released {
            released = self.cond.wait(released).expect("gate");
        }
    }
}

#[derive(Debug)]
struct GatedStorage {
    inner: OsStorage,
    gate: Arc<Gate>,
}

#[derive(Debug)]
struct GatedFile {
    inner: Box<dyn StorageFile>,
    path: std::path::PathBuf,
    gate: Arc<Gate>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
    }
}

impl StorageFile for GatedFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.gate.pass(Op::FileRead, &self.path);
        self.inner.read_exact_at(buf, pos)
    }
    fn write_all_at(&self, data: &[u8], pos: u64) -> io::Result<()> {
        self.inner.write_all_at(data, pos)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        self.inner.allocate(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.gate.pass(Op::FileSync, &self.path);
        self.inner.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.gate.pass(Op::FileSync, &self.path);
        self.inner.sync_all()
    }
}

impl Storage for GatedStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(GatedFile {
            inner: self.inner.open(path, mode)?,
            path: path.to_path_buf(),
            gate: Arc::clone(&self.gate),
        }))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.gate.pass(Op::RemoveDir, path);
        self.inner.remove_dir_all(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.gate.pass(Op::SyncDir, path);
        self.inner.sync_dir(path)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn StorageLock>> {
        self.inner.lock(path)
    }
}

/// A log with topics `fast` and `slow` (one event each) on a gated file system.
async fn world(dir: &Path) -> (Arc<EmbeddedLog>, Arc<Gate>) {
    let gate = Arc::new(Gate::default());
    let opts = EmbeddedOptions {
        storage: Arc::new(GatedStorage {
            inner: OsStorage,
            gate: Arc::clone(&gate),
        }),
        ..EmbeddedOptions::default()
    };
    let log = Arc::new(EmbeddedLog::open(dir, opts).expect("open"));
    for t in ["fast", "slow"] {
        log.create_topic(TopicSpec::new(t, 1))
            .await
            .expect("create");
        log.append(
            &[t.to_string()],
            &[Event::new("deal.won", json!({"n": 1})).subject("k")],
        )
        .await
        .expect("append");
    }
    (log, gate)
}

/// Arms the gate at `op` on `path_part`, starts `held` (which must reach the gate), and
/// checks that `other` runs to its end on the same single-threaded runtime meanwhile.
fn other_work_runs_while<H, O>(what: &str, op: Op, path_part: &str, held: H, other: O)
where
    H: Fn(Arc<EmbeddedLog>) -> BoxFuture,
    O: Fn(Arc<EmbeddedLog>) -> BoxFuture,
{
    // Both kinds of runtime the log may be used on. The multi-threaded one has a single
    // worker, so a call that blocked it would stop everything else too.
    other_work_runs_on(
        what,
        op,
        path_part,
        &held,
        &other,
        tokio::runtime::Builder::new_current_thread(),
    );
    let mut multi = tokio::runtime::Builder::new_multi_thread();
    multi.worker_threads(1);
    other_work_runs_on(what, op, path_part, &held, &other, multi);
}

fn other_work_runs_on<H, O>(
    what: &str,
    op: Op,
    path_part: &str,
    held: &H,
    other: &O,
    mut builder: tokio::runtime::Builder,
) where
    H: Fn(Arc<EmbeddedLog>) -> BoxFuture,
    O: Fn(Arc<EmbeddedLog>) -> BoxFuture,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = builder.enable_all().build().expect("runtime");
    let (log, gate) = rt.block_on(world(dir.path()));
    gate.arm(op, path_part);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = {
        let gate = Arc::clone(&gate);
        std::thread::spawn(move || {
            let blocked = done_rx.recv_timeout(BLOCKED).is_err();
            gate.release();
            blocked
        })
    };
    rt.block_on(async {
        let held_task = tokio::spawn(held(Arc::clone(&log)));
        gate.entered.notified().await;
        // A task of the runtime's own, like any other request the server is serving.
        tokio::spawn(other(Arc::clone(&log)))
            .await
            .expect("the other work panicked");
        let _ = done_tx.send(());
        held_task.await.expect("the held call panicked");
    });
    assert!(
        gate.was_entered.load(Ordering::SeqCst),
        "{what}: never reached the gate; the test proved nothing"
    );
    let blocked = watchdog.join().expect("watchdog");
    assert!(
        !blocked,
        "{what}: other work on the runtime could not run while it waited on disk I/O"
    );
    rt.block_on(async { log.close().await.expect("close") });
}

fn boxed<F>(f: F) -> BoxFuture
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    Box::pin(f)
}

/// What must keep running: a read and a describe of the other topic.
fn read_fast(log: Arc<EmbeddedLog>) -> BoxFuture {
    boxed(async move {
        let info = log.describe_topic("fast").await.expect("describe");
        assert_eq!(info.event_count(), 1);
        let got = log.read("fast", 0, 0, 10).await.expect("read");
        assert_eq!(got.len(), 1);
    })
}

#[test]
fn creating_a_topic_blocks_no_async_worker() {
    other_work_runs_while(
        "create_topic",
        Op::SyncDir,
        "topics/new",
        |log| {
            boxed(async move {
                log.create_topic(TopicSpec::new("new", 2))
                    .await
                    .expect("create");
            })
        },
        read_fast,
    );
}

#[test]
fn deleting_a_topic_blocks_no_async_worker() {
    other_work_runs_while(
        "delete_topic",
        Op::RemoveDir,
        "topics/slow",
        |log| boxed(async move { log.delete_topic("slow").await.expect("delete") }),
        read_fast,
    );
}

#[test]
fn reading_segments_blocks_no_async_worker() {
    other_work_runs_while(
        "read",
        Op::FileRead,
        "topics/slow",
        |log| {
            boxed(async move {
                let got = log.read("slow", 0, 0, 10).await.expect("read");
                assert_eq!(got.len(), 1);
            })
        },
        |log| {
            boxed(async move {
                let info = log.describe_topic("fast").await.expect("describe");
                assert_eq!(info.event_count(), 1);
            })
        },
    );
}

#[test]
fn state_store_writes_block_no_async_worker() {
    other_work_runs_while(
        "state apply",
        Op::FileSync,
        "meta.redb",
        |log| {
            boxed(async move {
                log.state_store()
                    .apply(vec![StateOp::Put {
                        namespace: "ns".into(),
                        key: "k".into(),
                        value: b"v".to_vec(),
                    }])
                    .await
                    .expect("apply");
            })
        },
        read_fast,
    );
}

#[test]
fn committing_an_offset_blocks_no_async_worker() {
    other_work_runs_while(
        "commit_offset",
        Op::FileSync,
        "meta.redb",
        |log| {
            boxed(async move {
                log.commit_offset("g", "slow", 0, 1).await.expect("commit");
            })
        },
        read_fast,
    );
}

#[test]
fn appending_blocks_no_async_worker() {
    // On the multi-threaded runtime the append runs its own group-commit round, whose
    // fdatasync of the segment stops at the gate; on the current-thread runtime the
    // group-commit thread runs it. Either way the other task must run meanwhile.
    other_work_runs_while(
        "append",
        Op::FileSync,
        "topics/slow",
        |log| {
            boxed(async move {
                log.append(
                    &["slow".to_string()],
                    &[Event::new("deal.won", json!({"n": 2})).subject("k")],
                )
                .await
                .expect("append");
                let got = log.read("slow", 0, 0, 10).await.expect("read");
                assert_eq!(got.len(), 2);
            })
        },
        read_fast,
    );
}
