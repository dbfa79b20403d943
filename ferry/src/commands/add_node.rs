//! `ferry add-node NAME --dsn DSN [--priority N]`: a new, empty node joins
//! the running cluster as a replica. While the master's tables are copied
//! to it, a progress bar follows `/status` (`adding`).

use super::admin_http::{ask, call, refused};
use ferry::operations::answers::Added;
use ferry::status::Status;
use ferry_admin::api;
use indicatif::{ProgressBar, ProgressStyle};
use std::process::ExitCode;
use std::time::Duration;

pub async fn run(admin: &str, name: &str, dsn: &str, priority: i32) -> anyhow::Result<ExitCode> {
    let body = api::AddNode {
        name: name.to_string(),
        dsn: dsn.to_string(),
        priority: Some(i64::from(priority)),
    };
    let request = {
        let admin = admin.to_string();
        tokio::spawn(async move {
            ask::<_, Added>(&admin, hyper::Method::POST, "/nodes", Some(&body)).await
        })
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} tables, {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{name}: definitions"));
    while !request.is_finished() {
        if let Ok((200, text)) = call(admin, hyper::Method::GET, "/status", None).await {
            let doc: Status = serde_json::from_str(&text).unwrap_or_default();
            if let Some(a) = doc.adding.filter(|a| a.node == name) {
                bar.set_prefix(format!("{name}: {}", a.phase.as_str()));
                bar.set_length(a.tables as u64);
                bar.set_position(a.tables_done as u64);
                bar.set_message(format!("{} rows", a.rows));
            }
        }
        bar.tick();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bar.finish_and_clear();
    let doc = match request.await?? {
        Ok(doc) => doc,
        Err(r) => return Ok(refused(&format!("add-node {name}"), &r)),
    };
    println!(
        "{name}: replica at epoch {} ({} tables, {} rows copied at batch {}); it catches up from the batch stream",
        doc.epoch, doc.tables, doc.rows, doc.batch
    );
    println!(
        "add it to the configuration before Ferry restarts:\n\n{}",
        doc.config
    );
    Ok(ExitCode::SUCCESS)
}
