//! One client session: authenticate, open a server connection on the
//! master, then pump frames both ways until either side ends. Sessions in
//! sync mode or with reads on replicas use the pump in
//! [`super::tracked_pump`]; the others this one.
//!
//! Client → server traffic goes through a [`FrameScanner`] that checks every
//! header (known message type, sane length) while bodies stream through
//! unbuffered; server → client traffic is forwarded as it arrives. Notices,
//! notifications, parameter changes and errors therefore reach the client
//! unchanged, and extended-protocol pipelines and COPY pass intact.

use super::cancel::{CancelRegistry, ServerKey};
use super::fatal;
use super::startup::{self, AuthMethod, Startup, UserDb};
use super::tracked_pump::{pump_routed, ReadRouting, RoutedSession};
use bytes::{Buf, BytesMut};
use ferry_batcher::SyncPoint;
use ferry_cluster::{Node, Topology};
use ferry_wire::conn::send_cancel;
use ferry_wire::startup::StartupPacket;
use ferry_wire::{backend, ConnError, FrameScanner, ServerConn};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info, info_span, warn, Instrument};

/// Time a client has to complete startup and authentication.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Front-end metrics.
#[derive(Clone, Default)]
pub struct FrontendMetrics {
    pub connections: Gauge,
    pub connections_total: Counter,
    pub protocol_errors: Counter,
}

impl FrontendMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "ferry_client_connections",
            "Open client sessions",
            m.connections.clone(),
        );
        registry.register(
            "ferry_client_connections_accepted",
            "Client sessions accepted",
            m.connections_total.clone(),
        );
        registry.register(
            "ferry_client_protocol_errors",
            "Client connections closed for a protocol violation",
            m.protocol_errors.clone(),
        );
        m
    }
}

/// What every session shares.
pub struct Shared {
    pub users: UserDb,
    pub auth: AuthMethod,
    /// The current topology: which node is master, in which epoch.
    pub roles: watch::Receiver<Topology>,
    /// How long a new session waits for a master during a failover.
    pub hold_timeout: Duration,
    pub max_message: usize,
    pub connect_timeout: Duration,
    pub cancels: CancelRegistry,
    pub metrics: FrontendMetrics,
    /// Set in synchronous mode: commits wait for the replicas here.
    pub sync: Option<Arc<SyncPoint>>,
    /// Set when reads may go to replicas.
    pub reads: Option<Arc<ReadRouting>>,
}

/// Serves one accepted connection to its end.
pub async fn handle(mut client: TcpStream, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(8192);
    let started = tokio::time::timeout(
        STARTUP_TIMEOUT,
        startup::run(&mut client, &mut buf, &shared.users, shared.auth),
    )
    .await;
    let params = match started {
        Err(_) => {
            fatal(&mut client, "08P01", "startup timed out").await;
            return;
        }
        Ok(Err(e)) => {
            shared.metrics.protocol_errors.inc();
            debug!(error = %e, "client dropped during startup");
            return;
        }
        Ok(Ok(Startup::Closed)) => return,
        Ok(Ok(Startup::Cancel { pid, secret })) => {
            if let Some(key) = shared.cancels.lookup(pid, secret) {
                if let Err(e) = send_cancel(&key.target, key.pid, key.secret).await {
                    warn!(error = %e, "cancel request could not be delivered");
                }
            }
            return;
        }
        Ok(Ok(Startup::Client { params })) => params,
    };
    let user = StartupPacket::param(&params, "user")
        .unwrap_or_default()
        .to_string();
    let database = StartupPacket::param(&params, "database")
        .unwrap_or(&user)
        .to_string();
    let master = shared.roles.borrow().master.clone();
    if database != master.target.dbname {
        fatal(
            &mut client,
            "3D000",
            &format!(
                "database \"{database}\" does not exist (Ferry serves \"{}\")",
                master.target.dbname
            ),
        )
        .await;
        return;
    }
    let Some((epoch, master, server)) = connect_master(&shared, &params, &mut client).await else {
        return;
    };
    let (pid, secret) = shared.cancels.register(ServerKey {
        target: master.target.clone(),
        pid: server.pid,
        secret: server.secret,
    });
    let span = info_span!("session", session = pid, node = %master.name, user = %user);
    shared.metrics.connections.inc();
    shared.metrics.connections_total.inc();
    async {
        let mut out = BytesMut::new();
        for (k, v) in &server.params {
            backend::parameter_status(&mut out, k, v);
        }
        backend::backend_key_data(&mut out, pid, secret);
        backend::ready_for_query(&mut out, b'I');
        if client.write_all(&out).await.is_ok() {
            debug!("session started");
            let mut roles = shared.roles.clone();
            let fenced = async move {
                let _ = roles.wait_for(|t| t.epoch != epoch).await;
                let next = roles.borrow().clone();
                next
            };
            let pumping = async {
                if shared.reads.is_some() || shared.sync.is_some() {
                pump_routed(
                    &mut client,
                    buf,
                    server,
                    shared.max_message,
                    RoutedSession {
                        params: &params,
                        routing: shared.reads.as_deref(),
                        sync: shared.sync.as_deref(),
                        session_id: pid,
                    },
                )
                .await
            } else {
                pump(&mut client, buf, server, shared.max_message).await
            }
            };
            let pumped = tokio::select! {
                p = pumping => p,
                next = fenced => {
                    // The master this session runs on was failed over: its
                    // work is not acknowledged any more.
                    info!(epoch = next.epoch, master = %next.master.name, "session ended by a failover");
                    fatal(
                        &mut client,
                        "08006",
                        &format!(
                            "master {} failed; Ferry failed over to {} (epoch {}): reconnect (a transaction that was open did not commit)",
                            master.name, next.master.name, next.epoch
                        ),
                    )
                    .await;
                    Ok(End::ServerGone)
                }
            };
            match pumped {
                Ok(end) => debug!(?end, "session ended"),
                Err(PumpError::Protocol(e)) => {
                    shared.metrics.protocol_errors.inc();
                    info!(error = %e, "client sent an invalid message; closing");
                    fatal(
                        &mut client,
                        "08P01",
                        &format!("invalid frontend message: {e}"),
                    )
                    .await;
                }
                Err(PumpError::Io(e)) => debug!(error = %e, "session I/O ended"),
            }
        }
    }
    .instrument(span)
    .await;
    shared.cancels.remove(pid);
    shared.metrics.connections.dec();
}

/// Opens the session's server connection on the master. While there is
/// no master (a failover under way, or a cluster waiting for the node that
/// was master last) or it cannot be reached, the session waits — up to
/// `hold_timeout` — for the topology to change and tries again; then it
/// gets SQLSTATE 57P03 saying why. A server that answers with an error
/// (authentication, too many connections) fails the session at once.
/// Returns the epoch and master it connected in.
async fn connect_master(
    shared: &Shared,
    params: &[(String, String)],
    client: &mut TcpStream,
) -> Option<(i64, Node, ServerConn)> {
    let deadline = tokio::time::Instant::now() + shared.hold_timeout;
    let mut roles = shared.roles.clone();
    loop {
        let (epoch, master, waiting) = {
            let t = roles.borrow_and_update();
            (t.epoch, t.master.clone(), t.waiting.clone())
        };
        let why = match waiting {
            Some(why) => why,
            None => match ServerConn::connect(&master.target, params, shared.connect_timeout).await
            {
                Ok(s) => return Some((epoch, master, s)),
                Err(e @ ConnError::Server(_)) => {
                    warn!(node = %master.name, error = %e, "cannot open a server session");
                    fatal(
                        client,
                        "08006",
                        &format!("could not connect to master node {}: {e}", master.name),
                    )
                    .await;
                    return None;
                }
                Err(e) => format!("master {} is unreachable ({e})", master.name),
            },
        };
        debug!(reason = %why, "no master now; holding the session");
        if !matches!(
            tokio::time::timeout_at(deadline, roles.changed()).await,
            Ok(Ok(()))
        ) {
            fatal(
                client,
                "57P03",
                &format!(
                    "no master available: {why}; nothing changed within {} ms",
                    shared.hold_timeout.as_millis()
                ),
            )
            .await;
            return None;
        }
    }
}

/// How a session ended normally.
#[derive(Debug)]
pub(crate) enum End {
    Terminated,
    ClientGone,
    ServerGone,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PumpError {
    #[error("{0}")]
    Protocol(ferry_wire::FrameError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

async fn pump(
    client: &mut TcpStream,
    mut cbuf: BytesMut,
    server: ServerConn,
    max: usize,
) -> Result<End, PumpError> {
    let (mut server, pending) = server.into_parts();
    if !pending.is_empty() {
        client.write_all(&pending).await?;
    }
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let to_server = async {
        let mut scanner = FrameScanner::default();
        loop {
            let mut terminated = false;
            let n = scanner
                .advance(&cbuf, max, |tag| terminated |= tag == b'X')
                .map_err(PumpError::Protocol)?;
            if n > 0 {
                sw.write_all(&cbuf[..n]).await?;
                cbuf.advance(n);
            }
            if terminated {
                return Ok(End::Terminated);
            }
            cbuf.reserve(16 * 1024);
            if cr.read_buf(&mut cbuf).await? == 0 {
                return Ok(End::ClientGone);
            }
        }
    };
    let to_client = async {
        let mut b = vec![0u8; 64 * 1024];
        loop {
            let n = sr.read(&mut b).await?;
            if n == 0 {
                return Ok(End::ServerGone);
            }
            cw.write_all(&b[..n]).await?;
        }
    };
    tokio::select! {
        r = to_server => r,
        r = to_client => r,
    }
}
