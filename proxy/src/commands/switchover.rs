//! `ferry switchover [--to NODE]`: a planned switchover through the admin
//! endpoint; prints who is master now and how long statements were held.

use super::admin_http::call;
use std::process::ExitCode;

pub async fn run(admin: &str, to: Option<&str>) -> anyhow::Result<ExitCode> {
    let body = match to {
        Some(node) => serde_json::json!({ "to": node }),
        None => serde_json::json!({}),
    };
    let (code, answer) = call(admin, hyper::Method::POST, "/switchover", Some(&body)).await?;
    let doc: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
    if (200..300).contains(&code) {
        println!(
            "{} is master at epoch {} ({} is its replica); statements held {} ms \
             (drain {} ms, catch-up {} ms, promote {} ms)",
            doc["to"].as_str().unwrap_or("?"),
            doc["epoch"],
            doc["from"].as_str().unwrap_or("?"),
            doc["held_ms"],
            doc["drain_ms"],
            doc["catch_up_ms"],
            doc["promote_ms"],
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "ferry: switchover: {}",
            doc["message"].as_str().unwrap_or(answer.trim())
        );
        Ok(ExitCode::FAILURE)
    }
}
