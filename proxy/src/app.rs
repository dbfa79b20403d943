//! The running Ferry process: proxy listener, batcher and admin endpoint,
//! started together and stopped together.

use crate::add_node::NodeAdder;
use crate::config::Config;
use crate::frontend::cancel::CancelRegistry;
use crate::frontend::gate::Gate;
use crate::frontend::listener;
use crate::frontend::read_balance::ReaderCounts;
use crate::frontend::session::{FrontendMetrics, Shared};
use crate::frontend::startup::{AuthMethod, UserDb};
use crate::frontend::tracked_pump::{ReadMetrics, ReadMode, ReadRouting};
use crate::switchover::{refuse, Switchover};
use ferry_admin::{Answer, Request, StatusSource};
use ferry_batcher::install::{connect, install_master, prepare_replica};
use ferry_batcher::pattern::Pattern;
use ferry_batcher::run::SuspendConfig;
use ferry_batcher::suspend::Command as SuspendCommand;
use ferry_batcher::verify::{Verifier, VerifyConfig};
use ferry_batcher::{
    BatchError, Batcher, BatcherConfig, Fallback, Metrics, NodeTarget, SharedStatus, SyncPoint,
};
use ferry_cluster::failover::{Control, Coordinator, SharedClusterStatus};
use ferry_cluster::health::HealthConfig;
use ferry_cluster::record::Seen;
use ferry_cluster::{Node, Topology};
use ferry_wire::Target;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Why Ferry could not start.
#[derive(Debug, Error)]
pub enum AppError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Batch(#[from] BatchError),
}

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
    ferry_cluster::failover::decide(&ordered, &seen).map_err(|e| AppError::Config(e.to_string()))
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
async fn record_states(topo: &Topology) {
    if topo.waiting.is_some() {
        return;
    }
    use ferry_cluster::record::{master_priority, Recorded, REPLICA_PRIORITY};
    let states = std::iter::once((
        &topo.master,
        "master",
        master_priority(!topo.replicas.is_empty()),
    ))
    .chain(
        topo.replicas
            .iter()
            .map(|n| (n, "replica", REPLICA_PRIORITY)),
    );
    for (n, state, priority) in states {
        let written = async {
            let client = connect(&n.name, &n.target, "ferry control").await.ok()?;
            let r = Recorded {
                node: n.name.clone(),
                epoch: topo.epoch,
                state: state.into(),
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

/// Include and exclude patterns.
pub fn patterns(cfg: &Config) -> Result<(Vec<Pattern>, Vec<Pattern>), AppError> {
    let parse = |list: &[String]| {
        list.iter()
            .map(|p| Pattern::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(AppError::from)
    };
    Ok((
        parse(&cfg.replication.tables)?,
        parse(&cfg.replication.exclude)?,
    ))
}

/// Installs schema and capture on the master and every reachable replica,
/// refusing when the replicated tables differ. With `require_all`, an
/// unreachable node is an error (for `ferry init`); otherwise it is logged
/// and the batcher prepares it when it returns.
pub async fn install(cfg: &Config, require_all: bool) -> Result<usize, AppError> {
    let topo = decide(cfg).await?;
    if let Some(why) = &topo.waiting {
        return Err(AppError::Config(format!("no master: {why}")));
    }
    install_for(cfg, &topo, require_all).await
}

/// [`install`] for a given topology.
async fn install_for(cfg: &Config, topo: &Topology, require_all: bool) -> Result<usize, AppError> {
    let (include, exclude) = patterns(cfg)?;
    let m = &topo.master;
    let master = connect(&m.name, &m.target, "ferry init").await?;
    let shapes = install_master(&m.name, &master, &include, &exclude).await?;
    for r in &topo.replicas {
        let result = async {
            let client = connect(&r.name, &r.target, "ferry init").await?;
            prepare_replica(
                (&m.name, &master),
                &shapes,
                (&r.name, &client),
                &include,
                &exclude,
            )
            .await
        }
        .await;
        match result {
            Ok(_) => {}
            Err(e @ BatchError::SchemaMismatch(_)) => return Err(e.into()),
            Err(e) if require_all => return Err(e.into()),
            Err(e) => {
                warn!(node = %r.name, error = %e, "replica not prepared now; the batcher retries")
            }
        }
    }
    Ok(shapes.len())
}

struct AppStatus {
    roles: watch::Receiver<Topology>,
    cluster: SharedClusterStatus,
    replication: SharedStatus,
    registry: Registry,
    frontend: FrontendMetrics,
    sync: Option<Arc<SyncPoint>>,
    /// Suspend/cancel/resume requests to the batcher.
    commands: tokio::sync::mpsc::Sender<SuspendCommand>,
    /// Operators' requests to the coordinator (force-master, resync,
    /// remove-node).
    force: tokio::sync::mpsc::Sender<Control>,
    /// Replication patterns (for resyncs).
    patterns: (Vec<Pattern>, Vec<Pattern>),
    /// Planned switchovers.
    switchover: Arc<Switchover>,
    /// Nodes added while running.
    adder: Arc<NodeAdder>,
}

impl AppStatus {
    /// Copies the master's tables to a fenced node, then has the
    /// coordinator take it back as a replica; or to a replica refused as
    /// standing before the master's outbox clean-up, which the batcher
    /// then ships to from the copy on.
    fn resync(&self, node: String) -> Answer {
        let topo = self.roles.borrow().clone();
        let refused = self.replication.read().is_ok_and(|r| {
            r.replicas
                .iter()
                .any(|s| s.name == node && s.behind_cleanup && !s.reachable)
        });
        let force = self.force.clone();
        let (include, exclude) = self.patterns.clone();
        Box::pin(async move {
            if let Some(why) = &topo.waiting {
                return refuse((409, "no_master", format!("no master to copy from: {why}")));
            }
            let fenced = topo.fenced.iter().find(|(n, _)| n.name == node);
            let replica = topo.replicas.iter().find(|n| refused && n.name == node);
            let Some(n) = fenced.map(|(n, _)| n).or(replica) else {
                return refuse((
                    409,
                    "not_fenced",
                    format!(
                        "node {node} is not fenced out of the cluster, nor a replica refused as \
                         standing before the master's outbox clean-up"
                    ),
                ));
            };
            let copied = match ferry_batcher::resync::copy_all(
                (&topo.master.name, &topo.master.target),
                (&n.name, &n.target),
                &include,
                &exclude,
                &|_| {},
            )
            .await
            {
                Ok(c) => c,
                Err(e) => return refuse((409, "resync_failed", e.to_string())),
            };
            if fenced.is_none() {
                // A replica already: the batcher ships to it from the copy's
                // snapshot on, at its next connection attempt.
                info!(node = %node, rows = copied.rows, "replica behind the clean-up copied anew; it catches up from here");
                return (
                    200,
                    serde_json::json!({"state": "replica", "epoch": topo.epoch, "tables": copied.tables,
                        "rows": copied.rows, "batch": copied.batch, "quarantined": copied.quarantined,
                        "keyed": copied.keyed, "definitions_replaced": copied.definitions_replaced}),
                );
            }
            let (reply, answer) = tokio::sync::oneshot::channel();
            if force.send(Control::Admit { node, reply }).await.is_err() {
                return refuse((503, "unavailable", "the coordinator is not running".into()));
            }
            match tokio::time::timeout(Duration::from_secs(30), answer).await {
                Ok(Ok(Ok(epoch))) => (
                    200,
                    serde_json::json!({"state": "replica", "epoch": epoch, "tables": copied.tables,
                        "rows": copied.rows, "batch": copied.batch, "quarantined": copied.quarantined,
                        "keyed": copied.keyed, "definitions_replaced": copied.definitions_replaced}),
                ),
                Ok(Ok(Err(why))) => refuse((409, "cannot_admit", why)),
                _ => refuse((503, "unavailable", "no answer from the coordinator".into())),
            }
        })
    }
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
                "holding": self.switchover.gate.is_closed(),
                "last": self.switchover.last.read().ok().and_then(|l| l.clone()),
            },
            "adding": self.adder.state.read().ok().and_then(|a| a.clone()),
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
        if let Request::ForceMaster { node } = request {
            let force = self.force.clone();
            return Box::pin(async move {
                let (reply, answer) = tokio::sync::oneshot::channel();
                if force
                    .send(Control::ForceMaster { node, reply })
                    .await
                    .is_err()
                {
                    return (
                        503,
                        serde_json::json!({"error": "unavailable", "message": "the coordinator is not running"}),
                    );
                }
                match tokio::time::timeout(Duration::from_secs(30), answer).await {
                    Ok(Ok(Ok(epoch))) => (
                        200,
                        serde_json::json!({"state": "forced", "epoch": epoch,
                            "warning": "forced master: possible data loss; the other nodes are fenced out"}),
                    ),
                    Ok(Ok(Err(why))) => (
                        409,
                        serde_json::json!({"error": "cannot_force", "message": why}),
                    ),
                    _ => (
                        503,
                        serde_json::json!({"error": "unavailable", "message": "no answer from the coordinator"}),
                    ),
                }
            });
        }
        if let Request::Resync { node } = request {
            return self.resync(node);
        }
        if let Request::RemoveNode { node } = request {
            let (roles, control) = (self.roles.clone(), self.force.clone());
            return Box::pin(crate::remove_node::remove(roles, control, node));
        }
        if let Request::Switchover { to } = request {
            let switchover = self.switchover.clone();
            return Box::pin(async move { switchover.run(to).await });
        }
        if let Request::AddNode {
            name,
            dsn,
            priority,
        } = request
        {
            let adder = self.adder.clone();
            return Box::pin(async move { adder.run(name, dsn, priority).await });
        }
        let commands = self.commands.clone();
        Box::pin(async move {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let command = match request {
                Request::Suspend { replicas, at } => SuspendCommand::Suspend {
                    replicas,
                    at,
                    reply,
                },
                Request::CancelSuspend { replica } => SuspendCommand::Cancel { replica, reply },
                Request::Resume { replica } => SuspendCommand::Resume { replica, reply },
                Request::Repair { replica, table } => SuspendCommand::Repair {
                    replica,
                    table,
                    reply,
                },
                Request::ForceMaster { .. }
                | Request::Resync { .. }
                | Request::Switchover { .. }
                | Request::AddNode { .. }
                | Request::RemoveNode { .. } => return (500, serde_json::Value::Null),
            };
            let unavailable = |why: &str| {
                (
                    503,
                    serde_json::json!({"error": "master_unavailable", "message": why}),
                )
            };
            if commands.send(command).await.is_err() {
                return unavailable("the batcher is not running");
            }
            // The batcher answers between two cuts; a resume may wait for a
            // running suspend hook.
            match tokio::time::timeout(Duration::from_secs(600), answer).await {
                Ok(Ok(Ok(body))) => (200, body),
                Ok(Ok(Err(e))) => (
                    e.http_status(),
                    serde_json::json!({"error": e.code(), "message": e.to_string()}),
                ),
                Ok(Err(_)) => unavailable("the batcher restarted before answering; retry"),
                Err(_) => unavailable("no answer from the batcher within 600 s"),
            }
        })
    }
}

/// Keeps the master's recorded state-priority current: 2 while a replica
/// holds everything the master shipped (it could take over without loss),
/// 1 while none does. After a total outage this tells whether a replica may
/// have taken over later (see `ferry_cluster::failover::decide`).
async fn record_master_priority(
    mut roles: watch::Receiver<Topology>,
    status: SharedStatus,
    mut shutdown: watch::Receiver<bool>,
) {
    use ferry_cluster::record::{master_priority, Recorded};
    let mut recorded: Option<(String, i64, i32)> = None;
    let mut client: Option<(String, tokio_postgres::Client)> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = roles.changed() => {}
            _ = shutdown.changed() => return,
        }
        let topo = roles.borrow().clone();
        if topo.waiting.is_some() {
            continue;
        }
        let caught_up = status.read().is_ok_and(|s| {
            s.master == topo.master.name
                && s.replicas
                    .iter()
                    .any(|r| r.reachable && r.lag_batches == 0 && r.suspension.is_none())
        });
        let want = (
            topo.master.name.clone(),
            topo.epoch,
            master_priority(caught_up),
        );
        if recorded.as_ref() == Some(&want) {
            continue;
        }
        if client.as_ref().is_none_or(|(n, _)| *n != topo.master.name) {
            client = connect(&topo.master.name, &topo.master.target, "ferry control")
                .await
                .ok()
                .map(|c| (topo.master.name.clone(), c));
        }
        let Some((_, c)) = &client else { continue };
        let r = Recorded {
            node: topo.master.name.clone(),
            epoch: topo.epoch,
            state: "master".into(),
            state_priority: want.2,
            master: topo.master.name.clone(),
            forced: topo.forced,
        };
        match ferry_cluster::record::write(c, &r).await {
            Ok(()) => {
                info!(node = %r.node, state_priority = r.state_priority, "master's state-priority recorded");
                recorded = Some(want);
            }
            Err(_) => client = None,
        }
    }
}

/// Runs the batcher for the current topology, and again for each new one
/// (a failover): the old one is stopped first (a second's grace, then
/// aborted: a batch it was applying rolls back, and replicas fenced at the
/// new epoch refuse its batches anyway).
async fn supervise_batcher(
    base: BatcherConfig,
    mut roles: watch::Receiver<Topology>,
    (status, metrics): (SharedStatus, Metrics),
    commands: ferry_batcher::run::Commands,
    mut shutdown: watch::Receiver<bool>,
) {
    let node = |n: &Node| NodeTarget {
        name: n.name.clone(),
        target: n.target.clone(),
    };
    loop {
        if *shutdown.borrow() {
            return;
        }
        let topo = roles.borrow_and_update().clone();
        if topo.waiting.is_some() {
            // No master: nothing to replicate from until one is decided.
            tokio::select! {
                r = roles.changed() => if r.is_ok() { continue } else { return },
                _ = shutdown.changed() => return,
            }
        }
        let mut cfg = base.clone();
        cfg.master = node(&topo.master);
        cfg.replicas = topo.replicas.iter().map(node).collect();
        cfg.epoch = topo.epoch;
        let (stop, stopped) = watch::channel(false);
        let batcher = Batcher::new(cfg, status.clone(), metrics.clone(), commands.clone());
        let mut run = tokio::spawn(batcher.run(stopped));
        // A closed topology channel is Ferry stopping too.
        let again = tokio::select! {
            r = roles.changed() => r.is_ok() && !*shutdown.borrow(),
            _ = shutdown.changed() => false,
            _ = &mut run => return,
        };
        let _ = stop.send(true);
        if tokio::time::timeout(Duration::from_secs(1), &mut run)
            .await
            .is_err()
        {
            run.abort();
        }
        if !again {
            return;
        }
        info!(master = %roles.borrow().master.name, epoch = roles.borrow().epoch, "batcher restarting for the new topology");
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

/// A started Ferry.
pub struct App {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    /// Turned true first: the proxy port stops accepting.
    accepting: watch::Sender<bool>,
    /// Turned true once sessions had their time: they end.
    stopping: watch::Sender<bool>,
    gate: Arc<Gate>,
    sessions: prometheus_client::metrics::gauge::Gauge,
    shutdown_timeout: Duration,
    tasks: Vec<JoinHandle<()>>,
}

impl App {
    /// Binds both listeners and starts every part.
    pub async fn start(cfg: &Config) -> Result<App, AppError> {
        let topo = decide(cfg).await?;
        let (include, exclude) = patterns(cfg)?;
        if let Some(why) = &topo.waiting {
            warn!(reason = %why, "no master yet: writers wait, then get 57P03");
        } else {
            match install_for(cfg, &topo, false).await {
                Ok(n) => info!(tables = n, "capture installed"),
                Err(e @ AppError::Batch(BatchError::SchemaMismatch(_))) => return Err(e),
                Err(e) => warn!(error = %e, "install at start incomplete; the batcher retries"),
            }
        }
        record_states(&topo).await;
        for (n, why) in &topo.fenced {
            warn!(node = %n.name, reason = %why, "node fenced out of the cluster");
        }
        let bind = |what: &'static str, addr: String| async move {
            TcpListener::bind(&addr)
                .await
                .map_err(|source| AppError::Bind { what, addr, source })
        };
        let proxy = bind("proxy.listen", cfg.proxy.listen.clone()).await?;
        let admin = bind("admin.listen", cfg.admin.listen.clone()).await?;
        let proxy_addr = proxy.local_addr().map_err(|source| AppError::Bind {
            what: "proxy.listen",
            addr: cfg.proxy.listen.clone(),
            source,
        })?;
        let admin_addr = admin.local_addr().map_err(|source| AppError::Bind {
            what: "admin.listen",
            addr: cfg.admin.listen.clone(),
            source,
        })?;

        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let frontend_metrics = FrontendMetrics::register(&mut registry);
        let status = SharedStatus::default();
        let (tx, rx) = watch::channel(false);
        // A stop: first no new sessions, then every session ends (see
        // `App::shutdown`).
        let (accepting, not_accepting) = watch::channel(false);
        let (stopping, sessions_stop) = watch::channel(false);
        // Batcher ticks tell which replica has applied what: commits wait
        // for them in sync mode, causal reads and switchovers ask.
        let sync_mode = cfg.replication.mode == "sync";
        let all_nodes: Vec<Node> = topo.roles().into_iter().map(|(n, _)| n.clone()).collect();
        let ticks = {
            let fallback = if cfg.replication.sync_fallback == "async" {
                Fallback::Async(Duration::from_millis(cfg.replication.sync_timeout_ms))
            } else {
                Fallback::Wait
            };
            let k = if sync_mode {
                cfg.replication.sync_replicas
            } else {
                0
            };
            Arc::new(SyncPoint::new(
                k,
                fallback,
                all_nodes.iter().map(|n| n.name.clone()).collect(),
                &mut registry,
            ))
        };
        let sync = Some(ticks.clone()).filter(|_| sync_mode);
        let reads = match cfg.proxy.reads.as_str() {
            "replicas" | "causal" => Some(Arc::new(ReadRouting {
                mode: if cfg.proxy.reads == "causal" {
                    ReadMode::Causal
                } else {
                    ReadMode::Replicas
                },
                // Every node, in the SyncPoint's slot order: the batcher
                // reports which of them serve as replicas at any time.
                replicas: std::sync::RwLock::new(
                    all_nodes
                        .iter()
                        .map(|n| (n.name.clone(), n.target.clone()))
                        .collect(),
                ),
                ticks: ticks.clone(),
                metrics: ReadMetrics::register(&mut registry),
                readers: Arc::new(ReaderCounts::register(&mut registry)),
                connect_timeout: Duration::from_millis(cfg.proxy.connect_timeout_ms),
            })),
            _ => None,
        };

        let (commands, commands_rx) = tokio::sync::mpsc::channel(16);
        let node = |n: &Node| NodeTarget {
            name: n.name.clone(),
            target: n.target.clone(),
        };
        let batcher_cfg = BatcherConfig {
            master: node(&topo.master),
            replicas: topo.replicas.iter().map(node).collect(),
            include,
            exclude,
            tick: Duration::from_millis(cfg.replication.tick_ms),
            housekeeping: Duration::from_millis(cfg.replication.housekeeping_ms),
            apply_timeout: Duration::from_millis(cfg.replication.apply_timeout_ms),
            sync: Some(ticks.clone()),
            epoch: topo.epoch,
            verify: Arc::new(std::sync::Mutex::new(Verifier::new(
                VerifyConfig {
                    interval: Duration::from_secs(cfg.verify.interval_s),
                    chunk_rows: cfg.verify.chunk_rows,
                },
                std::time::Instant::now(),
            ))),
            suspend: SuspendConfig {
                min_lead: Duration::from_millis(cfg.suspend.min_lead_ms),
                hook: Some(cfg.suspend.hook.clone()).filter(|h| !h.trim().is_empty()),
                dsns: cfg
                    .nodes
                    .iter()
                    .map(|n| (n.name.clone(), n.dsn.clone()))
                    .collect(),
            },
        };
        let (roles_tx, roles) = watch::channel(topo.clone());
        let cluster_status = SharedClusterStatus::default();
        let (force, forced_rx) = tokio::sync::mpsc::channel(4);
        // Decisions see the nodes in configured order.
        let configured: Vec<Node> = cfg
            .nodes
            .iter()
            .filter_map(|c| all_nodes.iter().find(|n| n.name == c.name).cloned())
            .collect();
        let coordinator = Coordinator::new(
            HealthConfig {
                interval: Duration::from_millis(cfg.health.interval_ms),
                failures: cfg.health.failures,
            },
            &configured,
            roles_tx,
            cluster_status.clone(),
            forced_rx,
            {
                let replication = status.clone();
                Box::new(move |name: &str| {
                    replication
                        .read()
                        .ok()
                        .filter(|s| s.master == name)
                        .and_then(|s| s.master_contact)
                })
            },
        );
        let gate = Arc::new(Gate::default());
        let sessions = frontend_metrics.connections.clone();
        let shared = Arc::new(Shared {
            users: UserDb::new(
                cfg.users
                    .iter()
                    .map(|u| (u.name.as_str(), u.password.as_str())),
            ),
            auth: if cfg.proxy.auth == "md5" {
                AuthMethod::Md5
            } else {
                AuthMethod::ScramSha256
            },
            roles: roles.clone(),
            hold_timeout: Duration::from_millis(cfg.proxy.hold_timeout_ms),
            max_message: cfg.proxy.max_message_bytes,
            connect_timeout: Duration::from_millis(cfg.proxy.connect_timeout_ms),
            cancels: CancelRegistry::default(),
            metrics: frontend_metrics.clone(),
            sync: sync.clone(),
            reads: reads.clone(),
            gate: gate.clone(),
            stopping: sessions_stop,
        });
        let switchover = Arc::new(Switchover {
            roles: roles.clone(),
            gate: gate.clone(),
            ticks: ticks.clone(),
            control: force.clone(),
            replication: status.clone(),
            drain_timeout: Duration::from_millis(cfg.switchover.drain_timeout_ms),
            catch_up_timeout: Duration::from_millis(cfg.switchover.catch_up_timeout_ms),
            running: tokio::sync::Mutex::new(()),
            last: std::sync::RwLock::new(None),
        });
        let adder = Arc::new(NodeAdder {
            roles: roles.clone(),
            ticks: ticks.clone(),
            reads,
            control: force.clone(),
            patterns: patterns(cfg)?,
            configured: cfg.nodes.iter().map(|n| n.name.clone()).collect(),
            state: Arc::new(std::sync::RwLock::new(None)),
            running: tokio::sync::Mutex::new(()),
        });
        let source: Arc<dyn StatusSource> = Arc::new(AppStatus {
            roles: roles.clone(),
            cluster: cluster_status,
            replication: status.clone(),
            registry,
            frontend: frontend_metrics,
            sync,
            commands,
            force,
            patterns: patterns(cfg)?,
            switchover,
            adder,
        });
        let mut tasks = vec![
            tokio::spawn(record_master_priority(
                roles.clone(),
                status.clone(),
                rx.clone(),
            )),
            tokio::spawn(supervise_batcher(
                batcher_cfg,
                roles,
                (status, metrics),
                Arc::new(tokio::sync::Mutex::new(commands_rx)),
                rx.clone(),
            )),
            tokio::spawn(coordinator.run(rx.clone())),
            tokio::spawn(listener::serve(proxy, shared, not_accepting)),
        ];
        let mut admin_rx = rx;
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                r = ferry_admin::serve(admin, source) => if let Err(e) = r { warn!(error = %e, "admin endpoint stopped") },
                _ = admin_rx.changed() => {}
            }
        }));
        info!(proxy = %proxy_addr, admin = %admin_addr, master = %topo.master.name, "ferry is running");
        Ok(App {
            proxy_addr,
            admin_addr,
            shutdown: tx,
            accepting,
            stopping,
            gate,
            sessions,
            shutdown_timeout: Duration::from_millis(cfg.proxy.shutdown_timeout_ms),
            tasks,
        })
    }

    /// Stops as a PostgreSQL server does a smart-then-fast shutdown: no new
    /// sessions; transactions and statements under way get
    /// `proxy.shutdown_timeout_ms` to finish while new statements wait at
    /// the gate; then every session ends with SQLSTATE 57P01; then, once,
    /// the batcher (sync commits under way needed it until now), the
    /// coordinator and the admin endpoint.
    pub async fn shutdown(self) {
        let _ = self.accepting.send(true);
        self.gate.close();
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        let busy = loop {
            let busy = self.gate.busy_sessions();
            if busy == 0 || tokio::time::Instant::now() >= deadline {
                break busy;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        info!(
            sessions = self.sessions.get(),
            busy, "stopping: client sessions end with 57P01"
        );
        let _ = self.stopping.send(true);
        let ended = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.sessions.get() > 0 && tokio::time::Instant::now() < ended {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        info!("stopped");
    }
}
