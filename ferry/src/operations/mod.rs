//! The operator's operations, one orchestration file each, and the
//! dispatch of admin requests to them.
//!
//! | operation | file | command | endpoint |
//! |---|---|---|---|
//! | planned switchover | [`switchover`] | `ferry switchover` | `POST /switchover` |
//! | a new node joins | [`add_node`] | `ferry add-node` | `POST /nodes` |
//! | a node leaves | [`remove_node`] | `ferry remove-node` | `POST /nodes/{name}/remove` |
//! | a fenced node comes back | [`resync`] | `ferry resync` | `POST /nodes/{name}/resync` |
//! | a master chosen by hand | [`force_master`] | `ferry force-master` | `POST /force-master` |
//! | suspend, cancel, resume, repair | [`batcher`] | `ferry suspend`, `resume`, `repair` | `/suspend`, `/replicas/{name}/…`, `/nodes/{name}/repair` |
//!
//! Each returns its answer's body or a [`Refusal`]; the ones that change
//! roles ask the coordinator through [`coordinator::ask`].

pub mod add_node;
pub mod answers;
pub mod batcher;
pub mod coordinator;
pub mod force_master;
pub mod refusal;
pub mod remove_node;
pub mod resync;
pub mod switchover;

pub use refusal::{Refusal, RefusalKind};

use add_node::NodeAdder;
use ferry_admin::{Answer, Request};
use ferry_batcher::pattern::Pattern;
use ferry_batcher::suspend::Command;
use ferry_batcher::SharedStatus;
use ferry_cluster::coordinator::Control;
use ferry_cluster::Topology;
use std::sync::Arc;
use switchover::Switchover;
use tokio::sync::{mpsc, watch};

/// What the operations need of the running process.
pub struct Operations {
    pub roles: watch::Receiver<Topology>,
    pub replication: SharedStatus,
    /// Requests to the coordinator.
    pub control: mpsc::Sender<Control>,
    /// Requests to the batcher.
    pub commands: mpsc::Sender<Command>,
    /// Replication patterns (for resyncs).
    pub patterns: (Vec<Pattern>, Vec<Pattern>),
    pub switchover: Arc<Switchover>,
    pub adder: Arc<NodeAdder>,
}

impl Operations {
    /// Carries out an admin request: the endpoint's answer.
    pub fn answer(&self, request: Request) -> Answer {
        let control = self.control.clone();
        let commands = self.commands.clone();
        let done: Pending = match request {
            Request::Switchover { to } => {
                let switchover = self.switchover.clone();
                Box::pin(async move { json(switchover.run(to).await) })
            }
            Request::AddNode {
                name,
                dsn,
                priority,
            } => {
                let adder = self.adder.clone();
                Box::pin(async move { json(adder.run(name, dsn, priority).await) })
            }
            Request::RemoveNode { node } => {
                let roles = self.roles.clone();
                Box::pin(async move { json(remove_node::remove(roles, control, node).await) })
            }
            Request::Resync { node } => {
                let (roles, replication) = (self.roles.clone(), self.replication.clone());
                let patterns = self.patterns.clone();
                Box::pin(async move {
                    json(resync::resync(roles, replication, control, patterns, node).await)
                })
            }
            Request::ForceMaster { node } => {
                Box::pin(async move { json(force_master::force(control, node).await) })
            }
            Request::Suspend { replicas, at } => Box::pin(async move {
                let ask = batcher::ask(commands, |reply| Command::Suspend {
                    replicas,
                    at,
                    reply,
                });
                json(ask.await)
            }),
            Request::CancelSuspend { replica } => Box::pin(async move {
                json(batcher::ask(commands, |reply| Command::Cancel { replica, reply }).await)
            }),
            Request::Resume { replica } => Box::pin(async move {
                json(batcher::ask(commands, |reply| Command::Resume { replica, reply }).await)
            }),
            Request::Repair { replica, table } => Box::pin(async move {
                let ask = batcher::ask(commands, |reply| Command::Repair {
                    replica,
                    table,
                    reply,
                });
                json(ask.await)
            }),
        };
        Box::pin(async move {
            match done.await {
                Ok(body) => (200, body),
                Err(refusal) => refusal.answer(),
            }
        })
    }
}

/// An operation under way.
type Pending =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<serde_json::Value, Refusal>> + Send>>;

/// An operation's typed answer as the endpoint's JSON body.
fn json<T: serde::Serialize>(answer: Result<T, Refusal>) -> Result<serde_json::Value, Refusal> {
    answer.and_then(|a| {
        serde_json::to_value(a)
            .map_err(|e| Refusal::unavailable(format!("the answer could not be written: {e}")))
    })
}
