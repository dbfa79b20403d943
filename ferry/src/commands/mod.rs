//! One file per `ferry` command.

pub mod add_node;
pub mod admin_http;
pub mod demo;
pub mod force_master;
pub mod init;
pub mod remove_node;
pub mod repair;
pub mod resume;
pub mod resync;
pub mod run;
pub mod status;
pub mod suspend;
pub mod switchover;
pub mod verify;

/// Waits for Ctrl-C or SIGTERM.
pub async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
