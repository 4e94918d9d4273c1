//! Races inside the NATS server that crmbus must ride over, each against a private
//! nats-server (the machine's binary, on a port of its own and a store in a temporary
//! directory), so that no other test's streams hide or widen the race.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod common;

/// A nats-server with JetStream that this test started, killed when dropped.
struct PrivateServer {
    child: Child,
    url: String,
    _store: tempfile::TempDir,
}

impl PrivateServer {
    /// Starts `CRMBUS_NATS_SERVER_BIN` (default `nats-server` on the PATH, else Debian's
    /// `/usr/sbin/nats-server`) on a free port of 127.0.0.1 and waits for it to listen.
    fn start() -> PrivateServer {
        let bin = std::env::var("CRMBUS_NATS_SERVER_BIN").unwrap_or_else(|_| {
            let on_path = std::env::var_os("PATH")
                .into_iter()
                .any(|p| std::env::split_paths(&p).any(|d| d.join("nats-server").is_file()));
            if on_path {
                "nats-server".to_string()
            } else {
                "/usr/sbin/nats-server".to_string()
            }
        });
        let store = tempfile::tempdir().expect("temporary store directory");
        let mut child = Command::new(&bin)
            .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
            .arg(store.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        // Reads the server's log to its end (so the pipe never fills), sending back the
        // address it listens on once it says it is ready.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut addr = None;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
                    addr = Some(rest.trim().to_string());
                }
                if line.contains("Server is ready") {
                    if let (Some(tx), Some(addr)) = (tx.take(), addr.take()) {
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("{bin} did not say it was ready within 30 s");
            }
        };
        PrivateServer {
            child,
            url: format!("nats://{addr}"),
            _store: store,
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// When an account's last stream is deleted the server removes the account's `streams`
/// directory; a stream created at that moment fails with the generic "error creating store
/// for stream" (10049; the server's log says `mkdir …/streams: no such file or directory`).
/// Namespaces opened while others are purged must all open. Three workers: few enough that
/// the account often holds no stream at all (before the fix, one run in two or more failed
/// within 150 rounds).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespaces_open_while_others_remove_the_last_stream() {
    let server = PrivateServer::start();
    const WORKERS: usize = 3;
    const ROUNDS: usize = 200;
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let url = server.url.clone();
        tasks.push(tokio::spawn(async move {
            for r in 0..ROUNDS {
                let prefix = common::unique_prefix(&format!("race{w}"));
                if let Err(e) = crmbus_nats::open(&url, &prefix).await {
                    return Err(format!("worker {w}, round {r}: opening {prefix}: {e}"));
                }
                if let Err(e) = crmbus_nats::purge(&url, &prefix).await {
                    return Err(format!("worker {w}, round {r}: purging {prefix}: {e}"));
                }
            }
            Ok(())
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.expect("worker task") {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
