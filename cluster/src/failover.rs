//! The coordinator: checks every node, and when the master has missed
//! `failures` checks in a row, fails over:
//!
//! 1. **Fence.** A new epoch is recorded on every reachable node before
//!    anything else; from then on they refuse batches of the old epoch.
//! 2. **Choose.** Among the reachable replicas, the one with the most
//!    applied batches wins (in sync mode it holds every acknowledged
//!    commit), ties broken by configured priority, then by order.
//! 3. **Promote.** The winner records itself master at the new epoch, its
//!    batch ids continue after its ledger, and every other reachable
//!    replica that holds exactly what it holds counts its ledger from the
//!    winner's current snapshot. A replica behind it (or unreachable) is
//!    fenced out: it needs a resync.
//! 4. **Switch.** The new topology is published: the proxy moves its
//!    sessions (and sends new ones) to the new master; the batcher restarts
//!    with it. Then the old master, if it answers, has its sessions ended.

mod add_node;
mod remove_node;
mod switchover;

use crate::health::{HealthConfig, NodeHealth, Probe};
use crate::record::{self, Recorded, Seen};
use crate::{Node, Topology};
use ferry_sql::{cluster, schema};
use futures_util::future::join_all;
use serde::Serialize;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
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
    /// Every configured node, in configured order (for decisions).
    nodes: Vec<Node>,
    /// Operators' requests.
    forced: tokio::sync::Mutex<mpsc::Receiver<Control>>,
    /// When a node last answered Ferry otherwise than a health check (the
    /// batcher's cuts on the master).
    answered: Answered,
}

/// When a node last answered Ferry otherwise than a health check.
pub type Answered = Box<dyn Fn(&str) -> Option<Instant> + Send + Sync>;

/// What operators ask of the coordinator. Answered with the epoch, or why
/// not.
#[derive(Debug)]
pub enum Control {
    /// `ferry force-master NODE`: make a node master when the cluster
    /// cannot decide (possible data loss).
    ForceMaster {
        node: String,
        reply: oneshot::Sender<Result<i64, String>>,
    },
    /// A fenced node was resynchronised from the master: it joins as a
    /// replica.
    Admit {
        node: String,
        reply: oneshot::Sender<Result<i64, String>>,
    },
    /// A planned switchover, once the proxy has drained the sessions and
    /// the node applied the master's last batch: make it master, the old
    /// master its replica.
    SwitchOver {
        node: String,
        reply: oneshot::Sender<Result<i64, String>>,
    },
    /// A new node, prepared from the master, joins as a replica.
    AddNode {
        node: Node,
        reply: oneshot::Sender<Result<i64, String>>,
    },
    /// `ferry remove-node NODE`: a node other than the master leaves the
    /// cluster for good.
    RemoveNode {
        node: String,
        reply: oneshot::Sender<Result<i64, String>>,
    },
}

impl Coordinator {
    pub fn new(
        cfg: HealthConfig,
        nodes: &[Node],
        roles: watch::Sender<Topology>,
        status: SharedClusterStatus,
        forced: mpsc::Receiver<Control>,
        answered: Answered,
    ) -> Self {
        Self {
            cfg,
            roles,
            status,
            probes: nodes.iter().cloned().map(Probe::new).collect(),
            nodes: nodes.to_vec(),
            forced: tokio::sync::Mutex::new(forced),
            answered,
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
            if topo.waiting.is_some() {
                self.redecide(&topo).await;
            } else {
                self.admit_returning(&topo).await;
            }
            let topo = self.roles.borrow().clone();
            if let Some(at) = (self.answered)(&topo.master.name) {
                if let Some(p) = self
                    .probes
                    .iter_mut()
                    .find(|p| p.node.name == topo.master.name)
                {
                    p.answered_elsewhere(at);
                }
            }
            let master = self.probe(&topo.master.name);
            let master_down =
                topo.waiting.is_none() && master.is_some_and(|p| p.misses >= self.cfg.failures);
            // A master never seen up since Ferry started (a total outage)
            // is waited for: only it knows the last commits.
            let seen = master.is_some_and(|p| p.seen_up);
            if master_down && seen && !self.confirm_down(&topo.master.name).await {
                info!(node = %topo.master.name, "master answered a last, more patient check: it is busy, not failed");
            } else if master_down && seen {
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
            let request = {
                let mut forced = self.forced.lock().await;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => None,
                    Some(r) = forced.recv() => Some(r),
                    _ = shutdown.changed() => return,
                }
            };
            match request {
                Some(Control::ForceMaster { node, reply }) => {
                    let _ = reply.send(self.force(&node).await);
                }
                Some(Control::Admit { node, reply }) => {
                    let _ = reply.send(self.admit(&node).await);
                }
                Some(Control::SwitchOver { node, reply }) => {
                    let _ = reply.send(self.switch_over(&node).await);
                }
                Some(Control::AddNode { node, reply }) => {
                    let _ = reply.send(self.add_node(node).await);
                }
                Some(Control::RemoveNode { node, reply }) => {
                    let _ = reply.send(self.remove_node(&node));
                }
                None => {}
            }
        }
    }

    /// Before a master is failed over: one more check, allowed
    /// `CONFIRM_INTERVALS` intervals (connecting included). A master that
    /// is down or frozen fails it (a refused connection at once); one that
    /// is only overloaded — checks bounded by one interval missing under a
    /// burst of load — answers it.
    async fn confirm_down(&mut self, node: &str) -> bool {
        let patience = self.cfg.interval * CONFIRM_INTERVALS;
        match self.probes.iter_mut().find(|p| p.node.name == node) {
            Some(p) => !p.check(patience).await,
            None => true,
        }
    }

    /// What every node tells of itself now.
    async fn seen(&self) -> Vec<(Node, Seen)> {
        let mut out = Vec::new();
        for n in &self.nodes {
            let seen = match self.probe(&n.name).and_then(Probe::client) {
                Some(client) => Seen::read_from(client).await,
                None => Seen::Unreachable,
            };
            out.push((n.clone(), seen));
        }
        out
    }

    /// While waiting after a total outage: decides again with the nodes
    /// that answer now.
    async fn redecide(&self, topo: &Topology) {
        let seen = self.seen().await;
        match decide(&self.nodes, &seen) {
            Ok(next) if next.waiting.is_none() => {
                info!(master = %next.master.name, epoch = next.epoch, "the nodes that returned decide the master");
                self.publish(next);
            }
            Ok(next) => {
                if next.waiting != topo.waiting {
                    warn!(
                        reason = next.waiting.as_deref().unwrap_or(""),
                        "no master yet"
                    );
                    self.publish(next);
                }
            }
            Err(e) => warn!(error = %e, "cannot decide the topology"),
        }
    }

    /// A node fenced because it did not answer when the topology was
    /// decided joins as a replica when it returns recorded as a replica of
    /// this master at this epoch (or with no record at all).
    async fn admit_returning(&self, topo: &Topology) {
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
                    r.epoch == topo.epoch && r.state == "replica" && r.master == topo.master.name
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

    fn publish(&self, next: Topology) {
        if let Ok(mut s) = self.status.write() {
            s.epoch = next.epoch;
            s.error = next.waiting.clone();
        }
        self.roles.send_replace(next);
    }

    /// An operator's choice: `node` becomes master at a new epoch, every
    /// other node is fenced out (their data may differ: resync).
    async fn force(&self, node: &str) -> Result<i64, String> {
        let topo = self.roles.borrow().clone();
        let target = self
            .nodes
            .iter()
            .find(|n| n.name == node)
            .cloned()
            .ok_or_else(|| format!("no node named {node:?}"))?;
        let client = self
            .probe(node)
            .and_then(Probe::client)
            .ok_or_else(|| format!("node {node} does not answer"))?;
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
        .map_err(|e| e.to_string())?;
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

    /// A fenced node, now resynchronised from the master, joins as a
    /// replica: recorded on the node, then published.
    async fn admit(&self, node: &str) -> Result<i64, String> {
        let topo = self.roles.borrow().clone();
        let Some((n, _)) = topo.fenced.iter().find(|(n, _)| n.name == node).cloned() else {
            return Err(format!("node {node} is not fenced out"));
        };
        // The node just answered the resync; the health check may not
        // have seen it back yet.
        let (client, conn) = n
            .target
            .pg_config("ferry control")
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("node {node} does not answer: {e}"))?;
        tokio::spawn(conn);
        record::write(
            &client,
            &Recorded::replica(node, topo.epoch, &topo.master.name),
        )
        .await
        .map_err(|e| e.to_string())?;
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
                // Once sessions know where to move: whatever still runs on
                // the old master (if it answers) is ended; it is fenced.
                if let Some(client) = self.probe(&failed).and_then(Probe::client) {
                    let _ = client.query_one(cluster::TERMINATE_SESSIONS, &[]).await;
                }
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
        let snap = take_over(client, batch).await.map_err(db)?;
        // The new master keeps its own changes from now on for the failed
        // one: when it returns, a resync copies only the keys that differ.
        client
            .execute(ferry_sql::resync::PIN, &[&topo.master.name])
            .await
            .map_err(db)?;
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
async fn take_over(
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
async fn follow(
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
const CONFIRM_INTERVALS: u32 = 4;

/// Decides the topology from what the nodes recorded (at start, and while
/// waiting after a total outage). Pure: no clocks, only epochs and states.
///
/// - Ferry never ran here (no records): by configured priority.
/// - Otherwise the node recorded master at the latest epoch `E` is master
///   if it answers and either it recorded state-priority 1 (no caught-up
///   replica could have taken over) or every other node answers. Nodes
///   recorded at an older epoch are fenced out (an old master, a replica
///   that missed a failover); nodes that do not answer are fenced out until
///   they return with a record that fits.
/// - If that master does not answer, or it had caught-up replicas and some
///   node is missing (one of them may have taken over later), Ferry waits:
///   the topology carries the reason.
pub fn decide(nodes: &[Node], seen: &[(Node, Seen)]) -> Result<Topology, crate::ClusterError> {
    let by_priority = Topology::by_priority(nodes)?;
    let records: Vec<&Recorded> = seen.iter().filter_map(|(_, s)| s.record()).collect();
    let Some(epoch) = records.iter().map(|r| r.epoch).max() else {
        return Ok(by_priority);
    };
    let seen_of = |name: &str| {
        seen.iter()
            .find(|(n, _)| n.name == name)
            .map_or(&Seen::Unreachable, |(_, s)| s)
    };
    let named = named_master(seen);
    let waiting = |why: String| {
        let mut t = by_priority.clone();
        t.epoch = epoch;
        t.waiting = Some(why);
        t
    };
    let Some(master) = named.and_then(|m| nodes.iter().find(|n| n.name == m).cloned()) else {
        return Ok(waiting(format!(
            "the nodes that answer do not tell which node was master at epoch {epoch}; \
             waiting for the others (or `ferry force-master NODE`: possible data loss)"
        )));
    };
    let own = match seen_of(&master.name) {
        Seen::Recorded(r) if r.epoch == epoch && r.state == "master" => r.clone(),
        _ => {
            return Ok(waiting(format!(
                "node {} was master last (epoch {epoch}) and does not answer: waiting for it \
                 (or `ferry force-master NODE`: possible data loss)",
                master.name
            )))
        }
    };
    let missing: Vec<&str> = seen
        .iter()
        .filter(|(n, s)| n.name != master.name && *s == Seen::Unreachable)
        .map(|(n, _)| n.name.as_str())
        .collect();
    if own.state_priority != 1 && !missing.is_empty() {
        return Ok(waiting(format!(
            "node {} was master last (epoch {epoch}) with caught-up replicas; waiting for {} \
             (one of them may have taken over later), or `ferry force-master NODE`: possible data loss",
            master.name,
            missing.join(", ")
        )));
    }
    let mut replicas = Vec::new();
    let mut fenced = Vec::new();
    for n in nodes.iter().filter(|n| n.name != master.name) {
        match seen_of(&n.name) {
            Seen::Unreachable => fenced.push((n.clone(), NOT_AT_START.to_string())),
            Seen::Recorded(r) if r.epoch < epoch => fenced.push((
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
        waiting: None,
        forced: false,
    })
}

/// The node the answering nodes' records name master at their latest
/// epoch, if any (two nodes recorded master at the same epoch only when an
/// operator forced one while the other was away: the forced one wins).
/// Not a decision: [`decide`] also weighs the nodes that do not answer.
pub fn named_master(seen: &[(Node, Seen)]) -> Option<String> {
    let records: Vec<&Recorded> = seen.iter().filter_map(|(_, s)| s.record()).collect();
    let epoch = records.iter().map(|r| r.epoch).max()?;
    records
        .iter()
        .filter(|r| r.epoch == epoch && r.state == "master")
        .max_by_key(|r| r.forced)
        .map(|r| r.node.clone())
        .or_else(|| {
            records
                .iter()
                .filter(|r| r.epoch == epoch)
                .map(|r| r.master.clone())
                .find(|m| !m.is_empty())
        })
}

/// The reason a node is fenced that did not answer when the topology was
/// decided; it is admitted when it returns with a record that fits.
pub const NOT_AT_START: &str = "did not answer when the topology was decided";

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_wire::Target;

    fn node(name: &str, priority: i32) -> Node {
        Node {
            name: name.into(),
            target: Target::from_dsn("postgresql://u@h/db").unwrap_or_else(|_| unreachable!()),
            priority,
        }
    }

    fn rec(node: &str, epoch: i64, state: &str, prio: i32, master: &str) -> Seen {
        Seen::Recorded(Recorded {
            node: node.into(),
            epoch,
            state: state.into(),
            state_priority: prio,
            master: master.into(),
            forced: false,
        })
    }

    fn rec_of(s: Seen) -> Recorded {
        s.record().cloned().unwrap_or_else(|| unreachable!())
    }

    /// Two nodes: a was master (with b caught up), a crashed and b took
    /// over alone (epoch 2), then b crashed. Each restart order decides the
    /// same way.
    #[test]
    fn the_two_node_sequences_decide_by_epoch_and_state_priority() {
        let nodes = [node("a", 1), node("b", 2)];
        let a = rec("a", 1, "master", 2, "a");
        let b = rec("b", 2, "master", 1, "b");
        // a alone: it had a caught-up replica, which may have taken over.
        let t = decide(
            &nodes,
            &[
                (nodes[0].clone(), a.clone()),
                (nodes[1].clone(), Seen::Unreachable),
            ],
        )
        .unwrap();
        assert!(
            t.waiting
                .as_deref()
                .is_some_and(|w| w.contains("waiting for b")),
            "{t:?}"
        );
        // b alone: it was master last, with no caught-up replica.
        let t = decide(
            &nodes,
            &[
                (nodes[0].clone(), Seen::Unreachable),
                (nodes[1].clone(), b.clone()),
            ],
        )
        .unwrap();
        assert_eq!(
            (t.master.name.as_str(), t.epoch, t.waiting.is_none()),
            ("b", 2, true)
        );
        assert_eq!(t.fenced.len(), 1);
        // Both, in either order of arrival: b, and a fenced out.
        for seen in [
            [(nodes[0].clone(), a.clone()), (nodes[1].clone(), b.clone())],
            [(nodes[1].clone(), b.clone()), (nodes[0].clone(), a.clone())],
        ] {
            let t = decide(&nodes, &seen).unwrap();
            assert_eq!(t.master.name, "b");
            assert!(t.fenced[0].1.contains("epoch 1 < 2"), "{t:?}");
        }
        // The last master missing: wait, naming it.
        let t = decide(
            &nodes,
            &[
                (nodes[0].clone(), rec("a", 2, "replica", 3, "b")),
                (nodes[1].clone(), Seen::Unreachable),
            ],
        )
        .unwrap();
        assert!(
            t.waiting
                .as_deref()
                .is_some_and(|w| w.contains("node b was master last")),
            "{t:?}"
        );
        // An operator forced a while b was away (both at epoch 2): a.
        let forced = Seen::Recorded(Recorded {
            forced: true,
            ..rec_of(rec("a", 2, "master", 1, "a"))
        });
        let t = decide(
            &nodes,
            &[(nodes[0].clone(), forced), (nodes[1].clone(), b.clone())],
        )
        .unwrap();
        assert_eq!(t.master.name, "a");
        // Ferry never ran: by priority.
        let t = decide(
            &nodes,
            &[
                (nodes[0].clone(), Seen::Fresh),
                (nodes[1].clone(), Seen::Unreachable),
            ],
        )
        .unwrap();
        assert_eq!((t.master.name.as_str(), t.epoch), ("a", 1));
    }
}
