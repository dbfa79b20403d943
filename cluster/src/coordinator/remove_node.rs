//! A node leaves the cluster for good (`ferry remove-node NAME`): a failed
//! master that will not come back, a replica retired. It is no longer
//! checked, counted in decisions, shipped to or read from; the topology
//! without it is published (the batcher restarts without it). The master's
//! record of it, which may hold the outbox clean-up back, is dropped by the
//! caller once the batcher that shipped to it has stopped.

use super::{Coordinator, CoordinatorError};
use tracing::info;

impl Coordinator {
    /// Takes `node` out of the cluster; returns the epoch, or why not.
    pub(super) fn remove_node(&mut self, node: &str) -> Result<i64, CoordinatorError> {
        let topo = self.roles.borrow().clone();
        if topo.master.name == node {
            return Err(CoordinatorError::RemoveMaster(node.to_string()));
        }
        if !self.nodes.iter().any(|n| n.name == node) {
            return Err(CoordinatorError::NotInCluster(node.to_string()));
        }
        self.nodes.retain(|n| n.name != node);
        self.probes.retain(|p| p.node.name != node);
        let mut next = topo.clone();
        next.replicas.retain(|n| n.name != node);
        next.fenced.retain(|(n, _)| n.name != node);
        if let Ok(mut s) = self.status.write() {
            s.health.retain(|(n, _)| n != node);
        }
        info!(node, epoch = topo.epoch, "node removed from the cluster");
        self.publish(next);
        Ok(topo.epoch)
    }
}
