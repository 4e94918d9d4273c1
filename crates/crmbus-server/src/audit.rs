//! The server's audit log: an append-only, durable record of every admin action (topics,
//! subscriptions, schemas, keys), every dead-letter redrive and discard, and every burst of
//! refused requests, each with who, when, what and from where.
//!
//! Entries live in the backend's state store (namespace `server/audit`), so servers
//! sharing a backend share one log, and it survives restarts. Keys are the time in
//! microseconds and a random part, so a scan reads them in time order. Nothing deletes an
//! entry but retention ([`AuditLog::prune`]), which the server runs hourly; a read never
//! shows an entry past retention, pruned yet or not.
//!
//! Ids follow the clock of the server that wrote them, taken just before the write: two
//! writes at the same moment (or on servers whose clocks differ) can land out of order, so
//! a reader that follows the log with `after=<last id seen>` may miss an entry written
//! with an earlier time after it read. Reading from a few seconds before the last id seen
//! and skipping ids already seen closes that gap.
//!
//! What is recorded never holds a secret: the route and path (no query, no body), the key's
//! id and name, the caller's address.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crmbus::state::{StateOp, StateStore};
use crmbus::sync::LockExt;
use crmbus::{Clock, LogError};
use crmbus_api::{AuditLogEntry, AuditLogPage};
use serde::{Deserialize, Serialize};

use crate::render::rfc3339;

const NAMESPACE: &str = "server/audit";

/// How long refused requests from one address are counted together.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Addresses whose refusals are counted at once; past this, the oldest windows are
/// forgotten (a flood from many addresses cannot grow the table without bound).
const FAILURE_SOURCES: usize = 10_000;

/// The most entries one page returns.
pub const MAX_PAGE: usize = 1000;

/// Entries deleted in one write when pruning.
pub const PRUNE_BATCH: usize = 1000;

/// `[audit]`: how long entries are kept and when refused requests make an entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSection {
    /// Days an entry is kept; 0 keeps every entry.
    pub retention_days: u64,
    /// Refused requests (401 or 403) from one address within a minute that make an
    /// `auth.failures` entry (one per address and minute); 0 records none.
    pub auth_failure_burst: u64,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            retention_days: 90,
            auth_failure_burst: 5,
        }
    }
}

/// What happened, as the caller of [`AuditLog::record`] knows it (the log adds when).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Action {
    /// See [`AuditLogEntry::actor`].
    pub actor: String,
    /// See [`AuditLogEntry::key_id`].
    pub key_id: Option<String>,
    /// See [`AuditLogEntry::action`].
    pub action: String,
    /// See [`AuditLogEntry::path`].
    pub path: String,
    /// See [`AuditLogEntry::status`].
    pub status: u16,
    /// See [`AuditLogEntry::from`].
    pub from: Option<String>,
    /// See [`AuditLogEntry::detail`].
    pub detail: String,
}

/// Refused requests from one address in the current window.
#[derive(Debug, Clone, Copy)]
struct Refusals {
    window_start_us: i64,
    count: u64,
}

/// Counts refused requests per address and says when one crosses the burst threshold:
/// once per address and window, so a flood makes one entry a minute, not one per request.
#[derive(Debug, Default)]
struct BurstCounter {
    sources: HashMap<String, Refusals>,
    /// When windows that ended were last swept out (a full table is swept at most once a
    /// second, not on every request).
    last_sweep_us: i64,
}

/// Where refusals from all addresses beyond [`FAILURE_SOURCES`] are counted together.
const OTHER_SOURCES: &str = "(other addresses)";

/// The address refusals are counted under: an IPv4 address as it is, an IPv6 address by
/// its /64 (one host commonly holds a whole /64, and would otherwise never reach a burst).
fn source_of(from: Option<&str>) -> String {
    match from.and_then(|f| f.parse::<std::net::IpAddr>().ok()) {
        Some(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            let prefix = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{prefix}/64")
        }
        Some(ip) => ip.to_string(),
        None => from.unwrap_or("unknown").to_string(),
    }
}

impl BurstCounter {
    /// Counts a refusal from `source` at `now_us`; the count when it reaches `threshold`
    /// (that once in the window), else `None`. With the table full, the refusal counts
    /// under [`OTHER_SOURCES`].
    fn refused(&mut self, source: &str, now_us: i64, threshold: u64) -> Option<u64> {
        if threshold == 0 {
            return None;
        }
        let window_us = FAILURE_WINDOW.as_micros() as i64;
        let mut source = source;
        if self.sources.len() >= FAILURE_SOURCES && !self.sources.contains_key(source) {
            if now_us.saturating_sub(self.last_sweep_us) >= 1_000_000 {
                self.last_sweep_us = now_us;
                self.sources
                    .retain(|_, r| now_us.saturating_sub(r.window_start_us) < window_us);
            }
            if self.sources.len() >= FAILURE_SOURCES {
                source = OTHER_SOURCES;
            }
        }
        let r = self.sources.entry(source.to_string()).or_insert(Refusals {
            window_start_us: now_us,
            count: 0,
        });
        if now_us.saturating_sub(r.window_start_us) >= window_us {
            *r = Refusals {
                window_start_us: now_us,
                count: 0,
            };
        }
        r.count = r.count.saturating_add(1);
        (r.count == threshold).then_some(r.count)
    }
}

/// The stored form of an entry (its id is its key).
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    at_us: i64,
    actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    action: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    path: String,
    status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    detail: String,
}

impl Stored {
    fn view(self, id: String) -> AuditLogEntry {
        AuditLogEntry {
            id,
            at: rfc3339(self.at_us),
            actor: self.actor,
            key_id: self.key_id,
            action: self.action,
            path: self.path,
            status: self.status,
            from: self.from,
            detail: self.detail,
        }
    }
}

/// The audit log (see the module's documentation).
pub struct AuditLog {
    state: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    config: AuditSection,
    bursts: Mutex<BurstCounter>,
}

fn encode_err(e: serde_json::Error) -> LogError {
    LogError::backend_from("encoding an audit entry", e)
}

impl AuditLog {
    /// The log kept in `state`, timed by `clock`.
    pub fn new(state: Arc<dyn StateStore>, clock: Arc<dyn Clock>, config: AuditSection) -> Self {
        AuditLog {
            state,
            clock,
            config,
            bursts: Mutex::new(BurstCounter::default()),
        }
    }

    /// Appends an entry, durably (the state store's batches are); its id.
    pub async fn record(&self, a: Action) -> Result<String, LogError> {
        let at_us = self.clock.now_micros();
        let id = format!("{at_us:020}-{}", uuid::Uuid::now_v7().simple());
        let stored = Stored {
            at_us,
            actor: a.actor,
            key_id: a.key_id,
            action: a.action,
            path: a.path,
            status: a.status,
            from: a.from,
            detail: a.detail,
        };
        let value = serde_json::to_vec(&stored).map_err(encode_err)?;
        self.state.put(NAMESPACE, &id, value).await?;
        Ok(id)
    }

    /// Counts a refused request (401 or 403) from `from`; when it makes a burst, the
    /// entry to record for it (once per address and window).
    pub fn refused(
        &self,
        from: Option<&str>,
        status: u16,
        action: &str,
        path: &str,
    ) -> Option<Action> {
        let source = source_of(from);
        let now = self.clock.now_micros();
        let count = self
            .bursts
            .locked()
            .refused(&source, now, self.config.auth_failure_burst)?;
        Some(Action {
            actor: "anonymous".to_string(),
            key_id: None,
            action: "auth.failures".to_string(),
            path: path.to_string(),
            status,
            from: from.map(str::to_string),
            detail: format!(
                "{count} requests from {source} refused (401 or 403) within {} s; the last: {action} {path}",
                FAILURE_WINDOW.as_secs()
            ),
        })
    }

    /// Up to `limit` (at most [`MAX_PAGE`]) entries after the entry `after` (from the
    /// oldest when `None`), oldest first, none past retention.
    pub async fn page(&self, after: Option<&str>, limit: usize) -> Result<AuditLogPage, LogError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let cutoff = self.cutoff();
        let all = self.state.scan(NAMESPACE, "").await?;
        let mut entries = Vec::new();
        let mut more = false;
        for (id, value) in all {
            if after.is_some_and(|a| id.as_str() <= a)
                || cutoff.as_deref().is_some_and(|c| id.as_str() < c)
            {
                continue;
            }
            if entries.len() == limit {
                more = true;
                break;
            }
            match serde_json::from_slice::<Stored>(&value) {
                Ok(s) => entries.push(s.view(id)),
                Err(e) => {
                    tracing::warn!(entry = %id, error = %e, "skipping an unreadable audit entry")
                }
            }
        }
        let next_after = if more {
            entries.last().map(|e: &AuditLogEntry| e.id.clone())
        } else {
            None
        };
        Ok(AuditLogPage {
            entries,
            next_after,
        })
    }

    /// The smallest id retention keeps; `None` keeps every entry.
    fn cutoff(&self) -> Option<String> {
        if self.config.retention_days == 0 {
            return None;
        }
        let keep_us = i64::try_from(
            Duration::from_secs(self.config.retention_days.saturating_mul(86_400)).as_micros(),
        )
        .unwrap_or(i64::MAX);
        Some(format!(
            "{:020}",
            self.clock.now_micros().saturating_sub(keep_us).max(0)
        ))
    }

    /// Deletes the entries older than the retention, [`PRUNE_BATCH`] per write; how many.
    pub async fn prune(&self) -> Result<usize, LogError> {
        let Some(cutoff) = self.cutoff() else {
            return Ok(0);
        };
        let expired: Vec<String> = self
            .state
            .scan(NAMESPACE, "")
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .take_while(|id| id.as_str() < cutoff.as_str())
            .collect();
        for chunk in expired.chunks(PRUNE_BATCH) {
            let ops = chunk
                .iter()
                .map(|key| StateOp::Delete {
                    namespace: NAMESPACE.to_string(),
                    key: key.clone(),
                })
                .collect();
            self.state.apply(ops).await?;
        }
        Ok(expired.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000;

    #[test]
    fn a_burst_is_reported_once_per_address_and_window() {
        let mut c = BurstCounter::default();
        let got: Vec<Option<u64>> = (0..7).map(|i| c.refused("10.0.0.1", i, 3)).collect();
        assert_eq!(got, [None, None, Some(3), None, None, None, None]);
        // Another address counts on its own.
        assert_eq!(c.refused("10.0.0.2", 10, 3), None);
        // A new window starts over.
        assert_eq!(c.refused("10.0.0.1", MIN, 3), None);
        assert_eq!(c.refused("10.0.0.1", MIN + 1, 3), None);
        assert_eq!(c.refused("10.0.0.1", MIN + 2, 3), Some(3));
    }

    #[test]
    fn a_threshold_of_zero_reports_nothing() {
        let mut c = BurstCounter::default();
        assert!((0..10).all(|i| c.refused("a", i, 0).is_none()));
    }

    #[test]
    fn the_table_of_addresses_stays_bounded() {
        let mut c = BurstCounter::default();
        for i in 0..FAILURE_SOURCES {
            c.refused(&format!("s{i}"), 0, 5);
        }
        // Full of live windows: a new address counts with the other overflow, in one
        // more entry of the table, which grows no further.
        assert_eq!(c.refused("new", 1, 2), None);
        assert_eq!(c.refused("newer", 2, 2), Some(2));
        assert_eq!(c.sources.len(), FAILURE_SOURCES + 1);
        assert_eq!(c.refused("newest", 3, 2), None);
        assert_eq!(c.sources.len(), FAILURE_SOURCES + 1);
        // Once those windows are over, they make room.
        assert_eq!(c.refused("new", MIN + 5, 1), Some(1));
        assert_eq!(c.sources.len(), 1);
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64() {
        assert_eq!(
            source_of(Some("2001:db8:1:2:aaaa::1")),
            source_of(Some("2001:db8:1:2:ffff::9"))
        );
        assert_eq!(source_of(Some("2001:db8:1:2::1")), "2001:db8:1:2::/64");
        assert_ne!(
            source_of(Some("2001:db8:1:3::1")),
            source_of(Some("2001:db8:1:2::1"))
        );
        assert_eq!(source_of(Some("10.0.0.1")), "10.0.0.1");
        assert_eq!(source_of(None), "unknown");
    }

    #[tokio::test]
    async fn prune_deletes_what_retention_no_longer_keeps_and_reads_hide_it_before() {
        let state = Arc::new(crmbus::MemoryStateStore::new());
        let clock = crmbus::ManualClock::starting_now();
        let log = AuditLog::new(
            state.clone(),
            Arc::new(clock.clone()),
            AuditSection {
                retention_days: 1,
                auth_failure_burst: 5,
            },
        );
        let action = |what: &str| Action {
            actor: "root".into(),
            action: what.into(),
            status: 201,
            ..Action::default()
        };
        log.record(action("old")).await.expect("record");
        clock.advance(Duration::from_secs(86_400 + 1));
        log.record(action("new")).await.expect("record");
        // Hidden at once, deleted by the next prune.
        let page = log.page(None, 10).await.expect("page");
        let actions: Vec<&str> = page.entries.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["new"]);
        assert_eq!(state.scan(NAMESPACE, "").await.expect("scan").len(), 2);
        assert_eq!(log.prune().await.expect("prune"), 1);
        assert_eq!(state.scan(NAMESPACE, "").await.expect("scan").len(), 1);
        assert_eq!(log.prune().await.expect("prune"), 0);
    }
}
