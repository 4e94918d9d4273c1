//! Helpers shared by the integration tests: the server URL, unique namespaces, and a guard
//! that deletes a test's namespaces from the server when it is dropped.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The JetStream server the tests use (`CRMBUS_NATS_URL`, default the local one that
/// `scripts/services.sh` starts).
pub fn url() -> String {
    std::env::var("CRMBUS_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string())
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A namespace prefix no other test run uses: the tag, the process id, the time and a
/// counter, cut to the 64 characters a prefix may have.
pub fn unique_prefix(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let clean: String = tag
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(24)
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
        let url = url();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                for p in prefixes {
                    if let Err(e) = crmbus_nats::purge(&url, &p).await {
                        eprintln!("cleanup of namespace {p} failed: {e}");
                    }
                }
            });
        })
        .join();
    }
}
