//! Helpers shared by the integration tests: the broker and database addresses, unique
//! namespaces, and a guard that deletes a test's namespaces when it is dropped.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crmbus_kafka::KafkaOptions;

/// The brokers the tests use (`CRMBUS_KAFKA_BOOTSTRAP`, default the local tansu that
/// `scripts/services.sh` starts).
pub fn bootstrap() -> String {
    std::env::var("CRMBUS_KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

/// The state database (`CRMBUS_POSTGRES_URL`, default the machine's).
pub fn state_url() -> String {
    crmbus_testkit::outbox::machine_url()
}

/// Options for tests: a short request timeout, so a broken broker fails a test quickly.
pub fn options() -> KafkaOptions {
    KafkaOptions {
        request_timeout: Duration::from_secs(20),
        ..KafkaOptions::default()
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A namespace prefix no other test run uses: the tag, the process id, the time and a
/// counter, within the 48 characters a prefix may have.
pub fn unique_prefix(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000_000)
        .unwrap_or(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let clean: String = tag
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(16)
        .collect();
    format!("t-{clean}-{}-{nanos}-{n}", std::process::id())
}

/// Deletes the namespaces it was given when dropped (on its own thread and runtime, so it
/// works from inside an async test).
#[derive(Default)]
pub struct Cleanup {
    prefixes: Mutex<Vec<String>>,
}

impl Cleanup {
    /// Adds a namespace to delete.
    pub fn add(&self, prefix: &str) {
        self.prefixes
            .lock()
            .expect("cleanup list")
            .push(prefix.to_string());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let prefixes = std::mem::take(&mut *self.prefixes.lock().expect("cleanup list"));
        if prefixes.is_empty() {
            return;
        }
        let (bs, db) = (bootstrap(), state_url());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                for p in prefixes {
                    if let Err(e) = crmbus_kafka::purge(&bs, &db, &p).await {
                        eprintln!("cleanup of namespace {p} failed: {e}");
                    }
                }
            });
        })
        .join();
    }
}
