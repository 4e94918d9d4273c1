//! What several crmbus servers over one shared backend coordinate with: leases with
//! fencing tokens ([`LeaseStore`]), the [`Fence`] a write carries, and the assignment of
//! (subscription, partition) slots to live servers ([`owner_of`]).
//!
//! A lease is held by one holder at a time until its time to live runs out without a
//! renewal; each acquisition gets a fencing token greater than every token the store gave
//! before. An owner's state writes and offset commits carry the fences of the partitions
//! they touch ([`crate::StateStore::apply_fenced`],
//! [`crate::EventLog::commit_offset_fenced`]); the backend applies them only if every
//! fence is still held with its token, atomically with the write. A server paused past its
//! lease (a long GC pause, `SIGSTOP`, a network partition) therefore cannot write over the
//! work of the server that took its partitions over.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::error::LogError;

/// A lease a write depends on: the write is applied only while `lease` is held with
/// `token`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fence {
    /// The lease's name.
    pub lease: String,
    /// The fencing token its holder got when it acquired it.
    pub token: u64,
}

/// A lease as the store holds it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// The lease's name.
    pub name: String,
    /// Who holds it (for a server: its member id).
    pub holder: String,
    /// The fencing token of the current acquisition.
    pub token: u64,
    /// Time left before it expires unless renewed (ms).
    pub expires_in_ms: u64,
    /// What the holder published with it (for a member lease: its record as JSON).
    pub data: String,
}

/// Leases with fencing tokens, kept by a shared backend.
///
/// Contract (the conformance tests in `crmbus-testkit` check it on every backend):
/// - [`LeaseStore::acquire`] succeeds only when nobody holds the lease (never held,
///   released, or expired), and returns a token greater than every token returned before
///   by this store, for any lease;
/// - [`LeaseStore::renew`] extends the lease only if it is still held with that token;
/// - [`LeaseStore::release`] gives it up only if it is still held with that token;
/// - expiry is decided by the backend's clock, never by the holder's.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes lease `name` for `holder` for `ttl`, with `data` published beside it, if
    /// nobody holds it: its fencing token, or `None` when someone does.
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        data: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, LogError>;

    /// Extends lease `name` to `ttl` from now if it is still held with `token`; false
    /// when it is not (expired, released, or taken by another holder).
    async fn renew(&self, name: &str, token: u64, ttl: Duration) -> Result<bool, LogError>;

    /// Gives lease `name` up if it is still held with `token` (nothing happens otherwise).
    async fn release(&self, name: &str, token: u64) -> Result<(), LogError>;

    /// Removes lease `name` whoever holds it: its holder's fenced writes are refused from
    /// then on (used when what the lease guards is deleted).
    async fn revoke(&self, name: &str) -> Result<(), LogError>;

    /// Every lease held now whose name starts with `prefix`, sorted by name.
    async fn list(&self, prefix: &str) -> Result<Vec<LeaseInfo>, LogError>;
}

/// The name of the lease of partition `partition` of subscription `subscription`.
pub fn partition_lease(subscription: &str, partition: u32) -> String {
    format!("part/{subscription}/{partition}")
}

/// The name of a member's lease.
pub fn member_lease(member: &str) -> String {
    format!("member/{member}")
}

/// Which of `members` owns partition `partition` of `subscription`: the members sorted by
/// id, the subscription's partitions dealt round-robin from a starting member chosen by
/// the subscription's name. Every server computes the same answer from the same member
/// list, and each subscription's partitions are spread as evenly as the count allows. A
/// member joining or leaving moves most partitions (the deal starts over), each through a
/// clean handover. `None` when there are no members.
pub fn owner_of<'a>(members: &[&'a str], subscription: &str, partition: u32) -> Option<&'a str> {
    if members.is_empty() {
        return None;
    }
    let mut sorted: Vec<&'a str> = members.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let n = sorted.len() as u64;
    let start = xxh3_64(subscription.as_bytes()) % n;
    let i = (start + u64::from(partition)) % n;
    sorted.get(i as usize).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_has_one_owner_and_the_spread_is_even() {
        let members = ["c", "a", "b"];
        for sub in ["erp", "mail", "dash", "x"] {
            let mut counts = std::collections::HashMap::new();
            for p in 0..8 {
                let owner = owner_of(&members, sub, p).expect("owner");
                *counts.entry(owner).or_insert(0) += 1;
            }
            // 8 partitions over 3 members: 3, 3 and 2.
            let mut c: Vec<i32> = counts.values().copied().collect();
            c.sort_unstable();
            assert_eq!(c, [2, 3, 3], "{sub}");
        }
    }

    #[test]
    fn the_answer_does_not_depend_on_the_order_members_are_listed_in() {
        for p in 0..4 {
            assert_eq!(
                owner_of(&["a", "b", "c"], "erp", p),
                owner_of(&["c", "b", "a", "b"], "erp", p)
            );
        }
    }

    #[test]
    fn no_members_no_owner() {
        assert_eq!(owner_of(&[], "erp", 0), None);
    }

    #[test]
    fn one_member_owns_everything() {
        for p in 0..4 {
            assert_eq!(owner_of(&["only"], "erp", p), Some("only"));
        }
    }
}
