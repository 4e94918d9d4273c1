//! `crmbus bench compare --json` and `crmbus bench schema --json` report every figure,
//! positive (correctness only: speed is for people to read, not to assert).
//!
//! Redis and NATS are required when something listens on their default ports (as on the
//! project's machines); otherwise the comparison must say they are unavailable and why.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

fn listening(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .ok()
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

fn run_json(args: &[&str], dir: &std::path::Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_crmbus"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("run crmbus bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON object")
}

fn positive(v: &Value, path: &str) {
    let x = path
        .split('.')
        .fold(v, |v, k| &v[k])
        .as_f64()
        .unwrap_or(f64::NAN);
    assert!(x > 0.0, "{path} should be a positive number in {v}");
}

fn assert_engine(v: &Value, engine: &str) {
    assert_eq!(v[engine]["available"], true, "{engine} in {v}");
    assert!(
        v[engine]["durability"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{engine}.durability in {v}"
    );
    for field in [
        "publish_events_per_sec",
        "single_p50_us",
        "single_p99_us",
        "consume_events_per_sec",
    ] {
        positive(v, &format!("{engine}.{field}"));
    }
    assert!(v[engine].get("cleanup_error").is_none(), "{v}");
}

#[test]
fn bench_compare_json_reports_every_engine() {
    let dir = tempfile::tempdir().expect("temp dir");
    let v = run_json(
        &[
            "bench",
            "compare",
            "--events",
            "2000",
            "--single-events",
            "200",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(v["events"], 2000, "{v}");
    assert_eq!(v["single_events"], 200, "{v}");
    for what in ["pipelined", "single", "consume"] {
        assert!(v[what].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    }
    assert_engine(&v, "embedded");
    assert_eq!(
        v["embedded"]["durability"],
        "fsync before ack (group commit)"
    );
    for (engine, addr) in [("redis", "127.0.0.1:6379"), ("nats", "127.0.0.1:4222")] {
        if listening(addr) {
            assert_engine(&v, engine);
            for ratio in ["publish", "single_p50", "single_p99", "consume"] {
                positive(&v, &format!("ratios.{engine}.{ratio}"));
            }
        } else {
            eprintln!("{engine} is not running at {addr}: checking it is reported unavailable");
            assert_eq!(v[engine]["available"], false, "{v}");
            assert!(v[engine]["error"].as_str().is_some_and(|e| !e.is_empty()));
            assert!(v["ratios"][engine].is_null(), "{v}");
        }
    }
    // The embedded log's directory is removed afterwards.
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("read dir").collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn bench_compare_reports_an_unreachable_engine_and_runs_the_others() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let v = run_json(
        &[
            "bench",
            "compare",
            "--events",
            "300",
            "--single-events",
            "20",
            "--redis-url",
            "redis://127.0.0.1:1",
            "--nats-url",
            "nats://127.0.0.1:1",
            "--json",
        ],
        dir.path(),
    );
    assert_engine(&v, "embedded");
    for engine in ["redis", "nats"] {
        assert_eq!(v[engine]["available"], false, "{v}");
        assert!(
            v[engine]["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{v}"
        );
        assert!(v["ratios"][engine].is_null(), "{v}");
    }
}

#[test]
fn bench_schema_json_reports_both_modes_and_validation_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let v = run_json(
        &[
            "bench",
            "schema",
            "--events",
            "2000",
            "--validations",
            "5000",
            "--json",
        ],
        dir.path(),
    );
    for path in [
        "validation_on.events_per_sec",
        "validation_off.events_per_sec",
        "ratio",
        "validate_only_per_sec",
        "validate_only_us",
    ] {
        positive(&v, path);
    }
    assert_eq!(v["events"], 2000, "{v}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("read dir").collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn bench_compare_and_schema_reject_bad_arguments() {
    for args in [
        ["bench", "compare", "--producers", "0"],
        ["bench", "schema", "--batch", "0"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_crmbus"))
            .args(args)
            .output()
            .expect("run crmbus bench");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(args[2]), "{err}");
    }
}
