//! [`LeasesWithDeadline`]: the cluster's lease store, every call of which gives up after a
//! deadline.
//!
//! A server stays a member by renewing its lease from the reconciliation loop, which makes
//! one lease call after another. A call that never answers (seen on NATS 2.9: a key listing
//! that waited forever) would stop the loop, the renewals with it, and the other members
//! would drop this one from the cluster although it is up. With a deadline of half the
//! lease's time to live, such a call fails instead, and the next round renews in time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use crmbus::cluster::{LeaseInfo, LeaseStore};
use crmbus::LogError;

/// A [`LeaseStore`] whose calls fail with a backend error ([`LogError::backend`]) when they take longer
/// than a deadline. A call given up on may still take effect at the backend (a renewal, an
/// acquisition): the leases' own expiry settles that, as for any call whose answer is lost.
pub struct LeasesWithDeadline {
    inner: Arc<dyn LeaseStore>,
    deadline: Duration,
}

impl LeasesWithDeadline {
    /// `inner`'s calls, each given up after half of `ttl` (the leases' time to live).
    pub fn new(inner: Arc<dyn LeaseStore>, ttl: Duration) -> LeasesWithDeadline {
        LeasesWithDeadline {
            inner,
            deadline: ttl / 2,
        }
    }

    async fn bounded<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, LogError>>,
    ) -> Result<T, LogError> {
        match tokio::time::timeout(self.deadline, call).await {
            Ok(answer) => answer,
            Err(_) => Err(LogError::backend(format!(
                "{what}: the lease store did not answer within {} ms",
                self.deadline.as_millis()
            ))),
        }
    }
}

#[async_trait]
impl LeaseStore for LeasesWithDeadline {
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        data: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, LogError> {
        self.bounded(
            &format!("acquiring lease {name}"),
            self.inner.acquire(name, holder, data, ttl),
        )
        .await
    }

    async fn renew(&self, name: &str, token: u64, ttl: Duration) -> Result<bool, LogError> {
        self.bounded(
            &format!("renewing lease {name}"),
            self.inner.renew(name, token, ttl),
        )
        .await
    }

    async fn release(&self, name: &str, token: u64) -> Result<(), LogError> {
        self.bounded(
            &format!("releasing lease {name}"),
            self.inner.release(name, token),
        )
        .await
    }

    async fn revoke(&self, name: &str) -> Result<(), LogError> {
        self.bounded(&format!("revoking lease {name}"), self.inner.revoke(name))
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<LeaseInfo>, LogError> {
        self.bounded(
            &format!("listing leases '{prefix}*'"),
            self.inner.list(prefix),
        )
        .await
    }
}
