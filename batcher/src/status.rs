//! The replication state the admin endpoint shows.

use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};

/// One replica as `/status` shows it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplicaStatus {
    pub name: String,
    pub reachable: bool,
    /// Last batch id in the replica's ledger.
    pub applied_batch: i64,
    pub lag_batches: i64,
    pub lag_rows: i64,
    /// Bytes of the outbox changes kept for it (those it has not applied).
    pub kept_bytes: i64,
    /// For an unreachable replica, how long ago the master last recorded
    /// its position; for a suspended one, how long since its instant: the
    /// changes kept for it are at most this old.
    pub kept_age_seconds: Option<f64>,
    /// For an unreachable or suspended replica, distinct keys among the
    /// changes kept for it.
    pub kept_keys: Option<i64>,
    /// At the current rate, seconds until a `[retention]` bound makes the
    /// master stop keeping changes for it (None: no bound, or not
    /// growing).
    pub released_in_seconds: Option<f64>,
    /// What is kept for it passed 80 % of `[retention] max_bytes`.
    pub kept_near_bound: bool,
    /// Only `ferry resync` brings it back: the master stopped keeping
    /// changes for it (`[retention] max_bytes`), or its position is older
    /// than the outbox clean-up.
    pub needs_resync: bool,
    pub lag_seconds: f64,
    pub last_error: Option<String>,
    /// When a batch failed to apply (the replica is paused and retried):
    /// its id and the statement that failed.
    pub failed_batch: Option<i64>,
    pub failed_statement: Option<String>,
    /// A scheduled, running, held or failed suspension.
    pub suspension: Option<crate::suspend::SuspensionStatus>,
    /// Changes of its own the node committed that never reached the
    /// cluster, kept in its `ferry.quarantine` (moved there by a resync).
    pub quarantined: i64,
    /// Key ranges in which the background check found the replica's rows
    /// different from the master's (see [`crate::verify`]).
    pub divergent: Vec<crate::verify::Divergence>,
    /// Schema changes that did not apply there as on the master (a GRANT to
    /// a role the replica lacks, a change run as Ferry's role), newest last.
    pub schema_warnings: Vec<String>,
}

/// A schema change logged on the master (Ferry does not replicate DDL
/// yet; it reports it and re-checks the nodes).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SchemaChange {
    pub at: String,
    pub tag: String,
    pub object: String,
    pub query: String,
    /// Whether it travels to the replicas in the batch stream (false: it
    /// touched no replicated table, or Ferry could not tell which statement
    /// to replay and the replicas need the change by hand).
    pub replicated: bool,
    /// Its place in the DDL log (capture order), when it shipped in a
    /// batch: a batch cut again after it failed on a replica carries the
    /// same change.
    #[serde(skip)]
    pub seq: Option<i64>,
}

impl SchemaChange {
    /// Whether both report the same logged change.
    pub fn is_same_change(&self, other: &SchemaChange) -> bool {
        self.seq.is_some() && self.seq == other.seq
    }
}

/// Whether capture on the master is whole: its triggers on every
/// replicated table and its event triggers, present and enabled.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CaptureStatus {
    /// What was not intact at the last check (empty: intact).
    pub problems: Vec<String>,
    /// The latest repair: rows written before it while capture was off
    /// may be missing on the replicas.
    pub last_repair: Option<CaptureRepair>,
}

/// One repair of capture by the batcher.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CaptureRepair {
    /// The master's clock, as text.
    pub at: String,
    pub problems: Vec<String>,
}

/// Compaction of what the master keeps for replicas away (see
/// [`crate::compact`]): passes so far and the latest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CompactionStatus {
    pub running: bool,
    pub passes: u64,
    /// Superseded changes removed, over every pass.
    pub removed_rows: u64,
    pub last_removed_rows: u64,
    pub last_seconds: f64,
    /// Why the latest pass failed (it is tried again at a later pass).
    pub last_error: Option<String>,
}

/// The replication path as a whole.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplicationStatus {
    pub master: String,
    pub master_reachable: bool,
    /// Highest batch id cut so far.
    pub last_batch: i64,
    /// Rows in the master's outbox (shipped rows are removed), as the
    /// latest housekeeping pass counted them.
    pub outbox_backlog: i64,
    /// The latest batch cut when that pass counted (None before the first
    /// pass): rows of later batches are not in the figure.
    pub outbox_counted_at_batch: Option<i64>,
    /// The unreachable replica whose unapplied changes the outbox keeps:
    /// it holds the clean-up back for as long as it stays away (and stays
    /// in the configuration).
    pub outbox_kept_for: Option<String>,
    pub tables: usize,
    pub replicas: Vec<ReplicaStatus>,
    pub error: Option<String>,
    /// The latest schema changes seen on the master (newest last).
    pub schema_changes: Vec<SchemaChange>,
    /// The background check.
    pub verify: crate::verify::VerifyStatus,
    /// Capture on the master, as the last housekeeping pass found it.
    pub capture: CaptureStatus,
    /// Compaction of what is kept for replicas away.
    pub compaction: CompactionStatus,
    /// When the master last answered the batcher (a cut), for health
    /// checks: a busy master that still cuts batches is alive.
    #[serde(skip)]
    pub master_contact: Option<std::time::Instant>,
}

/// Shared between the batcher (writer) and the admin endpoint (reader).
pub type SharedStatus = Arc<RwLock<ReplicationStatus>>;
