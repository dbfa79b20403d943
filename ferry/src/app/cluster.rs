//! Which node plays which role when Ferry starts: the configuration's
//! nodes, what each recorded of its role, the decision, and the record of
//! it written back to every reachable node.

use super::AppError;
use crate::config::Config;
use ferry_batcher::install::connect;
use ferry_cluster::record::Seen;
use ferry_cluster::{Node, Role, Topology};
use ferry_wire::Target;
use std::time::Duration;
use tracing::warn;

/// The cluster as the configuration describes it.
pub fn topology(cfg: &Config) -> Result<Topology, AppError> {
    let nodes = cfg
        .nodes
        .iter()
        .map(|n| {
            Ok(Node {
                name: n.name.clone(),
                target: Target::from_dsn(&n.dsn)
                    .map_err(|e| AppError::Config(format!("nodes {}: {e}", n.name)))?,
                priority: n.priority,
            })
        })
        .collect::<Result<Vec<_>, AppError>>()?;
    Topology::by_priority(&nodes).map_err(|e| AppError::Config(e.to_string()))
}

/// The topology to run with: as the nodes recorded it (the master of the
/// latest epoch stays master; nodes left behind by a failover are fenced
/// out), or by configured priority on a cluster Ferry never ran.
pub async fn decide(cfg: &Config) -> Result<Topology, AppError> {
    let (ordered, seen) = records(cfg).await?;
    ferry_cluster::coordinator::decide(&ordered, &seen).map_err(|e| AppError::Config(e.to_string()))
}

/// Every configured node (in configured order) with what it recorded of
/// its role, or unreachable.
pub async fn records(cfg: &Config) -> Result<(Vec<Node>, Vec<(Node, Seen)>), AppError> {
    let configured = topology(cfg)?;
    let nodes: Vec<Node> = std::iter::once(configured.master.clone())
        .chain(configured.replicas.iter().cloned())
        .collect();
    let mut seen = Vec::new();
    for n in &nodes {
        let read = tokio::time::timeout(Duration::from_secs(3), async {
            match connect(&n.name, &n.target, "ferry control").await {
                Ok(client) => Seen::read_from(&client).await,
                Err(_) => Seen::Unreachable,
            }
        })
        .await
        .unwrap_or(Seen::Unreachable);
        seen.push((n.clone(), read));
    }
    // Keep the configured order for ties.
    let mut ordered: Vec<Node> = cfg
        .nodes
        .iter()
        .filter_map(|c| nodes.iter().find(|n| n.name == c.name).cloned())
        .collect();
    if ordered.len() != nodes.len() {
        ordered = nodes;
    }
    Ok((ordered, seen))
}

/// Records each reachable node's state for a topology (before it takes
/// effect).
pub(super) async fn record_states(topo: &Topology) {
    if topo.waiting.is_some() {
        return;
    }
    use ferry_cluster::record::{master_priority, Recorded, REPLICA_PRIORITY};
    let states = std::iter::once((
        &topo.master,
        Role::Master,
        master_priority(!topo.replicas.is_empty()),
    ))
    .chain(
        topo.replicas
            .iter()
            .map(|n| (n, Role::Replica, REPLICA_PRIORITY)),
    );
    for (n, state, priority) in states {
        let written = async {
            let client = connect(&n.name, &n.target, "ferry control").await.ok()?;
            let r = Recorded {
                node: n.name.clone(),
                epoch: topo.epoch,
                state,
                state_priority: priority,
                master: topo.master.name.clone(),
                forced: topo.forced,
            };
            ferry_cluster::record::write(&client, &r).await.ok()
        };
        if tokio::time::timeout(Duration::from_secs(3), written)
            .await
            .ok()
            .flatten()
            .is_none()
        {
            warn!(node = %n.name, "could not record the node's state now");
        }
    }
}
