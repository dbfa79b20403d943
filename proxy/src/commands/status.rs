//! `ferry status`: the admin endpoint's `/status`, as a table.

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::process::ExitCode;

/// GETs a path from the admin endpoint and returns the body.
pub async fn get(base: &str, path: &str) -> anyhow::Result<String> {
    let uri: hyper::Uri = format!("{}{path}", base.trim_end_matches('/'))
        .parse()
        .context("admin URL")?;
    let host = uri.host().context("admin URL has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("cannot reach the admin endpoint at {base}: is ferry running?"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::get(uri.path())
        .header(hyper::header::HOST, host)
        .body(Empty::<Bytes>::new())?;
    let res = sender.send_request(req).await?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{path} answered {status}");
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Renders the `/status` document for people.
pub fn render(doc: &serde_json::Value) -> String {
    let mut out = format!(
        "master {}  mode {}  last batch {}  outbox backlog {}  tables {}  clients {}\n\n",
        doc["master"].as_str().unwrap_or("?"),
        doc["mode"].as_str().unwrap_or("?"),
        doc["last_batch"],
        doc["outbox_backlog"],
        doc["tables"],
        doc["client_connections"],
    );
    out += &format!(
        "{:<12} {:<8} {:<10} {:>13} {:>11} {:>9} {:>11}  {}\n",
        "node",
        "role",
        "reachable",
        "applied_batch",
        "lag_batches",
        "lag_rows",
        "lag_seconds",
        "last_error"
    );
    for n in doc["nodes"].as_array().into_iter().flatten() {
        out += &format!(
            "{:<12} {:<8} {:<10} {:>13} {:>11} {:>9} {:>11.3}  {}\n",
            n["name"].as_str().unwrap_or("?"),
            n["role"].as_str().unwrap_or("?"),
            n["reachable"].to_string(),
            n["applied_batch"].to_string(),
            n["lag_batches"].to_string(),
            n["lag_rows"].to_string(),
            n["lag_seconds"].as_f64().unwrap_or(0.0),
            n["last_error"].as_str().unwrap_or(""),
        );
    }
    out
}

pub async fn run(admin: &str, json: bool) -> anyhow::Result<ExitCode> {
    let body = get(admin, "/status").await?;
    if json {
        println!("{body}");
    } else {
        let doc: serde_json::Value = serde_json::from_str(&body).context("status is not JSON")?;
        print!("{}", render(&doc));
    }
    Ok(ExitCode::SUCCESS)
}
