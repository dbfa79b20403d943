//! `ferry remove-node NODE`: a node other than the master leaves the
//! cluster for good; the master stops keeping the outbox for it.

use super::admin_http::{ask, refused};
use ferry::operations::answers::Removed;
use std::process::ExitCode;

pub async fn run(admin: &str, node: &str) -> anyhow::Result<ExitCode> {
    let path = format!("/nodes/{node}/remove");
    let doc: Removed = match ask::<(), _>(admin, hyper::Method::POST, &path, None).await? {
        Ok(doc) => doc,
        Err(r) => return Ok(refused(&format!("remove-node {node}"), &r)),
    };
    println!("{node}: removed from the cluster (epoch {})", doc.epoch);
    if let Some(warning) = &doc.warning {
        eprintln!("ferry: remove-node {node}: {warning}");
    }
    println!("{node}: {}", doc.config);
    Ok(ExitCode::SUCCESS)
}
