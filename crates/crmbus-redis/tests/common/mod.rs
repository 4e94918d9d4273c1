//! Shared by the integration tests: the server URL, unique key prefixes, and a guard that
//! deletes a prefix's keys when the test ends (pass or fail).

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

/// The Redis the tests run against (`scripts/services.sh` starts it).
pub fn url() -> String {
    std::env::var("CRMBUS_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

static N: AtomicU64 = AtomicU64::new(0);

/// A key prefix no other test or run uses: test name, pid, time, counter.
pub fn unique_prefix(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "crmbus-test:{what}:{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Deletes every key under its prefix when dropped (synchronously, so it also runs while
/// a failed test unwinds).
pub struct Cleanup {
    pub prefix: String,
}

impl Cleanup {
    pub fn new(prefix: &str) -> Cleanup {
        Cleanup {
            prefix: prefix.to_string(),
        }
    }
}

/// Counts the keys under `prefix` (to check that cleanup works).
pub fn count_keys(prefix: &str) -> usize {
    scan(prefix).len()
}

fn scan(prefix: &str) -> Vec<String> {
    let client = redis::Client::open(url()).expect("redis url");
    let mut conn = client.get_connection().expect("redis connection");
    let pattern = format!("{}:*", crmbus_redis::naming::glob_escape(prefix));
    let mut cursor = 0u64;
    let mut out = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut conn)
            .expect("scan");
        out.extend(batch);
        if next == 0 {
            return out;
        }
        cursor = next;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let keys = scan(&self.prefix);
        if keys.is_empty() {
            return;
        }
        let client = redis::Client::open(url()).expect("redis url");
        let mut conn = client.get_connection().expect("redis connection");
        for chunk in keys.chunks(500) {
            let _: redis::RedisResult<u64> = redis::cmd("UNLINK").arg(chunk).query(&mut conn);
        }
    }
}
