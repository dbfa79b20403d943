//! The coordinator's part of a planned switchover. The proxy has already
//! held new statements, let every session go idle and waited until the
//! chosen replica applied everything the master committed; here the roles
//! change as one step:
//!
//! 1. **Fence.** A new epoch is recorded on every node of the topology;
//!    the old master's batches are refused from then on.
//! 2. **Promote.** The chosen replica records itself master; its batch
//!    ids continue after its ledger.
//! 3. **Demote.** The old master, and every replica that holds exactly
//!    what the new master holds, count their ledgers from the new
//!    master's current snapshot and record themselves its replicas. A
//!    replica that is behind is fenced out (it needs a resync).
//! 4. **Publish.** Sessions move; the batcher restarts on the new master.
//!
//! If a step fails after the fence, the old arrangement is recorded and
//! published again at the new epoch: no node is left half promoted.

use super::failover::{follow, take_over};
use super::{Coordinator, CoordinatorError};
use crate::health::Probe;
use crate::record::{self, Recorded};
use crate::{Node, Role, Topology};
use ferry_sql::schema;
use tokio_postgres::Client;
use tracing::{info, warn};

impl Coordinator {
    /// Makes `to` master in place of the current one; returns the new
    /// epoch, or why not (the old arrangement stays).
    pub(super) async fn switch_over(&self, to: &str) -> Result<i64, CoordinatorError> {
        let topo = self.roles.borrow().clone();
        if let Some(why) = &topo.waiting {
            return Err(CoordinatorError::NoMaster(why.clone()));
        }
        if topo.master.name == to {
            return Err(CoordinatorError::AlreadyMaster(to.to_string()));
        }
        let target = topo
            .replicas
            .iter()
            .find(|n| n.name == to)
            .cloned()
            .ok_or_else(|| CoordinatorError::NotAReplica(to.to_string()))?;
        let epoch = topo.epoch + 1;
        let client = |name: &str| self.probe(name).and_then(Probe::client);
        // Every node must answer: a replica missing now would be fenced out
        // by a planned operation.
        for (n, _) in topo.roles().into_iter().filter(|(_, r)| *r != Role::Fenced) {
            if client(&n.name).is_none() {
                return Err(CoordinatorError::NotAnswering(n.name.clone()));
            }
        }
        for (n, role) in topo.roles() {
            if role == Role::Fenced {
                continue;
            }
            if let Some(c) = client(&n.name) {
                record::fence(c, &n.name, epoch).await.map_err(|source| {
                    CoordinatorError::Fence {
                        node: n.name.clone(),
                        epoch,
                        source,
                    }
                })?;
            }
        }
        match self.promote_planned(&topo, &target, epoch).await {
            Ok(next) => {
                info!(from = %topo.master.name, to = %target.name, epoch, "switchover complete");
                self.publish(next);
                Ok(epoch)
            }
            Err(why) => {
                warn!(to = %target.name, reason = %why, "switchover failed after the fence; the old arrangement stays");
                let mut back = topo.clone();
                back.epoch = epoch;
                if let Some(c) = client(&topo.master.name) {
                    let _ = record::write(
                        c,
                        &Recorded::master(&topo.master.name, epoch, !topo.replicas.is_empty()),
                    )
                    .await;
                }
                for n in &topo.replicas {
                    if let Some(c) = client(&n.name) {
                        let _ =
                            record::write(c, &Recorded::replica(&n.name, epoch, &topo.master.name))
                                .await;
                    }
                }
                self.publish(back);
                Err(why)
            }
        }
    }

    async fn promote_planned(
        &self,
        topo: &Topology,
        target: &Node,
        epoch: i64,
    ) -> Result<Topology, CoordinatorError> {
        let client = |name: &str| -> Result<&Client, CoordinatorError> {
            self.probe(name)
                .and_then(Probe::client)
                .ok_or_else(|| CoordinatorError::StoppedAnswering(name.to_string()))
        };
        let winner = client(&target.name)?;
        let db = CoordinatorError::db(&target.name);
        let batch: i64 = winner
            .query_one(schema::READ_LEDGER, &[])
            .await
            .map_err(&db)?
            .get(0);
        let snap = take_over(winner, batch).await.map_err(&db)?;
        let mut replicas = Vec::new();
        let mut fenced = topo.fenced.clone();
        // The old master holds what the new one holds: the proxy drained
        // it and the new master applied its last batch.
        let mut demoted = vec![topo.master.clone()];
        for n in topo.replicas.iter().filter(|n| n.name != target.name) {
            let theirs: i64 = client(&n.name)?
                .query_one(schema::READ_LEDGER, &[])
                .await
                .map_err(CoordinatorError::db(&n.name))?
                .get(0);
            if theirs == batch {
                demoted.push(n.clone());
            } else {
                fenced.push((
                    n.clone(),
                    format!("behind the new master at the switchover (batch {theirs} < {batch}): needs a resync"),
                ));
            }
        }
        for n in demoted {
            follow(
                client(&n.name)?,
                &n.name,
                (&target.name, batch, &snap),
                epoch,
            )
            .await
            .map_err(CoordinatorError::db(&n.name))?;
            replicas.push(n);
        }
        record::write(
            winner,
            &Recorded::master(&target.name, epoch, !replicas.is_empty()),
        )
        .await
        .map_err(db)?;
        Ok(Topology {
            master: target.clone(),
            replicas,
            epoch,
            fenced,
            waiting: None,
            forced: false,
        })
    }
}
