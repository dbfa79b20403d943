//! `ferry repair NODE [TABLE]`: rewrite on a replica, with the master's
//! rows at one snapshot, the key ranges the background check found
//! different there (or a whole table); shipping goes on.

use super::admin_http::{ask, refused};
use ferry_admin::api;
use ferry_batcher::suspend::Repaired;
use std::process::ExitCode;

pub async fn run(admin: &str, node: &str, table: Option<&str>) -> anyhow::Result<ExitCode> {
    let body = api::Repair {
        table: table.map(str::to_string),
    };
    let path = format!("/nodes/{node}/repair");
    let doc: Repaired = match ask(admin, hyper::Method::POST, &path, Some(&body)).await? {
        Ok(doc) => doc,
        Err(r) => return Ok(refused(&format!("repair {node}"), &r)),
    };
    println!(
        "{node}: {} range(s) rewritten with the master's rows ({} rows, batch {})",
        doc.ranges.len(),
        doc.rows,
        doc.batch
    );
    for r in &doc.ranges {
        println!(
            "  {} keys after {} through {}",
            r.table,
            r.after.as_deref().unwrap_or("(start)"),
            r.through.as_deref().unwrap_or("(end)")
        );
    }
    Ok(ExitCode::SUCCESS)
}
