//! `crmbus bench log` runs the embedded log in the crmbus process itself, so it must run
//! it as `crmbus serve` does: with transparent huge pages off (zeroing them took a quarter
//! of the benchmark's CPU), and with every event appended read back.

use std::process::Command;

#[test]
fn bench_log_runs_without_transparent_huge_pages_and_reads_back_every_event() {
    // Where the kernel does not say (no `THP_enabled`, or no /proc at all), the report
    // must say it does not know.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kernel_reports_thp = status.lines().any(|l| l.starts_with("THP_enabled:"));
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_crmbus"))
        .args([
            "bench", "log", "--events", "6400", "--single", "20", "--json", "--dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run crmbus bench log");
    assert!(
        out.status.success(),
        "bench log failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["events"], 6400);
    assert!(report["append_events_per_sec"]
        .as_f64()
        .is_some_and(|v| v > 0.0));
    assert!(report["read_events_per_sec"]
        .as_f64()
        .is_some_and(|v| v > 0.0));
    if kernel_reports_thp {
        // This test's own process may use them; the benchmark's must not.
        assert_eq!(report["transparent_huge_pages"], false, "{report}");
    } else {
        assert!(report["transparent_huge_pages"].is_null(), "{report}");
    }
}
