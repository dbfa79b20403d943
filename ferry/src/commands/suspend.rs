//! `ferry suspend NODE... --at TIME` (one consistency group) and
//! `ferry suspend NODE... --cancel`, through the admin endpoint.

use super::admin_http::{ask, refused};
use ferry::operations::Refusal;
use ferry_admin::api;
use ferry_batcher::suspend::Answer;
use std::process::ExitCode;

/// Schedules (or cancels) a suspension; prints the answer. Fails with the
/// endpoint's error code and message when refused.
pub async fn run(
    admin: &str,
    nodes: &[String],
    at: Option<&str>,
    cancel: bool,
) -> anyhow::Result<ExitCode> {
    let mut exit = ExitCode::SUCCESS;
    if cancel {
        for node in nodes {
            let path = format!("/replicas/{node}/suspend");
            let answer = ask::<(), _>(admin, hyper::Method::DELETE, &path, None).await?;
            if let Some(failed) = report(node, answer) {
                exit = failed;
            }
        }
    } else {
        let Some(at) = at else {
            anyhow::bail!("give the instant with --at TIME (RFC 3339), or --cancel");
        };
        let body = api::SuspendGroup {
            replicas: nodes.to_vec(),
            at: at.to_string(),
        };
        let answer = ask(admin, hyper::Method::POST, "/suspend", Some(&body)).await?;
        if let Some(failed) = report(&nodes.join(","), answer) {
            exit = failed;
        }
    }
    Ok(exit)
}

/// Prints an answer of the admin endpoint; the exit code of a refusal.
pub fn report(what: &str, answer: Result<Answer, Refusal>) -> Option<ExitCode> {
    match answer {
        Ok(doc) => {
            println!("{what}: {}", doc.state.as_str());
            if let Some(at) = &doc.at {
                println!("  at {at}");
            }
            None
        }
        Err(r) => Some(refused(what, &r)),
    }
}
