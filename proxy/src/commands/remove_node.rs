//! `ferry remove-node NODE`: a node other than the master leaves the
//! cluster for good; the master stops keeping the outbox for it.

use super::admin_http::call;
use std::process::ExitCode;

pub async fn run(admin: &str, node: &str) -> anyhow::Result<ExitCode> {
    let (code, answer) = call(
        admin,
        hyper::Method::POST,
        &format!("/nodes/{node}/remove"),
        None,
    )
    .await?;
    let doc: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
    if (200..300).contains(&code) {
        println!("{node}: removed from the cluster (epoch {})", doc["epoch"]);
        if let Some(warning) = doc["warning"].as_str() {
            eprintln!("ferry: remove-node {node}: {warning}");
        }
        println!("{node}: {}", doc["config"].as_str().unwrap_or_default());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "ferry: remove-node {node}: {} ({})",
            doc["message"].as_str().unwrap_or(answer.trim()),
            doc["error"].as_str().unwrap_or("error")
        );
        Ok(ExitCode::FAILURE)
    }
}
