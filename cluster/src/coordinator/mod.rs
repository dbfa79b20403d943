//! The coordinator: the one part of Ferry that changes who is master. It
//! checks every node at a short interval and, one thing at a time:
//!
//! - fails a master over after `failures` missed checks ([`failover`]);
//! - after a total outage, decides from the nodes' records which node was
//!   master last, or waits and says why ([`decide`]);
//! - carries out operators' requests ([`Control`]): force a master
//!   ([`force`]), admit a resynchronised node ([`admit`]), a planned
//!   switchover ([`switchover`]), add or remove a node ([`add_node`],
//!   [`remove_node`]).
//!
//! Every change is recorded on the nodes before it is published; the
//! proxy and the batcher follow the published [`Topology`].

mod add_node;
mod admit;
mod decide;
mod error;
mod failover;
mod force;
mod remove_node;
mod switchover;

pub use decide::{decide, named_master, NOT_AT_START};
pub use error::CoordinatorError;

use crate::health::{HealthConfig, NodeHealth, Probe};
use crate::record::Seen;
use crate::{Node, Topology};

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::info;

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
#[derive(Clone, Debug, Serialize, Deserialize)]
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

/// The coordinator's answer to a [`Control`]: the epoch of the arrangement
/// it made, or why not.
pub type Reply = oneshot::Sender<Result<i64, CoordinatorError>>;

/// What operators ask of the coordinator. Answered with the epoch, or why
/// not.
#[derive(Debug)]
pub enum Control {
    /// `ferry force-master NODE`: make a node master when the cluster
    /// cannot decide (possible data loss).
    ForceMaster { node: String, reply: Reply },
    /// A fenced node was resynchronised from the master: it joins as a
    /// replica.
    Admit { node: String, reply: Reply },
    /// A planned switchover, once the proxy has drained the sessions and
    /// the node applied the master's last batch: make it master, the old
    /// master its replica.
    SwitchOver { node: String, reply: Reply },
    /// A new node, prepared from the master, joins as a replica.
    AddNode { node: Box<Node>, reply: Reply },
    /// `ferry remove-node NODE`: a node other than the master leaves the
    /// cluster for good.
    RemoveNode { node: String, reply: Reply },
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
                    let _ = reply.send(self.add_node(*node).await);
                }
                Some(Control::RemoveNode { node, reply }) => {
                    let _ = reply.send(self.remove_node(&node));
                }
                None => {}
            }
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

    fn publish(&self, next: Topology) {
        if let Ok(mut s) = self.status.write() {
            s.epoch = next.epoch;
            s.error = next.waiting.clone();
        }
        self.roles.send_replace(next);
    }

    fn probe(&self, name: &str) -> Option<&Probe> {
        self.probes.iter().find(|p| p.node.name == name)
    }
}
