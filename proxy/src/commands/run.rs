//! `ferry run`: proxy, batcher and admin endpoint until a stop signal.

use anyhow::Context;
use ferry::app::App;
use ferry::config::Config;
use std::path::Path;
use std::process::ExitCode;

pub async fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let cfg =
        Config::load(config).with_context(|| format!("configuration {}", config.display()))?;
    let app = App::start(&cfg).await?;
    super::stop_signal().await;
    tracing::info!("stopping");
    app.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
