//! `ferry init`: install the schema and capture on every node.

use anyhow::Context;
use ferry::config::Config;
use std::path::Path;
use std::process::ExitCode;

pub async fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let cfg =
        Config::load(config).with_context(|| format!("configuration {}", config.display()))?;
    let tables = ferry::app::install(&cfg, true).await?;
    println!(
        "ferry schema and capture installed on {} nodes for {tables} replicated tables",
        cfg.nodes.len()
    );
    Ok(ExitCode::SUCCESS)
}
