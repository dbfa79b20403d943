//! Nodes that come back: a node fenced only because it did not answer at
//! the start rejoins by itself when its record fits; a node resynchronised
//! from the master is admitted on request (`ferry resync`).

use super::{Coordinator, CoordinatorError, NOT_AT_START};
use crate::health::Probe;
use crate::record::{self, Recorded, Seen};
use crate::{Role, Topology};
use tracing::{info, warn};

impl Coordinator {
    /// A node fenced because it did not answer when the topology was
    /// decided joins as a replica when it returns recorded as a replica of
    /// this master at this epoch (or with no record at all).
    pub(super) async fn admit_returning(&self, topo: &Topology) {
        let mut next = topo.clone();
        let mut changed = false;
        for (n, why) in &topo.fenced {
            if why != NOT_AT_START {
                continue;
            }
            let Some(client) = self.probe(&n.name).and_then(Probe::client) else {
                continue;
            };
            let fits = match Seen::read_from(client).await {
                Seen::Recorded(r) => {
                    r.epoch == topo.epoch
                        && r.state == Role::Replica
                        && r.master == topo.master.name
                }
                Seen::Fresh => true,
                Seen::Unreachable => false,
            };
            next.fenced.retain(|(f, _)| f.name != n.name);
            if fits {
                info!(node = %n.name, "node returned; it rejoins as a replica");
                next.replicas.push(n.clone());
            } else {
                warn!(node = %n.name, "node returned with a record of another epoch or master: needs a resync");
                next.fenced.push((
                    n.clone(),
                    "returned with a record of another epoch or master: needs a resync".into(),
                ));
            }
            changed = true;
        }
        if changed {
            self.publish(next);
        }
    }

    /// A fenced node, now resynchronised from the master, joins as a
    /// replica: recorded on the node, then published.
    pub(super) async fn admit(&self, node: &str) -> Result<i64, CoordinatorError> {
        let topo = self.roles.borrow().clone();
        let Some((n, _)) = topo.fenced.iter().find(|(n, _)| n.name == node).cloned() else {
            return Err(CoordinatorError::NotFenced(node.to_string()));
        };
        // The node just answered the resync; the health check may not
        // have seen it back yet.
        let client = n
            .target
            .connect_control("ferry control")
            .await
            .map_err(|source| CoordinatorError::Unreachable {
                node: node.to_string(),
                source,
            })?;
        record::write(
            &client,
            &Recorded::replica(node, topo.epoch, &topo.master.name),
        )
        .await
        .map_err(CoordinatorError::db(node))?;
        let mut next = topo.clone();
        next.fenced.retain(|(f, _)| f.name != node);
        next.replicas.push(n);
        info!(
            node,
            epoch = topo.epoch,
            "resynchronised node rejoins as a replica"
        );
        self.publish(next);
        Ok(topo.epoch)
    }
}
