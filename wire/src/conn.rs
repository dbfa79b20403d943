//! A raw connection to a PostgreSQL server.
//!
//! Client libraries wait for each response before sending the next request
//! (COPY waits for CopyInResponse). Ferry's apply path writes a whole batch —
//! BEGIN, ledger check, COPY data, apply statements, COMMIT — in one flight and
//! then reads the answers, so it needs a connection that exposes the message
//! stream. The proxy uses the same connection and then pumps raw frames.

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::{backend::Message, frontend};
use std::fmt;
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::scram::{ClientKeys, KeysClient};
use crate::stream::{Address, Stream};
use crate::tls::{server_name, RustlsConnect, SslMode, TlsSettings};
use std::sync::Arc;

/// Where and as whom to connect, parsed from a libpq-style DSN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// A host name or address, or (starting with `/`) the directory of the
    /// server's Unix-domain socket, as libpq reads it.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    /// `sslmode` and `sslrootcert`.
    pub tls: TlsSettings,
    /// A client's SCRAM keys to log in with instead of a password
    /// (pass-through, see [`crate::scram::ClientKeys`]).
    pub scram_keys: Option<ClientKeys>,
}

impl Target {
    /// Parses `postgresql://user:pw@host:port/db` or `host=... port=...`;
    /// a host starting with `/` (`host=/var/run/postgresql`, or
    /// `postgresql://user@%2Fvar%2Frun%2Fpostgresql:5432/db`) is a Unix
    /// socket directory.
    pub fn from_dsn(dsn: &str) -> Result<Self, ConnError> {
        let (dsn, tls) = TlsSettings::split_dsn(dsn).map_err(|e| ConnError::Dsn(e.to_string()))?;
        let cfg: tokio_postgres::Config = dsn
            .parse()
            .map_err(|e: tokio_postgres::Error| ConnError::Dsn(e.to_string()))?;
        let host = match cfg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(dir)) => {
                let dir = dir.to_str().ok_or_else(|| {
                    ConnError::Dsn("the socket directory is not valid UTF-8".into())
                })?;
                dir.to_string()
            }
            None => "127.0.0.1".to_string(),
        };
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        let user = cfg
            .get_user()
            .ok_or_else(|| ConnError::Dsn("the DSN names no user".into()))?
            .to_string();
        let password = cfg
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        let dbname = cfg.get_dbname().unwrap_or(&user).to_string();
        Ok(Self {
            host,
            port,
            user,
            password,
            dbname,
            tls,
            scram_keys: None,
        })
    }

    /// The same server, logged in to as `login` instead of the DSN's user:
    /// client sessions run as their own roles.
    pub fn with_login(&self, login: &Login) -> Target {
        Target {
            user: login.user.clone(),
            password: login.password.clone(),
            scram_keys: login.scram_keys.clone(),
            ..self.clone()
        }
    }

    /// Where the server listens.
    pub fn address(&self) -> Address {
        Address::new(&self.host, self.port)
    }

    /// `host:port/dbname`, for logs and status (never the password).
    pub fn describe(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.dbname)
    }

    /// A tokio-postgres configuration for control sessions.
    pub fn pg_config(&self, application_name: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name(application_name)
            .connect_timeout(Duration::from_secs(5));
        if let Some(p) = &self.password {
            c.password(p);
        }
        c.ssl_mode(match self.tls_config() {
            None => tokio_postgres::config::SslMode::Disable,
            Some(_) if self.tls.mode == SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            Some(_) => tokio_postgres::config::SslMode::Require,
        });
        c
    }

    /// The TLS configuration sessions to this server use (None: plaintext,
    /// as for a Unix socket, which never uses TLS).
    pub fn tls_config(&self) -> Option<Arc<rustls::ClientConfig>> {
        match self.address() {
            Address::Unix(_) => None,
            Address::Tcp(..) => self.tls.config(),
        }
    }

    /// Opens a control session (catalog reads, records, cuts, checks):
    /// the one place Ferry connects its own tokio-postgres sessions. The
    /// connection is driven by a task of its own until the client drops.
    pub async fn connect_control(
        &self,
        application_name: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let config = self.pg_config(application_name);
        let (host, port, app) = (self.host.clone(), self.port, application_name.to_string());
        let ended = move |e: tokio_postgres::Error| {
            tracing::debug!(host, port, session = app, error = %e, "control connection ended");
        };
        match self.tls_config() {
            None => {
                let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(async move { conn.await.map_err(ended) });
                Ok(client)
            }
            Some(tls) => {
                let (client, conn) = config.connect(RustlsConnect(tls)).await?;
                tokio::spawn(async move { conn.await.map_err(ended) });
                Ok(client)
            }
        }
    }
}

/// The role a client session logs in to the servers as, and its password
/// (none: the server must not ask for one). Ferry's own sessions use the
/// DSN's user instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub password: Option<String>,
    /// The client's own SCRAM keys, when Ferry passes its login through.
    pub scram_keys: Option<ClientKeys>,
}

/// The SCRAM exchange under way with a server: with a password, or with
/// a client's keys (pass-through).
enum Sasl {
    Password(ScramSha256),
    Keys(KeysClient),
}

/// Asks the server for TLS (an SSLRequest) and, when it agrees, wraps
/// the stream; a server that declines is refused unless `sslmode` is
/// `prefer`.
async fn negotiate_tls(
    mut stream: Stream,
    target: &Target,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Stream, ConnError> {
    stream.write_all(&SSL_REQUEST).await?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await?;
    match (answer[0], stream) {
        (b'S', Stream::Tcp(tcp)) => {
            let name = server_name(&target.host)?;
            let tls = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await
                .map_err(|e| ConnError::Tls(e.to_string()))?;
            Ok(Stream::Tls(Box::new(tls)))
        }
        (b'N', stream) if target.tls.mode == SslMode::Prefer => Ok(stream),
        (b'N', _) => Err(ConnError::Tls(format!(
            "the server at {} does not accept TLS, and sslmode is {:?}",
            target.describe(),
            target.tls.mode
        ))),
        (other, _) => Err(ConnError::Protocol(format!(
            "unexpected answer 0x{other:02x} to an SSLRequest"
        ))),
    }
}

/// An SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 4, 210, 22, 47];

/// An error reported by the server, with the fields operators need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerError {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

impl ServerError {
    /// Decodes an ErrorResponse or NoticeResponse body.
    pub fn from_fields(fields: &mut postgres_protocol::message::backend::ErrorFields<'_>) -> Self {
        let mut e = ServerError {
            severity: String::new(),
            code: String::new(),
            message: String::new(),
            detail: None,
        };
        while let Ok(Some(f)) = fields.next() {
            let v = String::from_utf8_lossy(f.value_bytes()).into_owned();
            match f.type_() {
                b'V' => e.severity = v,
                b'S' if e.severity.is_empty() => e.severity = v,
                b'C' => e.code = v,
                b'M' => e.message = v,
                b'D' => e.detail = Some(v),
                _ => {}
            }
        }
        e
    }
}

/// Why talking to a server failed.
#[derive(Debug, Error)]
pub enum ConnError {
    #[error("invalid DSN: {0}")]
    Dsn(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("server authentication: {0}")]
    Auth(String),
    #[error("server: {0}")]
    Server(ServerError),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("server closed the connection")]
    Closed,
    #[error("TLS: {0}")]
    Tls(String),
}

/// An authenticated connection whose message stream Ferry drives itself.
pub struct ServerConn {
    stream: Stream,
    buf: BytesMut,
    /// ParameterStatus values the server reported at startup.
    pub params: Vec<(String, String)>,
    /// The server's BackendKeyData, used to forward cancel requests.
    pub pid: i32,
    pub secret: i32,
    /// Warnings Ferry's own SQL raised in this session (their text starts
    /// with `ferry:`), not yet taken: a schema change a replica skipped.
    notices: Vec<String>,
}

/// Notices kept at most, between two takes.
const MAX_NOTICES: usize = 32;

impl ServerConn {
    /// Connects, authenticates (trust, password, md5 or SCRAM-SHA-256) and
    /// waits for the first ReadyForQuery. `extra` startup parameters (for
    /// example a client's `application_name`) are passed through.
    pub async fn connect(
        target: &Target,
        extra: &[(String, String)],
        timeout: Duration,
    ) -> Result<Self, ConnError> {
        tokio::time::timeout(timeout, Self::connect_inner(target, extra))
            .await
            .map_err(|_| ConnError::Timeout(timeout))?
    }

    async fn connect_inner(target: &Target, extra: &[(String, String)]) -> Result<Self, ConnError> {
        let mut stream = Stream::connect(&target.address()).await?;
        if let Some(tls) = target.tls_config() {
            stream = negotiate_tls(stream, target, tls).await?;
        }
        let mut conn = ServerConn {
            stream,
            buf: BytesMut::with_capacity(8192),
            params: Vec::new(),
            pid: 0,
            secret: 0,
            notices: Vec::new(),
        };
        let mut out = BytesMut::new();
        let mut params: Vec<(&str, &str)> = vec![
            ("user", target.user.as_str()),
            ("database", target.dbname.as_str()),
        ];
        for (k, v) in extra {
            if k != "user" && k != "database" && k != "replication" {
                params.push((k.as_str(), v.as_str()));
            }
        }
        frontend::startup_message(params.iter().copied(), &mut out)?;
        conn.write_all(&out).await?;
        conn.authenticate(target).await?;
        loop {
            match conn.read_message().await? {
                Message::ParameterStatus(p) => {
                    let name = p.name().map_err(ConnError::Io)?.to_string();
                    let value = p.value().map_err(ConnError::Io)?.to_string();
                    conn.params.push((name, value));
                }
                Message::BackendKeyData(k) => {
                    conn.pid = k.process_id();
                    conn.secret = k.secret_key();
                }
                Message::ReadyForQuery(_) => return Ok(conn),
                Message::ErrorResponse(e) => {
                    return Err(ConnError::Server(ServerError::from_fields(&mut e.fields())))
                }
                Message::NoticeResponse(_) => {}
                _ => {
                    return Err(ConnError::Protocol(
                        "unexpected message during startup".into(),
                    ))
                }
            }
        }
    }

    async fn authenticate(&mut self, target: &Target) -> Result<(), ConnError> {
        let password = || {
            target.password.clone().ok_or_else(|| {
                ConnError::Auth(if target.scram_keys.is_some() {
                    format!(
                        "the server asks role {} for a password, not SCRAM: passing a client's \
                         SCRAM login through needs the server to use scram-sha-256",
                        target.user
                    )
                } else {
                    "the server asks for a password and the DSN has none".into()
                })
            })
        };
        let mut sasl: Option<Sasl> = None;
        let auth = |e: &dyn std::fmt::Display| ConnError::Auth(e.to_string());
        loop {
            let mut out = BytesMut::new();
            match self.read_message().await? {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password()?.as_bytes(), &mut out)?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = postgres_protocol::authentication::md5_hash(
                        target.user.as_bytes(),
                        password()?.as_bytes(),
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut out)?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechs = body.mechanisms();
                    let mut found = false;
                    while let Some(m) = mechs.next().map_err(ConnError::Io)? {
                        found |= m == "SCRAM-SHA-256";
                    }
                    if !found {
                        return Err(ConnError::Auth("server offers no SCRAM-SHA-256".into()));
                    }
                    let (started, first) = match &target.scram_keys {
                        Some(keys) => {
                            let (client, first) = KeysClient::new(keys.clone());
                            (Sasl::Keys(client), first.into_bytes())
                        }
                        None => {
                            let s = ScramSha256::new(
                                password()?.as_bytes(),
                                ChannelBinding::unsupported(),
                            );
                            let first = s.message().to_vec();
                            (Sasl::Password(s), first)
                        }
                    };
                    frontend::sasl_initial_response("SCRAM-SHA-256", &first, &mut out)?;
                    sasl = Some(started);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let next = match sasl.as_mut() {
                        Some(Sasl::Password(s)) => {
                            s.update(body.data()).map_err(|e| auth(&e))?;
                            s.message().to_vec()
                        }
                        Some(Sasl::Keys(k)) => {
                            k.update(body.data()).map_err(|e| auth(&e))?.into_bytes()
                        }
                        None => {
                            return Err(ConnError::Protocol("SASL continue before start".into()))
                        }
                    };
                    frontend::sasl_response(&next, &mut out)?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    match sasl.take() {
                        Some(Sasl::Password(mut s)) => {
                            s.finish(body.data()).map_err(|e| auth(&e))?
                        }
                        Some(Sasl::Keys(k)) => k.finish(body.data()).map_err(|e| auth(&e))?,
                        None => return Err(ConnError::Protocol("SASL final before start".into())),
                    }
                    continue;
                }
                Message::ErrorResponse(e) => {
                    return Err(ConnError::Server(ServerError::from_fields(&mut e.fields())))
                }
                _ => {
                    return Err(ConnError::Auth(
                        "unsupported authentication method requested by the server".into(),
                    ))
                }
            }
            self.write_all(&out).await?;
        }
    }

    /// Writes bytes (one or many messages) in one flight.
    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Reads the next whole backend message.
    pub async fn read_message(&mut self) -> Result<Message, ConnError> {
        loop {
            if let Some(m) = Message::parse(&mut self.buf)? {
                if let Message::NoticeResponse(n) = &m {
                    let notice = ServerError::from_fields(&mut n.fields());
                    if notice.message.starts_with("ferry:") && self.notices.len() < MAX_NOTICES {
                        self.notices.push(notice.message);
                    }
                }
                return Ok(m);
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(8192);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(ConnError::Closed);
            }
        }
    }

    /// Whether an idle connection has been ended by the server, checked
    /// without waiting: the server closed it, or sent an error (which, on
    /// an idle connection, is the FATAL that precedes the close: a shutdown,
    /// `pg_terminate_backend`). Anything read stays buffered for the next
    /// [`Self::read_message`].
    pub fn ended_while_idle(&mut self) -> bool {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(8192);
        }
        match self.stream.try_read_buf(&mut self.buf) {
            Ok(0) => true,
            Ok(_) => self.buf.first() == Some(&b'E'),
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }

    /// Runs a simple query and waits for ReadyForQuery; returns the first
    /// error, if any, and the final transaction status.
    pub async fn simple_query(&mut self, sql: &str) -> Result<u8, ConnError> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out)?;
        self.write_all(&out).await?;
        let (err, status) = self.read_until_ready(1).await?;
        match err {
            Some(e) => Err(ConnError::Server(e)),
            None => Ok(status),
        }
    }

    /// Reads messages until `count` ReadyForQuery messages have arrived.
    /// Returns the first error seen and the last transaction status byte.
    pub async fn read_until_ready(
        &mut self,
        count: usize,
    ) -> Result<(Option<ServerError>, u8), ConnError> {
        let mut seen = 0;
        let mut first_err = None;
        let mut status = b'I';
        while seen < count {
            match self.read_message().await? {
                Message::ReadyForQuery(r) => {
                    seen += 1;
                    status = r.status();
                }
                Message::ErrorResponse(e) if first_err.is_none() => {
                    first_err = Some(ServerError::from_fields(&mut e.fields()));
                }
                _ => {}
            }
        }
        Ok((first_err, status))
    }

    /// Like [`read_until_ready`](Self::read_until_ready) for one
    /// ReadyForQuery, also counting the CommandComplete messages before the
    /// first error: in a pipeline of statements that each complete once,
    /// that count is the index of the statement that failed.
    pub async fn read_pipeline(&mut self) -> Result<(Option<(ServerError, usize)>, u8), ConnError> {
        let mut completed = 0;
        let mut first_err = None;
        loop {
            match self.read_message().await? {
                Message::ReadyForQuery(r) => return Ok((first_err, r.status())),
                Message::CommandComplete(_) if first_err.is_none() => completed += 1,
                Message::ErrorResponse(e) if first_err.is_none() => {
                    first_err = Some((ServerError::from_fields(&mut e.fields()), completed));
                }
                _ => {}
            }
        }
    }

    /// The `ferry:` warnings the server sent since the last take.
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    /// Hands over the socket and any bytes already read, for raw pumping.
    pub fn into_parts(self) -> (Stream, BytesMut) {
        (self.stream, self.buf)
    }
}

/// Sends a CancelRequest for `(pid, secret)` to the server at `target`.
pub async fn send_cancel(target: &Target, pid: i32, secret: i32) -> Result<(), ConnError> {
    let mut stream = Stream::connect(&target.address()).await?;
    let mut out = BytesMut::new();
    frontend::cancel_request(pid, secret, &mut out);
    stream.write_all(&out).await?;
    // The server closes the connection when done; wait briefly for that.
    let mut sink = [0u8; 1];
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut sink)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_forms() {
        let t = Target::from_dsn("postgresql://postgres:pw@127.0.0.1:5433/app").unwrap();
        assert_eq!(t.port, 5433);
        assert_eq!(t.dbname, "app");
        assert_eq!(t.password.as_deref(), Some("pw"));
        let t = Target::from_dsn("host=localhost port=5 user=u").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.dbname.as_str()),
            ("localhost", 5, "u")
        );
        assert!(Target::from_dsn("postgresql://127.0.0.1/app").is_err());
        let t = Target::from_dsn("host=/tmp/pg port=5433 user=u dbname=app").unwrap();
        assert_eq!(t.address(), Address::Unix("/tmp/pg/.s.PGSQL.5433".into()));
        let t = Target::from_dsn("postgresql://u@%2Ftmp%2Fpg:5434/app").unwrap();
        assert_eq!(t.host, "/tmp/pg");
        assert_eq!(t.port, 5434);
    }
}
