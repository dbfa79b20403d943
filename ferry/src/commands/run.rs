//! `ferry run`: proxy, batcher and admin endpoint until a stop signal.

use ferry::app::App;
use ferry::config::Config;
use std::process::ExitCode;

pub async fn run(cfg: Config) -> anyhow::Result<ExitCode> {
    let app = App::start(&cfg).await?;
    super::stop_signal().await;
    tracing::info!("stopping");
    app.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
