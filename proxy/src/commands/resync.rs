//! `ferry resync NODE`: copy the master's replicated tables (or, for an old
//! master, only the keys that differ) to a node fenced out of the cluster,
//! at one snapshot, and take it back as a replica.

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
        let what = if doc["keyed"] == true {
            "rows of keys that differed"
        } else {
            "rows"
        };
        println!(
            "{node}: replica again ({} {what} in {} tables copied; epoch {})",
            doc["rows"], doc["tables"], doc["epoch"]
        );
        if doc["definitions_replaced"] == true {
            println!(
                "{node}: its definitions differed from the master's (it missed schema changes) and were replaced with them"
            );
        }
        let quarantined = doc["quarantined"].as_u64().unwrap_or(0);
        if quarantined > 0 {
            println!(
                "{node}: {quarantined} changes it committed that never reached the cluster are kept in its ferry.quarantine"
            );
        }
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
