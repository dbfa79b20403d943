//! `ferry repair NODE [TABLE]`: rewrite on a replica, with the master's
//! rows at one snapshot, the key ranges the background check found
//! different there (or a whole table); shipping goes on.

use super::admin_http::{refused, send};
use ferry_admin::api;
use std::process::ExitCode;

pub async fn run(admin: &str, node: &str, table: Option<&str>) -> anyhow::Result<ExitCode> {
    let body = api::Repair {
        table: table.map(str::to_string),
    };
    let path = format!("/nodes/{node}/repair");
    let doc = match send(admin, hyper::Method::POST, &path, Some(&body)).await? {
        Ok(doc) => doc,
        Err(r) => return Ok(refused(&format!("repair {node}"), &r)),
    };
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
}
