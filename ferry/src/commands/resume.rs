//! `ferry resume NODE...`: back to shipping, with what changed meanwhile
//! netted per key.

use super::admin_http::ask;
use super::suspend::report;
use std::process::ExitCode;

pub async fn run(admin: &str, nodes: &[String]) -> anyhow::Result<ExitCode> {
    let mut exit = ExitCode::SUCCESS;
    for node in nodes {
        let path = format!("/replicas/{node}/resume");
        let answer = ask::<(), _>(admin, hyper::Method::POST, &path, None).await?;
        if let Some(failed) = report(node, answer) {
            exit = failed;
        }
    }
    Ok(exit)
}
