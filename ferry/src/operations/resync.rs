//! `ferry resync NODE` / `POST /nodes/{name}/resync`: a node fenced out of
//! the cluster (a failed master back, a replica left behind) gets what
//! differs from the master's tables — keyed where its ledger allows, whole
//! otherwise, its definitions replaced if it missed schema changes — and
//! the coordinator takes it back as a replica. A replica refused as
//! standing before the master's outbox clean-up is copied anew the same
//! way; the batcher then ships to it from the copy on.

use super::answers::{NodeState, Resynced};
use super::coordinator;
use super::refusal::Refusal;
use ferry_batcher::pattern::Pattern;
use ferry_batcher::resync::Copied;
use ferry_batcher::SharedStatus;
use ferry_cluster::coordinator::Control;
use ferry_cluster::Topology;
use tokio::sync::{mpsc, watch};
use tracing::info;

/// Resynchronises `node` from the master.
pub async fn resync(
    roles: watch::Receiver<Topology>,
    replication: SharedStatus,
    control: mpsc::Sender<Control>,
    (include, exclude): (Vec<Pattern>, Vec<Pattern>),
    node: String,
) -> Result<Resynced, Refusal> {
    let topo = roles.borrow().clone();
    let refused = replication.read().is_ok_and(|r| {
        r.replicas
            .iter()
            .any(|s| s.name == node && s.needs_resync && !s.reachable)
    });
    if let Some(why) = &topo.waiting {
        return Err(Refusal::conflict(
            "no_master",
            format!("no master to copy from: {why}"),
        ));
    }
    let fenced = topo.fenced.iter().find(|(n, _)| n.name == node);
    let replica = topo.replicas.iter().find(|n| refused && n.name == node);
    let Some(n) = fenced.map(|(n, _)| n).or(replica) else {
        return Err(Refusal::conflict(
            "not_fenced",
            format!(
                "node {node} is not fenced out of the cluster, nor a replica refused as \
                 standing before the master's outbox clean-up"
            ),
        ));
    };
    let copied = ferry_batcher::resync::copy_all(
        (&topo.master.name, &topo.master.target),
        (&n.name, &n.target),
        &include,
        &exclude,
        &|_| {},
    )
    .await
    .map_err(|e| Refusal::conflict("resync_failed", e.to_string()))?;
    if fenced.is_none() {
        // A replica already: the batcher ships to it from the copy's
        // snapshot on, at its next connection attempt.
        info!(node = %node, rows = copied.rows, "replica behind the clean-up copied anew; it catches up from here");
        return Ok(answer(topo.epoch, &copied));
    }
    let epoch = coordinator::ask(&control, "cannot_admit", |reply| Control::Admit {
        node,
        reply,
    })
    .await?;
    Ok(answer(epoch, &copied))
}

/// The answer for a node that serves as a replica again at `epoch`.
fn answer(epoch: i64, copied: &Copied) -> Resynced {
    Resynced {
        state: NodeState::Replica,
        epoch,
        copied: copied.clone(),
    }
}
