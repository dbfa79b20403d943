//! One client session: authenticate, open a server connection on the
//! master, then pump messages both ways (see [`super::tracked_pump`]) until
//! either side ends.
//!
//! When the master is lost (its connection breaks, its server crashes, or
//! Ferry fails over or switches over to another node), the session moves:
//! it waits — up to `hold_timeout` — for a master, answers what the lost
//! server owed ([`super::moving`]), recreates its settings and prepared
//! statements on the new master, and goes on. Statements the client sends
//! meanwhile wait and then run once on the new master. A session holding
//! state that cannot be recreated (temporary tables, advisory locks) ends
//! with SQLSTATE 08006 instead.

use super::cancel::{CancelRegistry, ServerKey};
use super::fatal;
use super::gate::Gate;
use super::moving;
use super::startup::{self, AuthMethod, Startup, UserDb};
use super::tracked_pump::{pump_routed, ReadRouting, Route, RoutedSession};
use bytes::{Buf, BytesMut};
use ferry_batcher::SyncPoint;
use ferry_cluster::{Node, Topology};
use ferry_wire::conn::send_cancel;
use ferry_wire::startup::StartupPacket;
use ferry_wire::{backend, ConnError, ServerConn};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
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
    /// Closed during a planned switchover, and while Ferry stops.
    pub gate: Arc<Gate>,
    /// Turns true when Ferry stops: every session ends with 57P01.
    pub stopping: watch::Receiver<bool>,
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
            let keys = shared.cancels.lookup(pid, secret);
            debug!(session = pid, servers = keys.len(), "cancel request");
            // At once to each: an unreachable master must not hold up the
            // cancel of a read running on a replica.
            futures_util::future::join_all(keys.iter().map(|key| async move {
                if let Err(e) = send_cancel(&key.target, key.pid, key.secret).await {
                    warn!(node = %key.target.describe(), error = %e, "cancel request could not be delivered");
                }
            }))
            .await;
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
    let Some((master, server)) = connect_master(&shared, &params, &mut client).await else {
        return;
    };
    let (pid, secret) = shared
        .cancels
        .register(ServerKey::of(&master.target, &server));
    let span = info_span!("session", session = pid, user = %user);
    shared.metrics.connections.inc();
    shared.metrics.connections_total.inc();
    async {
        let mut out = BytesMut::new();
        for (k, v) in &server.params {
            backend::parameter_status(&mut out, k, v);
        }
        backend::backend_key_data(&mut out, pid, secret);
        backend::ready_for_query(&mut out, b'I');
        if client.write_all(&out).await.is_err() {
            return;
        }
        debug!(node = %master.name, "session started");
        let route = Mutex::new(Route::new(shared.gate.register()));
        let mut cbuf = buf;
        let mut current = Some((master, server));
        loop {
            let (master, server) = match current.take() {
                Some(c) => c,
                None => match move_session(&shared, &params, &mut client, &route).await {
                    Some(c) => c,
                    None => return,
                },
            };
            shared
                .cancels
                .update(pid, ServerKey::of(&master.target, &server));
            let node = master.name.clone();
            let replaced = || shared.roles.borrow().master.name != node;
            let mut roles = shared.roles.clone();
            let switched = async {
                // A closed channel is Ferry stopping, not a new master.
                if roles.wait_for(|t| t.master.name != node).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let mut stopping = shared.stopping.clone();
            let stopped = async {
                let _ = stopping.wait_for(|s| *s).await;
            };
            let pumped = tokio::select! {
                p = pump_routed(
                    &mut client,
                    &mut cbuf,
                    server,
                    shared.max_message,
                    RoutedSession {
                        params: &params,
                        routing: shared.reads.as_deref(),
                        sync: shared.sync.as_deref(),
                        session_id: pid,
                        cancels: &shared.cancels,
                        gate: &shared.gate,
                        replaced: &replaced,
                    },
                    &route,
                ) => p,
                _ = switched => {
                    info!(node = %node, "master replaced; moving the session");
                    Ok(End::ServerGone)
                }
                _ = stopped => Ok(End::Stopped),
            };
            match pumped {
                Ok(End::ServerGone) | Err(PumpError::Server(_)) => {
                    let (loss, movable, held) = {
                        let mut r = route.lock().unwrap_or_else(|p| p.into_inner());
                        // Bytes whose write to the lost server did not
                        // complete count as sent: their answers are owed.
                        cbuf.advance(r.unsent.min(cbuf.len()));
                        r.unsent = 0;
                        let loss = r.session.lose();
                        r.lost_transaction = loss.in_transaction && !loss.commit_in_flight;
                        (loss, r.session.movable(), r.held_commit.take())
                    };
                    if let Err(why) = movable {
                        info!(node = %node, reason = why, "master lost; the session cannot move");
                        fatal(
                            &mut client,
                            "08006",
                            &format!(
                                "lost the connection to master {node}; this session held {why}, \
                                 which exist only there: reconnect"
                            ),
                        )
                        .await;
                        return;
                    }
                    info!(node = %node, owed = loss.owed, in_transaction = loss.in_transaction,
                        held_commit = held.is_some(), "master lost; the session moves to the next master");
                    if moving::answer_loss(&mut client, &mut cbuf, loss, shared.max_message)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    if let Some(need) = held {
                        // The commit's answer waits for the next master:
                        // whether that node has it decides the answer.
                        let Some(next) = move_session(&shared, &params, &mut client, &route).await
                        else {
                            return;
                        };
                        let answered =
                            answer_held_commit(&shared, &mut client, &node, &next.0.name, need)
                                .await;
                        if answered.is_err() {
                            return;
                        }
                        current = Some(next);
                    }
                }
                Ok(End::Stopped) => {
                    info!(node = %node, "Ferry is stopping; ending the session");
                    fatal(
                        &mut client,
                        "57P01",
                        "terminating connection because Ferry is shutting down",
                    )
                    .await;
                    return;
                }
                Ok(end) => {
                    debug!(?end, "session ended");
                    return;
                }
                Err(PumpError::Protocol(e)) => {
                    shared.metrics.protocol_errors.inc();
                    info!(error = %e, "client sent an invalid message; closing");
                    fatal(
                        &mut client,
                        "08P01",
                        &format!("invalid frontend message: {e}"),
                    )
                    .await;
                    return;
                }
                Err(PumpError::Io(e)) => {
                    debug!(error = %e, "session I/O ended");
                    return;
                }
            }
        }
    }
    .instrument(span)
    .await;
    shared.cancels.remove(pid);
    shared.metrics.connections.dec();
}

/// Answers a commit that completed on master `old` and was held for the
/// sync replicas when that master was lost, once the session stands on
/// `new`: committed if `new` holds it — the same node back (after a crash
/// PostgreSQL recovers its commits), or a replica that had applied it —
/// else SQLSTATE 08007 saying where it stands.
async fn answer_held_commit(
    shared: &Shared,
    client: &mut TcpStream,
    old: &str,
    new: &str,
    need: u64,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    let kept = match &shared.sync {
        Some(sync) if new == old => {
            // As if nothing had happened: the replicas confirm it as they
            // would have (or the configured fallback answers).
            sync.wait_for(need).await;
            true
        }
        Some(sync) => sync.has_reached(new, need),
        None => false,
    };
    if kept {
        info!(node = %new, "a commit held when the master was lost is on the new master; acknowledged");
    } else {
        warn!(lost = %old, node = %new, "a commit held when the master was lost is not on the new master; \
            answered with 08007");
        backend::error_response(
            &mut out,
            "ERROR",
            "08007",
            &format!(
                "the master {old} was lost after this COMMIT completed there and before a replica \
                 confirmed it: the new master {new} does not have it, so it is not part of the \
                 cluster's data; its outcome on {old} is unknown (if {old} kept it, `ferry resync \
                 {old}` moves it into that node's ferry.quarantine)"
            ),
        );
    }
    backend::ready_for_query(&mut out, b'I');
    client.write_all(&out).await
}

/// Connects a session whose master was lost to the master there is now
/// (waiting for one as a new session would) and recreates its state
/// there; on failure tells the client why and returns None.
async fn move_session(
    shared: &Shared,
    params: &[(String, String)],
    client: &mut TcpStream,
    route: &Mutex<Route>,
) -> Option<(Node, ServerConn)> {
    let (master, mut server) = connect_master(shared, params, client).await?;
    let recreated = {
        let (state, lost) = {
            let r = route.lock().unwrap_or_else(|p| p.into_inner());
            // The replay runs without the lock; the state does not change
            // while the session is between servers.
            (
                (
                    r.session.replay_statements().to_vec(),
                    r.session
                        .prepared_statements()
                        .map(<[u8]>::to_vec)
                        .collect::<Vec<_>>(),
                ),
                r.lost_transaction,
            )
        };
        moving::recreate(&mut server, &state.0, &state.1, lost).await
    };
    if let Err(e) = recreated {
        warn!(node = %master.name, error = %e, "could not recreate a moved session");
        fatal(
            client,
            "08006",
            &format!(
                "the session could not be recreated on the new master {}: {e}; reconnect",
                master.name
            ),
        )
        .await;
        return None;
    }
    route.lock().unwrap_or_else(|p| p.into_inner()).restart();
    info!(node = %master.name, "session moved");
    Some((master, server))
}

/// Opens the session's server connection on the master. While there is
/// no master (a failover under way, or a cluster waiting for the node that
/// was master last) or it cannot be reached, the session waits — up to
/// `hold_timeout` — for the topology to change and tries again; then it
/// gets SQLSTATE 57P03 saying why. A server that answers with an error
/// (authentication, too many connections) fails the session at once.
/// During a switchover it waits for the new master first.
async fn connect_master(
    shared: &Shared,
    params: &[(String, String)],
    client: &mut TcpStream,
) -> Option<(Node, ServerConn)> {
    let deadline = tokio::time::Instant::now() + shared.hold_timeout;
    let mut roles = shared.roles.clone();
    loop {
        if *shared.stopping.borrow() {
            fatal(
                client,
                "57P01",
                "terminating connection because Ferry is shutting down",
            )
            .await;
            return None;
        }
        if shared.gate.is_closed() {
            debug!("switchover under way; holding the session");
            let _ = tokio::time::timeout_at(deadline, shared.gate.until_open()).await;
        }
        let (master, waiting) = {
            let t = roles.borrow_and_update();
            (t.master.clone(), t.waiting.clone())
        };
        let why = match waiting {
            Some(why) => why,
            None => match ServerConn::connect(&master.target, params, shared.connect_timeout).await
            {
                Ok(s) => return Some((master, s)),
                // Starting up, shutting down, recovering after a crash:
                // the master may be back (or replaced) soon.
                Err(ConnError::Server(e)) if e.code.starts_with("57P") => {
                    format!("master {} does not accept sessions now ({e})", master.name)
                }
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
        // Wait for the topology to change; a master that is unreachable
        // but not (yet) replaced is tried again now and then (it may be
        // back, as after a quick restart).
        let retry = tokio::time::Instant::now() + RECONNECT_INTERVAL;
        let changed = tokio::time::timeout_at(deadline.min(retry), roles.changed()).await;
        let closed = matches!(changed, Ok(Err(_)));
        if closed || tokio::time::Instant::now() >= deadline {
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
    /// Ferry is stopping.
    Stopped,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PumpError {
    #[error("{0}")]
    Protocol(ferry_wire::FrameError),
    /// The client connection failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server connection failed: the session may move.
    #[error("server: {0}")]
    Server(std::io::Error),
}

/// How often a holding session tries a master that is unreachable but
/// not replaced.
const RECONNECT_INTERVAL: Duration = Duration::from_millis(500);
