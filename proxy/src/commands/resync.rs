//! `ferry resync NODE`: copy the master's replicated tables to a node fenced
//! out of the cluster, at one snapshot, and take it back as a replica.

use super::admin_http::call;
use std::process::ExitCode;

pub async fn run(admin: &str, node: &str) -> anyhow::Result<ExitCode> {
    let (code, answer) = call(
        admin,
        hyper::Method::POST,
        &format!("/nodes/{node}/resync"),
        None,
    )
    .await?;
    let doc: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
    if (200..300).contains(&code) {
        println!(
            "{node}: replica again ({} rows in {} tables copied; epoch {})",
            doc["rows"], doc["tables"], doc["epoch"]
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "ferry: resync {node}: {} ({})",
            doc["message"].as_str().unwrap_or(answer.trim()),
            doc["error"].as_str().unwrap_or("error")
        );
        Ok(ExitCode::FAILURE)
    }
}
