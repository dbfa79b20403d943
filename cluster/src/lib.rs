//! The nodes of a Ferry cluster and who plays which role.
//!
//! - [`Topology`]: the master, the replicas, the nodes fenced out, and the
//!   epoch of this arrangement; published to the proxy and the batcher.
//! - [`record`]: each node's own record of its state and the epoch it has
//!   seen (its fence).
//! - [`health`]: checking every node at a short interval.
//! - [`coordinator`]: the one that decides: failover, the decision after
//!   a total outage, operators' requests (force, admit, switchover,
//!   add/remove a node).
//! - [`Role`]: master, replica or fenced.
//! - [`progress`]: which replica has applied which batcher tick — what
//!   sync commits wait for, causal reads and switchovers ask, and the
//!   batcher reports ([`SyncPoint`]).

pub mod coordinator;
pub mod health;
pub mod progress;
pub mod record;
mod role;

pub use progress::{Fallback, Outcome, SyncPoint};
pub use role::Role;

use prometheus_client::encoding::EncodeLabelSet;

use ferry_wire::Target;
use thiserror::Error;

/// The `replica` label of Ferry's per-replica metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabel {
    pub replica: String,
}

impl ReplicaLabel {
    pub fn new(name: &str) -> Self {
        Self {
            replica: name.to_string(),
        }
    }
}

/// A configured node.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub target: Target,
    /// Lower is preferred as master.
    pub priority: i32,
}

/// Which node is master and which are replicas, in which epoch.
#[derive(Clone, Debug)]
pub struct Topology {
    pub master: Node,
    pub replicas: Vec<Node>,
    /// Raised at every failover; work of an older epoch is refused.
    pub epoch: i64,
    /// Nodes out of the cluster, with the reason (a failed old master; a
    /// replica that missed the failover and needs a resync).
    pub fenced: Vec<(Node, String)>,
    /// Set while no master can be decided (after a total outage, the node
    /// that was master last is missing): why. Writers wait, then get 57P03.
    pub waiting: Option<String>,
    /// The master was chosen by an operator (`ferry force-master`):
    /// possible data loss.
    pub forced: bool,
}

/// Why no topology can be formed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ClusterError {
    #[error("no nodes configured")]
    NoNodes,
}

impl Topology {
    /// The best-priority node is master; ties go to the node listed first.
    pub fn by_priority(nodes: &[Node]) -> Result<Self, ClusterError> {
        let best = nodes
            .iter()
            .enumerate()
            .min_by_key(|(i, n)| (n.priority, *i))
            .map(|(i, _)| i)
            .ok_or(ClusterError::NoNodes)?;
        let mut replicas = nodes.to_vec();
        let master = replicas.remove(best);
        Ok(Self {
            master,
            replicas,
            epoch: 1,
            fenced: Vec::new(),
            waiting: None,
            forced: false,
        })
    }

    /// Every node of the topology with its role.
    pub fn roles(&self) -> Vec<(&Node, Role)> {
        std::iter::once((&self.master, Role::Master))
            .chain(self.replicas.iter().map(|n| (n, Role::Replica)))
            .chain(self.fenced.iter().map(|(n, _)| (n, Role::Fenced)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, priority: i32) -> Node {
        Node {
            name: name.into(),
            target: Target::from_dsn("postgresql://u@h/db").unwrap(),
            priority,
        }
    }

    #[test]
    fn lowest_priority_wins_ties_by_order() {
        let t = Topology::by_priority(&[node("a", 2), node("b", 1), node("c", 1)]).unwrap();
        assert_eq!(t.master.name, "b");
        let names: Vec<_> = t.replicas.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(
            Topology::by_priority(&[]).err(),
            Some(ClusterError::NoNodes)
        );
    }
}
