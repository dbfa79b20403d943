//! `ferry resync NODE`: copy the master's replicated tables (or, for an old
//! master, only the keys that differ) to a node fenced out of the cluster,
//! at one snapshot, and take it back as a replica.

use super::admin_http::{refused, send};
use std::process::ExitCode;

pub async fn run(admin: &str, node: &str) -> anyhow::Result<ExitCode> {
    let path = format!("/nodes/{node}/resync");
    let doc = match send::<()>(admin, hyper::Method::POST, &path, None).await? {
        Ok(doc) => doc,
        Err(r) => return Ok(refused(&format!("resync {node}"), &r)),
    };
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
}
