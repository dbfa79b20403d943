//! The running Ferry process: proxy listener, batcher, coordinator and
//! admin endpoint, started together and stopped together.
//!
//! - [`cluster`]: which node plays which role at start;
//! - [`install`]: schema and capture on the nodes;
//! - [`status`]: what the admin endpoint reads and asks;
//! - [`parts`]: each part built from the configuration;
//! - [`roles`]: the roles client sessions run as, checked at start;
//! - [`capacity`]: room on each node for the client limit, checked at start
//!   (over the session [`roles`] opens);
//! - [`tls`]: Ferry's side of client TLS;
//! - [`background`]: the batcher's supervisor and the master's record.

mod background;
mod capacity;
mod cluster;
mod install;
mod parts;
mod roles;
mod status;
mod tls;

pub use cluster::{decide, records, topology};
pub use install::{install, patterns};

use background::{record_master_priority, supervise_batcher};
use cluster::record_states;
use install::install_for;
use status::AppStatus;

use crate::config::Config;
use crate::frontend::hold::Gate;
use crate::frontend::listener;
use crate::frontend::pump::ReadRouting;
use crate::frontend::shared::FrontendMetrics;
use crate::operations::add_node::NodeAdder;
use crate::operations::switchover::Switchover;
use crate::operations::Operations;
use ferry_admin::StatusSource;
use ferry_batcher::suspend::Command as SuspendCommand;
use ferry_batcher::{BatchError, Metrics, SharedStatus};
use ferry_cluster::coordinator::{Control, SharedClusterStatus};
use ferry_cluster::SyncPoint;
use ferry_cluster::{Node, Topology};
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
        let topo = prepare(cfg).await?;
        let ((proxy, proxy_addr), (admin, admin_addr)) = listeners(cfg).await?;
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let frontend_metrics = FrontendMetrics::register(&mut registry);
        let status = SharedStatus::default();
        let (tx, rx) = watch::channel(false);
        // A stop: first no new sessions, then every session ends (see
        // `App::shutdown`).
        let (accepting, not_accepting) = watch::channel(false);
        let (stopping, sessions_stop) = watch::channel(false);
        let all_nodes: Vec<Node> = topo.roles().into_iter().map(|(n, _)| n.clone()).collect();
        let ticks = parts::sync_point(cfg, &all_nodes, &mut registry);
        let sync = Some(ticks.clone()).filter(|_| parts::sync_mode(cfg));
        let reads = parts::read_routing(cfg, &all_nodes, &ticks, &mut registry);
        let batcher_cfg = parts::batcher_config(cfg, &topo, &ticks, patterns(cfg)?);
        let (commands, commands_rx) = tokio::sync::mpsc::channel(16);
        let (roles_tx, roles) = watch::channel(topo.clone());
        let cluster_status = SharedClusterStatus::default();
        let (control, control_rx) = tokio::sync::mpsc::channel(4);
        let coordinator = parts::coordinator(
            cfg,
            &all_nodes,
            roles_tx,
            (cluster_status.clone(), status.clone()),
            control_rx,
        );
        let gate = Arc::new(Gate::default());
        let sessions = frontend_metrics.connections.clone();
        let shared = parts::sessions(
            cfg,
            tls::proxy_tls(cfg)?,
            parts::SessionParts {
                roles: roles.clone(),
                metrics: frontend_metrics.clone(),
                sync: sync.clone(),
                reads: reads.clone(),
                gate: gate.clone(),
                stopping: sessions_stop,
            },
        );
        let ops = operations(
            cfg,
            &roles,
            (&status, &ticks, &gate),
            reads,
            (control, commands),
        )?;
        let source: Arc<dyn StatusSource> = Arc::new(AppStatus {
            roles: roles.clone(),
            cluster: cluster_status,
            replication: status.clone(),
            registry,
            frontend: frontend_metrics,
            sync,
            ops,
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
        let access = ferry_admin::Access {
            token: cfg
                .admin
                .token()
                .map_err(|e| AppError::Config(e.to_string()))?,
        };
        if access.token.is_none() {
            warn!(admin = %admin_addr, "the admin endpoint has no token: anyone on this machine may \
                switch over, remove or force nodes (set admin.token)");
        }
        let admin_tls = tls::admin_tls(cfg)?;
        let mut admin_rx = rx;
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                r = serve_admin(admin, source, access, admin_tls) => if let Err(e) = r { warn!(error = %e, "admin endpoint stopped") },
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

/// Decides the topology and prepares the nodes for it: capture installed
/// (a schema mismatch stops the start; anything else the batcher retries),
/// each node's role recorded.
async fn prepare(cfg: &Config) -> Result<Topology, AppError> {
    let topo = decide(cfg).await?;
    if let Some(why) = &topo.waiting {
        warn!(reason = %why, "no master yet: writers wait, then get 57P03");
    } else {
        match install_for(cfg, &topo, false).await {
            Ok(n) => info!(tables = n, "capture installed"),
            Err(e @ AppError::Batch(BatchError::SchemaMismatch(_))) => return Err(e),
            Err(e) => warn!(error = %e, "install at start incomplete; the batcher retries"),
        }
    }
    roles::check_roles(cfg, &topo).await?;
    record_states(&topo).await;
    for (n, why) in &topo.fenced {
        warn!(node = %n.name, reason = %why, "node fenced out of the cluster");
    }
    Ok(topo)
}

/// Serves the admin endpoint, over HTTPS when `admin.tls` says so.
async fn serve_admin(
    listener: TcpListener,
    source: Arc<dyn StatusSource>,
    access: ferry_admin::Access,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<()> {
    match tls {
        Some(acceptor) => ferry_admin::serve_tls(listener, source, access, acceptor).await,
        None => ferry_admin::serve(listener, source, access).await,
    }
}

/// The proxy's and the admin endpoint's listeners, with their addresses.
type Listening = (TcpListener, SocketAddr);

async fn listeners(cfg: &Config) -> Result<(Listening, Listening), AppError> {
    let bind = |what: &'static str, addr: String| async move {
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| AppError::Bind {
                what,
                addr: addr.clone(),
                source,
            })?;
        let local =
            listener
                .local_addr()
                .map_err(|source| AppError::Bind { what, addr, source })?;
        Ok::<_, AppError>((listener, local))
    };
    Ok((
        bind("proxy.listen", cfg.proxy.listen.clone()).await?,
        bind("admin.listen", cfg.admin.listen.clone()).await?,
    ))
}

/// The operator's operations, wired to the coordinator (`control`) and the
/// batcher (`commands`).
fn operations(
    cfg: &Config,
    roles: &watch::Receiver<Topology>,
    (status, ticks, gate): (&SharedStatus, &Arc<SyncPoint>, &Arc<Gate>),
    reads: Option<Arc<ReadRouting>>,
    (control, commands): (
        tokio::sync::mpsc::Sender<Control>,
        tokio::sync::mpsc::Sender<SuspendCommand>,
    ),
) -> Result<Operations, AppError> {
    let patterns = patterns(cfg)?;
    let switchover = Arc::new(Switchover {
        roles: roles.clone(),
        gate: gate.clone(),
        ticks: ticks.clone(),
        control: control.clone(),
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
        control: control.clone(),
        patterns: patterns.clone(),
        configured: cfg.nodes.iter().map(|n| n.name.clone()).collect(),
        state: Arc::new(std::sync::RwLock::new(None)),
        running: tokio::sync::Mutex::new(()),
    });
    Ok(Operations {
        roles: roles.clone(),
        replication: status.clone(),
        control,
        commands,
        patterns,
        switchover,
        adder,
    })
}
