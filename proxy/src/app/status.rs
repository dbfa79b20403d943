//! What the admin endpoint reads and asks of the running process: the
//! status document, metrics, health, and the operations.

use crate::frontend::shared::FrontendMetrics;
use crate::operations::Operations;
use ferry_admin::{Answer, Request, StatusSource};
use ferry_batcher::SharedStatus;
use ferry_cluster::coordinator::SharedClusterStatus;
use ferry_cluster::SyncPoint;
use ferry_cluster::Topology;
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

impl StatusSource for AppStatus {
    fn status(&self) -> serde_json::Value {
        let r = match self.replication.read() {
            Ok(r) => r.clone(),
            Err(_) => Default::default(),
        };
        let c = match self.cluster.read() {
            Ok(c) => c.clone(),
            Err(_) => Default::default(),
        };
        let topo = self.roles.borrow().clone();
        let health = |name: &str| {
            c.health
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, h)| serde_json::to_value(h).unwrap_or_default())
        };
        let mut nodes = vec![serde_json::json!({
            "name": topo.master.name,
            "role": "master",
            "reachable": r.master_reachable,
            "applied_batch": r.last_batch,
            "lag_batches": 0,
            "lag_rows": 0,
            "lag_seconds": 0.0,
            "last_error": r.error,
            "health": health(&topo.master.name),
        })];
        for n in &topo.replicas {
            let s = r.replicas.iter().find(|s| s.name == n.name);
            nodes.push(serde_json::json!({
                "name": n.name,
                "role": "replica",
                "reachable": s.map(|s| s.reachable).unwrap_or(false),
                "applied_batch": s.map(|s| s.applied_batch).unwrap_or(0),
                "lag_batches": s.map(|s| s.lag_batches).unwrap_or(0),
                "lag_rows": s.map(|s| s.lag_rows).unwrap_or(0),
                "lag_seconds": s.map(|s| s.lag_seconds).unwrap_or(0.0),
                "last_error": s.and_then(|s| s.last_error.clone()),
                "failed_batch": s.and_then(|s| s.failed_batch),
                "failed_statement": s.and_then(|s| s.failed_statement.clone()),
                "suspension": s.and_then(|s| s.suspension.clone()),
                "quarantined": s.map(|s| s.quarantined).unwrap_or(0),
                "divergent": s.map(|s| s.divergent.clone()).unwrap_or_default(),
                "health": health(&n.name),
            }));
        }
        for (n, why) in &topo.fenced {
            nodes.push(serde_json::json!({
                "name": n.name,
                "role": "fenced",
                "reachable": false,
                "applied_batch": 0,
                "lag_batches": 0,
                "lag_rows": 0,
                "lag_seconds": 0.0,
                "last_error": why,
                "health": health(&n.name),
            }));
        }
        serde_json::json!({
            "master": topo.master.name,
            "epoch": topo.epoch,
            "mode": if self.sync.is_some() { "sync" } else { "async" },
            "sync": self.sync.as_ref().map(|s| serde_json::json!({
                "replicas_required": s.replicas_required(),
                "degraded": s.is_degraded(),
                "waiting_commits": s.waiting(),
            })),
            "failover": {
                "switching": c.switching,
                "last": c.last_failover,
                "error": c.error,
            },
            "switchover": {
                "holding": self.ops.switchover.gate.is_closed(),
                "last": self.ops.switchover.last.read().ok().and_then(|l| l.clone()),
            },
            "adding": self.ops.adder.state.read().ok().and_then(|a| a.clone()),
            "waiting": topo.waiting,
            "forced": topo.forced,
            "last_batch": r.last_batch,
            "outbox_backlog": r.outbox_backlog,
            "outbox_kept_for": r.outbox_kept_for,
            "tables": r.tables,
            "client_connections": self.frontend.connections.get(),
            "nodes": nodes,
            "schema_changes": r.schema_changes,
            "verify": r.verify,
        })
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
        for s in &r.replicas {
            if let Some(why) = replica_problem(s) {
                out.push(format!("replica {}: {why}", s.name));
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

    fn healthy(&self) -> bool {
        self.replication
            .read()
            .map(|r| r.master_reachable)
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
