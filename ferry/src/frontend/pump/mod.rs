//! The session pump: client messages to the server, server answers to the
//! client, followed message by message.
//!
//! Two directions run side by side: [`client`] scans what the client sends
//! and decides, per message kind (one file each), whether it goes to the
//! master or, as a read, to a replica; [`server`] forwards the answers in
//! the order the client asked for them. Every Query, Sync and FunctionCall
//! produces one ReadyForQuery, so a queue of their destinations
//! ([`route::Dest`]) tells the server side which server answers next.
//!
//! Following each message is what three features need:
//! - **sync mode**: a COMMIT that may have written is held until `k`
//!   replicas applied it ([`crate::frontend::commit_tracker`],
//!   [`ferry_cluster::SyncPoint`]);
//! - **reads on replicas** (`proxy.reads`, [`reads`]): a read that arrives
//!   while the session is idle may go to a replica; `SET`, `PREPARE`,
//!   `LISTEN`, temporary tables and advisory locks pin the session to the
//!   master for good. Extended-protocol reads move the same way when a
//!   cycle (Parse … Sync) parses and runs the unnamed statement, or runs a
//!   read the session prepared under a name, in the unnamed portal
//!   ([`crate::frontend::read_cycle`]);
//! - **moving**: the session records what it would need to be recreated on
//!   another server ([`crate::frontend::session_state`]), and after a lost
//!   transaction the first error becomes 40001 ([`lost`]).
//!
//! A statement that would start while a switchover's gate is closed waits
//! there first ([`crate::frontend::hold`]).

mod client;
mod end;
mod lost;
mod reads;
mod route;
mod server;

pub(crate) use end::{End, PumpError};
pub(crate) use lost::LOST_TRANSACTION;
pub use reads::{ReadMetrics, ReadMode, ReadRouting};
pub(crate) use route::Route;

use crate::frontend::cancel::CancelRegistry;
use crate::frontend::client_stream::ClientStream;
use crate::frontend::hold::Gate;
use bytes::BytesMut;
use ferry_cluster::SyncPoint;
use ferry_wire::stream::OwnedReadHalf;
use ferry_wire::ServerConn;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::Notify;

/// What a session's pump needs besides its connections.
pub(crate) struct Context<'a> {
    /// The client's startup parameters, for the replica connection.
    pub params: &'a [(String, String)],
    /// The role the session logs in to the servers as.
    pub login: &'a ferry_wire::Login,
    /// Set when reads may go to replicas.
    pub routing: Option<&'a ReadRouting>,
    /// Sync mode: commits of writes wait here.
    pub sync: Option<&'a SyncPoint>,
    /// Spreads sessions over the replicas; the session's cancel key.
    pub session_id: i32,
    /// Where cancel requests learn of the session's read connection.
    pub cancels: &'a CancelRegistry,
    /// Closed during a planned switchover: new statements wait.
    pub gate: &'a Gate,
    /// Whether the master this session runs on has been replaced (a
    /// termination by the server is then a move, not an end).
    pub replaced: &'a (dyn Fn() -> bool + Sync),
    /// Largest client message accepted.
    pub max_message: usize,
}

/// The session's replica connection, handed from the client side (which
/// opens it) to the server side (which reads it).
type ReplicaReader = (OwnedReadHalf, BytesMut);

/// What the two directions share.
struct Link<'a> {
    route: &'a Mutex<Route>,
    routing: Option<&'a ReadRouting>,
    sync: Option<&'a SyncPoint>,
    /// Classification is only needed to route reads and to hold commits.
    follow: bool,
    /// A replica connection the client side opened, for the server side.
    handover: Mutex<Option<ReplicaReader>>,
    /// Wakes the server side when a read went to the replica.
    queued: Notify,
}

impl Link<'_> {
    fn route(&self) -> MutexGuard<'_, Route> {
        self.route.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Pumps one session on `server` until either side ends.
///
/// Returns [`End::ServerGone`] when the server connection is lost (closed,
/// broken, or ended by a crash or a shutdown of the server): the session
/// may then move to another server with what is left in `cbuf` (client
/// bytes not sent yet) and `route` (where it stood).
pub(crate) async fn pump(
    client: &mut ClientStream,
    cbuf: &mut BytesMut,
    server: ServerConn,
    cx: Context<'_>,
    route: &Mutex<Route>,
) -> Result<End, PumpError> {
    let (mut server, pending) = server.into_parts();
    let link = Link {
        route,
        routing: cx.routing,
        sync: cx.sync,
        follow: cx.routing.is_some() || cx.sync.is_some(),
        handover: Mutex::new(None),
        queued: Notify::new(),
    };
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let to_server = client::ClientSide::new(&link, &cx).run(&mut cr, &mut sw, cbuf);
    let to_client = server::ServerSide::new(&link, pending, cx.replaced).run(&mut sr, &mut cw);
    tokio::select! {
        r = to_server => r,
        r = to_client => r,
    }
}
