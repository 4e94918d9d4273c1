//! Servers sharing one backend act as one bus: each server is a member (a lease renewed
//! a few times per time to live), each (subscription, partition) is driven by the one
//! member [`crmbus::cluster::owner_of`] names, holding the partition's lease, and its
//! engine's writes carry the lease's fencing token. [`Cluster`] is this server's side:
//! its membership, the partition leases it holds, and forwarding an ack to the member
//! that handed the delivery out. The subscriptions registry decides what to hold (see
//! `Subscriptions::reconcile`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crmbus::cluster::{member_lease, partition_lease, LeaseInfo, LeaseStore};
use crmbus::sync::LockExt;
use crmbus::{ErrorCode, LogError};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::api::AckResponse;
use crate::lease_deadline::LeasesWithDeadline;
use crate::problem::ApiError;

/// Set on a request one server forwards to another, so it is never forwarded again.
pub const FORWARDED_HEADER: &str = "crmbus-forwarded";

/// What a member publishes with its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member id (a UUID v7 chosen at start).
    pub id: String,
    /// Where other servers reach it.
    pub url: String,
}

/// A partition lease this server holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The fencing token.
    pub token: u64,
    /// Until when the lease is surely still held: the time the last successful renewal
    /// (or the acquisition) was sent, plus three quarters of the time to live. Past it,
    /// nothing of the partition is handed out.
    pub valid_until: Instant,
}

/// This server's membership in the cluster of servers sharing its backend.
pub struct Cluster {
    me: Member,
    leases: Arc<dyn LeaseStore>,
    ttl: Duration,
    /// This member's own lease token, once acquired.
    member_token: Mutex<Option<u64>>,
    /// The members seen live at the last heartbeat, by id.
    members: Mutex<BTreeMap<String, Member>>,
    /// Every member seen since this server started, by id: where to forward an ack even
    /// while its lease is being renewed late (the forward itself tells whether it is up).
    known: Mutex<BTreeMap<String, Member>>,
    http: reqwest::Client,
    /// Notified to run a reconciliation now (a subscription was created or deleted).
    pub kick: Notify,
    /// When the next round must run at the latest: just after the soonest expiry of a
    /// lease this server waits for (another member's, or a partition's it should take),
    /// so a dead server's partitions move as soon as their leases end, not a round later.
    wake_at: Mutex<Option<Instant>>,
}

impl Cluster {
    /// This server as member `id`, reachable at `url`, with leases of `ttl`. Forwards to
    /// the other members also trust the PEM certificates of `trusted` (the servers' own
    /// certificate, when they serve HTTPS with one the system does not know).
    pub fn new(
        leases: Arc<dyn LeaseStore>,
        id: String,
        url: String,
        ttl: Duration,
        trusted: &[reqwest::Certificate],
    ) -> Cluster {
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if !trusted.is_empty() {
            http = http.tls_certs_merge(trusted.iter().cloned());
        }
        Cluster {
            me: Member { id, url },
            // No call may hold the loop that renews this server's membership for long.
            leases: Arc::new(LeasesWithDeadline::new(leases, ttl)),
            ttl,
            member_token: Mutex::new(None),
            members: Mutex::new(BTreeMap::new()),
            known: Mutex::new(BTreeMap::new()),
            http: http.build().unwrap_or_default(),
            kick: Notify::new(),
            wake_at: Mutex::new(None),
        }
    }

    /// How long the reconciliation loop sleeps before its next round: a tick, or less
    /// when a lease this server waits for ends sooner.
    pub fn next_sleep(&self) -> Duration {
        let tick = self.tick();
        match self.wake_at.locked().take() {
            Some(at) => at.saturating_duration_since(Instant::now()).min(tick),
            None => tick,
        }
    }

    /// Runs a round just after a lease that ends in `left_ms` (a few ms after, so that it
    /// has ended by the backend's clock too).
    fn wake_after(&self, left_ms: u64) {
        let at = Instant::now() + Duration::from_millis(left_ms.saturating_add(5));
        let mut wake = self.wake_at.locked();
        if wake.is_none_or(|w| at < w) {
            *wake = Some(at);
        }
    }

    /// This server's member id.
    pub fn id(&self) -> &str {
        &self.me.id
    }

    /// This server's URL.
    pub fn url(&self) -> &str {
        &self.me.url
    }

    /// The leases' time to live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How often the cluster is reconciled: ten times per time to live, at most every
    /// half second (so definitions made on another server show within a second).
    pub fn tick(&self) -> Duration {
        (self.ttl / 10).clamp(Duration::from_millis(100), Duration::from_millis(500))
    }

    /// How long a lease counts as held after the renewal that was sent at `sent`.
    pub fn valid_until(&self, sent: Instant) -> Instant {
        sent + self.ttl - self.ttl / 4
    }

    /// Keeps this server's membership until `stopping` turns true: renews its lease (or
    /// takes it again) every [`Cluster::tick`], on its own, so that nothing else the
    /// cluster waits for (a reconciliation round slowed by its backend) can let it lapse.
    pub async fn keep_membership(&self, mut stopping: tokio::sync::watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.renew_membership().await {
                tracing::warn!(error = %e, "renewing this server's membership");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.tick()) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    }

    /// Renews this member's lease, or takes it again. [`Cluster::keep_membership`] calls it
    /// every tick; a server calls it once before its first reconciliation round, so that the
    /// round counts it among the members (as it counts every other live server).
    pub async fn renew_membership(&self) -> Result<(), LogError> {
        let name = member_lease(&self.me.id);
        let token = *self.member_token.locked();
        if let Some(t) = token {
            if self.leases.renew(&name, t, self.ttl).await? {
                return Ok(());
            }
        }
        let data = serde_json::to_string(&self.me).unwrap_or_default();
        let mut taken = self
            .leases
            .acquire(&name, &self.me.id, &data, self.ttl)
            .await?;
        if taken.is_none() {
            // Held already, and only this process holds as this member: an acquisition
            // whose answer was lost (a call given up on) took it. Its token is ours.
            taken = self
                .leases
                .list(&name)
                .await?
                .into_iter()
                .find(|l| l.name == name && l.holder == self.me.id)
                .map(|l| l.token);
        }
        if token.is_some() && taken.is_some() {
            tracing::warn!(member = %self.me.id, "this server's membership lease had expired; taken again");
        }
        *self.member_token.locked() = taken;
        Ok(())
    }

    /// The live members, sorted by id; this one among them while its lease is held (see
    /// [`Cluster::keep_membership`]).
    pub async fn heartbeat(&self) -> Result<Vec<Member>, LogError> {
        let listed = self.leases.list("member/").await?;
        let mut members = BTreeMap::new();
        for l in &listed {
            if l.holder != self.me.id {
                // If it is not renewed, the next round runs as soon as it ends.
                self.wake_after(l.expires_in_ms);
            }
        }
        for l in listed {
            if let Ok(m) = serde_json::from_str::<Member>(&l.data) {
                members.insert(m.id.clone(), m);
            }
        }
        metrics::gauge!("crmbus_cluster_members").set(members.len() as f64);
        self.known
            .locked()
            .extend(members.iter().map(|(k, v)| (k.clone(), v.clone())));
        *self.members.locked() = members.clone();
        Ok(members.into_values().collect())
    }

    /// Gives up this member's lease (a graceful stop), so the others take its partitions
    /// over at once instead of after the time to live.
    pub async fn leave(&self) {
        let token = self.member_token.locked().take();
        if let Some(t) = token {
            if let Err(e) = self.leases.release(&member_lease(&self.me.id), t).await {
                tracing::warn!(error = %e, "releasing the membership lease");
            }
        }
    }

    /// Takes the lease of `partition` of `subscription` if it is free.
    pub async fn acquire(&self, subscription: &str, partition: u32) -> Option<Held> {
        let sent = Instant::now();
        match self
            .leases
            .acquire(
                &partition_lease(subscription, partition),
                &self.me.id,
                "",
                self.ttl,
            )
            .await
        {
            Ok(Some(token)) => Some(Held {
                token,
                valid_until: self.valid_until(sent),
            }),
            Ok(None) => {
                // Held by another: try again as soon as it ends, if it is not renewed.
                let name = partition_lease(subscription, partition);
                if let Ok(held) = self.leases.list(&name).await {
                    if let Some(l) = held.iter().find(|l| l.name == name) {
                        self.wake_after(l.expires_in_ms);
                    }
                }
                None
            }
            Err(e) => {
                tracing::warn!(subscription, partition, error = %e, "acquiring a partition lease");
                None
            }
        }
    }

    /// Renews a held partition lease: the updated hold, or `None` when it is lost (not
    /// held with its token any more, or not renewed before it stopped counting as held).
    pub async fn renew(&self, subscription: &str, partition: u32, held: Held) -> Option<Held> {
        let sent = Instant::now();
        match self
            .leases
            .renew(
                &partition_lease(subscription, partition),
                held.token,
                self.ttl,
            )
            .await
        {
            Ok(true) => Some(Held {
                token: held.token,
                valid_until: self.valid_until(sent),
            }),
            Ok(false) => None,
            Err(e) => {
                tracing::warn!(subscription, partition, error = %e, "renewing a partition lease");
                (held.valid_until > Instant::now()).then_some(held)
            }
        }
    }

    /// Gives a partition lease up (after the engine driving it stopped).
    pub async fn release(&self, subscription: &str, partition: u32, token: u64) {
        if let Err(e) = self
            .leases
            .release(&partition_lease(subscription, partition), token)
            .await
        {
            tracing::warn!(subscription, partition, error = %e, "releasing a partition lease");
        }
    }

    /// Takes the seek lock of `subscription`: while it is held, no other server takes or
    /// keeps a partition of it. `None` when another seek holds it.
    pub async fn lock_for_seek(&self, subscription: &str) -> Result<Option<u64>, LogError> {
        self.leases
            .acquire(
                &format!("seek/{subscription}"),
                &self.me.id,
                "",
                self.ttl * 4,
            )
            .await
    }

    /// Gives the seek lock of `subscription` up.
    pub async fn unlock_seek(&self, subscription: &str, token: u64) {
        if let Err(e) = self
            .leases
            .release(&format!("seek/{subscription}"), token)
            .await
        {
            tracing::warn!(subscription, error = %e, "releasing the seek lock");
        }
    }

    /// The subscriptions another server is seeking now.
    pub async fn seeking_elsewhere(&self) -> Result<Vec<String>, LogError> {
        Ok(self
            .leases
            .list("seek/")
            .await?
            .into_iter()
            .filter(|l| l.holder != self.me.id)
            .filter_map(|l| l.name.strip_prefix("seek/").map(String::from))
            .collect())
    }

    /// Takes the lease of `partition` of `subscription`, revoking it from whoever holds
    /// it, trying until `deadline` (a server that still holds it gives it up at its next
    /// round, once it sees the seek lock).
    pub async fn take_over(
        &self,
        subscription: &str,
        partition: u32,
        deadline: Instant,
    ) -> Result<Held, ApiError> {
        let name = partition_lease(subscription, partition);
        loop {
            self.leases.revoke(&name).await?;
            if let Some(h) = self.acquire(subscription, partition).await {
                return Ok(h);
            }
            if Instant::now() > deadline {
                return Err(ApiError::new(
                    ErrorCode::Unavailable,
                    format!("partition {partition} of '{subscription}' could not be taken for the seek; try again"),
                ));
            }
            tokio::time::sleep(self.tick()).await;
        }
    }

    /// Removes every partition lease of a subscription, whoever holds them (it is being
    /// deleted: the engines still running elsewhere can write nothing more).
    pub async fn revoke_all(&self, subscription: &str) -> Result<(), LogError> {
        let prefix = format!("part/{subscription}/");
        for l in self.leases.list(&prefix).await? {
            self.leases.revoke(&l.name).await?;
        }
        Ok(())
    }

    /// The members seen at the last heartbeat.
    pub fn members(&self) -> Vec<Member> {
        self.members.locked().values().cloned().collect()
    }

    /// Every lease of the cluster now (members and partitions).
    pub async fn leases(&self) -> Result<Vec<LeaseInfo>, LogError> {
        self.leases.list("").await
    }

    /// Sends the ack (`action` "ack") or nack ("nack") of `body` to the member that handed
    /// the deliveries out.
    pub async fn forward_settle(
        &self,
        member: &str,
        subscription: &str,
        action: &str,
        body: serde_json::Value,
        authorization: Option<&reqwest::header::HeaderValue>,
    ) -> Result<AckResponse, ApiError> {
        let url = self
            .known
            .locked()
            .get(member)
            .map(|m| m.url.clone())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unavailable,
                    format!("server {member} that handed these deliveries out is unknown to this server"),
                )
            })?;
        let target = format!(
            "{}/v1/subscriptions/{subscription}/{action}",
            url.trim_end_matches('/')
        );
        let unreachable = |e: reqwest::Error| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!("forwarding the {action} to server {member} at {url}: {e}"),
            )
        };
        let mut req = self
            .http
            .post(&target)
            .header(FORWARDED_HEADER, &self.me.id)
            .json(&body);
        // The caller's key: the other server checks it as this one did.
        if let Some(a) = authorization {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        let resp = req.send().await.map_err(unreachable)?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("server {member} answered the forwarded {action} with {status}: {text}"),
            ));
        }
        resp.json::<AckResponse>().await.map_err(unreachable)
    }
}

impl Cluster {
    /// Sends a request to every other live member (marked forwarded, with `actor` as the
    /// audit actor) and returns each answer's status and JSON body (`Null` when empty).
    /// A member that cannot be reached is an error: what it owns was not acted on.
    pub async fn forward_to_others(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
        actor: &str,
        authorization: Option<&reqwest::header::HeaderValue>,
    ) -> Result<Vec<(u16, serde_json::Value)>, ApiError> {
        let mut out = Vec::new();
        for m in self.members().into_iter().filter(|m| m.id != self.me.id) {
            let url = format!("{}{path}", m.url.trim_end_matches('/'));
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header(FORWARDED_HEADER, &self.me.id)
                .header("x-crmbus-actor", actor);
            if let Some(a) = authorization {
                req = req.header(reqwest::header::AUTHORIZATION, a);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.map_err(|e| {
                ApiError::new(
                    ErrorCode::Unavailable,
                    format!("forwarding to server {} at {}: {e}", m.id, m.url),
                )
            })?;
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            out.push((
                status,
                serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
            ));
        }
        Ok(out)
    }
}

/// The member id an ack id names (`<member>.<id>`), if it has one.
pub fn ack_owner(ack_id: &str) -> Option<&str> {
    ack_id.split_once('.').map(|(m, _)| m)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use async_trait::async_trait;

    use super::*;

    #[test]
    fn ack_ids_name_their_member() {
        assert_eq!(ack_owner("0192abc.0193def"), Some("0192abc"));
        assert_eq!(ack_owner("0193def"), None);
    }

    /// Member `a` of a cluster on `store`, with leases of `ttl`.
    fn member_a(store: Arc<dyn LeaseStore>, ttl: Duration) -> Cluster {
        Cluster::new(store, "a".into(), "http://127.0.0.1:1".into(), ttl, &[])
    }

    /// Leases whose listing never answers (a backend call that hangs); the rest succeed.
    #[derive(Default)]
    struct ListingHangs {
        renewals: AtomicU64,
        /// When each renewal came, on tokio's clock.
        renewed_at: Mutex<Vec<Instant>>,
    }

    #[async_trait]
    impl LeaseStore for ListingHangs {
        async fn acquire(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: Duration,
        ) -> Result<Option<u64>, LogError> {
            Ok(Some(1))
        }

        async fn renew(&self, _: &str, _: u64, _: Duration) -> Result<bool, LogError> {
            self.renewals.fetch_add(1, Ordering::Relaxed);
            self.renewed_at.locked().push(Instant::now());
            Ok(true)
        }

        async fn release(&self, _: &str, _: u64) -> Result<(), LogError> {
            Ok(())
        }

        async fn revoke(&self, _: &str) -> Result<(), LogError> {
            Ok(())
        }

        async fn list(&self, _: &str) -> Result<Vec<LeaseInfo>, LogError> {
            std::future::pending().await
        }
    }

    /// A heartbeat whose backend call hangs fails in time: the reconciliation round goes on
    /// (seen on NATS: a listing that never ended held the round for good).
    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_whose_backend_hangs_fails_in_time() {
        let store = Arc::new(ListingHangs::default());
        let ttl = Duration::from_secs(3);
        let cluster = member_a(Arc::clone(&store) as Arc<dyn LeaseStore>, ttl);
        let started = tokio::time::Instant::now();
        // Paused time runs ahead whenever every task waits: no real waiting here.
        let beat = tokio::time::timeout(10 * ttl, cluster.heartbeat()).await;
        assert!(
            matches!(beat, Ok(Err(_))),
            "the heartbeat must fail, not wait: {beat:?}"
        );
        assert!(started.elapsed() < ttl, "it took {:?}", started.elapsed());
    }

    /// The membership is renewed within its time to live while the reconciliation rounds
    /// are slowed by backend calls that hang (each round lists twice: the members, and the
    /// subscriptions being sought elsewhere).
    #[tokio::test(start_paused = true)]
    async fn the_membership_outlives_reconciliation_rounds_whose_listings_hang() {
        let store = Arc::new(ListingHangs::default());
        let ttl = Duration::from_secs(3);
        let cluster = Arc::new(member_a(Arc::clone(&store) as Arc<dyn LeaseStore>, ttl));
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let rounds = {
            let cluster = Arc::clone(&cluster);
            tokio::spawn(async move {
                loop {
                    let _ = cluster.heartbeat().await;
                    let _ = cluster.seeking_elsewhere().await;
                    tokio::time::sleep(cluster.next_sleep()).await;
                }
            })
        };
        let membership = {
            let cluster = Arc::clone(&cluster);
            tokio::spawn(async move { cluster.keep_membership(stopping).await })
        };
        tokio::time::sleep(10 * ttl).await;
        let _ = stop.send(true);
        rounds.abort();
        let _ = membership.await;
        let renewed = store.renewed_at.locked().clone();
        assert!(renewed.len() >= 10, "renewed {} times", renewed.len());
        let longest = renewed
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        assert!(
            longest < ttl / 2,
            "{longest:?} between two renewals of a {ttl:?} lease"
        );
    }

    /// Leases where this member's lease is held already, by this member, as after an
    /// acquisition whose answer was lost.
    #[derive(Default)]
    struct AnswerLost {
        renewed_with: Mutex<Vec<u64>>,
    }

    #[async_trait]
    impl LeaseStore for AnswerLost {
        async fn acquire(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: Duration,
        ) -> Result<Option<u64>, LogError> {
            Ok(None)
        }

        async fn renew(&self, _: &str, token: u64, _: Duration) -> Result<bool, LogError> {
            self.renewed_with.locked().push(token);
            Ok(token == 7)
        }

        async fn release(&self, _: &str, _: u64) -> Result<(), LogError> {
            Ok(())
        }

        async fn revoke(&self, _: &str) -> Result<(), LogError> {
            Ok(())
        }

        async fn list(&self, prefix: &str) -> Result<Vec<LeaseInfo>, LogError> {
            Ok(vec![LeaseInfo {
                name: "member/a".into(),
                holder: "a".into(),
                token: 7,
                expires_in_ms: 1000,
                data: String::new(),
            }]
            .into_iter()
            .filter(|l| l.name.starts_with(prefix))
            .collect())
        }
    }

    /// This member's own lease, held already when it acquires, is adopted with its token
    /// and renewed, instead of being left to expire (and the others to drop this member).
    #[tokio::test]
    async fn a_membership_taken_by_an_acquisition_whose_answer_was_lost_is_kept() {
        let store = Arc::new(AnswerLost::default());
        let cluster = member_a(
            Arc::clone(&store) as Arc<dyn LeaseStore>,
            Duration::from_secs(3),
        );
        cluster.renew_membership().await.expect("adopted");
        cluster.renew_membership().await.expect("renewed");
        assert_eq!(*store.renewed_with.locked(), [7]);
    }
}
