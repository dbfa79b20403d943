//! The running Ferry process: proxy listener, batcher and admin endpoint,
//! started together and stopped together.

use crate::config::Config;
use crate::frontend::cancel::CancelRegistry;
use crate::frontend::listener;
use crate::frontend::session::{FrontendMetrics, Shared};
use crate::frontend::startup::{AuthMethod, UserDb};
use crate::frontend::tracked_pump::{ReadMetrics, ReadMode, ReadRouting};
use ferry_admin::{Answer, Request, StatusSource};
use ferry_batcher::install::{connect, install_master, prepare_replica};
use ferry_batcher::pattern::Pattern;
use ferry_batcher::run::SuspendConfig;
use ferry_batcher::suspend::Command as SuspendCommand;
use ferry_batcher::{
    BatchError, Batcher, BatcherConfig, Fallback, Metrics, NodeTarget, SharedStatus, SyncPoint,
};
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
    let topo = topology(cfg)?;
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
    topology: Topology,
    replication: SharedStatus,
    registry: Registry,
    frontend: FrontendMetrics,
    sync: Option<Arc<SyncPoint>>,
    /// Suspend/cancel/resume requests to the batcher.
    commands: tokio::sync::mpsc::Sender<SuspendCommand>,
}

impl StatusSource for AppStatus {
    fn status(&self) -> serde_json::Value {
        let r = match self.replication.read() {
            Ok(r) => r.clone(),
            Err(_) => Default::default(),
        };
        let mut nodes = vec![serde_json::json!({
            "name": self.topology.master.name,
            "role": "master",
            "reachable": r.master_reachable,
            "applied_batch": r.last_batch,
            "lag_batches": 0,
            "lag_rows": 0,
            "lag_seconds": 0.0,
            "last_error": r.error,
        })];
        for n in &self.topology.replicas {
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
            }));
        }
        serde_json::json!({
            "master": self.topology.master.name,
            "mode": if self.sync.is_some() { "sync" } else { "async" },
            "sync": self.sync.as_ref().map(|s| serde_json::json!({
                "replicas_required": s.replicas_required(),
                "degraded": s.is_degraded(),
                "waiting_commits": s.waiting(),
            })),
            "last_batch": r.last_batch,
            "outbox_backlog": r.outbox_backlog,
            "tables": r.tables,
            "client_connections": self.frontend.connections.get(),
            "nodes": nodes,
            "schema_changes": r.schema_changes,
        })
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    fn healthy(&self) -> bool {
        self.replication
            .read()
            .map(|r| r.master_reachable)
            .unwrap_or(false)
    }

    fn request(&self, request: Request) -> Answer {
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

/// A started Ferry.
pub struct App {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl App {
    /// Binds both listeners and starts every part.
    pub async fn start(cfg: &Config) -> Result<App, AppError> {
        let topo = topology(cfg)?;
        let (include, exclude) = patterns(cfg)?;
        match install(cfg, false).await {
            Ok(n) => info!(tables = n, "capture installed"),
            Err(e @ AppError::Batch(BatchError::SchemaMismatch(_))) => return Err(e),
            Err(e) => warn!(error = %e, "install at start incomplete; the batcher retries"),
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
        // Batcher ticks are counted when commits wait for replicas (sync
        // mode) or reads need to know which replica has what (causal).
        let sync_mode = cfg.replication.mode == "sync";
        let ticks = (sync_mode || cfg.proxy.reads != "master").then(|| {
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
                topo.replicas.len(),
                &mut registry,
            ))
        });
        let sync = ticks.clone().filter(|_| sync_mode);
        let reads = match (cfg.proxy.reads.as_str(), &ticks) {
            ("replicas" | "causal", Some(ticks)) => Some(Arc::new(ReadRouting {
                mode: if cfg.proxy.reads == "causal" {
                    ReadMode::Causal
                } else {
                    ReadMode::Replicas
                },
                replicas: topo
                    .replicas
                    .iter()
                    .map(|n| (n.name.clone(), n.target.clone()))
                    .collect(),
                ticks: ticks.clone(),
                metrics: ReadMetrics::register(&mut registry),
                connect_timeout: Duration::from_millis(cfg.proxy.connect_timeout_ms),
            })),
            _ => None,
        };

        let (commands, commands_rx) = tokio::sync::mpsc::channel(16);
        let node = |n: &Node| NodeTarget {
            name: n.name.clone(),
            target: n.target.clone(),
        };
        let batcher = Batcher::new(
            BatcherConfig {
                master: node(&topo.master),
                replicas: topo.replicas.iter().map(node).collect(),
                include,
                exclude,
                tick: Duration::from_millis(cfg.replication.tick_ms),
                housekeeping: Duration::from_millis(cfg.replication.housekeeping_ms),
                apply_timeout: Duration::from_millis(cfg.replication.apply_timeout_ms),
                sync: ticks.clone(),
                suspend: SuspendConfig {
                    min_lead: Duration::from_millis(cfg.suspend.min_lead_ms),
                    hook: Some(cfg.suspend.hook.clone()).filter(|h| !h.trim().is_empty()),
                    dsns: cfg
                        .nodes
                        .iter()
                        .map(|n| (n.name.clone(), n.dsn.clone()))
                        .collect(),
                },
            },
            status.clone(),
            metrics,
            commands_rx,
        );
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
            master_name: topo.master.name.clone(),
            master: topo.master.target.clone(),
            max_message: cfg.proxy.max_message_bytes,
            connect_timeout: Duration::from_millis(cfg.proxy.connect_timeout_ms),
            cancels: CancelRegistry::default(),
            metrics: frontend_metrics.clone(),
            sync: sync.clone(),
            reads,
        });
        let source: Arc<dyn StatusSource> = Arc::new(AppStatus {
            topology: topo.clone(),
            replication: status,
            registry,
            frontend: frontend_metrics,
            sync,
            commands,
        });
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(batcher.run(rx.clone())));
        tasks.push(tokio::spawn(listener::serve(proxy, shared, rx.clone())));
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
            tasks,
        })
    }

    /// Stops accepting, stops the batcher between batches, and waits.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}
