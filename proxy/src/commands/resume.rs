//! `ferry resume NODE...`: back to shipping, with what changed meanwhile
//! netted per key.

use super::admin_http::call;
use super::suspend::report;
use std::process::ExitCode;

pub async fn run(admin: &str, nodes: &[String]) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for node in nodes {
        let (code, body) = call(
            admin,
            hyper::Method::POST,
            &format!("/replicas/{node}/resume"),
            None,
        )
        .await?;
        failed |= !report(node, code, &body);
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
