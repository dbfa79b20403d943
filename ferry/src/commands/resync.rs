//! `ferry resync NODE`: copy the master's replicated tables (or, for an old
//! master, only the keys that differ) to a node fenced out of the cluster,
//! at one snapshot, and take it back as a replica.

use super::admin_http::{ask, refused};
use ferry::operations::answers::Resynced;
use std::process::ExitCode;

pub async fn run(admin: &str, node: &str) -> anyhow::Result<ExitCode> {
    let path = format!("/nodes/{node}/resync");
    let doc: Resynced = match ask::<(), _>(admin, hyper::Method::POST, &path, None).await? {
        Ok(doc) => doc,
        Err(r) => return Ok(refused(&format!("resync {node}"), &r)),
    };
    let what = if doc.copied.keyed {
        "rows of keys that differed"
    } else {
        "rows"
    };
    println!(
        "{node}: replica again ({} {what} in {} tables copied; epoch {})",
        doc.copied.rows, doc.copied.tables, doc.epoch
    );
    if doc.copied.definitions_replaced {
        println!(
            "{node}: its definitions differed from the master's (it missed schema changes) and were replaced with them"
        );
    }
    let quarantined = doc.copied.quarantined;
    if quarantined > 0 {
        println!(
            "{node}: {quarantined} changes it committed that never reached the cluster are kept in its ferry.quarantine"
        );
    }
    Ok(ExitCode::SUCCESS)
}
