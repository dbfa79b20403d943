//! A small HTTP/1 client for the admin endpoint, for the commands that talk
//! to a running Ferry.

use anyhow::Context;
use ferry::operations::Refusal;
use ferry_wire::tls::{server_name, SslMode, TlsSettings};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::path::PathBuf;

/// Sends `method path` (with a JSON body if given) to the admin endpoint at
/// `base`; returns the status code and the body.
pub async fn call(
    base: &str,
    method: hyper::Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, String)> {
    let uri: hyper::Uri = format!("{}{path}", base.trim_end_matches('/'))
        .parse()
        .context("admin URL")?;
    let host = uri.host().context("admin URL has no host")?.to_string();
    let mut sender = connect(&uri, &host)
        .await
        .with_context(|| format!("cannot reach the admin endpoint at {base}: is ferry running?"))?;
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(uri.path())
        .header(hyper::header::HOST, host);
    if let Some(token) = token()? {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let payload = match body {
        Some(b) => {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
            Bytes::from(b.to_string())
        }
        None => Bytes::new(),
    };
    let res = sender.send_request(req.body(Full::new(payload))?).await?;
    let status = res.status().as_u16();
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// An HTTP/1 connection to the endpoint; for an `https` URL over TLS,
/// checked against the CA certificate `FERRY_TLS_CA` names.
async fn connect(uri: &hyper::Uri, host: &str) -> anyhow::Result<Sender> {
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
    if !https {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        return Ok(sender);
    }
    let ca = std::env::var_os("FERRY_TLS_CA")
        .context("an https admin URL needs FERRY_TLS_CA: the CA certificate that signed Ferry's")?;
    let tls = TlsSettings::new(SslMode::VerifyFull, Some(PathBuf::from(ca)))?
        .config()
        .context("a TLS configuration")?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(server_name(host)?, tcp)
        .await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// The admin token the commands send: `FERRY_ADMIN_TOKEN`, else the
/// `[admin]` token of the configuration `FERRY_CONFIG` names.
fn token() -> anyhow::Result<Option<String>> {
    if let Some(t) = std::env::var("FERRY_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        return Ok(Some(t));
    }
    let Some(path) = std::env::var_os("FERRY_CONFIG") else {
        return Ok(None);
    };
    let cfg = ferry::config::Config::load(std::path::Path::new(&path))
        .with_context(|| format!("reading the admin token from {}", path.to_string_lossy()))?;
    Ok(cfg.admin.token()?)
}

/// Sends a request with a typed body; returns the answer's JSON body, or
/// the refusal the endpoint answered with.
pub async fn send<B: serde::Serialize>(
    base: &str,
    method: hyper::Method,
    path: &str,
    body: Option<&B>,
) -> anyhow::Result<Result<serde_json::Value, Refusal>> {
    let body = body.map(serde_json::to_value).transpose()?;
    let (status, text) = call(base, method, path, body.as_ref()).await?;
    Ok(if (200..300).contains(&status) {
        Ok(serde_json::from_str(&text).unwrap_or_default())
    } else {
        Err(Refusal::of_answer(status, &text))
    })
}

/// Prints why `what` was refused; the exit code that says so.
pub fn refused(what: &str, r: &Refusal) -> std::process::ExitCode {
    eprintln!("ferry: {what}: {} ({})", r.message, r.code);
    std::process::ExitCode::from(r.kind.exit_code())
}

/// Like [`send`], the answer read as `T` (the operation's typed answer).
pub async fn ask<B: serde::Serialize, T: serde::de::DeserializeOwned>(
    base: &str,
    method: hyper::Method,
    path: &str,
    body: Option<&B>,
) -> anyhow::Result<Result<T, Refusal>> {
    match send(base, method, path, body).await? {
        Ok(doc) => Ok(Ok(serde_json::from_value(doc).with_context(|| {
            format!("{path}: the answer is not what this ferry expects")
        })?)),
        Err(r) => Ok(Err(r)),
    }
}
