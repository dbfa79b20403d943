//! The accept loop of the proxy port.

use super::session::handle;
use super::shared::Shared;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::warn;

/// Accepts clients until `shutdown` turns true; each session runs in its
/// own task, so one client's fault never touches another.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(handle(stream, peer, shared.clone()));
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}
