//! `ferry remove-node NAME` / `POST /nodes/{name}/remove`: a node other
//! than the master leaves the cluster for good — a failed master that will
//! not come back, a replica retired. The coordinator stops checking it and
//! publishes the topology without it (the batcher restarts without it; it
//! serves no reads and counts for no sync commit); then the master forgets
//! its position, or the resync pin a failover left for a failed master,
//! which would otherwise hold the outbox clean-up back for ever.
//!
//! The configuration file is not changed: remove the node's `[[nodes]]`
//! entry there before Ferry restarts, or it is taken in again then (and,
//! once the clean-up has passed its position, refused as behind it).

use super::answers::{NodeState, Removed};
use super::coordinator;
use super::refusal::Refusal;
use ferry_cluster::coordinator::Control;
use ferry_cluster::Topology;
use ferry_sql::schema;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// How long the batcher that shipped to the node takes to stop at most
/// (it is stopped, then aborted after a second): its last position record
/// must not bring back the row this removal drops.
const BATCHER_STOP: Duration = Duration::from_millis(1500);

/// Removes the node.
pub async fn remove(
    roles: watch::Receiver<Topology>,
    control: mpsc::Sender<Control>,
    node: String,
) -> Result<Removed, Refusal> {
    let epoch = coordinator::ask(&control, "cannot_remove", |reply| Control::RemoveNode {
        node: node.clone(),
        reply,
    })
    .await?;
    tokio::time::sleep(BATCHER_STOP).await;
    let master = roles.borrow().master.clone();
    let forgotten = async {
        let client =
            ferry_batcher::install::connect(&master.name, &master.target, "ferry control").await?;
        client
            .execute(schema::FORGET_REPLICA, &[&node])
            .await
            .map_err(ferry_batcher::BatchError::pg(&master.name))
    }
    .await;
    let config = format!(
        "remove the [[nodes]] entry named {node:?} from the configuration file before Ferry restarts"
    );
    let removed = |forgotten: bool, warning: Option<String>| Removed {
        node: node.clone(),
        state: NodeState::Removed,
        epoch,
        forgotten,
        config: config.clone(),
        warning,
    };
    match forgotten {
        Ok(rows) => {
            info!(node = %node, master = %master.name, records = rows, "node removed; the master no longer keeps the outbox for it");
            Ok(removed(true, None))
        }
        Err(e) => {
            warn!(node = %node, master = %master.name, error = %e,
                "node removed, but the master's record of it was not dropped: the outbox may still be kept for it");
            Ok(removed(
                false,
                Some(format!(
                    "the master's record of {node} was not dropped ({e}); \
                     run `ferry remove-node {node}` again once the master answers"
                )),
            ))
        }
    }
}
