//! [`NatsLeaseStore`]: leases with fencing tokens in a JetStream KV bucket, for servers
//! that share the backend.
//!
//! Each lease is one key of the bucket `<prefix>_leases` whose value holds the holder, the
//! fencing token, the holder's data and the time to live. Every change is a compare-and-set
//! on the key's revision (KV `create` / `update`), so two servers can never both take a
//! lease. Tokens come from the counter key `=token` of the same bucket, raised by
//! compare-and-set, so each acquisition's token is greater than every earlier one. A lease
//! expires when its time to live has passed since its last write, as stamped by the NATS
//! server (the entry's `created` time), compared with the reader's clock: servers sharing
//! a backend must keep their clocks within a quarter of the TTL of the server's (NTP does).
//!
//! **Fencing on NATS 2.9 checks, then writes.** JetStream 2.9 has no write conditional on
//! another subject, so a fenced state batch or offset commit first reads every lease it
//! depends on and is refused unless each is held with its token and unexpired, and only
//! then writes. A holder paused exactly between the check and the write could still land
//! one write after losing its lease; the owner's local validity (it stops handing out and
//! settling a partition at three quarters of the TTL after its last renewal) keeps that
//! window to writes already under way. Redis checks atomically (see `crmbus-redis`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use async_trait::async_trait;
use crmbus::cluster::{Fence, LeaseInfo, LeaseStore};
use crmbus::LogError;
use serde::{Deserialize, Serialize};

use crate::conn::{backend, bucket_keys, Conn};
use crate::naming;

/// The key of the token counter (`=` never starts an escaped lease name's key).
const TOKEN_KEY: &str = "=token";

/// A lease as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    name: String,
    holder: String,
    token: u64,
    data: String,
    ttl_ms: u64,
}

/// The leases of one crmbus namespace on NATS JetStream.
#[derive(Clone)]
pub struct NatsLeaseStore {
    kv: kv::Store,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Lease entries a listing reads at once.
const LIST_READS_AT_ONCE: usize = 16;

/// A live lease entry: its stored value, revision and time left (ms); `None` when the key
/// holds no lease (never taken, released, revoked) or it expired.
fn live(entry: Option<kv::Entry>) -> Option<(Stored, u64, u64)> {
    let e = entry?;
    if !matches!(e.operation, Operation::Put) {
        return None;
    }
    let stored: Stored = serde_json::from_slice(&e.value).ok()?;
    let ends = e
        .created
        .timestamp_millis()
        .saturating_add(i64::try_from(stored.ttl_ms).unwrap_or(i64::MAX));
    let left = ends.saturating_sub(now_ms());
    (left > 0).then(|| (stored, e.revision, u64::try_from(left).unwrap_or(0)))
}

impl NatsLeaseStore {
    pub(crate) async fn open(conn: &Conn) -> Result<NatsLeaseStore, LogError> {
        let kv = conn
            .bucket(&naming::leases_bucket(&conn.prefix), "leases")
            .await?;
        Ok(NatsLeaseStore { kv })
    }

    fn key(name: &str) -> String {
        naming::key_part(name)
    }

    async fn entry(&self, name: &str) -> Result<Option<kv::Entry>, LogError> {
        self.kv
            .entry(Self::key(name))
            .await
            .map_err(|e| backend(&format!("reading lease {name}"), e))
    }

    /// The next fencing token.
    async fn next_token(&self) -> Result<u64, LogError> {
        loop {
            let current = self
                .kv
                .entry(TOKEN_KEY)
                .await
                .map_err(|e| backend("reading the lease token counter", e))?;
            let (n, rev) = match &current {
                Some(e) if matches!(e.operation, Operation::Put) => (
                    std::str::from_utf8(&e.value)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .unwrap_or(0),
                    Some(e.revision),
                ),
                Some(e) => (0, Some(e.revision)),
                None => (0, None),
            };
            let next = n + 1;
            let written = match rev {
                Some(r) => self
                    .kv
                    .update(TOKEN_KEY, next.to_string().into(), r)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.kind() == UpdateErrorKind::WrongLastRevision),
                None => self
                    .kv
                    .create(TOKEN_KEY, next.to_string().into())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.kind() == CreateErrorKind::AlreadyExists),
            };
            match written {
                Ok(()) => return Ok(next),
                // Another server raised it first: read it again.
                Err(true) => continue,
                Err(false) => {
                    return Err(LogError::backend("raising the lease token counter failed"))
                }
            }
        }
    }

    /// Refuses unless every fence is a live lease held with its token.
    pub(crate) async fn check(&self, fences: &[Fence]) -> Result<(), LogError> {
        for f in fences {
            match live(self.entry(&f.lease).await?) {
                Some((s, _, _)) if s.token == f.token => {}
                _ => {
                    return Err(LogError::Fenced(format!(
                        "lease {} is no longer held with token {}",
                        f.lease, f.token
                    )))
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl LeaseStore for NatsLeaseStore {
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        data: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, LogError> {
        let entry = self.entry(name).await?;
        let revision = entry.as_ref().map(|e| e.revision);
        if live(entry).is_some() {
            return Ok(None);
        }
        let token = self.next_token().await?;
        let value = serde_json::to_vec(&Stored {
            name: name.to_string(),
            holder: holder.to_string(),
            token,
            data: data.to_string(),
            ttl_ms: ttl_ms(ttl),
        })
        .map_err(|e| backend("encoding a lease", e))?;
        // Compare-and-set on what was read: a concurrent taker makes this fail.
        let taken = match revision {
            Some(r) => self
                .kv
                .update(Self::key(name), value.into(), r)
                .await
                .map(|_| ())
                .map_err(|e| {
                    (
                        e.kind() == UpdateErrorKind::WrongLastRevision,
                        e.to_string(),
                    )
                }),
            None => self
                .kv
                .create(Self::key(name), value.into())
                .await
                .map(|_| ())
                .map_err(|e| (e.kind() == CreateErrorKind::AlreadyExists, e.to_string())),
        };
        match taken {
            Ok(()) => Ok(Some(token)),
            Err((true, _)) => Ok(None),
            Err((false, e)) => Err(LogError::backend(format!("taking lease {name}: {e}"))),
        }
    }

    async fn renew(&self, name: &str, token: u64, ttl: Duration) -> Result<bool, LogError> {
        let Some((mut stored, revision, _)) = live(self.entry(name).await?) else {
            return Ok(false);
        };
        if stored.token != token {
            return Ok(false);
        }
        stored.ttl_ms = ttl_ms(ttl);
        let value = serde_json::to_vec(&stored).map_err(|e| backend("encoding a lease", e))?;
        match self
            .kv
            .update(Self::key(name), value.into(), revision)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(backend(&format!("renewing lease {name}"), e)),
        }
    }

    async fn release(&self, name: &str, token: u64) -> Result<(), LogError> {
        let Some((stored, revision, _)) = live(self.entry(name).await?) else {
            return Ok(());
        };
        if stored.token != token {
            return Ok(());
        }
        // Only the revision read: a lease taken in between stays.
        let _ = self
            .kv
            .delete_expect_revision(Self::key(name), Some(revision))
            .await;
        Ok(())
    }

    async fn revoke(&self, name: &str) -> Result<(), LogError> {
        self.kv
            .delete(Self::key(name))
            .await
            .map_err(|e| backend(&format!("revoking lease {name}"), e))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<LeaseInfo>, LogError> {
        use futures_util::{StreamExt, TryStreamExt};
        // Not through a consumer: see `bucket_keys`. A key's encoding keeps the name's
        // prefix (byte by byte), so only the keys that can match are read. The bucket keeps
        // the marker of every lease given up (a stopped server's membership, a deleted
        // subscription's partitions): they are listed too, and read as no lease below.
        let encoded = Self::key(prefix);
        let keys = bucket_keys(&self.kv, "listing leases").await?;
        let entries: Vec<Option<kv::Entry>> = futures_util::stream::iter(
            keys.into_iter()
                .filter(|k| k != TOKEN_KEY && (prefix.is_empty() || k.starts_with(&encoded))),
        )
        .map(|key| async move { self.kv.entry(key).await })
        .buffered(LIST_READS_AT_ONCE)
        .try_collect()
        .await
        .map_err(|e| backend("reading a lease", e))?;
        let mut out = Vec::new();
        for entry in entries {
            if let Some((s, _, left)) = live(entry) {
                if s.name.starts_with(prefix) {
                    out.push(LeaseInfo {
                        name: s.name,
                        holder: s.holder,
                        token: s.token,
                        expires_in_ms: left,
                        data: s.data,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
