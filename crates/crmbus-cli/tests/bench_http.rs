//! `crmbus bench http --json` runs both publish modes against an in-process server and
//! reports positive figures (correctness only: speed is for people to read, not to assert).

use std::process::Command;

#[test]
fn bench_http_json_reports_both_modes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_crmbus"))
        .args(["bench", "http", "--events", "2000", "--json", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run crmbus bench http");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    for mode in ["single", "batch"] {
        for field in ["events_per_sec", "p50_us", "p99_us", "requests"] {
            let x = v[mode][field].as_f64();
            assert!(x.is_some_and(|x| x > 0.0), "{mode}.{field} in {v}");
        }
        assert_eq!(v[mode]["events"], 2000, "{v}");
    }
    assert_eq!(v["single"]["requests"], 2000, "{v}");
    assert_eq!(v["batch"]["batch_size"], 100, "{v}");
    assert_eq!(v["batch"]["requests"], 20, "{v}");
    assert!(v["clients"].as_u64().is_some_and(|c| c > 0), "{v}");
    assert_eq!(v["durability"], "fsync", "{v}");
    // The in-process server's directory is removed afterwards.
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("read dir").collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn bench_http_rejects_bad_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_crmbus"))
        .args(["bench", "http", "--clients", "0"])
        .output()
        .expect("run crmbus bench http");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--clients"));
}
