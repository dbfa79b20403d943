//! `ferry force-master NODE` / `POST /force-master`: make a node master
//! when the cluster cannot decide by itself after an outage (possible data
//! loss: the other nodes are fenced out, and the choice is recorded and
//! shown as forced).

use super::answers::{Forced, NodeState};
use super::coordinator;
use super::refusal::Refusal;
use ferry_cluster::coordinator::Control;
use tokio::sync::mpsc;

/// Forces `node` to be master.
pub async fn force(control: mpsc::Sender<Control>, node: String) -> Result<Forced, Refusal> {
    let epoch = coordinator::ask(&control, "cannot_force", |reply| Control::ForceMaster {
        node,
        reply,
    })
    .await?;
    Ok(Forced {
        state: NodeState::Forced,
        epoch,
        warning: "forced master: possible data loss; the other nodes are fenced out".into(),
    })
}
