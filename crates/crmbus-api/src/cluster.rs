//! The cluster of servers sharing one backend: `GET /v1/cluster`.

use serde::{Deserialize, Serialize};

/// `GET /v1/cluster`: the live servers, their leases, and which server drives each
/// subscription partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterView {
    /// Whether this server coordinates with others over its backend (false on a
    /// single-node backend such as the embedded log, or when `[cluster] enabled = false`).
    pub enabled: bool,
    /// This server's member id (absent outside a cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// The live servers, by id.
    pub members: Vec<ClusterMemberView>,
    /// Every subscription partition whose lease is held now, by subscription and
    /// partition.
    pub partitions: Vec<PartitionOwnerView>,
}

/// A live server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterMemberView {
    /// Its member id.
    pub id: String,
    /// Where the other servers reach it.
    pub url: String,
    /// Its membership lease's fencing token.
    pub token: u64,
    /// Time left on its lease unless renewed, ms.
    pub expires_in_ms: u64,
    /// How many subscription partitions it drives now.
    pub owned_partitions: usize,
}

/// Who drives one partition of one subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PartitionOwnerView {
    /// The subscription.
    pub subscription: String,
    /// The partition.
    pub partition: u32,
    /// The member id of the server holding its lease.
    pub owner: String,
    /// The lease's fencing token (every state write of the owner carries it).
    pub token: u64,
    /// Time left on the lease unless renewed, ms.
    pub expires_in_ms: u64,
}
