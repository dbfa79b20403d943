//! `ferry force-master NODE`: an operator's choice of master when the
//! cluster cannot decide (possible data loss: every other node is fenced
//! out, and the choice is recorded as forced).

use super::{Coordinator, CoordinatorError};
use crate::health::Probe;
use crate::record::{self, Recorded, Seen};
use crate::Topology;
use ferry_sql::{cluster, schema};
use tracing::warn;

impl Coordinator {
    /// An operator's choice: `node` becomes master at a new epoch, every
    /// other node is fenced out (their data may differ: resync).
    pub(super) async fn force(&self, node: &str) -> Result<i64, CoordinatorError> {
        let topo = self.roles.borrow().clone();
        if topo.waiting.is_none() {
            return Err(CoordinatorError::CanDecide(topo.master.name.clone()));
        }
        let target = self
            .nodes
            .iter()
            .find(|n| n.name == node)
            .cloned()
            .ok_or_else(|| CoordinatorError::UnknownNode(node.to_string()))?;
        let client = self
            .probe(node)
            .and_then(Probe::client)
            .ok_or_else(|| CoordinatorError::NotAnswering(node.to_string()))?;
        let seen = self.seen().await;
        let epoch = seen
            .iter()
            .filter_map(|(_, s)| s.record().map(|r| r.epoch))
            .max()
            .unwrap_or(topo.epoch)
            .max(topo.epoch)
            + 1;
        for (n, s) in &seen {
            if n.name != node && *s != Seen::Unreachable {
                if let Some(c) = self.probe(&n.name).and_then(Probe::client) {
                    let _ = record::fence(c, &n.name, epoch).await;
                }
            }
        }
        if let Ok(row) = client.query_one(schema::READ_LEDGER, &[]).await {
            let batch: i64 = row.get(0);
            let _ = client
                .query_one(cluster::CONTINUE_BATCH_IDS, &[&batch])
                .await;
        }
        record::write(
            client,
            &Recorded {
                forced: true,
                ..Recorded::master(node, epoch, false)
            },
        )
        .await
        .map_err(CoordinatorError::db(node))?;
        warn!(
            node,
            epoch, "master forced by an operator: possible data loss"
        );
        let fenced = self
            .nodes
            .iter()
            .filter(|n| n.name != node)
            .map(|n| {
                (
                    n.clone(),
                    format!("fenced by `ferry force-master {node}`: its data may differ; needs a resync"),
                )
            })
            .collect();
        self.publish(Topology {
            master: target,
            replicas: Vec::new(),
            epoch,
            fenced,
            waiting: None,
            forced: true,
        });
        Ok(epoch)
    }
}
