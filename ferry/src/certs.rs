//! Certificates for trying TLS out: a private CA and a server certificate
//! it signed for local names, written as PEM files. `ferry demo` makes
//! them so the quick start shows TLS; the tests make them to check
//! `verify-full` clients. A real deployment brings its own.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why the certificates could not be made.
#[derive(Debug, Error)]
pub enum CertError {
    #[error("making a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The files [`make`] wrote.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// The CA certificate clients trust (`sslrootcert`).
    pub ca: PathBuf,
    /// The server's certificate and private key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes `ca.crt`, `server.crt` and `server.key` (mode 0600) into `dir`,
/// the server certificate valid for `names` (host names or addresses).
pub fn make(dir: &Path, names: &[&str]) -> Result<CertFiles, CertError> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Ferry local CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("localhost"),
    );
    let cert = params.signed_by(&key, &issuer)?;
    let files = CertFiles {
        ca: dir.join("ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    };
    write(&files.ca, &ca_cert.pem(), 0o644)?;
    write(&files.cert, &cert.pem(), 0o644)?;
    write(&files.key, &key.serialize_pem(), 0o600)?;
    Ok(files)
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), CertError> {
    use std::os::unix::fs::PermissionsExt;
    let failed = |source| CertError::Write {
        path: path.display().to_string(),
        source,
    };
    std::fs::write(path, text).map_err(failed)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(failed)
}
