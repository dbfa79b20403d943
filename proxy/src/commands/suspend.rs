//! `ferry suspend NODE... --at TIME` (one consistency group) and
//! `ferry suspend NODE... --cancel`, through the admin endpoint.

use super::admin_http::call;
use std::process::ExitCode;

/// Schedules (or cancels) a suspension; prints the answer. Fails with the
/// endpoint's error code and message when refused.
pub async fn run(
    admin: &str,
    nodes: &[String],
    at: Option<&str>,
    cancel: bool,
) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    if cancel {
        for node in nodes {
            let (code, body) = call(
                admin,
                hyper::Method::DELETE,
                &format!("/replicas/{node}/suspend"),
                None,
            )
            .await?;
            failed |= !report(node, code, &body);
        }
    } else {
        let Some(at) = at else {
            anyhow::bail!("give the instant with --at TIME (RFC 3339), or --cancel");
        };
        let body = serde_json::json!({"replicas": nodes, "at": at});
        let (code, answer) = call(admin, hyper::Method::POST, "/suspend", Some(&body)).await?;
        failed = !report(&nodes.join(","), code, &answer);
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints an answer of the admin endpoint; true when it succeeded.
pub fn report(what: &str, code: u16, body: &str) -> bool {
    let doc: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    if (200..300).contains(&code) {
        println!("{what}: {}", doc["state"].as_str().unwrap_or("ok"));
        if let Some(at) = doc["at"].as_str() {
            println!("  at {at}");
        }
        true
    } else {
        eprintln!(
            "ferry: {what}: {} ({})",
            doc["message"].as_str().unwrap_or(body.trim()),
            doc["error"].as_str().unwrap_or("error"),
        );
        false
    }
}
