//! `crmbus demo --json` runs the lead scenario end to end on a real embedded log.

use std::process::Command;

#[test]
fn demo_json_reports_retries_dead_letters_and_a_drained_dlq() {
    let out = Command::new(env!("CARGO_BIN_EXE_crmbus"))
        .args(["demo", "--json", "--leads", "200"])
        .output()
        .expect("run crmbus demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(v["published"], 600);
    for consumer in ["scoring", "notifications", "crm_sync"] {
        assert_eq!(v["delivered"][consumer], 600, "{consumer}");
    }
    assert!(v["retries"].as_u64().is_some_and(|r| r > 0), "{v}");
    assert!(v["dead_lettered"].as_u64().is_some_and(|d| d > 0), "{v}");
    assert_eq!(v["dlq_after_redrive"], 0);
    assert_eq!(v["order_violations"], 0);
}

#[test]
fn demo_rejects_bad_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_crmbus"))
        .args(["demo", "--leads", "0"])
        .output()
        .expect("run crmbus demo");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--leads"));
}
