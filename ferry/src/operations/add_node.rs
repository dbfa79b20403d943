//! `ferry add-node NAME --dsn DSN` / `POST /nodes`: a new, empty
//! PostgreSQL server joins the running cluster as a replica. Its table
//! definitions and a consistent copy of the rows come from the master
//! ([`ferry_batcher::add_node`]); then the coordinator takes it in, the
//! batcher ships to it from the copy's snapshot on, and once it is current
//! it serves like any replica (sync commits, reads, failover).
//!
//! The node is not written into the configuration file: add its
//! `[[nodes]]` entry there before Ferry restarts, or it is left out then.

use super::answers::{Added, NodeState};
use super::coordinator;
use super::refusal::Refusal;
use crate::frontend::pump::ReadRouting;
use ferry_batcher::add_node::{prepare_new_node, Phase};
use ferry_batcher::pattern::Pattern;
use ferry_cluster::coordinator::Control;
use ferry_cluster::SyncPoint;
use ferry_cluster::{Node, Topology};
use ferry_wire::Target;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// Where an addition stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddPhase {
    /// Copying the table definitions.
    #[default]
    Definitions,
    /// Copying the rows.
    Rows,
    /// The coordinator takes the node in.
    Joining,
    /// Done: the node serves as a replica.
    Replica,
    Failed,
}

impl AddPhase {
    /// The word `/status` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Definitions => "definitions",
            Self::Rows => "rows",
            Self::Joining => "joining",
            Self::Replica => "replica",
            Self::Failed => "failed",
        }
    }
}

/// An addition as `/status` shows it (the latest one).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Adding {
    pub node: String,
    pub phase: AddPhase,
    pub tables_done: usize,
    pub tables: usize,
    pub rows: u64,
    pub error: Option<String>,
}

/// What an addition needs of the running process.
pub struct NodeAdder {
    pub roles: watch::Receiver<Topology>,
    pub ticks: Arc<SyncPoint>,
    pub reads: Option<Arc<ReadRouting>>,
    pub control: mpsc::Sender<Control>,
    pub patterns: (Vec<Pattern>, Vec<Pattern>),
    /// Names of the configured nodes.
    pub configured: Vec<String>,
    pub state: Arc<RwLock<Option<Adding>>>,
    /// One addition at a time.
    pub running: tokio::sync::Mutex<()>,
}

impl NodeAdder {
    /// Adds the node.
    pub async fn run(&self, name: String, dsn: String, priority: i32) -> Result<Added, Refusal> {
        let Ok(_one) = self.running.try_lock() else {
            return Err(Refusal::conflict(
                "add_running",
                "a node is being added already",
            ));
        };
        let added = self.add(&name, &dsn, priority).await;
        if let Err(r) = &added {
            warn!(node = %name, reason = %r, "node not added");
            self.set(|a| {
                a.phase = AddPhase::Failed;
                a.error = Some(r.message.clone());
            });
        }
        added
    }

    fn set(&self, f: impl FnOnce(&mut Adding)) {
        if let Ok(mut s) = self.state.write() {
            if let Some(a) = s.as_mut() {
                f(a);
            }
        }
    }

    async fn add(&self, name: &str, dsn: &str, priority: i32) -> Result<Added, Refusal> {
        let topo = self.roles.borrow().clone();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Refusal::bad_request(
                "invalid_name",
                format!("node name {name:?}: use letters, digits, _ and -"),
            ));
        }
        let known = self.configured.iter().any(|n| n == name)
            || topo.roles().iter().any(|(n, _)| n.name == name);
        if known {
            return Err(Refusal::conflict(
                "node_exists",
                format!("a node named {name} is part of the cluster already"),
            ));
        }
        if let Some(why) = &topo.waiting {
            return Err(Refusal::conflict(
                "no_master",
                format!("no master to copy from: {why}"),
            ));
        }
        let target = Target::from_dsn(dsn)
            .map_err(|e| Refusal::bad_request("invalid_dsn", format!("dsn: {e}")))?;
        if target.dbname != topo.master.target.dbname {
            return Err(Refusal::bad_request(
                "invalid_dsn",
                format!(
                    "dsn names database {:?}; every node must name {:?}",
                    target.dbname, topo.master.target.dbname
                ),
            ));
        }
        if let Ok(mut s) = self.state.write() {
            *s = Some(Adding {
                node: name.to_string(),
                phase: AddPhase::Definitions,
                ..Adding::default()
            });
        }
        info!(
            node = name,
            "adding a node: copying definitions and rows from the master"
        );
        let (include, exclude) = &self.patterns;
        let report = |p: Phase| match p {
            Phase::Definitions => self.set(|a| a.phase = AddPhase::Definitions),
            Phase::Rows(p) => self.set(|a| {
                a.phase = AddPhase::Rows;
                a.tables_done = p.tables_done;
                a.tables = p.tables;
                a.rows = p.rows;
            }),
        };
        let copied = prepare_new_node(
            (&topo.master.name, &topo.master.target),
            (name, &target),
            include,
            exclude,
            &report,
        )
        .await
        .map_err(|e| Refusal::conflict("add_failed", e.to_string()))?;
        self.set(|a| a.phase = AddPhase::Joining);
        let slot = self.ticks.add_node(name).ok_or_else(|| {
            Refusal::conflict(
                "too_many_nodes",
                "no room for more nodes added while Ferry runs: add it to the configuration and restart",
            )
        })?;
        if let Some(reads) = &self.reads {
            reads.add(slot, name, &target);
        }
        let node = Node {
            name: name.to_string(),
            target,
            priority,
        };
        let epoch = coordinator::ask(&self.control, "cannot_admit", |reply| Control::AddNode {
            node: Box::new(node),
            reply,
        })
        .await?;
        self.set(|a| a.phase = AddPhase::Replica);
        Ok(Added {
            node: name.to_string(),
            state: NodeState::Replica,
            epoch,
            tables: copied.tables,
            rows: copied.rows,
            batch: copied.batch,
            config: format!(
                "[[nodes]]\nname = \"{name}\"\ndsn = \"{dsn}\"\npriority = {priority}\n"
            ),
        })
    }
}
