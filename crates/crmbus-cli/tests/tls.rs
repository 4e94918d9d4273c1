//! HTTPS for the API: `crmbus serve` with a self-signed certificate
//! (`[server] tls_cert`/`tls_key`), the CLI trusting it with `--ca-cert`, the certificate
//! replaced on SIGHUP (and kept when the new files are broken), and the configuration
//! mistakes refused before the server listens.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

use common::{Serve, BIN};

/// A self-signed certificate for 127.0.0.1 and localhost (not a CA), made by the openssl
/// command: (certificate, key) PEM files named `<name>.pem` and `<name>.key`.
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=crmbus test {name}"),
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (scripts/services.sh installs it)");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// `crmbus topics list` against `url`, trusting `ca` if given.
fn list_topics(url: &str, ca: Option<&Path>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["topics", "list", "--url", url])
        .env_remove("CRMBUS_URL")
        .env_remove("CRMBUS_CA_CERT");
    if let Some(ca) = ca {
        cmd.arg("--ca-cert").arg(ca);
    }
    cmd.output().expect("run crmbus")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn hangup(s: &Serve) {
    let pid = i32::try_from(s.child.id()).expect("pid");
    // SAFETY: sending a signal to the child process this test started.
    let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
    assert_eq!(rc, 0, "kill -HUP");
}

/// Waits until the server's log has `n` lines containing `text` (the reload is logged
/// after it is done); the log is read, not the clock.
fn wait_for_log(s: &Serve, text: &str, n: usize) {
    for _ in 0..600 {
        let count = s
            .log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| l.contains(text))
            .count();
        if count >= n {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let log = s.log.lock().expect("log").join("\n");
    panic!("the server never logged {text:?} {n} times:\n{log}");
}

#[test]
fn https_with_a_self_signed_certificate_reloaded_on_sighup() {
    let dir = tempfile::tempdir().expect("dir");
    let (a_cert, a_key) = self_signed(dir.path(), "a");
    let (b_cert, b_key) = self_signed(dir.path(), "b");
    let cert = dir.path().join("server.pem");
    let key = dir.path().join("server.key");
    std::fs::copy(&a_cert, &cert).expect("copy");
    std::fs::copy(&a_key, &key).expect("copy");
    let s = Serve::start_with(&[
        ("CRMBUS_SERVER_TLS_CERT", cert.to_str().expect("utf8")),
        ("CRMBUS_SERVER_TLS_KEY", key.to_str().expect("utf8")),
        ("CRMBUS_LOG", "info"),
    ]);
    assert!(s.url.starts_with("https://127.0.0.1:"), "{}", s.url);

    // Trusted with --ca-cert: it works.
    let ok = list_topics(&s.url, Some(&a_cert));
    assert!(ok.status.success(), "{}", stderr(&ok));
    // Not trusted: refused by the client, naming the certificate.
    let untrusted = list_topics(&s.url, None);
    assert!(!untrusted.status.success());
    assert!(
        stderr(&untrusted).to_lowercase().contains("certificate"),
        "{}",
        stderr(&untrusted)
    );
    // Plain HTTP to the HTTPS port gets nothing.
    let plain = list_topics(&s.url.replace("https://", "http://"), None);
    assert!(!plain.status.success());
    // The same through the environment variable.
    let env = Command::new(BIN)
        .args(["topics", "create", "deals"])
        .env("CRMBUS_URL", &s.url)
        .env("CRMBUS_CA_CERT", &a_cert)
        .output()
        .expect("run crmbus");
    assert!(env.status.success(), "{}", stderr(&env));

    // New files, then SIGHUP: new connections get the new certificate.
    std::fs::copy(&b_cert, &cert).expect("copy");
    std::fs::copy(&b_key, &key).expect("copy");
    hangup(&s);
    wait_for_log(&s, "TLS certificate reloaded", 1);
    let with_b = list_topics(&s.url, Some(&b_cert));
    assert!(with_b.status.success(), "{}", stderr(&with_b));
    let with_a = list_topics(&s.url, Some(&a_cert));
    assert!(!with_a.status.success(), "the old certificate is gone");

    // A broken pair (a's key with b's certificate): not loaded, b stays.
    std::fs::copy(&a_key, &key).expect("copy");
    hangup(&s);
    wait_for_log(&s, "TLS certificate not reloaded", 1);
    let still_b = list_topics(&s.url, Some(&b_cert));
    assert!(still_b.status.success(), "{}", stderr(&still_b));
    let log = s.log.lock().expect("log").join("\n");
    assert!(log.contains("not a usable pair"), "{log}");
}

#[test]
fn tls_settings_that_cannot_work_are_refused_before_listening() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = self_signed(dir.path(), "c");
    let serve = |env: &[(&str, &Path)]| -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run crmbus serve")
    };
    let alone = serve(&[("CRMBUS_SERVER_TLS_CERT", &cert)]);
    assert!(!alone.status.success());
    assert!(
        stderr(&alone).contains("server.tls_cert and server.tls_key go together"),
        "{}",
        stderr(&alone)
    );
    let missing = dir.path().join("missing.pem");
    let absent = serve(&[
        ("CRMBUS_SERVER_TLS_CERT", &missing),
        ("CRMBUS_SERVER_TLS_KEY", &key),
    ]);
    assert!(!absent.status.success());
    let err = stderr(&absent);
    assert!(
        err.contains("server.tls_cert") && err.contains("missing.pem"),
        "{err}"
    );
    // A key that is not the certificate's.
    let (_, other_key) = self_signed(dir.path(), "d");
    let mismatched = serve(&[
        ("CRMBUS_SERVER_TLS_CERT", &cert),
        ("CRMBUS_SERVER_TLS_KEY", &other_key),
    ]);
    assert!(!mismatched.status.success());
    assert!(
        stderr(&mismatched).contains("not a usable pair"),
        "{}",
        stderr(&mismatched)
    );
    // Not PEM at all.
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").expect("write");
    let bad = serve(&[
        ("CRMBUS_SERVER_TLS_CERT", &garbage),
        ("CRMBUS_SERVER_TLS_KEY", &key),
    ]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("holds no PEM certificate"),
        "{}",
        stderr(&bad)
    );
}
