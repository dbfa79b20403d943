//! `ferry force-master NODE`: make a node master when the cluster cannot
//! decide by itself (possible data loss; recorded and shown as forced).

use super::admin_http::call;
use std::process::ExitCode;

pub async fn run(admin: &str, node: &str) -> anyhow::Result<ExitCode> {
    let body = serde_json::json!({ "node": node });
    let (code, answer) = call(admin, hyper::Method::POST, "/force-master", Some(&body)).await?;
    let doc: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
    if (200..300).contains(&code) {
        println!(
            "{node}: master at epoch {} (forced: possible data loss; the other nodes are fenced out)",
            doc["epoch"]
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "ferry: force-master {node}: {}",
            doc["message"].as_str().unwrap_or(answer.trim())
        );
        Ok(ExitCode::FAILURE)
    }
}
