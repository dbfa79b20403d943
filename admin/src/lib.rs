//! The admin HTTP endpoint.
//!
//! It reads state and carries out requests through [`StatusSource`] only,
//! so it knows nothing of the batcher's or the proxy's internals. One route
//! per file.

mod access;
mod add_node;
pub mod api;
mod force_master;
mod health;
mod metrics;
mod remove_node;
mod repair;
mod reply;
mod resume;
mod resync;
mod status;
mod suspend;
mod switchover;

pub use access::Access;

use axum::extract::FromRef;
use axum::routing::{get, post};
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use tokio::net::TcpListener;

/// A request that changes what the cluster does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Suspend these replicas (one consistency group) at an instant.
    Suspend { replicas: Vec<String>, at: String },
    /// Cancel a replica's scheduled suspension.
    CancelSuspend { replica: String },
    /// Return a suspended replica to normal shipping.
    Resume { replica: String },
    /// Make a node master when the cluster cannot decide (possible data
    /// loss).
    ForceMaster { node: String },
    /// Copy the master's replicated tables to a fenced node and take it
    /// back as a replica.
    Resync { node: String },
    /// A planned switchover to a replica (the best one when `None`).
    Switchover { to: Option<String> },
    /// A new, empty node joins as a replica.
    AddNode {
        name: String,
        dsn: String,
        priority: i32,
    },
    /// A node other than the master leaves the cluster for good.
    RemoveNode { node: String },
    /// Rewrite, on a replica, the ranges found different there (or a
    /// whole table) with the master's rows.
    Repair {
        replica: String,
        table: Option<String>,
    },
}

/// The answer to a [`Request`]: an HTTP status and a JSON body (on refusal
/// `{"error": code, "message": text}`).
pub type Answer = Pin<Box<dyn Future<Output = (u16, serde_json::Value)> + Send>>;

/// What the endpoint can ask of the running process.
pub trait StatusSource: Send + Sync + 'static {
    /// The cluster status document served at `/status`.
    fn status(&self) -> serde_json::Value;
    /// Prometheus text exposition served at `/metrics`.
    fn metrics(&self) -> String;
    /// Whether the process can serve: `/health` answers 200 or 503.
    fn healthy(&self) -> bool;
    /// What is wrong with the cluster although the process serves (a
    /// replica that differs from the master, one that is unreachable),
    /// one sentence each: `/health` lists them under its status line.
    fn problems(&self) -> Vec<String>;
    /// One node's health for `/nodes/{name}/health`: whether it serves in
    /// its role, and why not (None: no such node).
    fn node_health(&self, node: &str) -> Option<(bool, String)>;
    /// Carries out a request.
    fn request(&self, request: Request) -> Answer;
}

pub(crate) type Source = Arc<dyn StatusSource>;

/// What the handlers share: the process, and the access rule.
#[derive(Clone)]
pub(crate) struct Shared {
    source: Source,
    access: Arc<Access>,
}

impl FromRef<Shared> for Source {
    fn from_ref(s: &Shared) -> Source {
        s.source.clone()
    }
}

impl FromRef<Shared> for Arc<Access> {
    fn from_ref(s: &Shared) -> Arc<Access> {
        s.access.clone()
    }
}

/// The router, exposed for tests: reads open, requests behind
/// [`access::require`].
pub fn router(source: Source, access: Access) -> Router {
    let shared = Shared {
        source,
        access: Arc::new(access),
    };
    let mutating = Router::new()
        .route("/suspend", post(suspend::post_group))
        .route(
            "/replicas/{name}/suspend",
            post(suspend::post).delete(suspend::delete),
        )
        .route("/replicas/{name}/resume", post(resume::post))
        .route("/force-master", post(force_master::post))
        .route("/switchover", post(switchover::post))
        .route("/nodes", post(add_node::post))
        .route("/nodes/{name}/resync", post(resync::post))
        .route("/nodes/{name}/remove", post(remove_node::post))
        .route("/nodes/{name}/repair", post(repair::post))
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            access::require,
        ));
    Router::new()
        .route("/health", get(health::get))
        .route("/nodes/{name}/health", get(health::node))
        .route("/status", get(status::get))
        .route("/metrics", get(metrics::get))
        .merge(mutating)
        .with_state(shared)
}

/// Serves the endpoint over TLS (`[admin] tls`): each connection's
/// handshake, then HTTP/1 on it, with the peer's address for the log.
pub async fn serve_tls(
    listener: TcpListener,
    source: Arc<dyn StatusSource>,
    access: Access,
    acceptor: tokio_rustls::TlsAcceptor,
) -> std::io::Result<()> {
    let router = router(source, access);
    loop {
        let (tcp, peer) = listener.accept().await?;
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(peer = %peer, error = %e, "admin TLS handshake failed");
                    return;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(
                router.layer(axum::Extension(axum::extract::ConnectInfo(peer))),
            );
            let io = hyper_util::rt::TokioIo::new(tls);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(peer = %peer, error = %e, "admin connection ended");
            }
        });
    }
}

/// Serves the endpoint on a bound listener until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn StatusSource>,
    access: Access,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(source, access).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}
