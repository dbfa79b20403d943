//! The `/status` document, typed: the admin endpoint writes it
//! ([`crate::app`]) and `ferry status` reads it, so both ends agree by
//! construction. Every field reads as its default when absent, so a
//! document from another version of Ferry still reads.

use crate::config::Mode;
use crate::operations::add_node::Adding;
use crate::operations::switchover::SwitchoverReport;
use ferry_batcher::status::{CaptureStatus, CompactionStatus, SchemaChange};
use ferry_batcher::suspend::SuspensionStatus;
use ferry_batcher::verify::{Divergence, VerifyStatus};
use ferry_cluster::coordinator::FailoverReport;
use ferry_cluster::health::NodeHealth;
use ferry_cluster::Role;
use serde::{Deserialize, Serialize};

/// The whole cluster as `/status` shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    pub master: String,
    pub epoch: i64,
    pub mode: Mode,
    /// Sync mode only.
    pub sync: Option<SyncStatus>,
    pub failover: FailoverStatus,
    pub switchover: SwitchoverStatus,
    /// The latest `ferry add-node`.
    pub adding: Option<Adding>,
    /// Why there is no master now (after a total outage).
    pub waiting: Option<String>,
    /// The master was chosen by `ferry force-master`.
    pub forced: bool,
    pub last_batch: i64,
    /// Rows in the master's outbox not cleaned up yet, counted every
    /// `housekeeping_ms`.
    pub outbox_backlog: i64,
    /// The latest batch when `outbox_backlog` was counted: rows of later
    /// batches are not in it (None before the first count).
    pub outbox_counted_at_batch: Option<i64>,
    /// The node whose unapplied changes keep the outbox from being cleaned.
    pub outbox_kept_for: Option<String>,
    pub tables: usize,
    pub client_connections: i64,
    pub nodes: Vec<NodeStatus>,
    /// The latest schema changes seen on the master (newest last).
    pub schema_changes: Vec<SchemaChange>,
    /// The background check.
    pub verify: Option<VerifyStatus>,
    /// Whether capture on the master is whole, and its latest repair.
    pub capture: CaptureStatus,
    /// Compaction of what the master keeps for replicas away or suspended.
    pub compaction: CompactionStatus,
}

/// `sync`: synchronous commit.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncStatus {
    pub replicas_required: usize,
    /// Commits continue without the replicas (`sync_fallback = "async"`).
    pub degraded: bool,
    pub waiting_commits: i64,
}

/// `failover`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FailoverStatus {
    /// A failover under way (or waiting for a candidate).
    pub switching: bool,
    pub last: Option<FailoverReport>,
    pub error: Option<String>,
}

/// `switchover`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SwitchoverStatus {
    /// New statements are held at the gate now.
    pub holding: bool,
    pub last: Option<SwitchoverReport>,
}

/// One node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub reachable: bool,
    #[serde(default)]
    pub applied_batch: i64,
    #[serde(default)]
    pub lag_batches: i64,
    /// Outbox rows the replica has not applied.
    #[serde(default)]
    pub lag_rows: i64,
    #[serde(default)]
    pub lag_seconds: f64,
    #[serde(default)]
    pub last_error: Option<String>,
    /// What only a replica has.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<ReplicaDetail>,
    #[serde(default)]
    pub health: Option<NodeHealth>,
}

/// What `/status` shows of a replica only.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicaDetail {
    /// A batch that failed to apply there (the replica is paused and
    /// retried), and its failing statement.
    pub failed_batch: Option<i64>,
    pub failed_statement: Option<String>,
    pub suspension: Option<SuspensionStatus>,
    /// Changes of its own it committed that never reached the cluster.
    pub quarantined: i64,
    /// Bytes of outbox changes the master keeps for it (not applied yet).
    pub kept_bytes: i64,
    /// For an unreachable replica, how long ago the master last recorded
    /// its position; for a suspended one, how long since its instant: the
    /// changes kept for it are at most this old.
    pub kept_age_seconds: Option<f64>,
    /// For an unreachable or suspended replica, distinct keys among the
    /// changes kept for it.
    pub kept_keys: Option<i64>,
    /// At the current rate, seconds until a `[retention]` bound makes the
    /// master stop keeping changes for it.
    pub released_in_seconds: Option<f64>,
    /// What is kept for it passed 80 % of `[retention] max_bytes`.
    pub kept_near_bound: bool,
    /// Only `ferry resync` brings it back (the master stopped keeping
    /// changes for it, or it stands before the outbox clean-up).
    pub needs_resync: bool,
    /// Key ranges the background check found different from the master.
    pub divergent: Vec<Divergence>,
    /// Schema changes that did not apply there as on the master, newest
    /// last (a GRANT to a role it lacks, a change run as Ferry's role).
    pub schema_warnings: Vec<String>,
}

impl NodeStatus {
    /// What only a replica has (empty for the others).
    pub fn detail(&self) -> ReplicaDetail {
        self.replica.clone().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_reads_back_as_written_with_the_keys_clients_index() {
        let doc = Status {
            master: "a".into(),
            nodes: vec![
                NodeStatus {
                    name: "a".into(),
                    role: Role::Master,
                    reachable: true,
                    applied_batch: 3,
                    lag_batches: 0,
                    lag_rows: 0,
                    lag_seconds: 0.0,
                    last_error: None,
                    replica: None,
                    health: None,
                },
                NodeStatus {
                    name: "b".into(),
                    role: Role::Replica,
                    reachable: true,
                    applied_batch: 2,
                    lag_batches: 1,
                    lag_rows: 4,
                    lag_seconds: 0.5,
                    last_error: None,
                    replica: Some(ReplicaDetail::default()),
                    health: None,
                },
            ],
            ..Status::default()
        };
        let json = serde_json::to_value(&doc).unwrap_or_default();
        assert_eq!(json["nodes"][0]["role"], "master");
        assert!(json["nodes"][0].get("divergent").is_none(), "{json}");
        assert_eq!(json["nodes"][1]["divergent"], serde_json::json!([]));
        assert!(json["nodes"][1]["failed_batch"].is_null());
        assert_eq!(json["mode"], "async");
        let back: Status = serde_json::from_value(json).unwrap_or_default();
        assert_eq!(back.nodes.len(), 2);
        assert_eq!(back.nodes[1].lag_rows, 4);
    }
}
