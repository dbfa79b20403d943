//! Ferry's side of TLS, from `proxy.tls`, `tls_cert` and `tls_key` (and
//! `admin.tls`, which serves the admin endpoint with the same files): the
//! certificate and key are read once, at start.

use super::AppError;
use crate::config::{Config, ProxyTlsMode};
use crate::frontend::client_stream::ProxyTls;
use ferry_wire::tls::{provider, read_certs};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use std::path::Path;
use std::sync::Arc;

/// The acceptor sessions use, or None with `proxy.tls = "disable"`.
pub(super) fn proxy_tls(cfg: &Config) -> Result<Option<ProxyTls>, AppError> {
    let required = match cfg.proxy.tls {
        ProxyTlsMode::Disable => return Ok(None),
        ProxyTlsMode::Allow => false,
        ProxyTlsMode::Require => true,
    };
    Ok(Some(ProxyTls {
        acceptor: acceptor(cfg, "proxy.tls")?,
        required,
    }))
}

/// The admin endpoint's acceptor (`admin.tls`), with the same files.
pub(super) fn admin_tls(cfg: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>, AppError> {
    if !cfg.admin.tls {
        return Ok(None);
    }
    acceptor(cfg, "admin.tls").map(Some)
}

/// An acceptor with `proxy.tls_cert` and `proxy.tls_key` (`what` names the
/// key that asked for it, in errors).
fn acceptor(cfg: &Config, what: &str) -> Result<tokio_rustls::TlsAcceptor, AppError> {
    let (Some(cert), Some(key)) = (&cfg.proxy.tls_cert, &cfg.proxy.tls_key) else {
        return Err(AppError::Config(format!(
            "{what} needs proxy.tls_cert and proxy.tls_key"
        )));
    };
    let tls = |e: String| AppError::Config(format!("{what}: {e}"));
    let certs = read_certs(Path::new(cert)).map_err(|e| tls(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| tls(format!("{key}: {e}")))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
