//! Failing over from a master that missed `failures` checks in a row:
//!
//! 1. **Confirm.** One more, more patient check: a master that is only
//!    overloaded answers it.
//! 2. **Fence.** A new epoch is recorded on every reachable node before
//!    anything else; from then on they refuse batches of the old epoch.
//! 3. **Choose.** Among the reachable replicas, the one with the most
//!    applied batches wins (in sync mode it holds every acknowledged
//!    commit), ties broken by configured priority, then by order.
//! 4. **Promote.** The winner records itself master at the new epoch, its
//!    batch ids continue after its ledger, and every other reachable
//!    replica that holds exactly what it holds counts its ledger from the
//!    winner's current snapshot. A replica behind it (or unreachable) is
//!    fenced out: it needs a resync.
//! 5. **Switch.** The new topology is published: the proxy moves its
//!    sessions (and sends new ones) to the new master; the batcher restarts
//!    with it. Then the old master, if it answers, has its sessions ended.

use super::{Coordinator, CoordinatorError, FailoverReport};
use crate::health::Probe;
use crate::record::{self, Recorded};
use crate::Topology;
use ferry_sql::{cluster, schema};
use std::time::{Duration, Instant};
use tracing::{info, warn};

impl Coordinator {
    /// Before a master is failed over: one more check, allowed
    /// `CONFIRM_INTERVALS` intervals (connecting included). A master that
    /// is down or frozen fails it (a refused connection at once); one that
    /// is only overloaded — checks bounded by one interval missing under a
    /// burst of load — answers it.
    pub(super) async fn confirm_down(&mut self, node: &str) -> bool {
        let patience = self.cfg.interval * CONFIRM_INTERVALS;
        match self.probes.iter_mut().find(|p| p.node.name == node) {
            Some(p) => !p.check(patience).await,
            None => true,
        }
    }

    /// Fails over from `topo.master`; on a step that cannot be taken (no
    /// replica reachable, a node refusing) leaves the old topology
    /// published, says why, and is tried again at the next check.
    pub(super) async fn fail_over(&mut self, topo: &Topology) {
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
                for (n, why) in next.fenced.iter().filter(|(n, _)| n.name != failed) {
                    if !topo.fenced.iter().any(|(f, _)| f.name == n.name) {
                        warn!(node = %n.name, reason = %why, "fenced out by the failover");
                    }
                }
                if let Ok(mut s) = self.status.write() {
                    s.switching = false;
                    s.epoch = next.epoch;
                    s.error = None;
                    s.last_failover = Some(report);
                }
                self.roles.send_replace(next);
                // Once sessions know where to move: whatever still runs on
                // the old master (if it answers) is ended; it is fenced.
                if let Some(client) = self.probe(&failed).and_then(Probe::client) {
                    let _ = client.query_one(cluster::TERMINATE_SESSIONS, &[]).await;
                }
            }
            Err(why) => {
                warn!(node = %failed, reason = %why, "failover not possible yet; retrying");
                if let Ok(mut s) = self.status.write() {
                    s.error = Some(why.to_string());
                }
            }
        }
    }

    async fn switch(&self, topo: &Topology) -> Result<Topology, CoordinatorError> {
        let epoch = topo.epoch + 1;
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
            return Err(CoordinatorError::NoCandidate);
        };
        let client = winner
            .client()
            .ok_or_else(|| CoordinatorError::StoppedAnswering(winner.node.name.clone()))?;
        let db = CoordinatorError::db(&winner.node.name);
        // 3. Promote; count the others' ledgers from its snapshot.
        let snap = take_over(client, batch).await.map_err(&db)?;
        // The new master keeps its own changes from now on for the failed
        // one: when it returns, a resync copies only the keys that differ.
        client
            .execute(ferry_sql::resync::PIN, &[&topo.master.name])
            .await
            .map_err(&db)?;
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
            follow(c, &p.node.name, (&winner.node.name, batch, &snap), epoch)
                .await
                .map_err(CoordinatorError::db(&p.node.name))?;
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
            &Recorded::master(&winner.node.name, epoch, !replicas.is_empty()),
        )
        .await
        .map_err(db)?;
        Ok(Topology {
            master: winner.node.clone(),
            replicas,
            epoch,
            fenced,
            waiting: None,
            forced: false,
        })
    }
}

/// On the node that becomes master: its batch ids continue after `batch`
/// (the last it applied); returns its snapshot, from which the nodes that
/// follow it count their ledgers.
pub(super) async fn take_over(
    client: &tokio_postgres::Client,
    batch: i64,
) -> Result<String, tokio_postgres::Error> {
    client
        .query_one(cluster::CONTINUE_BATCH_IDS, &[&batch])
        .await?;
    Ok(client
        .query_one(schema::CURRENT_SNAPSHOT, &[])
        .await?
        .get(0))
}

/// On a node that holds exactly what the new master holds: its ledger
/// counts from the master's snapshot, and it records itself its replica.
pub(super) async fn follow(
    client: &tokio_postgres::Client,
    node: &str,
    (master, batch, snap): (&str, i64, &str),
    epoch: i64,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(cluster::REBASE_LEDGER, &[&master, &batch, &snap])
        .await?;
    record::write(client, &Recorded::replica(node, epoch, master)).await
}

/// How many intervals the last check before a failover may take.
pub(super) const CONFIRM_INTERVALS: u32 = 4;
