//! What every client session shares: the users, the topology, the
//! timeouts, the sync point and read routing, the gate, the metrics.

use super::cancel::CancelRegistry;
use super::client_stream::ProxyTls;
use super::hold::Gate;
use super::pump::ReadRouting;
use super::startup::{AuthMethod, ClientLimit, UserDb};
use ferry_cluster::SyncPoint;
use ferry_cluster::Topology;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Front-end metrics.
#[derive(Clone, Default)]
pub struct FrontendMetrics {
    pub connections: Gauge,
    pub connections_total: Counter,
    pub protocol_errors: Counter,
    /// Clients refused with 53300 (`proxy.max_client_conn`).
    pub refused_full: Counter,
    /// Logins refused with 28P01.
    pub auth_failures: Counter,
}

impl FrontendMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "ferry_client_connections",
            "Open client sessions",
            m.connections.clone(),
        );
        registry.register(
            "ferry_client_connections_accepted",
            "Client sessions accepted",
            m.connections_total.clone(),
        );
        registry.register(
            "ferry_client_protocol_errors",
            "Client connections closed for a protocol violation",
            m.protocol_errors.clone(),
        );
        registry.register(
            "ferry_client_connections_refused_full",
            "Clients refused with 53300 because proxy.max_client_conn sessions were open",
            m.refused_full.clone(),
        );
        registry.register(
            "ferry_client_auth_failures",
            "Client logins refused for a wrong password or an unknown user",
            m.auth_failures.clone(),
        );
        m
    }
}

/// What every session shares.
pub struct Shared {
    pub users: UserDb,
    pub auth: AuthMethod,
    /// `proxy.max_client_conn`.
    pub limit: ClientLimit,
    /// How long a client may take to start up and authenticate.
    pub startup_timeout: Duration,
    /// Client TLS (`proxy.tls`), unless disabled.
    pub tls: Option<ProxyTls>,
    /// The current topology: which node is master, in which epoch.
    pub roles: watch::Receiver<Topology>,
    /// How long a new session waits for a master during a failover.
    pub hold_timeout: Duration,
    pub max_message: usize,
    pub connect_timeout: Duration,
    pub cancels: CancelRegistry,
    pub metrics: FrontendMetrics,
    /// Set in synchronous mode: commits wait for the replicas here.
    pub sync: Option<Arc<SyncPoint>>,
    /// Set when reads may go to replicas.
    pub reads: Option<Arc<ReadRouting>>,
    /// Closed during a planned switchover, and while Ferry stops.
    pub gate: Arc<Gate>,
    /// Turns true when Ferry stops: every session ends with 57P01.
    pub stopping: watch::Receiver<bool>,
}
