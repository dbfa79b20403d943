//! The startup phase of a client connection: everything before the first
//! ReadyForQuery. Ferry answers an SSL request with 'S' and a TLS
//! handshake when `proxy.tls` allows (else 'N'), GSS requests with 'N', forwards
//! cancel requests, refuses clients beyond `proxy.max_client_conn`, and
//! authenticates the client itself against `[[users]]` with SCRAM-SHA-256
//! or md5.

use super::client_stream::{ClientStream, ProxyTls};
use super::fatal;
use super::lookup::UserLookup;
use bytes::{Buf, BytesMut};
use ferry_wire::backend;
use ferry_wire::codec::{peek_frame, peek_startup, read_cstr};
use ferry_wire::scram::{ClientKeys, ScramServer, Verifier};
use ferry_wire::startup::{parse_startup, StartupPacket};
use ferry_wire::tag::frontend::PASSWORD;
use ferry_wire::Login;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Largest message accepted before authentication completes.
const MAX_AUTH_MESSAGE: usize = 8192;

/// How clients prove who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    ScramSha256,
    Md5,
}

/// A user's stored credential, and the role its sessions log in as.
#[derive(Clone)]
pub struct Credential {
    verifier: Verifier,
    plaintext: Option<String>,
    login: Login,
}

impl Credential {
    /// A role found on the master (`proxy.auth_lookup`): the client proves
    /// itself against the role's verifier, and its sessions log in with
    /// its SCRAM keys.
    pub fn passed_through(verifier: Verifier, user: &str) -> Self {
        Self {
            verifier,
            plaintext: None,
            login: Login {
                user: user.to_string(),
                password: None,
                scram_keys: None,
            },
        }
    }
}

/// The users Ferry accepts: `[[users]]`, then (with `proxy.auth_lookup`)
/// the master's roles.
#[derive(Clone, Default)]
pub struct UserDb {
    users: HashMap<String, Credential>,
    lookup: Option<Arc<UserLookup>>,
}

impl UserDb {
    /// Builds the table from (name, password or SCRAM verifier, server
    /// login) entries.
    pub fn new<'a>(users: impl IntoIterator<Item = (&'a str, &'a str, Login)>) -> Self {
        let users = users
            .into_iter()
            .map(|(name, pw, login)| {
                let cred = match Verifier::parse(pw) {
                    Ok(verifier) => Credential {
                        verifier,
                        plaintext: None,
                        login,
                    },
                    Err(_) => Credential {
                        verifier: Verifier::from_password(pw),
                        plaintext: Some(pw.to_string()),
                        login,
                    },
                };
                (name.to_string(), cred)
            })
            .collect();
        Self {
            users,
            lookup: None,
        }
    }

    /// Looks users not listed up on the master too.
    pub fn with_lookup(self, lookup: UserLookup) -> Self {
        Self {
            lookup: Some(Arc::new(lookup)),
            ..self
        }
    }

    /// A user's credential: listed, else looked up.
    async fn credential(&self, user: &str) -> Option<Credential> {
        if let Some(c) = self.users.get(user) {
            return Some(c.clone());
        }
        self.lookup.as_ref()?.find(user).await
    }
}

/// What the startup phase produced.
pub enum Startup {
    /// An authenticated client with its startup parameters, the role its
    /// sessions log in to the servers as, and its place under
    /// `proxy.max_client_conn` (held for as long as the session lives).
    Client {
        params: Vec<(String, String)>,
        login: Login,
        place: OwnedSemaphorePermit,
    },
    /// Refused with 53300: `proxy.max_client_conn` sessions are open.
    Full,
    /// Refused with 28P01 (wrong password or unknown user).
    AuthFailed { user: String },
    /// A cancel request (the connection carries nothing else).
    Cancel { pid: i32, secret: i32 },
    /// The connection ended or was refused (the client was told why).
    Closed,
}

/// Why a client was disconnected during startup.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol violation: {0}")]
    Protocol(String),
}

/// How many client sessions may be open at once (`proxy.max_client_conn`).
#[derive(Clone)]
pub struct ClientLimit {
    places: Arc<Semaphore>,
    max: usize,
}

impl ClientLimit {
    pub fn new(max: usize) -> Self {
        Self {
            places: Arc::new(Semaphore::new(max)),
            max,
        }
    }
}

/// Runs the startup phase on a fresh connection. A client beyond
/// `limit` gets 53300 once its startup packet is read, before it
/// authenticates (as PostgreSQL does), from Ferry rather than a server.
pub async fn run(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    (users, method): (&UserDb, AuthMethod),
    (limit, tls): (&ClientLimit, Option<&ProxyTls>),
) -> Result<Startup, StartupError> {
    let params = loop {
        let packet = match read_startup(stream, buf).await {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(Startup::Closed),
            Err(e) => {
                fatal(stream, "08P01", &format!("invalid startup packet: {e}")).await;
                return Err(e);
            }
        };
        match packet {
            StartupPacket::SslRequest => stream.answer_ssl_request(tls, buf.len()).await?,
            StartupPacket::GssEncRequest => stream.write_all(b"N").await?,
            StartupPacket::Cancel { pid, secret } => return Ok(Startup::Cancel { pid, secret }),
            StartupPacket::Startup { minor, params } => {
                if minor > 0 {
                    let unknown: Vec<&str> = params
                        .iter()
                        .map(|(k, _)| k.as_str())
                        .filter(|k| k.starts_with("_pq_."))
                        .collect();
                    let mut out = BytesMut::new();
                    backend::negotiate_protocol_version(&mut out, &unknown);
                    stream.write_all(&out).await?;
                }
                break params;
            }
        }
    };
    if tls.is_some_and(|t| t.required) && !stream.is_tls() {
        fatal(
            stream,
            "28000",
            "Ferry accepts only TLS connections (proxy.tls = \"require\"): connect with sslmode=require",
        )
        .await;
        return Ok(Startup::Closed);
    }
    let Ok(place) = limit.places.clone().try_acquire_owned() else {
        fatal(
            stream,
            "53300",
            &format!(
                "sorry, too many clients already (Ferry's proxy.max_client_conn = {})",
                limit.max
            ),
        )
        .await;
        return Ok(Startup::Full);
    };
    let Some(user) = StartupPacket::param(&params, "user").map(str::to_string) else {
        fatal(
            stream,
            "28000",
            "no PostgreSQL user name specified in startup packet",
        )
        .await;
        return Ok(Startup::Closed);
    };
    let cred = users.credential(&user).await;
    let cred = cred.as_ref();
    let ok = match method {
        AuthMethod::ScramSha256 => scram(stream, buf, cred).await?,
        AuthMethod::Md5 => md5(stream, buf, &user, cred)
            .await?
            .then_some(Accepted { keys: None }),
    };
    // A user whose server password Ferry does not know logs in to the
    // servers with the keys its own SCRAM proof revealed.
    let login = cred.zip(ok).map(|(c, accepted)| Login {
        scram_keys: accepted.keys.filter(|_| c.login.password.is_none()),
        ..c.login.clone()
    });
    let Some(login) = login else {
        fatal(
            stream,
            "28P01",
            &format!("password authentication failed for user \"{user}\""),
        )
        .await;
        return Ok(Startup::AuthFailed { user });
    };
    Ok(Startup::Client {
        params,
        login,
        place,
    })
}

async fn read_startup(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
) -> Result<Option<StartupPacket>, StartupError> {
    loop {
        match peek_startup(buf) {
            Ok(Some(len)) => {
                let packet = buf.split_to(len);
                return parse_startup(&packet[4..])
                    .map(Some)
                    .map_err(|e| StartupError::Protocol(e.to_string()));
            }
            Ok(None) => {}
            Err(e) => return Err(StartupError::Protocol(e.to_string())),
        }
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// Reads one password-class message ('p') during authentication.
async fn read_password_message(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
) -> Result<Option<BytesMut>, StartupError> {
    loop {
        match peek_frame(buf, MAX_AUTH_MESSAGE) {
            Ok(Some((PASSWORD, len))) => {
                let mut msg = buf.split_to(len);
                msg.advance(5);
                return Ok(Some(msg));
            }
            Ok(Some((tag, _))) => {
                return Err(StartupError::Protocol(format!(
                    "expected a password message, got message type 0x{tag:02x}"
                )))
            }
            Ok(None) => {}
            Err(e) => return Err(StartupError::Protocol(e.to_string())),
        }
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// A client that proved who it is, and what its proof revealed.
struct Accepted {
    /// Its SCRAM keys (none with md5).
    keys: Option<ClientKeys>,
}

async fn scram(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    cred: Option<&Credential>,
) -> Result<Option<Accepted>, StartupError> {
    // An unknown user goes through the same exchange against a random
    // verifier, so the answer does not reveal which users exist.
    let verifier = cred
        .map(|c| c.verifier.clone())
        .unwrap_or_else(|| Verifier::from_password(&format!("{:x}", rand::random::<u128>())));
    let mut out = BytesMut::new();
    backend::auth_sasl(&mut out);
    stream.write_all(&out).await?;
    let Some(initial) = read_password_message(stream, buf).await? else {
        return Ok(None);
    };
    let (mech, rest) = read_cstr(&initial)
        .ok_or_else(|| StartupError::Protocol("malformed SASLInitialResponse".into()))?;
    if mech != "SCRAM-SHA-256" || rest.len() < 4 {
        return Err(StartupError::Protocol(format!(
            "unsupported SASL mechanism {mech:?}"
        )));
    }
    let data = &rest[4..];
    let (server, first) = match ScramServer::start(verifier, data) {
        Ok(x) => x,
        Err(e) => return Err(StartupError::Protocol(e.to_string())),
    };
    out.clear();
    backend::auth_sasl_continue(&mut out, first.as_bytes());
    stream.write_all(&out).await?;
    let Some(fin) = read_password_message(stream, buf).await? else {
        return Ok(None);
    };
    match server.finish(&fin) {
        Ok((final_msg, keys)) if cred.is_some() => {
            out.clear();
            backend::auth_sasl_final(&mut out, final_msg.as_bytes());
            backend::auth_ok(&mut out);
            stream.write_all(&out).await?;
            Ok(Some(Accepted { keys: Some(keys) }))
        }
        _ => Ok(None),
    }
}

async fn md5(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    user: &str,
    cred: Option<&Credential>,
) -> Result<bool, StartupError> {
    let salt: [u8; 4] = rand::random();
    let mut out = BytesMut::new();
    backend::auth_md5(&mut out, salt);
    stream.write_all(&out).await?;
    let Some(msg) = read_password_message(stream, buf).await? else {
        return Ok(false);
    };
    let (given, _) = read_cstr(&msg)
        .ok_or_else(|| StartupError::Protocol("malformed password message".into()))?;
    let Some(password) = cred.and_then(|c| c.plaintext.as_deref()) else {
        return Ok(false);
    };
    let expected =
        postgres_protocol::authentication::md5_hash(user.as_bytes(), password.as_bytes(), salt);
    if given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            == 0
    {
        out.clear();
        backend::auth_ok(&mut out);
        stream.write_all(&out).await?;
        Ok(true)
    } else {
        Ok(false)
    }
}
