//! What the admin endpoint reads and asks of the running process: the
//! status document, metrics, health, and the operations.

use crate::config::Mode;
use crate::frontend::shared::FrontendMetrics;
use crate::operations::Operations;
use crate::status::{
    FailoverStatus, NodeStatus, ReplicaDetail, Status, SwitchoverStatus, SyncStatus,
};
use ferry_admin::{Answer, Request, StatusSource};
use ferry_batcher::SharedStatus;
use ferry_cluster::coordinator::SharedClusterStatus;
use ferry_cluster::SyncPoint;
use ferry_cluster::{Role, Topology};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tokio::sync::watch;

pub(super) struct AppStatus {
    pub roles: watch::Receiver<Topology>,
    pub cluster: SharedClusterStatus,
    pub replication: SharedStatus,
    pub registry: Registry,
    pub frontend: FrontendMetrics,
    pub sync: Option<Arc<SyncPoint>>,
    /// The operator's operations (switchover, add-node, resync, …).
    pub ops: Operations,
}

impl AppStatus {
    /// The `/status` document now.
    pub(super) fn document(&self) -> Status {
        let r = self
            .replication
            .read()
            .map(|r| r.clone())
            .unwrap_or_default();
        let c = self.cluster.read().map(|c| c.clone()).unwrap_or_default();
        let topo = self.roles.borrow().clone();
        let health = |name: &str| {
            c.health
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, h)| h.clone())
        };
        let node = |name: &str, role: Role| NodeStatus {
            name: name.to_string(),
            role,
            reachable: false,
            applied_batch: 0,
            lag_batches: 0,
            lag_rows: 0,
            lag_seconds: 0.0,
            last_error: None,
            replica: None,
            health: health(name),
        };
        let mut nodes = vec![NodeStatus {
            reachable: r.master_reachable,
            applied_batch: r.last_batch,
            last_error: r.error.clone(),
            ..node(&topo.master.name, Role::Master)
        }];
        for n in &topo.replicas {
            let s = r.replicas.iter().find(|s| s.name == n.name);
            nodes.push(match s {
                Some(s) => NodeStatus {
                    reachable: s.reachable,
                    applied_batch: s.applied_batch,
                    lag_batches: s.lag_batches,
                    lag_rows: s.lag_rows,
                    lag_seconds: s.lag_seconds,
                    last_error: s.last_error.clone(),
                    replica: Some(ReplicaDetail {
                        failed_batch: s.failed_batch,
                        failed_statement: s.failed_statement.clone(),
                        suspension: s.suspension.clone(),
                        quarantined: s.quarantined,
                        kept_bytes: s.kept_bytes,
                        kept_age_seconds: s.kept_age_seconds,
                        kept_keys: s.kept_keys,
                        released_in_seconds: s.released_in_seconds,
                        kept_near_bound: s.kept_near_bound,
                        needs_resync: s.needs_resync,
                        divergent: s.divergent.clone(),
                        schema_warnings: s.schema_warnings.clone(),
                    }),
                    ..node(&n.name, Role::Replica)
                },
                None => NodeStatus {
                    replica: Some(ReplicaDetail::default()),
                    ..node(&n.name, Role::Replica)
                },
            });
        }
        for (n, why) in &topo.fenced {
            nodes.push(NodeStatus {
                last_error: Some(why.clone()),
                ..node(&n.name, Role::Fenced)
            });
        }
        Status {
            master: topo.master.name.clone(),
            epoch: topo.epoch,
            mode: if self.sync.is_some() {
                Mode::Sync
            } else {
                Mode::Async
            },
            sync: self.sync.as_ref().map(|s| SyncStatus {
                replicas_required: s.replicas_required(),
                degraded: s.is_degraded(),
                waiting_commits: s.waiting(),
            }),
            failover: FailoverStatus {
                switching: c.switching,
                last: c.last_failover.clone(),
                error: c.error.clone(),
            },
            switchover: SwitchoverStatus {
                holding: self.ops.switchover.gate.is_closed(),
                last: self.ops.switchover.last.read().ok().and_then(|l| l.clone()),
            },
            adding: self.ops.adder.state.read().ok().and_then(|a| a.clone()),
            waiting: topo.waiting.clone(),
            forced: topo.forced,
            last_batch: r.last_batch,
            outbox_backlog: r.outbox_backlog,
            outbox_counted_at_batch: r.outbox_counted_at_batch,
            outbox_kept_for: r.outbox_kept_for.clone(),
            tables: r.tables,
            client_connections: self.frontend.connections.get(),
            nodes,
            schema_changes: r.schema_changes.clone(),
            verify: Some(r.verify.clone()),
            capture: r.capture.clone(),
            compaction: r.compaction.clone(),
        }
    }
}

impl StatusSource for AppStatus {
    fn status(&self) -> serde_json::Value {
        serde_json::to_value(self.document()).unwrap_or_default()
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    fn problems(&self) -> Vec<String> {
        let Ok(r) = self.replication.read() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if !r.capture.problems.is_empty() {
            out.push(format!(
                "capture on the master is not intact ({}): rows written meanwhile did not reach the replicas",
                r.capture.problems.join("; ")
            ));
        }
        for s in &r.replicas {
            if let Some(why) = replica_problem(s) {
                out.push(format!("replica {}: {why}", s.name));
            }
            if let Some(w) = s.schema_warnings.last() {
                out.push(format!(
                    "replica {}: a schema change did not apply as on the master: {w}",
                    s.name
                ));
            }
        }
        for (n, why) in &self.roles.borrow().fenced {
            out.push(format!("node {} is fenced out: {why}", n.name));
        }
        out
    }

    fn node_health(&self, node: &str) -> Option<(bool, String)> {
        let topo = self.roles.borrow().clone();
        let r = self.replication.read().ok()?;
        if topo.master.name == node {
            return Some(if r.master_reachable {
                (true, "master".into())
            } else {
                (false, "master, unreachable".into())
            });
        }
        if let Some((_, why)) = topo.fenced.iter().find(|(n, _)| n.name == node) {
            return Some((false, format!("fenced out: {why}")));
        }
        topo.replicas.iter().find(|n| n.name == node)?;
        let s = r.replicas.iter().find(|s| s.name == node);
        Some(match s.and_then(replica_problem) {
            Some(why) => (false, why),
            None if s.is_some() => (true, "replica".into()),
            None => (false, "replica, not yet connected".into()),
        })
    }

    /// The master serves, and captures every change it serves.
    fn healthy(&self) -> bool {
        self.replication
            .read()
            .map(|r| r.master_reachable && r.capture.problems.is_empty())
            .unwrap_or(false)
    }

    fn request(&self, request: Request) -> Answer {
        self.ops.answer(request)
    }
}

/// What keeps a replica from serving as one, in a sentence.
fn replica_problem(s: &ferry_batcher::ReplicaStatus) -> Option<String> {
    if !s.divergent.is_empty() {
        let mut tables: Vec<&str> = s.divergent.iter().map(|d| d.table.as_str()).collect();
        tables.dedup();
        return Some(format!(
            "differs from the master in {} (found by the background check); run `ferry repair {}`",
            tables.join(", "),
            s.name
        ));
    }
    if let Some(batch) = s.failed_batch {
        return Some(format!(
            "paused: batch {batch} failed there ({})",
            s.last_error.as_deref().unwrap_or("see /status")
        ));
    }
    if !s.reachable && s.suspension.is_none() {
        return Some(format!(
            "unreachable ({})",
            s.last_error.as_deref().unwrap_or("not connected")
        ));
    }
    None
}
