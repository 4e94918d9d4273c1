//! What the CLI's process tests share: a real `crmbus serve` (the binary) on an ephemeral
//! port, run with extra environment if needed.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;

pub mod postgres;

pub const BIN: &str = env!("CARGO_BIN_EXE_crmbus");

pub struct Serve {
    pub child: Child,
    pub url: String,
    /// Every line the server wrote to stderr (its log).
    pub log: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Serve {
    pub fn start() -> Serve {
        Serve::start_with(&[])
    }

    /// Starts with extra environment variables (`CRMBUS_…` configuration keys).
    pub fn start_with(env: &[(&str, &str)]) -> Serve {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        Serve::start_in(dir, &data, env)
    }

    /// Starts on the data directory `data` (kept by `dir`'s owner or inside it).
    pub fn start_in(dir: tempfile::TempDir, data: &Path, env: &[(&str, &str)]) -> Serve {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn crmbus serve");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut before = Vec::new();
        let url = loop {
            let Some(Ok(line)) = lines.next() else {
                panic!(
                    "crmbus serve stopped before printing its address:\n{}",
                    before.join("\n")
                );
            };
            if let Some(rest) = line.strip_prefix("crmbus listening on ") {
                break rest.split_whitespace().next().expect("url").to_string();
            }
            before.push(line);
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        let log = Arc::new(Mutex::new(before));
        let kept = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(mut l) = kept.lock() {
                    l.push(line);
                }
            }
        });
        Serve {
            child,
            url,
            log,
            reader: Some(reader),
            _dir: dir,
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("CRMBUS_URL", &self.url)
            .output()
            .expect("run crmbus")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "crmbus {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all: Vec<&str> = args.to_vec();
        all.push("--json");
        let text = self.ok(&all);
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
    }
}

impl Serve {
    /// Stops the server (SIGTERM, then waits) and returns its whole log, every line read.
    pub fn stop(&mut self) -> String {
        let pid = self.child.id() as i32;
        // SAFETY: a signal to the child process this test started.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
