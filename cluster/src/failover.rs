//! The coordinator: checks every node, and when the master has missed
//! `failures` checks in a row, fails over:
//!
//! 1. **Fence.** A new epoch is recorded on every reachable node before
//!    anything else; from then on they refuse batches of the old epoch, and
//!    the proxy ends the sessions it holds on the old master (which, if it
//!    answers, also has its sessions terminated).
//! 2. **Choose.** Among the reachable replicas, the one with the most
//!    applied batches wins (in sync mode it holds every acknowledged
//!    commit), ties broken by configured priority, then by order.
//! 3. **Promote.** The winner records itself master at the new epoch, its
//!    batch ids continue after its ledger, and every other reachable
//!    replica that holds exactly what it holds counts its ledger from the
//!    winner's current snapshot. A replica behind it (or unreachable) is
//!    fenced out: it needs a resync.
//! 4. **Switch.** The new topology is published: the proxy sends new
//!    sessions (and the ones holding) to the new master; the batcher
//!    restarts with it.

use crate::health::{HealthConfig, NodeHealth, Probe};
use crate::record::{self, Recorded, REPLICA_PRIORITY};
use crate::{Node, Topology};
use ferry_sql::{cluster, schema};
use futures_util::future::join_all;
use serde::Serialize;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info, warn};

/// What `/status` shows of the cluster.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClusterStatus {
    pub epoch: i64,
    /// Per node, by name.
    pub health: Vec<(String, NodeHealth)>,
    /// A failover under way (or waiting for a candidate).
    pub switching: bool,
    pub last_failover: Option<FailoverReport>,
    pub error: Option<String>,
}

/// One completed failover.
#[derive(Clone, Debug, Serialize)]
pub struct FailoverReport {
    pub failed: String,
    pub promoted: String,
    pub epoch: i64,
    /// From the first missed check to the decision that the master failed.
    pub detection_ms: u64,
    /// From that decision to the new topology being published.
    pub switch_ms: u64,
}

pub type SharedClusterStatus = Arc<RwLock<ClusterStatus>>;

/// Watches the nodes and fails over; publishes the topology.
pub struct Coordinator {
    cfg: HealthConfig,
    roles: watch::Sender<Topology>,
    status: SharedClusterStatus,
    probes: Vec<Probe>,
}

impl Coordinator {
    pub fn new(
        cfg: HealthConfig,
        nodes: &[Node],
        roles: watch::Sender<Topology>,
        status: SharedClusterStatus,
    ) -> Self {
        Self {
            cfg,
            roles,
            status,
            probes: nodes.iter().cloned().map(Probe::new).collect(),
        }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let started = Instant::now();
            let timeout = self.cfg.interval;
            join_all(self.probes.iter_mut().map(|p| p.check(timeout))).await;
            let topo = self.roles.borrow().clone();
            if let Ok(mut s) = self.status.write() {
                s.epoch = topo.epoch;
                s.health = self
                    .probes
                    .iter()
                    .map(|p| (p.node.name.clone(), p.health()))
                    .collect();
            }
            let master = self.probe(&topo.master.name);
            let master_down = master.is_some_and(|p| p.misses >= self.cfg.failures);
            // A master never seen up since Ferry started (a total outage)
            // is waited for: only it knows the last commits.
            let seen = master.is_some_and(|p| p.seen_up);
            if master_down && seen {
                self.fail_over(&topo).await;
            } else if master_down {
                if let Ok(mut s) = self.status.write() {
                    s.error = Some(format!(
                        "master {} has not answered since Ferry started: waiting for it",
                        topo.master.name
                    ));
                }
            } else if let Ok(mut s) = self.status.write() {
                if !s.switching {
                    s.error = None;
                }
            }
            let wait = self.cfg.interval.saturating_sub(started.elapsed());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    fn probe(&self, name: &str) -> Option<&Probe> {
        self.probes.iter().find(|p| p.node.name == name)
    }

    /// Fails over from `topo.master`; on a step that cannot be taken (no
    /// replica reachable, a node refusing) leaves the old topology
    /// published, says why, and is tried again at the next check.
    async fn fail_over(&mut self, topo: &Topology) {
        let decided = Instant::now();
        let failed = topo.master.name.clone();
        let detection = self
            .probe(&failed)
            .and_then(|p| p.first_miss)
            .map_or(Duration::ZERO, |t| t.elapsed());
        if let Ok(mut s) = self.status.write() {
            s.switching = true;
        }
        warn!(node = %failed, misses = self.cfg.failures, detection_ms = detection.as_millis() as u64,
            "master failed; failing over");
        match self.switch(topo).await {
            Ok(next) => {
                let report = FailoverReport {
                    failed: failed.clone(),
                    promoted: next.master.name.clone(),
                    epoch: next.epoch,
                    detection_ms: detection.as_millis() as u64,
                    switch_ms: decided.elapsed().as_millis() as u64,
                };
                info!(failed = %report.failed, promoted = %report.promoted, epoch = report.epoch,
                    detection_ms = report.detection_ms, switch_ms = report.switch_ms, "failover complete");
                if let Ok(mut s) = self.status.write() {
                    s.switching = false;
                    s.epoch = next.epoch;
                    s.error = None;
                    s.last_failover = Some(report);
                }
                self.roles.send_replace(next);
            }
            Err(why) => {
                warn!(node = %failed, reason = %why, "failover not possible yet; retrying");
                if let Ok(mut s) = self.status.write() {
                    s.error = Some(why);
                }
            }
        }
    }

    async fn switch(&self, topo: &Topology) -> Result<Topology, String> {
        let epoch = topo.epoch + 1;
        let db = |e: tokio_postgres::Error| e.to_string();
        // 1. Fence every reachable node, the old master too if it answers.
        let mut reachable: Vec<&Probe> = Vec::new();
        for (node, _) in topo.roles() {
            let Some(p) = self.probe(&node.name) else {
                continue;
            };
            let Some(client) = p.client() else { continue };
            match record::fence(client, &node.name, epoch).await {
                Ok(()) => reachable.push(p),
                Err(e) => warn!(node = %node.name, error = %e, "could not record the new epoch"),
            }
        }
        if let Some(client) = self.probe(&topo.master.name).and_then(Probe::client) {
            let _ = client.query_one(cluster::TERMINATE_SESSIONS, &[]).await;
        }
        // 2. The reachable replica with the most applied batches.
        let mut candidates: Vec<(i64, i32, usize, &Probe)> = Vec::new();
        for (i, n) in topo.replicas.iter().enumerate() {
            let Some(p) = reachable.iter().find(|p| p.node.name == n.name) else {
                continue;
            };
            let Some(client) = p.client() else { continue };
            if let Ok(row) = client.query_one(schema::READ_LEDGER, &[]).await {
                candidates.push((row.get(0), n.priority, i, p));
            }
        }
        candidates.sort_by_key(|&(batch, priority, i, _)| (std::cmp::Reverse(batch), priority, i));
        let Some(&(batch, _, _, winner)) = candidates.first() else {
            return Err("no replica is reachable to take over".into());
        };
        let client = winner
            .client()
            .ok_or("the chosen replica stopped answering")?;
        // 3. Promote; count the others' ledgers from its snapshot.
        client
            .query_one(cluster::CONTINUE_BATCH_IDS, &[&batch])
            .await
            .map_err(db)?;
        let snap: String = client
            .query_one(schema::CURRENT_SNAPSHOT, &[])
            .await
            .map_err(db)?
            .get(0);
        let mut replicas = Vec::new();
        let mut fenced = topo.fenced.clone();
        fenced.push((
            topo.master.clone(),
            format!("failed master of epoch {}", topo.epoch),
        ));
        for &(their_batch, _, _, p) in candidates.iter().skip(1) {
            let Some(c) = p.client() else {
                fenced.push((
                    p.node.clone(),
                    "stopped answering during the failover".into(),
                ));
                continue;
            };
            if their_batch != batch {
                fenced.push((
                    p.node.clone(),
                    format!(
                        "behind the new master (batch {their_batch} < {batch}): needs a resync"
                    ),
                ));
                continue;
            }
            c.execute(cluster::REBASE_LEDGER, &[&winner.node.name, &batch, &snap])
                .await
                .map_err(db)?;
            record::write(
                c,
                &Recorded {
                    node: p.node.name.clone(),
                    epoch,
                    state: "replica".into(),
                    state_priority: REPLICA_PRIORITY,
                    master: winner.node.name.clone(),
                },
            )
            .await
            .map_err(db)?;
            replicas.push(p.node.clone());
        }
        for n in &topo.replicas {
            let known = n.name == winner.node.name
                || replicas.iter().any(|r| r.name == n.name)
                || fenced.iter().any(|(f, _)| f.name == n.name);
            if !known {
                fenced.push((
                    n.clone(),
                    "unreachable during the failover: needs a resync".into(),
                ));
            }
        }
        record::write(
            client,
            &Recorded {
                node: winner.node.name.clone(),
                epoch,
                state: "master".into(),
                state_priority: record::master_priority(!replicas.is_empty()),
                master: winner.node.name.clone(),
            },
        )
        .await
        .map_err(db)?;
        Ok(Topology {
            master: winner.node.clone(),
            replicas,
            epoch,
            fenced,
        })
    }
}

/// The topology at start: by configured priority on a cluster Ferry has
/// never run, else as the nodes recorded it. The node recorded master at
/// the highest epoch stays master; nodes recorded at an older epoch are
/// fenced out (an old master, or a replica that missed a failover).
/// Records the states of the chosen topology on the reachable nodes.
pub async fn at_start(
    nodes: &[Node],
    records: &[(Node, Option<Recorded>)],
) -> Result<Topology, crate::ClusterError> {
    let by_priority = Topology::by_priority(nodes)?;
    let latest = records
        .iter()
        .filter_map(|(_, r)| r.as_ref())
        .max_by_key(|r| r.epoch)
        .cloned();
    let Some(latest) = latest else {
        return Ok(by_priority);
    };
    let epoch = latest.epoch;
    let master_name = records
        .iter()
        .filter_map(|(_, r)| r.as_ref())
        .filter(|r| r.epoch == epoch)
        .map(|r| r.master.clone())
        .find(|m| !m.is_empty())
        .unwrap_or(latest.master.clone());
    let Some(master) = nodes.iter().find(|n| n.name == master_name).cloned() else {
        return Ok(by_priority);
    };
    let mut replicas = Vec::new();
    let mut fenced = Vec::new();
    for n in nodes.iter().filter(|n| n.name != master.name) {
        let rec = records
            .iter()
            .find(|(r, _)| r.name == n.name)
            .and_then(|(_, r)| r.as_ref());
        match rec {
            Some(r) if r.epoch < epoch => fenced.push((
                n.clone(),
                format!(
                    "recorded {} at epoch {} < {epoch}: needs a resync",
                    r.state, r.epoch
                ),
            )),
            _ => replicas.push(n.clone()),
        }
    }
    Ok(Topology {
        master,
        replicas,
        epoch,
        fenced,
    })
}
