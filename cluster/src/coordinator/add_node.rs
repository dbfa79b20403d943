//! A new node, prepared by the proxy (definitions, capture, a consistent
//! copy), joins the cluster as a replica: it is checked from now on,
//! counts in decisions, is recorded a replica of the master at this epoch
//! and published in the topology (the batcher then ships to it).

use super::{Coordinator, CoordinatorError};
use crate::health::Probe;
use crate::record::{self, Recorded};
use crate::Node;
use tracing::info;

impl Coordinator {
    /// Takes `node` in as a replica; returns the epoch, or why not.
    pub(super) async fn add_node(&mut self, node: Node) -> Result<i64, CoordinatorError> {
        let topo = self.roles.borrow().clone();
        if self.nodes.iter().any(|n| n.name == node.name) {
            return Err(CoordinatorError::Exists(node.name));
        }
        let client = node
            .target
            .connect_control("ferry control")
            .await
            .map_err(|source| CoordinatorError::Unreachable {
                node: node.name.clone(),
                source,
            })?;
        record::write(
            &client,
            &Recorded::replica(&node.name, topo.epoch, &topo.master.name),
        )
        .await
        .map_err(CoordinatorError::db(&node.name))?;
        self.nodes.push(node.clone());
        self.probes.push(Probe::new(node.clone()));
        let mut next = topo.clone();
        next.replicas.push(node.clone());
        info!(node = %node.name, epoch = topo.epoch, "new node joins as a replica");
        self.publish(next);
        Ok(topo.epoch)
    }
}
