//! The answers of the operations that change the cluster, typed: the
//! admin endpoint writes them and the `ferry` commands read them, so both
//! ends agree by construction. (A switchover answers with its
//! [`super::switchover::SwitchoverReport`]; the batcher's operations —
//! suspend, resume, repair — answer with the batcher's own documents.)

use ferry_batcher::resync::Copied;
use serde::{Deserialize, Serialize};

/// Where a node stands once the operation is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// It serves as a replica.
    Replica,
    /// It left the cluster.
    Removed,
    /// It was made master by an operator.
    Forced,
}

/// `ferry add-node`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Added {
    pub node: String,
    pub state: NodeState,
    pub epoch: i64,
    pub tables: usize,
    pub rows: u64,
    /// The ledger position it starts from.
    pub batch: i64,
    /// The `[[nodes]]` entry to add to the configuration file.
    pub config: String,
}

/// `ferry remove-node`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Removed {
    pub node: String,
    pub state: NodeState,
    pub epoch: i64,
    /// The master dropped its record of the node (it keeps no outbox rows
    /// for it any more).
    pub forgotten: bool,
    /// What to change in the configuration file.
    pub config: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// `ferry resync`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Resynced {
    pub state: NodeState,
    pub epoch: i64,
    /// What was copied (the rows of the keys that differed, or whole
    /// tables), what was kept in the node's quarantine, and whether its
    /// definitions were replaced.
    #[serde(flatten)]
    pub copied: Copied,
}

/// `ferry force-master`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Forced {
    pub state: NodeState,
    pub epoch: i64,
    pub warning: String,
}
