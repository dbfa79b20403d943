//! One client session: authenticate, open a server connection on the
//! master, then pump messages both ways (see [`super::pump`]) until either
//! side ends.
//!
//! When the master is lost (its connection breaks, its server crashes, or
//! Ferry fails over or switches over to another node), the session moves:
//! it waits — up to `hold_timeout` — for a master ([`super::hold`]),
//! answers what the lost server owed ([`super::moving`]), recreates its
//! settings and prepared statements on the new master, and goes on.
//! Statements the client sends meanwhile wait and then run once on the new
//! master. A session holding state that cannot be recreated (temporary
//! tables, advisory locks) ends with SQLSTATE 08006 instead.

use super::cancel::ServerKey;
use super::client_stream::ClientStream;
use super::fatal;
use super::hold;
use super::moving;
use super::pump::{self, End, PumpError, Route};
use super::shared::Shared;
use super::startup::{self, Startup};
use bytes::{Buf, BytesMut};
use ferry_cluster::Node;
use ferry_sql::forbidden::forbidden_startup;
use ferry_wire::conn::send_cancel;
use ferry_wire::startup::StartupPacket;
use ferry_wire::{backend, Login, ServerConn, TransactionStatus};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, info, info_span, warn, Instrument};

/// Serves one accepted connection (from `peer`) to its end.
pub async fn handle(tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let mut client = ClientStream::Plain(tcp);
    let mut buf = BytesMut::with_capacity(8192);
    let Some((params, login, _place)) = start(&mut client, peer, &mut buf, &shared).await else {
        return;
    };
    let user = StartupPacket::param(&params, "user")
        .unwrap_or_default()
        .to_string();
    let database = StartupPacket::param(&params, "database")
        .unwrap_or(&user)
        .to_string();
    if let Some(what) = forbidden_startup(&params) {
        warn!(user = %user, setting = what, "refused a client whose startup options would switch capture off");
        fatal(
            &mut client,
            "42501",
            &format!("ferry: client sessions may not set {what}: it would switch off the capture that keeps the replicas identical"),
        )
        .await;
        return;
    }
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
    let Some((master, server)) = hold::master(&shared, &params, &login, &mut client).await else {
        return;
    };
    let (pid, secret) = shared
        .cancels
        .register(ServerKey::of(&master.target, &server));
    let span = info_span!("session", session = pid, user = %user, role = %login.user);
    shared.metrics.connections.inc();
    shared.metrics.connections_total.inc();
    let session = Session {
        shared: &shared,
        params: &params,
        login: &login,
        pid,
    };
    async {
        let mut out = BytesMut::new();
        for (k, v) in &server.params {
            backend::parameter_status(&mut out, k, v);
        }
        backend::backend_key_data(&mut out, pid, secret);
        backend::ready_for_query(&mut out, TransactionStatus::Idle);
        if client.write_all(&out).await.is_err() {
            return;
        }
        debug!(node = %master.name, "session started");
        session.serve(&mut client, buf, (master, server)).await;
    }
    .instrument(span)
    .await;
    shared.cancels.remove(pid);
    shared.metrics.connections.dec();
}

/// Runs the startup phase: the client's startup parameters, or None when
/// there is no session to serve (a cancel request, a failed or timed-out
/// startup, a client gone).
async fn start(
    client: &mut ClientStream,
    peer: SocketAddr,
    buf: &mut BytesMut,
    shared: &Shared,
) -> Option<(Vec<(String, String)>, Login, OwnedSemaphorePermit)> {
    let started = tokio::time::timeout(
        shared.startup_timeout,
        startup::run(
            client,
            buf,
            (&shared.users, shared.auth),
            (&shared.limit, shared.tls.as_ref()),
        ),
    )
    .await;
    match started {
        Err(_) => {
            fatal(client, "08P01", "startup timed out").await;
            None
        }
        Ok(Err(e)) => {
            shared.metrics.protocol_errors.inc();
            debug!(error = %e, "client dropped during startup");
            None
        }
        Ok(Ok(Startup::Closed)) => None,
        Ok(Ok(Startup::Full)) => {
            shared.metrics.refused_full.inc();
            warn!(client = %peer, "client refused with 53300: proxy.max_client_conn sessions are open");
            None
        }
        Ok(Ok(Startup::AuthFailed { user })) => {
            shared.metrics.auth_failures.inc();
            warn!(client = %peer, user = %user, "client authentication failed");
            None
        }
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
            None
        }
        Ok(Ok(Startup::Client {
            params,
            login,
            place,
        })) => Some((params, login, place)),
    }
}

/// A session past its startup.
struct Session<'a> {
    shared: &'a Shared,
    params: &'a [(String, String)],
    /// The role the session logs in to the servers as.
    login: &'a Login,
    /// The session's id (its cancel key).
    pid: i32,
}

/// What follows the end of a pump.
enum Next {
    /// Pump again on this master.
    On(Box<(Node, ServerConn)>),
    /// Move to the master there is now.
    Move,
    /// The session is over.
    Done,
}

impl Session<'_> {
    /// Pumps the session on `first`, then on each master it moves to.
    async fn serve(&self, client: &mut ClientStream, buf: BytesMut, first: (Node, ServerConn)) {
        let route = Mutex::new(Route::new(self.shared.gate.register()));
        let mut cbuf = buf;
        let mut next = Next::On(Box::new(first));
        loop {
            let (master, server) = match next {
                Next::On(on) => *on,
                Next::Move => {
                    match moving::move_session(
                        self.shared,
                        (self.params, self.login),
                        client,
                        &route,
                    )
                    .await
                    {
                        Some(c) => c,
                        None => return,
                    }
                }
                Next::Done => return,
            };
            let node = master.name.clone();
            let pumped = self.pump(client, &mut cbuf, master, server, &route).await;
            next = self.after(client, &mut cbuf, &node, pumped, &route).await;
        }
    }

    /// Pumps until either side ends, the master is replaced or Ferry stops.
    async fn pump(
        &self,
        client: &mut ClientStream,
        cbuf: &mut BytesMut,
        master: Node,
        server: ServerConn,
        route: &Mutex<Route>,
    ) -> Result<End, PumpError> {
        let shared = self.shared;
        shared
            .cancels
            .update(self.pid, ServerKey::of(&master.target, &server));
        let node = master.name;
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
        let cx = pump::Context {
            params: self.params,
            login: self.login,
            routing: shared.reads.as_deref(),
            sync: shared.sync.as_deref(),
            session_id: self.pid,
            cancels: &shared.cancels,
            gate: &shared.gate,
            replaced: &replaced,
            max_message: shared.max_message,
        };
        tokio::select! {
            p = pump::pump(client, cbuf, server, cx, route) => p,
            _ = switched => {
                info!(node = %node, "master replaced; moving the session");
                Ok(End::ServerGone)
            }
            _ = stopped => Ok(End::Stopped),
        }
    }

    /// What follows a pump on master `node` that ended with `pumped`.
    async fn after(
        &self,
        client: &mut ClientStream,
        cbuf: &mut BytesMut,
        node: &str,
        pumped: Result<End, PumpError>,
        route: &Mutex<Route>,
    ) -> Next {
        match pumped {
            Ok(End::ServerGone) | Err(PumpError::Server(_)) => {
                self.master_lost(client, cbuf, node, route).await
            }
            Ok(End::Stopped) => {
                info!(node = %node, "Ferry is stopping; ending the session");
                fatal(
                    client,
                    "57P01",
                    "terminating connection because Ferry is shutting down",
                )
                .await;
                Next::Done
            }
            Ok(end) => {
                debug!(?end, "session ended");
                Next::Done
            }
            Err(PumpError::Protocol(e)) => {
                self.shared.metrics.protocol_errors.inc();
                info!(error = %e, "client sent an invalid message; closing");
                fatal(client, "08P01", &format!("invalid frontend message: {e}")).await;
                Next::Done
            }
            Err(PumpError::Io(e)) => {
                debug!(error = %e, "session I/O ended");
                Next::Done
            }
        }
    }

    /// The master `node` is lost to the session: answers what it owed, and
    /// moves the session if it can be moved.
    async fn master_lost(
        &self,
        client: &mut ClientStream,
        cbuf: &mut BytesMut,
        node: &str,
        route: &Mutex<Route>,
    ) -> Next {
        let (loss, movable, held) = {
            let mut r = route.lock().unwrap_or_else(|p| p.into_inner());
            // Bytes whose write to the lost server did not complete count
            // as sent: their answers are owed.
            cbuf.advance(r.unsent.min(cbuf.len()));
            r.unsent = 0;
            let loss = r.session.lose();
            r.lost_transaction = loss.in_transaction && !loss.commit_in_flight;
            (loss, r.session.movable(), r.held_commit.take())
        };
        if let Err(why) = movable {
            info!(node = %node, reason = why, "master lost; the session cannot move");
            fatal(
                client,
                "08006",
                &format!(
                    "lost the connection to master {node}; this session held {why}, \
                     which exist only there: reconnect"
                ),
            )
            .await;
            return Next::Done;
        }
        info!(node = %node, owed = loss.owed, in_transaction = loss.in_transaction,
            held_commit = held.is_some(), "master lost; the session moves to the next master");
        let max = self.shared.max_message;
        if moving::answer_loss(client, cbuf, loss, max).await.is_err() {
            return Next::Done;
        }
        let Some(need) = held else {
            return Next::Move;
        };
        // The commit's answer waits for the next master: whether that node
        // has it decides the answer.
        let Some((master, server)) =
            moving::move_session(self.shared, (self.params, self.login), client, route).await
        else {
            return Next::Done;
        };
        let answered =
            moving::answer_held_commit(self.shared, client, node, &master.name, need).await;
        match answered {
            Ok(()) => Next::On(Box::new((master, server))),
            Err(_) => Next::Done,
        }
    }
}
