//! The CLI's server commands against a real `crmbus serve` (the binary) on an ephemeral
//! port: topics, publish (one, several topics, JSON lines), tail, subs, dlq, replay,
//! schema, `--json`, and the messages for errors and an unreachable server.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

mod common;

use common::{Serve, BIN};

#[test]
fn topics_publish_tail_subs_dlq_replay_and_schema_commands() {
    let s = Serve::start();
    let created = s.json(&["topics", "create", "deals", "--partitions", "2"]);
    assert_eq!(created["partitions"], 2);
    s.ok(&["topics", "create", "notifications", "--partitions", "1"]);
    let table = s.ok(&["topics", "list"]);
    assert!(table.lines().next().expect("header").starts_with("NAME"));
    assert!(table.contains("deals") && table.contains("notifications"));

    let r = s.json(&[
        "publish",
        "--topic",
        "deals",
        "--type",
        "deal.won",
        "--subject",
        "deal-42",
        "--id",
        "w-1",
        "--data",
        r#"{"deal_id":"deal-42","amount":"1250.00","currency":"EUR"}"#,
    ]);
    assert_eq!(r["receipts"][0]["duplicate"], false);
    assert_eq!(
        r["receipts"][0]["topic"], "deals",
        "one receipt for the one topic: {r}"
    );
    let again = s.ok(&[
        "publish",
        "--topic",
        "deals",
        "--type",
        "deal.won",
        "--subject",
        "deal-42",
        "--id",
        "w-1",
        "--data",
        r#"{"deal_id":"deal-42","amount":"1250.00","currency":"EUR"}"#,
    ]);
    assert!(again.contains("duplicate"), "{again}");
    let multi = s.json(&[
        "publish",
        "--topic",
        "deals",
        "--topic",
        "notifications",
        "--type",
        "deal.lost",
        "--subject",
        "deal-7",
        "--data",
        r#"{"deal_id":"deal-7","reason":"budget"}"#,
    ]);
    assert_eq!(multi["receipts"].as_array().expect("receipts").len(), 2);

    // Bulk: JSON lines on stdin.
    let mut child = Command::new(BIN)
        .args(["publish", "--topic", "deals", "--json"])
        .env("CRMBUS_URL", &s.url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn bulk publish");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for i in 0..1200 {
            writeln!(
                stdin,
                r#"{{"type":"com.acme.import","subject":"row-{i}","data":{{"row":{i}}}}}"#
            )
            .expect("write");
        }
    }
    let out = child.wait_with_output().expect("bulk publish");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("summary json");
    assert_eq!(summary["published"], 1200);
    let shown = s.json(&["topics", "show", "deals"]);
    assert_eq!(shown["events"], 1202);

    let tail = s.ok(&[
        "tail", "deals", "--from", "earliest", "--type", "deal.*", "--limit", "2", "--json",
    ]);
    let lines: Vec<Value> = tail
        .lines()
        .map(|l| serde_json::from_str(l).expect("tail line is JSON"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l["event"]["type"]
        .as_str()
        .expect("type")
        .starts_with("deal.")));

    s.ok(&[
        "subs",
        "create",
        "deals",
        "erp",
        "--type",
        "deal.*",
        "--max-attempts",
        "1",
    ]);
    let listed = s.ok(&["subs", "list"]);
    assert!(listed.contains("erp"), "{listed}");
    let shown = s.json(&["subs", "show", "erp"]);
    assert_eq!(shown["topic"], "deals");
    let dlq = s.json(&["dlq", "list", "erp"]);
    assert!(dlq["entries"].as_array().expect("entries").is_empty());
    let replay = s.json(&["replay", "erp", "--to", "latest"]);
    let lag: u64 = replay["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["lag"].as_u64().expect("lag"))
        .sum();
    assert_eq!(lag, 0);
    let replay = s.json(&["replay", "erp", "--offset", "0:0", "--offset", "1:0"]);
    assert_eq!(replay["partitions"][0]["committed"], 0);
    s.ok(&["subs", "delete", "erp"]);

    let schemas = s.json(&["schema", "list"]);
    assert_eq!(schemas["types"].as_array().expect("types").len(), 34);
    let shown = s.json(&["schema", "show", "deal.won"]);
    assert_eq!(shown["uri"], "urn:crmbus:schema:deal.won:2");

    let dir = tempfile::tempdir().expect("tempdir");
    let bad_event = dir.path().join("event.json");
    std::fs::write(
        &bad_event,
        r#"{"specversion":"1.0","id":"1","source":"urn:x","type":"deal.won","data":{"deal_id":"d","currency":"euro"}}"#,
    )
    .expect("write");
    let out = s.run(&["schema", "validate", bad_event.to_str().expect("path")]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("data/amount") && text.contains("data/currency"),
        "{text}"
    );

    let narrower = dir.path().join("schema.json");
    let mut schema = shown["schema"].clone();
    // Its examples would no longer validate (and are checked); this is about compatibility.
    schema.as_object_mut().expect("object").remove("examples");
    schema["required"]
        .as_array_mut()
        .expect("required")
        .push(Value::String("owner_id".into()));
    std::fs::write(&narrower, schema.to_string()).expect("write");
    let out = s.run(&[
        "schema",
        "check",
        "deal.won",
        narrower.to_str().expect("path"),
    ]);
    assert!(
        !out.status.success(),
        "adding a required field must be rejected"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("required"));

    // A stricter version is registered by switching the type to forward first.
    let set = s.ok(&["schema", "compat", "deal.won", "forward"]);
    assert_eq!(set.trim(), "deal.won compatibility: forward");
    let registered = s.ok(&[
        "schema",
        "register",
        "deal.won",
        narrower.to_str().expect("path"),
    ]);
    assert!(
        registered.contains("registered deal.won version 3"),
        "{registered}"
    );
    let out = s.run(&["schema", "compat", "deal.won", "sideways"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sideways"),
        "{out:?}"
    );

    let docs = s.ok(&["schema", "docs"]);
    assert!(docs.starts_with("# The crmbus event catalog"), "{docs}");
    assert_eq!(docs.lines().filter(|l| l.starts_with("## `")).count(), 34);
    assert!(
        docs.contains("| `deal.won` | 2 | deal_id, amount | "),
        "{docs}"
    );
    let currency = docs
        .lines()
        .skip_while(|l| !l.starts_with("## `deal.won`"))
        .find(|l| l.starts_with("| `currency` |"))
        .expect("deal.won lists currency");
    assert!(
        currency.starts_with("| `currency` | optional | string |") && currency.contains("absent"),
        "{currency}"
    );
}

#[test]
fn errors_are_clear_and_fail_the_command() {
    let s = Serve::start();
    let out = s.run(&["publish", "--topic", "nope", "--type", "x.y"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("topic 'nope' does not exist"), "{err}");
    assert!(err.contains("404"), "{err}");

    let out = s.run(&["topics", "create", "bad name!"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("name:"));

    let out = Command::new(BIN)
        .args(["topics", "list", "--url", "http://127.0.0.1:9"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the crmbus server at http://127.0.0.1:9"),
        "{err}"
    );
}

#[test]
fn subs_pull_and_consume_read_a_subscription_from_the_shell() {
    let s = Serve::start();
    s.ok(&["topics", "create", "deals", "--partitions", "2"]);
    for (id, ty) in [("d-1", "sync.ok"), ("d-2", "sync.bad"), ("d-3", "sync.ok")] {
        s.ok(&[
            "publish",
            "--topic",
            "deals",
            "--type",
            ty,
            "--subject",
            id,
            "--id",
            id,
            "--data",
            "{}",
        ]);
    }
    s.ok(&["subs", "create", "deals", "erp", "--max-attempts", "2"]);

    // One delivery pulled and nacked: it comes back as attempt 2.
    let first = s.json(&["subs", "pull", "erp", "--max", "1", "--nack", "not yet"]);
    let nacked = first["deliveries"][0]["event"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(first["deliveries"][0]["attempt"], 1);
    // Without [tracing], events are stored as published: no trace is stamped on them.
    assert!(
        first["deliveries"][0]["event"].get("traceparent").is_none(),
        "{first}"
    );

    // consume: exit 0 acks; a failure nacks with the command's standard error.
    let dir = tempfile::tempdir().expect("tempdir");
    let seen = dir.path().join("seen");
    let script = format!(
        "cat > /dev/null; if [ \"$CRMBUS_EVENT_TYPE\" = sync.bad ]; then echo \"cannot sync $CRMBUS_EVENT_ID\" >&2; exit 3; fi; echo \"$CRMBUS_EVENT_ID $CRMBUS_ATTEMPT\" >> {}",
        seen.display()
    );
    // Four handled: two sync.ok acked, sync.bad failing twice (attempts 1 and 2, or 2
    // and the dead letter if it was the one nacked above).
    let limit = if nacked == "d-2" { "3" } else { "4" };
    s.ok(&[
        "consume",
        "erp",
        "--limit",
        limit,
        "--concurrency",
        "2",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let text = std::fs::read_to_string(&seen).expect("the command ran");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    let want_d1 = if nacked == "d-1" { "d-1 2" } else { "d-1 1" };
    let want_d3 = if nacked == "d-3" { "d-3 2" } else { "d-3 1" };
    assert_eq!(lines, [want_d1, want_d3]);
    let dlq = s.json(&["dlq", "list", "erp"]);
    let entries = dlq["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{dlq}");
    assert_eq!(entries[0]["event"]["id"], "d-2");
    assert_eq!(entries[0]["last_error"], "cannot sync d-2");

    // Nothing left to pull.
    let rest = s.json(&["subs", "pull", "erp", "--wait-ms", "200", "--ack"]);
    assert!(
        rest["deliveries"]
            .as_array()
            .expect("deliveries")
            .is_empty(),
        "{rest}"
    );
}

#[test]
fn serve_errors_say_each_cause_once_and_what_to_do() {
    let s = Serve::start();
    let addr = s.url.trim_start_matches("http://").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["serve", "--listen", &addr, "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
    assert!(err.contains(&addr), "{err}");
    assert!(err.contains("choose another --listen"), "{err}");

    // A data directory that cannot be made: the path is named once, with what to do.
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"not a directory").expect("write");
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(blocker.join("data"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&blocker.join("data").display().to_string()),
        "{err}"
    );
    assert_eq!(err.matches("Not a directory").count(), 1, "{err}");
    assert!(err.contains("or pass --data-dir"), "{err}");

    for bad in ["nowhere", "70000", "localhost"] {
        let out = Command::new(BIN)
            .args(["serve", "--listen", bad])
            .output()
            .expect("run");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("expected HOST:PORT"), "{bad}: {err}");
        assert!(
            !err.contains("CRMBUS_"),
            "{bad}: names a variable never set: {err}"
        );
    }
}

/// The server runs with transparent huge pages off (each first touch of a huge page
/// zeroes 2 MiB: a tenth of the server's CPU on batch and read-back work).
#[cfg(target_os = "linux")]
#[test]
fn serve_runs_without_transparent_huge_pages() {
    let s = Serve::start();
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.child.id()))
        .expect("read the server's status");
    let line = status
        .lines()
        .find(|l| l.starts_with("THP_enabled:"))
        .expect("the kernel reports THP_enabled");
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
}

#[test]
fn serve_stops_on_sigterm_with_status_zero() {
    let mut s = Serve::start();
    s.ok(&["topics", "create", "deals"]);
    // SAFETY: sending a signal to our own child process.
    let rc = unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = s.child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
}

#[test]
fn subs_create_pushes_to_a_webhook_or_redis_pubsub() {
    let s = Serve::start_with(&[("CRMBUS_PUSH_ALLOWED_TARGETS", "127.0.0.1")]);
    s.ok(&["topics", "create", "deals", "--partitions", "1"]);
    // A port nothing listens on, from the latest event: nothing is sent.
    let out = s.ok(&[
        "subs",
        "create",
        "deals",
        "erp-hook",
        "--start",
        "latest",
        "--webhook",
        "http://127.0.0.1:9/hook",
    ]);
    assert!(out.contains("webhook: http://127.0.0.1:9/hook"), "{out}");
    let secret = out
        .lines()
        .find_map(|l| l.split("signing secret").nth(1))
        .and_then(|rest| rest.split_whitespace().last())
        .unwrap_or_default()
        .to_string();
    assert!(secret.starts_with("whsec_") && secret.len() > 30, "{out}");
    let shown = s.json(&["subs", "show", "erp-hook"]);
    assert_eq!(shown["config"]["target"]["kind"], "webhook");
    assert_eq!(shown["config"]["target"]["secret"], "whsec_********");
    assert!(!shown.to_string().contains(&secret));

    let mirror = s.json(&[
        "subs",
        "create",
        "deals",
        "legacy",
        "--redis-pubsub",
        "redis://127.0.0.1:6379",
        "--channel",
        "app:{topic}",
    ]);
    assert_eq!(mirror["config"]["target"]["kind"], "redis_pubsub");
    assert_eq!(mirror["config"]["target"]["channel"], "app:{topic}");

    // A private address the server was not told to allow: refused, saying why.
    let refused = s.run(&[
        "subs",
        "create",
        "deals",
        "internal",
        "--webhook",
        "http://10.1.2.3/hook",
    ]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("10.1.2.3 is a private address"), "{err}");
}

#[test]
fn subs_create_takes_a_transformation_and_refuses_a_bad_one_saying_where() {
    let s = Serve::start();
    s.ok(&["topics", "create", "deals", "--partitions", "1"]);
    let template = r#"{"deal": "{{ $.data.deal_id }}", "note": "won by {{ $.data.owner }}"}"#;
    let made = s.json(&["subs", "create", "deals", "erp", "--transform", template]);
    assert_eq!(made["config"]["transform"]["deal"], "{{ $.data.deal_id }}");
    let shown = s.json(&["subs", "show", "erp"]);
    assert_eq!(
        shown["config"]["transform"]["note"],
        "won by {{ $.data.owner }}"
    );
    // consume hands the command the shaped body.
    s.ok(&[
        "publish",
        "--topic",
        "deals",
        "--type",
        "deal.noted",
        "--subject",
        "deal-5",
        "--data",
        r#"{"deal_id":"deal-5","owner":"sam"}"#,
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let seen = dir.path().join("seen");
    let script = format!("cat > {}", seen.display());
    s.ok(&["consume", "erp", "--limit", "1", "--", "sh", "-c", &script]);
    let body: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&seen).expect("the command ran"))
            .expect("JSON on stdin");
    assert_eq!(
        body,
        serde_json::json!({"deal": "deal-5", "note": "won by sam"})
    );

    let not_json = s.run(&["subs", "create", "deals", "x", "--transform", "{deal:"]);
    assert!(!not_json.status.success());
    let err = String::from_utf8_lossy(&not_json.stderr);
    assert!(err.contains("--transform is not JSON"), "{err}");
    let bad = s.run(&[
        "subs",
        "create",
        "deals",
        "y",
        "--transform",
        r#"{"a": "{{ $.data."}"#,
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("transform/a"), "{err}");
}

#[test]
fn keys_are_made_listed_revoked_and_sent_with_api_key() {
    let s = Serve::start();
    // The first key, on a server that has none.
    let out = s.ok(&["keys", "create", "root", "--scope", "admin"]);
    let key = out
        .lines()
        .find_map(|l| l.split("CRMBUS_API_KEY): ").nth(1))
        .unwrap_or_default()
        .trim()
        .to_string();
    assert!(key.starts_with("crmbus_"), "{out}");
    // From now on the server needs it.
    let refused = s.run(&["topics", "list"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("API key"), "{err}");
    s.ok(&["topics", "create", "deals", "--api-key", &key]);
    let out = Command::new(BIN)
        .args([
            "keys",
            "create",
            "reader",
            "--scope",
            "subscribe:deals",
            "--json",
        ])
        .env("CRMBUS_URL", &s.url)
        .env("CRMBUS_API_KEY", &key)
        .output()
        .expect("run crmbus");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reader: Value = serde_json::from_slice(&out.stdout).expect("json");
    let listed = s.ok(&["keys", "list", "--api-key", &key]);
    assert!(
        listed.contains("reader") && listed.contains("subscribe:deals"),
        "{listed}"
    );
    assert!(!listed.contains(&key), "no secret in the listing");
    let id = reader["id"].as_str().expect("id");
    s.ok(&["keys", "revoke", id, "--api-key", &key]);
    let reader_key = reader["key"].as_str().expect("key");
    let refused = s.run(&["topics", "show", "deals", "--api-key", reader_key]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("revoked"), "{err}");
}

/// The key printed by `crmbus keys create` (the line that says it is shown once).
fn printed_key(out: &str) -> String {
    out.lines()
        .find_map(|l| l.split("CRMBUS_API_KEY): ").nth(1))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn the_first_key_can_be_made_offline_on_the_data_directory_and_is_audited() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let data_arg = data.to_str().expect("utf8 path");
    // Before the server ever ran: the directory is made.
    let out = Command::new(BIN)
        .args([
            "keys",
            "create",
            "root",
            "--scope",
            "admin",
            "--data-dir",
            data_arg,
        ])
        .output()
        .expect("run crmbus");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = printed_key(&String::from_utf8_lossy(&out.stdout));
    assert!(key.starts_with("crmbus_"), "{out:?}");
    let s = Serve::start_in(dir, &data, &[]);
    // The server has a key now: requests need one.
    let refused = s.run(&["topics", "list"]);
    assert!(!refused.status.success());
    s.ok(&["topics", "create", "deals", "--api-key", &key]);
    // While the server runs, the directory is its own.
    let busy = Command::new(BIN)
        .args([
            "keys",
            "create",
            "late",
            "--scope",
            "admin",
            "--data-dir",
            data_arg,
        ])
        .output()
        .expect("run crmbus");
    assert!(!busy.status.success());
    let err = String::from_utf8_lossy(&busy.stderr);
    assert!(err.contains("in use"), "{err}");
    // Both actions are in the audit log, the offline one first.
    let audit = s.json(&["audit", "--api-key", &key]);
    let entries = audit["entries"].as_array().expect("entries");
    assert_eq!(entries[0]["action"], "keys.create", "{audit}");
    assert_eq!(entries[0]["actor"], "offline");
    assert!(entries
        .iter()
        .any(|e| e["action"] == "POST /v1/topics" && e["actor"] == "root"));
    let table = s.ok(&["audit", "--api-key", &key]);
    assert!(
        table.contains("POST /v1/topics") && table.contains("offline"),
        "{table}"
    );
}

#[test]
fn keys_never_appear_in_the_server_log_or_in_answers_after_creation() {
    let mut s = Serve::start_with(&[("CRMBUS_LOG", "debug")]);
    let root = printed_key(&s.ok(&["keys", "create", "root", "--scope", "admin"]));
    let made = s.json(&[
        "keys",
        "create",
        "erp",
        "--scope",
        "publish:deals",
        "--api-key",
        &root,
    ]);
    let erp = made["key"].as_str().expect("key").to_string();
    let erp_id = made["id"].as_str().expect("id").to_string();
    s.ok(&["topics", "create", "deals", "--api-key", &root]);
    s.ok(&[
        "publish",
        "--topic",
        "deals",
        "--type",
        "note.added",
        "--subject",
        "deal/1",
        "--data",
        "{}",
        "--api-key",
        &erp,
    ]);
    // Refused: the wrong scope, a forged secret on a real id, then revoked.
    assert!(!s
        .run(&["topics", "delete", "deals", "--api-key", &erp])
        .status
        .success());
    let forged = format!("crmbus_{erp_id}_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert!(!s
        .run(&["topics", "list", "--api-key", &forged])
        .status
        .success());
    s.ok(&["keys", "revoke", &erp_id, "--api-key", &root]);
    assert!(!s
        .run(&["topics", "list", "--api-key", &erp])
        .status
        .success());
    let listed = s.ok(&["keys", "list", "--json", "--api-key", &root]);
    let audit = s.ok(&["audit", "--json", "--all", "--api-key", &root]);
    let secret = |k: &str| k.splitn(3, '_').nth(2).expect("secret").to_string();
    for k in [&root, &erp] {
        assert!(!listed.contains(&secret(k)), "a key in the listing");
        assert!(!audit.contains(&secret(k)), "a key in the audit log");
    }
    // Every line the server wrote, up to its exit.
    let log = s.stop();
    // The log is there (debug), and names the keys by id, never by secret.
    assert!(log.contains(&erp_id), "{log}");
    for k in [&root, &erp, &forged] {
        assert!(
            !log.contains(&secret(k)),
            "a key's secret in the server log:\n{log}"
        );
    }
}

#[test]
fn the_logging_backend_shows_only_the_data_fields_it_is_told() {
    let data = r#"{"deal_id":"d-77","email":"pii@example.com"}"#;
    let publish = |s: &Serve| {
        s.ok(&[
            "publish",
            "--topic",
            "deals",
            "--type",
            "custom.noted",
            "--subject",
            "deal/77",
            "--data",
            data,
        ]);
    };
    let mut shown = Serve::start_with(&[
        ("CRMBUS_STORAGE_BACKEND", "logging"),
        ("CRMBUS_STORAGE_LOG_DATA_FIELDS", "deal_id"),
        ("CRMBUS_LOG", "info"),
    ]);
    publish(&shown);
    let log = shown.stop();
    assert!(log.contains("d-77"), "{log}");
    assert!(log.contains("[redacted]"), "{log}");
    assert!(!log.contains("pii@example.com"), "{log}");
    // By default no data at all, only its size.
    let mut quiet = Serve::start_with(&[
        ("CRMBUS_STORAGE_BACKEND", "logging"),
        ("CRMBUS_LOG", "info"),
    ]);
    publish(&quiet);
    let log = quiet.stop();
    assert!(log.contains("data_bytes"), "{log}");
    assert!(
        !log.contains("d-77") && !log.contains("pii@example.com"),
        "{log}"
    );
}

/// A collector stand-in on 127.0.0.1: answers every request 200 and keeps each one's
/// request line, headers and body.
fn otlp_receiver() -> (String, std::sync::mpsc::Receiver<Vec<u8>>) {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    // A collector's base URL: crmbus adds the standard /v1/traces path.
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut got = Vec::new();
            let mut buf = [0u8; 65536];
            // Headers, then as many body bytes as content-length says.
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if got.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = tx.send(got);
        }
    });
    (url, rx)
}

#[test]
fn serve_exports_its_spans_over_otlp_when_tracing_has_an_endpoint() {
    let (endpoint, got) = otlp_receiver();
    // The batch is not sent on its own schedule here (ten minutes): only the stop sends it.
    let mut s = Serve::start_with(&[
        ("CRMBUS_TRACING_OTLP_ENDPOINT", &endpoint),
        ("CRMBUS_TRACING_SERVICE_NAME", "svc-crm-7"),
        ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
    ]);
    s.ok(&["topics", "create", "deals", "--partitions", "1"]);
    s.ok(&["subs", "create", "deals", "erp"]);
    s.ok(&[
        "publish",
        "--topic",
        "deals",
        "--type",
        "deal.noted",
        "--subject",
        "deal-1",
        "--data",
        r#"{"deal_id":"deal-1"}"#,
    ]);
    // The event, published without a trace, was stamped with the publish span's.
    let pulled = s.json(&["subs", "pull", "erp", "--wait-ms", "2000", "--ack"]);
    let traceparent = pulled["deliveries"][0]["event"]["traceparent"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        traceparent.starts_with("00-") && traceparent.len() == 55,
        "{pulled}"
    );
    assert!(
        pulled["deliveries"][0]["event"].get("tracestate").is_none(),
        "an empty tracestate: {pulled}"
    );
    assert!(got.try_recv().is_err(), "exported before the stop");
    // A graceful stop sends what the batch holds.
    // SAFETY: sending a signal to our own child process.
    let rc = unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = s.child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    let mut requests = Vec::new();
    while let Ok(r) = got.recv_timeout(std::time::Duration::from_secs(10)) {
        requests.push(r);
        if requests
            .iter()
            .any(|r| String::from_utf8_lossy(r).contains("crmbus.append"))
        {
            break;
        }
    }
    let all: Vec<String> = requests
        .iter()
        .map(|r| String::from_utf8_lossy(r).to_string())
        .collect();
    let export = all
        .iter()
        .find(|r| r.contains("crmbus.publish"))
        .unwrap_or_else(|| panic!("no span export reached the collector: {all:?}"));
    assert!(export.starts_with("POST /v1/traces"), "{export}");
    assert!(
        export
            .to_lowercase()
            .contains("content-type: application/x-protobuf"),
        "{export}"
    );
    assert!(export.contains("crmbus.append"), "{export}");
    assert!(export.contains("svc-crm-7"), "the service name: {export}");
}

#[test]
fn serve_refuses_a_tracing_endpoint_that_is_not_a_url() {
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("CRMBUS_TRACING_OTLP_ENDPOINT", "collector:4318")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tracing.otlp_endpoint"), "{err}");
}
