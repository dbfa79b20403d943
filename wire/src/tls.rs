//! TLS to the servers, as a node's DSN asks for it with libpq's words:
//! `sslmode=disable|prefer|require|verify-ca|verify-full` and
//! `sslrootcert=FILE`. The same settings serve Ferry's raw connections
//! (client sessions, apply) and its tokio-postgres control sessions
//! ([`RustlsConnect`]), so every session to a node is protected alike.
//!
//! As in libpq: `prefer` (the default) uses TLS when the server offers it,
//! `require` insists on it without checking the certificate, `verify-ca`
//! checks it against `sslrootcert`, `verify-full` checks the host name
//! too. A Unix-socket host never uses TLS.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(word: &str) -> Result<Self, TlsError> {
        Ok(match word {
            "disable" => Self::Disable,
            "allow" | "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => return Err(TlsError::Mode(other.to_string())),
        })
    }
}

/// Why TLS settings could not be used.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("sslmode {0:?} is not one of disable, prefer, require, verify-ca, verify-full")]
    Mode(String),
    #[error("sslmode {0:?} needs sslrootcert (the CA certificate that signed the server's)")]
    NoRootCert(&'static str),
    #[error("cannot read {path}: {detail}")]
    Pem { path: String, detail: String },
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A node's TLS settings, with the rustls configuration made from them
/// once (certificates read when the configuration is loaded, not per
/// session).
#[derive(Clone, Default)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
    config: Option<Arc<ClientConfig>>,
}

impl PartialEq for TlsSettings {
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode && self.root_cert == other.root_cert
    }
}

impl Eq for TlsSettings {}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("mode", &self.mode)
            .field("root_cert", &self.root_cert)
            .finish()
    }
}

impl TlsSettings {
    /// Settings for `mode`, reading `root_cert` now.
    pub fn new(mode: SslMode, root_cert: Option<PathBuf>) -> Result<Self, TlsError> {
        let config = match mode {
            SslMode::Disable => None,
            _ => Some(Arc::new(client_config(mode, root_cert.as_deref())?)),
        };
        Ok(Self {
            mode,
            root_cert,
            config,
        })
    }

    /// The rustls configuration (None: no TLS).
    pub fn config(&self) -> Option<Arc<ClientConfig>> {
        self.config.clone()
    }

    /// Takes `sslmode` and `sslrootcert` out of a DSN (URL or key=value),
    /// which then goes to tokio-postgres without them (it knows neither
    /// every mode nor the root certificate).
    pub fn split_dsn(dsn: &str) -> Result<(String, Self), TlsError> {
        let (rest, found) = take_options(dsn, &["sslmode", "sslrootcert"]);
        let mode = match found.iter().find(|(k, _)| k == "sslmode") {
            Some((_, v)) => SslMode::parse(v)?,
            None => SslMode::Prefer,
        };
        let root = found
            .iter()
            .find(|(k, _)| k == "sslrootcert")
            .map(|(_, v)| PathBuf::from(v));
        Ok((rest, Self::new(mode, root)?))
    }
}

/// Removes `keys` from a DSN; returns the rest and the values found.
fn take_options(dsn: &str, keys: &[&str]) -> (String, Vec<(String, String)>) {
    let mut found = Vec::new();
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        let Some((base, query)) = dsn.split_once('?') else {
            return (dsn.to_string(), found);
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let take = keys.contains(&k);
                if take {
                    found.push((k.to_string(), percent_decode(v)));
                }
                !take
            })
            .collect();
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, found);
    }
    let mut kept = Vec::new();
    for word in dsn.split_whitespace() {
        match word.split_once('=') {
            Some((k, v)) if keys.contains(&k) => {
                found.push((k.to_string(), v.trim_matches('\'').to_string()))
            }
            _ => kept.push(word),
        }
    }
    (kept.join(" "), found)
}

/// `%2F` and friends in a URL's query value.
fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The ring provider, which every configuration here uses. rustls marks
/// it deprecated for want of post-quantum key exchange, which only its
/// aws-lc-rs provider has; that one builds a C library with cmake (minutes
/// on two cores, and a tool the quick start does not name), so Ferry keeps
/// ring's classical suites until the ring provider gains them.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |detail: String| TlsError::Pem {
        path: path.display().to_string(),
        detail,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem("no certificate in it".into()));
    }
    Ok(certs)
}

fn client_config(mode: SslMode, root: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => Arc::new(AnyCertificate(provider)),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let word = if mode == SslMode::VerifyCa {
                "verify-ca"
            } else {
                "verify-full"
            };
            let root = root.ok_or(TlsError::NoRootCert(word))?;
            let mut roots = RootCertStore::empty();
            for cert in read_certs(root)? {
                roots.add(cert)?;
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            Arc::new(Checked {
                webpki,
                names: mode == SslMode::VerifyFull,
            })
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// `prefer`/`require`: encryption without checking who answers (libpq's
/// meaning of those modes).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

/// `verify-ca` (the chain only) and `verify-full` (the chain and the name).
#[derive(Debug)]
struct Checked {
    webpki: Arc<WebPkiServerVerifier>,
    names: bool,
}

impl ServerCertVerifier for Checked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.names => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The server name TLS checks for `host` (a name or an address).
pub fn server_name(host: &str) -> io::Result<ServerName<'static>> {
    ServerName::try_from(host.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
}

/// tokio-postgres's TLS hook for Ferry's control sessions.
#[derive(Clone)]
pub struct RustlsConnect(pub Arc<ClientConfig>);

/// One connection's TLS hook, for a host.
pub struct RustlsConnectOne {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnectOne;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnectOne> {
        Ok(RustlsConnectOne {
            config: self.0.clone(),
            name: server_name(domain)?,
        })
    }
}

impl<S> tokio_postgres::tls::TlsConnect<S> for RustlsConnectOne
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await
                .map(|s| RustlsStream(Box::new(s)))
        })
    }
}

/// A control session's TLS stream.
pub struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        tokio_postgres::tls::ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_options_come_out_of_both_dsn_forms() {
        let (rest, found) = take_options(
            "postgresql://u@h:5432/db?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem&application_name=x",
            &["sslmode", "sslrootcert"],
        );
        assert_eq!(rest, "postgresql://u@h:5432/db?application_name=x");
        assert_eq!(
            found,
            vec![
                ("sslmode".to_string(), "verify-full".to_string()),
                ("sslrootcert".to_string(), "/tmp/ca.pem".to_string())
            ]
        );
        let (rest, found) = take_options("host=h port=1 sslmode=require user=u", &["sslmode"]);
        assert_eq!(rest, "host=h port=1 user=u");
        assert_eq!(found, vec![("sslmode".to_string(), "require".to_string())]);
    }

    #[test]
    fn verifying_modes_need_a_root_certificate() {
        let e = TlsSettings::split_dsn("host=h user=u sslmode=verify-full").unwrap_err();
        assert!(e.to_string().contains("sslrootcert"), "{e}");
        let s = TlsSettings::split_dsn("host=h user=u").unwrap().1;
        assert_eq!(s.mode, SslMode::Prefer);
        assert!(TlsSettings::split_dsn("host=h sslmode=sometimes").is_err());
    }
}
