//! What the CLI's process tests share: a real `crmbus serve` (the binary) on an ephemeral
//! port, run with extra environment if needed.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

pub mod postgres;

pub const BIN: &str = env!("CARGO_BIN_EXE_crmbus");

pub struct Serve {
    pub child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Serve {
    pub fn start() -> Serve {
        Serve::start_with(&[])
    }

    /// Starts with extra environment variables (`CRMBUS_…` configuration keys).
    pub fn start_with(env: &[(&str, &str)]) -> Serve {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
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
        std::thread::spawn(move || for _ in lines {});
        Serve {
            child,
            url,
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

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
