//! `ferry repair NODE [TABLE]`: rewrite on a replica, with the master's
//! rows at one snapshot, the key ranges the background check found
//! different there (or a whole table); shipping goes on.

use super::admin_http::call;
use std::process::ExitCode;

pub async fn run(admin: &str, node: &str, table: Option<&str>) -> anyhow::Result<ExitCode> {
    let body = table.map(|t| serde_json::json!({ "table": t }));
    let (code, answer) = call(
        admin,
        hyper::Method::POST,
        &format!("/nodes/{node}/repair"),
        body.as_ref(),
    )
    .await?;
    let doc: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
    if (200..300).contains(&code) {
        let ranges = doc["ranges"].as_array().map_or(0, Vec::len);
        println!(
            "{node}: {ranges} range(s) rewritten with the master's rows ({} rows, batch {})",
            doc["rows"], doc["batch"]
        );
        for r in doc["ranges"].as_array().into_iter().flatten() {
            println!(
                "  {} keys after {} through {}",
                r["table"].as_str().unwrap_or("?"),
                r["after"].as_str().unwrap_or("(start)"),
                r["through"].as_str().unwrap_or("(end)")
            );
        }
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "ferry: repair {node}: {} ({})",
            doc["message"].as_str().unwrap_or(answer.trim()),
            doc["error"].as_str().unwrap_or("error")
        );
        Ok(ExitCode::FAILURE)
    }
}
