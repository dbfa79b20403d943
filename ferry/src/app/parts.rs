//! Each part of the running process, built from the configuration: the
//! sync point, read routing, the batcher's configuration, the coordinator
//! and what client sessions share.

use crate::config::{ClientAuth, Config, Mode, Reads, SyncFallback};
use crate::frontend::cancel::CancelRegistry;
use crate::frontend::client_stream::ProxyTls;
use crate::frontend::hold::Gate;
use crate::frontend::lookup::UserLookup;
use crate::frontend::pump::{ReadMetrics, ReadMode, ReadRouting};
use crate::frontend::read_balance::ReaderCounts;
use crate::frontend::shared::{FrontendMetrics, Shared};
use crate::frontend::startup::{AuthMethod, ClientLimit, UserDb};
use ferry_batcher::pattern::Pattern;
use ferry_batcher::run::SuspendConfig;
use ferry_batcher::verify::{Verifier, VerifyConfig};
use ferry_batcher::{BatcherConfig, SharedStatus};
use ferry_cluster::coordinator::{Control, Coordinator, SharedClusterStatus};
use ferry_cluster::health::HealthConfig;
use ferry_cluster::{Fallback, SyncPoint};
use ferry_cluster::{Node, Topology};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Batcher ticks tell which replica has applied what: commits wait for
/// them in sync mode, causal reads and switchovers ask. `nodes` gives the
/// slots.
pub(super) fn sync_point(cfg: &Config, nodes: &[Node], registry: &mut Registry) -> Arc<SyncPoint> {
    let fallback = if cfg.replication.sync_fallback == SyncFallback::Async {
        Fallback::Async(Duration::from_millis(cfg.replication.sync_timeout_ms))
    } else {
        Fallback::Wait
    };
    let k = if sync_mode(cfg) {
        cfg.replication.sync_replicas
    } else {
        0
    };
    Arc::new(SyncPoint::new(
        k,
        fallback,
        nodes.iter().map(|n| n.name.clone()).collect(),
        registry,
    ))
}

/// `replication.mode = "sync"`.
pub(super) fn sync_mode(cfg: &Config) -> bool {
    cfg.replication.mode == Mode::Sync
}

/// Read routing, when reads may go to replicas (`proxy.reads`).
pub(super) fn read_routing(
    cfg: &Config,
    nodes: &[Node],
    ticks: &Arc<SyncPoint>,
    registry: &mut Registry,
) -> Option<Arc<ReadRouting>> {
    let mode = match cfg.proxy.reads {
        Reads::Replicas => ReadMode::Replicas,
        Reads::Causal => ReadMode::Causal,
        Reads::Master => return None,
    };
    Some(Arc::new(ReadRouting {
        mode,
        // Every node, in the SyncPoint's slot order: the batcher reports
        // which of them serve as replicas at any time.
        replicas: std::sync::RwLock::new(
            nodes
                .iter()
                .map(|n| (n.name.clone(), n.target.clone()))
                .collect(),
        ),
        ticks: ticks.clone(),
        metrics: ReadMetrics::register(registry),
        readers: Arc::new(ReaderCounts::register(registry)),
        connect_timeout: Duration::from_millis(cfg.proxy.connect_timeout_ms),
    }))
}

/// The batcher's configuration for the starting topology.
pub(super) fn batcher_config(
    cfg: &Config,
    topo: &Topology,
    ticks: &Arc<SyncPoint>,
    (include, exclude): (Vec<Pattern>, Vec<Pattern>),
) -> BatcherConfig {
    BatcherConfig {
        master: topo.master.clone(),
        replicas: topo.replicas.clone(),
        include,
        exclude,
        tick: Duration::from_millis(cfg.replication.tick_ms),
        housekeeping: Duration::from_millis(cfg.replication.housekeeping_ms),
        apply_timeout: Duration::from_millis(cfg.replication.apply_timeout_ms),
        spill_dir: cfg
            .replication
            .spill_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir),
        sync: Some(ticks.clone()),
        retention_max_bytes: cfg.retention.max_bytes.map(|b| b.0),
        retention_max_age: cfg.retention.max_age_s.map(Duration::from_secs),
        compact_after: cfg.retention.compact_after.0,
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
    }
}

/// The coordinator over `nodes`, seen in configured order; it learns from
/// the batcher's status when the master last answered a cut.
pub(super) fn coordinator(
    cfg: &Config,
    nodes: &[Node],
    roles: watch::Sender<Topology>,
    (cluster, replication): (SharedClusterStatus, SharedStatus),
    control: mpsc::Receiver<Control>,
) -> Coordinator {
    let configured: Vec<Node> = cfg
        .nodes
        .iter()
        .filter_map(|c| nodes.iter().find(|n| n.name == c.name).cloned())
        .collect();
    Coordinator::new(
        HealthConfig {
            interval: Duration::from_millis(cfg.health.interval_ms),
            failures: cfg.health.failures,
        },
        &configured,
        roles,
        cluster,
        control,
        Box::new(move |name: &str| {
            replication
                .read()
                .ok()
                .filter(|s| s.master == name)
                .and_then(|s| s.master_contact)
        }),
    )
}

/// What every client session shares.
pub(super) struct SessionParts {
    pub roles: watch::Receiver<Topology>,
    pub metrics: FrontendMetrics,
    pub sync: Option<Arc<SyncPoint>>,
    pub reads: Option<Arc<ReadRouting>>,
    pub gate: Arc<Gate>,
    pub stopping: watch::Receiver<bool>,
}

pub(super) fn sessions(cfg: &Config, tls: Option<ProxyTls>, parts: SessionParts) -> Arc<Shared> {
    Arc::new(Shared {
        users: {
            let listed = UserDb::new(
                cfg.users
                    .iter()
                    .map(|u| (u.name.as_str(), u.password.as_str(), u.login())),
            );
            if cfg.proxy.auth_lookup {
                listed.with_lookup(UserLookup::new(parts.roles.clone()))
            } else {
                listed
            }
        },
        limit: ClientLimit::new(cfg.proxy.max_client_conn),
        startup_timeout: Duration::from_millis(cfg.proxy.startup_timeout_ms),
        tls,
        auth: match cfg.proxy.auth {
            ClientAuth::Md5 => AuthMethod::Md5,
            ClientAuth::ScramSha256 => AuthMethod::ScramSha256,
        },
        roles: parts.roles,
        hold_timeout: Duration::from_millis(cfg.proxy.hold_timeout_ms),
        max_message: cfg.proxy.max_message_bytes,
        connect_timeout: Duration::from_millis(cfg.proxy.connect_timeout_ms),
        cancels: CancelRegistry::default(),
        metrics: parts.metrics,
        sync: parts.sync,
        reads: parts.reads,
        gate: parts.gate,
        stopping: parts.stopping,
    })
}
