//! The admin HTTP endpoint.
//!
//! It reads state through [`StatusSource`] only, so it knows nothing of the
//! batcher's or the proxy's internals. One route per file.

mod health;
mod metrics;
mod status;

use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use tokio::net::TcpListener;

/// What the endpoint can ask of the running process.
pub trait StatusSource: Send + Sync + 'static {
    /// The cluster status document served at `/status`.
    fn status(&self) -> serde_json::Value;
    /// Prometheus text exposition served at `/metrics`.
    fn metrics(&self) -> String;
    /// Whether the process can serve: `/health` answers 200 or 503.
    fn healthy(&self) -> bool;
}

pub(crate) type Source = Arc<dyn StatusSource>;

/// The router, exposed for tests.
pub fn router(source: Source) -> Router {
    Router::new()
        .route("/health", get(health::get))
        .route("/status", get(status::get))
        .route("/metrics", get(metrics::get))
        .with_state(source)
}

/// Serves the endpoint on a bound listener until the task is dropped.
pub async fn serve(listener: TcpListener, source: Arc<dyn StatusSource>) -> std::io::Result<()> {
    axum::serve(listener, router(source)).await
}
