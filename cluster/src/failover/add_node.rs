//! A new node, prepared by the proxy (definitions, capture, a consistent
//! copy), joins the cluster as a replica: it is checked from now on,
//! counts in decisions, is recorded a replica of the master at this epoch
//! and published in the topology (the batcher then ships to it).

use super::Coordinator;
use crate::health::Probe;
use crate::record::{self, Recorded};
use crate::Node;
use tracing::info;

impl Coordinator {
    /// Takes `node` in as a replica; returns the epoch, or why not.
    pub(super) async fn add_node(&mut self, node: Node) -> Result<i64, String> {
        let topo = self.roles.borrow().clone();
        if self.nodes.iter().any(|n| n.name == node.name) {
            return Err(format!("a node named {} is already configured", node.name));
        }
        let (client, conn) = node
            .target
            .pg_config("ferry control")
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("node {} does not answer: {e}", node.name))?;
        tokio::spawn(conn);
        record::write(
            &client,
            &Recorded::replica(&node.name, topo.epoch, &topo.master.name),
        )
        .await
        .map_err(|e| e.to_string())?;
        self.nodes.push(node.clone());
        self.probes.push(Probe::new(node.clone()));
        let mut next = topo.clone();
        next.replicas.push(node.clone());
        info!(node = %node.name, epoch = topo.epoch, "new node joins as a replica");
        self.publish(next);
        Ok(topo.epoch)
    }
}
