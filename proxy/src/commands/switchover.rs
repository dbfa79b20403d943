//! `ferry switchover [--to NODE]`: a planned switchover through the admin
//! endpoint; prints who is master now and how long statements were held.

use super::admin_http::{refused, send};
use ferry_admin::api;
use std::process::ExitCode;

pub async fn run(admin: &str, to: Option<&str>) -> anyhow::Result<ExitCode> {
    let body = api::Switchover {
        to: to.map(str::to_string),
    };
    let doc = match send(admin, hyper::Method::POST, "/switchover", Some(&body)).await? {
        Ok(doc) => doc,
        Err(r) => return Ok(refused("switchover", &r)),
    };
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
}
