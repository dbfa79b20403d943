//! `ferry switchover [--to NODE]`: a planned switchover through the admin
//! endpoint; prints who is master now and how long statements were held.

use super::admin_http::{ask, refused};
use ferry::operations::switchover::SwitchoverReport;
use ferry_admin::api;
use std::process::ExitCode;

pub async fn run(admin: &str, to: Option<&str>) -> anyhow::Result<ExitCode> {
    let body = api::Switchover {
        to: to.map(str::to_string),
    };
    let report: SwitchoverReport =
        match ask(admin, hyper::Method::POST, "/switchover", Some(&body)).await? {
            Ok(report) => report,
            Err(r) => return Ok(refused("switchover", &r)),
        };
    println!(
        "{} is master at epoch {} ({} is its replica); statements held {} ms \
         (drain {} ms, catch-up {} ms, promote {} ms)",
        report.to,
        report.epoch,
        report.from,
        report.held_ms,
        report.drain_ms,
        report.catch_up_ms,
        report.promote_ms,
    );
    Ok(ExitCode::SUCCESS)
}
