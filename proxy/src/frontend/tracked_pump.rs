//! The pump of sessions that Ferry follows message by message: in sync mode
//! (commits that may have written wait for the sync replicas, see
//! [`super::commit_tracker`]) and with reads on replicas (`proxy.reads =
//! "replicas"` or `"causal"`). Other sessions use the plain byte pump in
//! [`super::session`].
//!
//! With read routing, a session keeps its master connection and, from its
//! first routed read on, one connection to a replica. Each Query that is
//! certainly a read ([`ferry_sql::classify`]) and arrives while the session
//! is idle outside a transaction, not pinned, with nothing outstanding, may
//! go to the replica; everything else goes to the master:
//!
//! - `replicas`: the replica serves it whatever its lag;
//! - `causal`: only if the replica has applied the session's last writing
//!   commit (the batcher tick that commit needed; see
//!   [`ferry_batcher::SyncPoint`]), so a session always reads its own
//!   writes.
//!
//! `SET`, `PREPARE`, `LISTEN`, temporary tables and advisory locks pin the
//! session to the master for good (they live in one server session).
//! Extended-protocol reads move the same way when a cycle (Parse … Sync)
//! parses and runs the unnamed statement, or runs a read the session
//! prepared under a name, in the unnamed portal ([`super::read_cycle`]):
//! named statements are prepared on the master, and on the replica
//! connection before they first run there (the client does not see those
//! answers); named portals live on the master, and so do the cycles that
//! use them.
//!
//! Every Query, Sync and FunctionCall produces one ReadyForQuery; a queue
//! of their destinations, in order, tells the client side which server
//! answers next, so answers reach the client in the order it asked.

use super::cancel::{CancelRegistry, ServerKey};
use super::commit_tracker::{client_wants, server_wants, CommitTracker};
use super::gate::Gate;
use super::read_balance::{Lease, ReaderCounts};
use super::read_cycle::{self, Bound, Cycle};
use super::session::{End, PumpError};
use super::session_state::SessionState;
use bytes::{Buf, Bytes, BytesMut};
use ferry_batcher::SyncPoint;
use ferry_sql::classify::{classify, pins_session, Kind};
use ferry_sql::session_effect::discards_all;
use ferry_sql::set_config::{self, Scope};
use ferry_wire::codec::read_cstr;
use ferry_wire::stream::{OwnedReadHalf, OwnedWriteHalf};
use ferry_wire::{backend, FrameScanner, ServerConn, Step, Target};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tracing::{debug, warn};

/// `proxy.reads`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// Any replica, whatever its lag.
    Replicas,
    /// A replica that has the session's last commit.
    Causal,
}

/// Read-routing counters.
#[derive(Clone, Default)]
pub struct ReadMetrics {
    pub replica: Counter,
    pub master: Counter,
}

impl ReadMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "ferry_reads_replica",
            "Read-only statements served by a replica",
            m.replica.clone(),
        );
        registry.register(
            "ferry_reads_master",
            "Read-only statements outside transactions served by the master \
             (no replica qualified, or the session is pinned)",
            m.master.clone(),
        );
        m
    }
}

/// What every routing session shares.
pub struct ReadRouting {
    pub mode: ReadMode,
    /// Every node by [`SyncPoint`] slot (the batcher reports which of them
    /// serve as replicas); nodes added while Ferry runs are appended.
    pub replicas: std::sync::RwLock<Vec<(String, Target)>>,
    /// Which replica has applied which batcher tick.
    pub ticks: Arc<SyncPoint>,
    pub metrics: ReadMetrics,
    /// Sessions reading from each replica, to spread them.
    pub readers: Arc<ReaderCounts>,
    pub connect_timeout: Duration,
}

impl ReadRouting {
    /// The node in slot `i`.
    fn replica(&self, i: usize) -> Option<(String, Target)> {
        self.replicas.read().ok()?.get(i).cloned()
    }

    /// A lease on the serving replica with the fewest reading sessions;
    /// None when no replica serves.
    fn lease(&self, seed: usize) -> Option<Lease> {
        let slots = self.replicas.read().map_or(0, |r| r.len());
        let serving: Vec<usize> = (0..slots).filter(|&i| self.ticks.serves(i)).collect();
        self.readers
            .lease(&serving, seed, |i| self.replica(i).map(|(name, _)| name))
    }

    /// Puts a node added while Ferry runs in its slot.
    pub fn add(&self, slot: usize, name: &str, target: &Target) {
        if let Ok(mut all) = self.replicas.write() {
            if all.len() == slot {
                all.push((name.to_string(), target.clone()));
            }
        }
    }
}

/// Which server answers a cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dest {
    Master,
    /// The replica, whose answer starts with `skip` CloseComplete and
    /// ParseComplete messages the client did not ask for (a named
    /// statement made on the replica connection before it runs).
    Replica {
        skip: usize,
    },
}

/// One session's state, shared by the two directions of its pump and
/// kept by the session across the servers it moves between.
pub(crate) struct Route {
    /// What is needed to move the session to another server.
    pub session: SessionState,
    /// Raised while the session is busy (see [`super::gate`]).
    busy: Arc<AtomicBool>,
    /// Client bytes scanned and being written to the server: if that
    /// write does not complete they count as sent (their answers owed).
    pub unsent: usize,
    /// The transaction was lost with its server: the first error (or
    /// the ROLLBACK that answers a COMMIT) the new server gives in the
    /// failed transaction it stands in is replaced by SQLSTATE 40001.
    pub lost_transaction: bool,
    tracker: CommitTracker,
    /// Destinations of the ReadyForQuery messages still owed, in order.
    queue: VecDeque<Dest>,
    /// The master's last transaction status.
    status: u8,
    pinned: bool,
    /// Causal: the tick the session's last writing commit needs.
    need: u64,
    /// Sync mode: a commit that completed on the master and waits for the
    /// replicas, by the tick it needs; its ReadyForQuery has not reached
    /// the client. A session that moves meanwhile answers it itself (see
    /// [`super::session`]).
    pub held_commit: Option<u64>,
    /// The replica connection failed; the client side drops it and reads
    /// go to the master until a new one is opened.
    replica_broken: bool,
    /// The replica (slot of `ReadRouting::replicas`) this session reads
    /// from: the least loaded among those serving at its first read, and
    /// again whenever it stops serving.
    slot: Option<Lease>,
    /// The Parse message (whole) of the unnamed statement, when the client
    /// last parsed it in a cycle that ran on a replica: should the client
    /// bind it again without parsing it anew, the master parses it first.
    unnamed_on_replica: Option<Bytes>,
    /// The ParseComplete of such a parse, which the client must not see, is
    /// owed after this many more ReadyForQuery from the master (at most one
    /// is owed: the next parse on a replica needs the session idle). A
    /// ReadyForQuery when none are left ends the wait: the parse failed.
    swallow_parse_complete: Option<usize>,
    /// Whether each named statement is a read, with the Parse it was made
    /// by: classified once, not at every execution (kept for at most
    /// [`NAMED_READS`] names: drivers like tokio-postgres make a name per
    /// query).
    named_reads: HashMap<String, (Bytes, bool)>,
}

/// Named statements whose kind a session keeps.
const NAMED_READS: usize = 256;

impl Route {
    /// A new session's state; `busy` is its flag at the gate.
    pub fn new(busy: Arc<AtomicBool>) -> Self {
        Self {
            session: SessionState::default(),
            busy,
            unsent: 0,
            lost_transaction: false,
            tracker: CommitTracker::default(),
            queue: VecDeque::new(),
            status: b'I',
            pinned: false,
            need: 0,
            held_commit: None,
            replica_broken: false,
            slot: None,
            unnamed_on_replica: None,
            swallow_parse_complete: None,
            named_reads: HashMap::new(),
        }
    }

    /// Starts over on a new server connection: nothing is owed there, and
    /// reads open a new replica connection when they need one.
    pub fn restart(&mut self) {
        self.tracker = CommitTracker::default();
        self.queue.clear();
        self.status = if self.lost_transaction { b'E' } else { b'I' };
        self.unsent = 0;
        self.replica_broken = false;
        self.unnamed_on_replica = None;
        self.swallow_parse_complete = None;
        self.settle();
    }

    /// Publishes whether the session is busy now.
    pub fn settle(&self) {
        self.busy.store(self.session.busy(), Ordering::SeqCst);
    }
}

/// The session's replica connection, handed from the client side (which
/// opens it) to the server side (which reads it).
type ReplicaReader = (OwnedReadHalf, BytesMut);

/// What a routed session needs besides its connections.
pub(crate) struct RoutedSession<'a> {
    /// The client's startup parameters, for the replica connection.
    pub params: &'a [(String, String)],
    /// Set when reads may go to replicas.
    pub routing: Option<&'a ReadRouting>,
    /// Sync mode: commits of writes wait here, as in [`super::session`].
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
}

/// Pumps a followed session (sync mode, read routing, or both).
///
/// Returns [`End::ServerGone`] when the server connection is lost (closed,
/// broken, or ended by a crash or a shutdown of the server): the session
/// may then move to another server with what is left in `cbuf` (client
/// bytes not sent yet) and `route` (where it stood).
pub(crate) async fn pump_routed(
    client: &mut TcpStream,
    cbuf: &mut BytesMut,
    server: ServerConn,
    max: usize,
    session: RoutedSession<'_>,
    route: &Mutex<Route>,
) -> Result<End, PumpError> {
    let RoutedSession {
        params,
        routing,
        sync,
        session_id,
        cancels,
        gate,
        replaced,
    } = session;
    let (mut server, pending) = server.into_parts();
    let lock = || route.lock().unwrap_or_else(|p| p.into_inner());
    // Classification is only needed to route reads and to hold commits.
    let follow = routing.is_some() || sync.is_some();
    let handover: Mutex<Option<ReplicaReader>> = Mutex::new(None);
    let queued = Notify::new();
    // Spread sessions over the replicas.
    // Spread sessions over the replicas that serve when the session first
    // reads (see `Route::slot`).
    let seed = session_id.unsigned_abs() as usize;
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();

    let to_server = async {
        let mut scanner = FrameScanner::default();
        let mut replica_w: Option<OwnedWriteHalf> = None;
        // Named statements made on the replica connection, as parsed.
        let mut replica_parsed: HashMap<String, Bytes> = HashMap::new();
        let mut replica_down_until: Option<Instant> = None;
        loop {
            // A switchover is under way: a statement that would start
            // outside a transaction waits for the new master.
            if gate.is_closed() && !cbuf.is_empty() && !lock().session.busy() {
                debug!("holding a statement during a switchover");
                gate.until_open().await;
            }
            let mut at = 0;
            let mut terminated = false;
            loop {
                let step = scanner
                    .step(&cbuf[at..], max, |t| {
                        t == b'X' || client_wants(t) || matches!(t, b'E' | b'D')
                    })
                    .map_err(PumpError::Protocol)?;
                let routed = match step {
                    Step::Pass(n) => {
                        at += n;
                        continue;
                    }
                    Step::Frame { tag: b'X', len } => {
                        at += len;
                        terminated = true;
                        break;
                    }
                    Step::Frame { tag: b'Q', len } => {
                        let body = &cbuf[at + 5..at + len];
                        let sql = read_cstr(body).map_or("", |(s, _)| s);
                        let mut r = lock();
                        r.session.client_message(b'Q', body);
                        r.settle();
                        // A Query destroys the unnamed statement, wherever
                        // it was parsed.
                        r.unnamed_on_replica = None;
                        let kind = if follow { classify(sql) } else { Kind::Write };
                        if routing.is_some() {
                            if discards_all(sql) && r.status == b'I' && r.queue.is_empty() {
                                // What pinned the session is gone once this
                                // completes, and the next read cannot go out
                                // before it has (nothing may be outstanding).
                                r.pinned = false;
                            } else if pins(sql, kind) && !r.pinned {
                                pin(&mut r, &mut replica_w);
                            }
                        }
                        let chosen = choose(
                            &mut r,
                            routing,
                            kind,
                            seed,
                            (&mut replica_w, &mut replica_down_until),
                        );
                        if chosen.is_none() {
                            if follow {
                                r.tracker.query(kind.may_write());
                            }
                            r.queue.push_back(Dest::Master);
                        }
                        drop(r);
                        match chosen {
                            Some(c) => (c, len, None),
                            None => {
                                at += len;
                                continue;
                            }
                        }
                    }
                    Step::Frame { tag: b'P', len } if routing.is_some() => {
                        // Only a read of the unnamed statement, parsed while
                        // the session is idle, is looked at further (and
                        // waits for the rest of its cycle); anything else
                        // goes on at once.
                        let unnamed_read = read_cstr(&cbuf[at + 5..at + len])
                            .filter(|(name, _)| name.is_empty())
                            .and_then(|(_, rest)| read_cstr(rest))
                            .is_some_and(|(sql, _)| {
                                let r = lock();
                                r.status == b'I'
                                    && r.queue.is_empty()
                                    && !r.pinned
                                    && classify(sql) == Kind::Read
                            });
                        let cycle = if unnamed_read {
                            read_cycle::at_parse(&cbuf[at..])
                        } else {
                            Cycle::Other
                        };
                        let chosen = match cycle {
                            // The rest is on its way, and the client waits
                            // for no answer before it is sent.
                            Cycle::Incomplete => break,
                            Cycle::Unnamed {
                                len: whole,
                                parse,
                                sql,
                            } => {
                                // A read, as the look above found.
                                let kind = Kind::Read;
                                let mut r = lock();
                                let chosen = if !pins(sql, kind) {
                                    choose(
                                        &mut r,
                                        routing,
                                        kind,
                                        seed,
                                        (&mut replica_w, &mut replica_down_until),
                                    )
                                } else {
                                    None
                                };
                                chosen.map(|c| (c, whole, cbuf[at..at + parse].to_vec()))
                            }
                            Cycle::Other => None,
                        };
                        match chosen {
                            Some((c, whole, parse)) => {
                                let mut r = lock();
                                for (tag, body) in read_cycle::frames(&cbuf[at..at + whole]) {
                                    r.session.client_message(tag, body);
                                }
                                r.settle();
                                r.unnamed_on_replica = Some(parse.into());
                                drop(r);
                                (c, whole, None)
                            }
                            None => {
                                let body = &cbuf[at + 5..at + len];
                                to_master(
                                    &mut lock(),
                                    (b'P', body),
                                    follow,
                                    routing,
                                    &mut replica_w,
                                );
                                at += len;
                                continue;
                            }
                        }
                    }
                    Step::Frame { tag: b'B', len }
                        if routing.is_some()
                            && named_read(&mut lock(), &cbuf[at + 5..at + len]) =>
                    {
                        // A read the session prepared under a name, run in
                        // the unnamed portal while the session is idle:
                        // its whole cycle may go to the replica, which
                        // parses the statement first if it has not yet.
                        let bound = match read_cycle::at_bind(&cbuf[at..]) {
                            Bound::Incomplete => break,
                            Bound::Named {
                                len: whole,
                                statement,
                            } => Some((whole, statement.to_string())),
                            Bound::Other => None,
                        };
                        let chosen = bound.and_then(|(whole, statement)| {
                            let mut r = lock();
                            let frame = r.session.prepared(&statement).cloned()?;
                            let c = choose(
                                &mut r,
                                routing,
                                Kind::Read,
                                seed,
                                (&mut replica_w, &mut replica_down_until),
                            )?;
                            for (tag, body) in read_cycle::frames(&cbuf[at..at + whole]) {
                                r.session.client_message(tag, body);
                            }
                            r.settle();
                            Some((c, whole, Some((statement, frame))))
                        });
                        match chosen {
                            Some(routed) => routed,
                            None => {
                                let body = &cbuf[at + 5..at + len];
                                let mut r = lock();
                                to_master(&mut r, (b'B', body), follow, routing, &mut replica_w);
                                at += len;
                                continue;
                            }
                        }
                    }
                    Step::Frame { tag, len } => {
                        let body = &cbuf[at + 5..at + len];
                        // The client uses the unnamed statement it had
                        // parsed on a replica: the master parses it too
                        // (its answer is not passed on), then this message
                        // goes on as usual.
                        let reparse = {
                            let mut r = lock();
                            let reparse = r
                                .unnamed_on_replica
                                .take_if(|_| read_cycle::uses_unnamed_statement(tag, body));
                            if let Some(parse) = &reparse {
                                if follow {
                                    r.tracker.client_message(b'P', &parse[5..]);
                                }
                                let before = r.queue.iter().filter(|d| **d == Dest::Master).count();
                                r.swallow_parse_complete = Some(before);
                                r.unsent = at;
                            }
                            reparse
                        };
                        if let Some(parse) = reparse {
                            sw.write_all(&cbuf[..at]).await.map_err(PumpError::Server)?;
                            sw.write_all(&parse).await.map_err(PumpError::Server)?;
                            cbuf.advance(at);
                            lock().unsent = 0;
                            at = 0;
                            continue;
                        }
                        let mut r = lock();
                        to_master(&mut r, (tag, body), follow, routing, &mut replica_w);
                        at += len;
                        continue;
                    }
                    Step::More => break,
                };
                let ((routing, i), len, named) = routed;
                let Some((name, target)) = routing.replica(i) else {
                    // No such slot: the master answers.
                    read_on_master(&mut lock(), routing, &cbuf[at..at + len]);
                    at += len;
                    continue;
                };
                if replica_w.is_none() {
                    let params = read_only(params);
                    match ServerConn::connect(&target, &params, routing.connect_timeout).await {
                        Ok(conn) => {
                            cancels.set_reader(session_id, ServerKey::of(&target, &conn));
                            let (stream, pending) = conn.into_parts();
                            let (rr, rw) = stream.into_split();
                            *handover.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some((rr, pending));
                            replica_w = Some(rw);
                            replica_parsed.clear();
                            debug!(node = %name, "read connection opened");
                        }
                        Err(e) => {
                            warn!(node = %name, error = %e, "replica unavailable for reads; using the master");
                            replica_down_until = Some(Instant::now() + REPLICA_RETRY);
                            read_on_master(&mut lock(), routing, &cbuf[at..at + len]);
                            at += len;
                            continue;
                        }
                    }
                }
                // Everything before this read goes to the master first; then
                // the read to the replica.
                if at > 0 {
                    lock().unsent = at;
                    sw.write_all(&cbuf[..at]).await.map_err(PumpError::Server)?;
                    cbuf.advance(at);
                    lock().unsent = 0;
                    at = 0;
                }
                // A named statement the replica connection lacks (or holds
                // in another text) is made there first; the client does not
                // see the answers to that.
                let mut skip = 0;
                let mut out: Vec<u8> = Vec::new();
                if let Some((statement, frame)) = &named {
                    if replica_parsed.get(statement) != Some(frame) {
                        if replica_parsed.contains_key(statement) {
                            out.extend(read_cycle::close_statement(statement));
                            skip += 1;
                        }
                        out.extend_from_slice(frame);
                        skip += 1;
                    }
                }
                let cycle: &[u8] = if out.is_empty() {
                    &cbuf[..len]
                } else {
                    out.extend_from_slice(&cbuf[..len]);
                    &out
                };
                let sent = match replica_w.as_mut() {
                    Some(w) => w.write_all(cycle).await.is_ok(),
                    None => false,
                };
                if let (true, Some((statement, frame))) = (sent, named) {
                    replica_parsed.insert(statement, frame);
                }
                if sent {
                    lock().queue.push_back(Dest::Replica { skip });
                    queued.notify_one();
                    routing.metrics.replica.inc();
                    cbuf.advance(len);
                } else {
                    // The replica is gone: this read goes to the master with
                    // whatever follows it.
                    warn!(node = %name, "replica connection for reads failed; using the master");
                    replica_w = None;
                    replica_down_until = Some(Instant::now() + REPLICA_RETRY);
                    read_on_master(&mut lock(), routing, &cbuf[..len]);
                    at = len;
                }
            }
            if at > 0 {
                lock().unsent = at;
                sw.write_all(&cbuf[..at]).await.map_err(PumpError::Server)?;
                cbuf.advance(at);
                lock().unsent = 0;
            }
            if terminated {
                return Ok(End::Terminated);
            }
            cbuf.reserve(16 * 1024);
            if cr.read_buf(&mut *cbuf).await? == 0 {
                return Ok(End::ClientGone);
            }
        }
    };

    let to_client = async {
        let mut mbuf = pending;
        mbuf.reserve(64 * 1024);
        let mut mscan = FrameScanner::backend();
        let mut replica: Option<(OwnedReadHalf, BytesMut, FrameScanner)> = None;
        loop {
            let front = lock().queue.front().copied();
            if let Some(Dest::Replica { skip }) = front {
                // A connection handed over replaces the one held: the
                // client side opens one only when it has none, or when the
                // session moved to another replica (with nothing owed by
                // the old one: reads are routed only when idle).
                let fresh = handover.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some((r, b)) = fresh {
                    replica = Some((r, b, FrameScanner::backend()));
                }
                let Some((rr, rbuf, rscan)) = replica.as_mut() else {
                    return Err(PumpError::Io(std::io::Error::other(
                        "read routed to a replica without a connection",
                    )));
                };
                match relay_replica_answer(rr, rbuf, rscan, &mut cw, skip).await {
                    Ok(()) => {
                        let mut r = lock();
                        r.queue.pop_front();
                        r.session.replica_answered();
                        r.settle();
                    }
                    Err(e) => {
                        // The read did not complete on the replica: the
                        // client gets an error for it (and may retry), the
                        // session goes on with the master.
                        let slot = lock().slot.as_ref().map(Lease::slot);
                        let name = routing
                            .zip(slot)
                            .and_then(|(routing, i)| routing.replica(i))
                            .map_or_else(|| "?".to_string(), |r| r.0);
                        warn!(node = %name, error = %e, "replica failed during a read; the session continues on the master");
                        let mut out = BytesMut::new();
                        backend::error_response(
                            &mut out,
                            "ERROR",
                            "08006",
                            &format!(
                                "the replica {name} serving this read failed ({e}); \
                                 the statement did not complete, retry it"
                            ),
                        );
                        backend::ready_for_query(&mut out, b'I');
                        cw.write_all(&out).await?;
                        replica = None;
                        let mut r = lock();
                        r.queue.pop_front();
                        r.session.replica_answered();
                        r.settle();
                        r.replica_broken = true;
                    }
                }
                continue;
            }
            // The master's turn (or nothing is owed: notifications).
            let mut at = 0;
            let mut switch = false;
            loop {
                let step = mscan
                    .step(&mbuf[at..], SERVER_MAX_MESSAGE, |t| {
                        server_wants(t) || t == b'1'
                    })
                    .map_err(invalid_data)?;
                match step {
                    Step::Pass(n) => at += n,
                    Step::Frame { tag: b'1', len } => {
                        // The answer to a parse the client did not ask for
                        // (see `Route::unnamed_on_replica`) is dropped.
                        let swallow = {
                            let mut r = lock();
                            let owed = r.swallow_parse_complete == Some(0);
                            if owed {
                                r.swallow_parse_complete = None;
                            }
                            owed
                        };
                        if swallow {
                            cw.write_all(&mbuf[..at]).await?;
                            mbuf.advance(at + len);
                            at = 0;
                        } else {
                            at += len;
                        }
                    }
                    Step::Frame { tag, len } => {
                        let body = &mbuf[at + 5..at + len];
                        if tag == b'E' && fatal_error(body) && server_lost(body, replaced) {
                            // The server is going away under the session
                            // (a crash, a shutdown, a failover): the
                            // session moves instead of ending.
                            cw.write_all(&mbuf[..at]).await?;
                            mbuf.advance(at);
                            return Ok(End::ServerGone);
                        }
                        let (replacement, hold, next_replica) = {
                            let mut r = lock();
                            if let Some(answer) = lost_transaction_answer(tag, body, &r) {
                                (Some(answer), false, false)
                            } else {
                                r.session.server_message(tag, body);
                                r.settle();
                                if tag == b'Z' && body.first() == Some(&b'I') {
                                    r.lost_transaction = false;
                                }
                                let commit = follow && r.tracker.server_message(tag, body);
                                if tag == b'Z' {
                                    r.swallow_parse_complete = match r.swallow_parse_complete {
                                        Some(n) if n > 0 => Some(n - 1),
                                        _ => None,
                                    };
                                    r.status = body.first().copied().unwrap_or(b'I');
                                    if r.queue.front() == Some(&Dest::Master) {
                                        r.queue.pop_front();
                                    }
                                    if let (true, Some(routing)) = (commit, routing) {
                                        r.need = routing.ticks.commit_tick();
                                    }
                                }
                                let next = matches!(r.queue.front(), Some(Dest::Replica { .. }));
                                (None, commit && sync.is_some(), tag == b'Z' && next)
                            }
                        };
                        if let Some(answer) = replacement {
                            cw.write_all(&mbuf[..at]).await?;
                            cw.write_all(&answer).await?;
                            mbuf.advance(at + len);
                            at = 0;
                            continue;
                        }
                        match sync.filter(|_| hold) {
                            Some(sync) => {
                                cw.write_all(&mbuf[..at]).await?;
                                mbuf.advance(at);
                                at = 0;
                                let need = sync.commit_tick();
                                lock().held_commit = Some(need);
                                sync.wait_for(need).await;
                                // The ReadyForQuery goes out at once: until
                                // it has, a move answers it instead.
                                cw.write_all(&mbuf[..len]).await?;
                                mbuf.advance(len);
                                lock().held_commit = None;
                            }
                            None => at += len,
                        }
                        if next_replica {
                            switch = true;
                            break;
                        }
                    }
                    Step::More => break,
                }
            }
            if at > 0 {
                cw.write_all(&mbuf[..at]).await?;
                mbuf.advance(at);
            }
            if switch {
                continue;
            }
            mbuf.reserve(16 * 1024);
            let idle = lock().queue.is_empty();
            let n = if idle {
                tokio::select! {
                    n = sr.read_buf(&mut mbuf) => n.map_err(PumpError::Server)?,
                    _ = queued.notified() => continue,
                }
            } else {
                sr.read_buf(&mut mbuf).await.map_err(PumpError::Server)?
            };
            if n == 0 {
                return Ok(End::ServerGone);
            }
        }
    };
    tokio::select! {
        r = to_server => r,
        r = to_client => r,
    }
}

/// Whether a statement leaves state in the master's server session that a
/// replica session would lack: settings (`SET`, a session `set_config()`),
/// prepared statements, listens, temporary tables, advisory locks — alone
/// or among other statements of a query string (`SET search_path = app;
/// INSERT …` is a write, and sets the path all the same). Reads of such a
/// session stay on the master from then on.
fn pins(sql: &str, kind: Kind) -> bool {
    kind == Kind::Session
        || pins_session(sql)
        || set_config::scope(sql) != Scope::None
        || !ferry_sql::session_effect::effects(sql).is_empty()
}

/// Keeps a session's reads on the master from now on: its replica place
/// and connection go.
fn pin(r: &mut Route, replica_w: &mut Option<OwnedWriteHalf>) {
    r.pinned = true;
    r.slot = None;
    *replica_w = None;
}

/// Where a read goes, decided when it arrives: the session's replica (its
/// routing and slot) when it is a read that arrives while the session is
/// idle outside a transaction, not pinned, with nothing outstanding, and
/// the replica serves (in `causal` mode: and has the session's last
/// commit); otherwise None, for the master. Leases a replica at the
/// session's first read and again when its replica stopped serving; a
/// replica connection that failed is dropped here.
fn choose<'a>(
    r: &mut Route,
    routing: Option<&'a ReadRouting>,
    kind: Kind,
    seed: usize,
    (replica_w, down_until): (&mut Option<OwnedWriteHalf>, &mut Option<Instant>),
) -> Option<(&'a ReadRouting, usize)> {
    if std::mem::take(&mut r.replica_broken) {
        *replica_w = None;
        *down_until = Some(Instant::now() + REPLICA_RETRY);
    }
    let idle = r.status == b'I' && r.queue.is_empty();
    let read_here = kind == Kind::Read && idle && !r.pinned;
    let up = down_until.is_none_or(|t| Instant::now() >= t);
    if let (true, Some(routing)) = (read_here, routing) {
        let stale = r
            .slot
            .as_ref()
            .is_none_or(|l| !routing.ticks.serves(l.slot()));
        if stale {
            // A first read, or the replica stopped serving: read from the
            // least loaded one that serves, on a new connection.
            let before = r.slot.take().map(|l| l.slot());
            r.slot = routing.lease(seed);
            let after = r.slot.as_ref().map(Lease::slot);
            if after.is_some() && after != before {
                *replica_w = None;
                *down_until = None;
            }
        }
    }
    let slot = r.slot.as_ref().map(Lease::slot);
    let chosen = routing.zip(slot).filter(|&(routing, i)| {
        read_here
            && up
            && routing.ticks.serves(i)
            && (routing.mode == ReadMode::Replicas || routing.ticks.replica_has(i, r.need))
    });
    if let (true, None, Some(routing)) = (read_here, chosen, routing) {
        routing.metrics.master.inc();
    }
    chosen
}

/// A client message that goes to the master, as the session and its
/// commit tracker see it.
fn to_master(
    r: &mut Route,
    (tag, body): (u8, &[u8]),
    follow: bool,
    routing: Option<&ReadRouting>,
    replica_w: &mut Option<OwnedWriteHalf>,
) {
    r.session.client_message(tag, body);
    r.settle();
    if follow {
        r.tracker.client_message(tag, body);
    }
    if tag == b'P' && read_cycle::parses_unnamed(body) {
        r.unnamed_on_replica = None;
    }
    if tag == b'P' && routing.is_some() && !r.pinned {
        // Session state made through the extended protocol pins the
        // session as a Query would.
        let sql = read_cstr(body)
            .and_then(|(_, rest)| read_cstr(rest))
            .map_or("", |(s, _)| s);
        if pins(sql, classify(sql)) {
            pin(r, replica_w);
        }
    }
    if matches!(tag, b'S' | b'F') {
        r.queue.push_back(Dest::Master);
    }
}

/// A read that was to go to a replica goes to the master after all (only
/// reads are routed: it cannot write): `sent` is the Query, or the
/// extended-protocol cycle.
fn read_on_master(r: &mut Route, routing: &ReadRouting, sent: &[u8]) {
    routing.metrics.master.inc();
    match sent.first() {
        Some(b'Q') => r.tracker.query(false),
        first => {
            for (tag, body) in read_cycle::frames(sent) {
                r.tracker.client_message(tag, body);
            }
            if first == Some(&b'P') {
                r.unnamed_on_replica = None;
            }
        }
    }
    r.queue.push_back(Dest::Master);
}

/// Whether a Bind message runs, in the unnamed portal, a read the session
/// prepared under a name, while the session is idle and not pinned: the
/// start of a cycle that may go to a replica.
fn named_read(r: &mut Route, body: &[u8]) -> bool {
    if r.status != b'I' || !r.queue.is_empty() || r.pinned {
        return false;
    }
    let Some(("", rest)) = read_cstr(body) else {
        return false;
    };
    let Some((name, _)) = read_cstr(rest).filter(|(n, _)| !n.is_empty()) else {
        return false;
    };
    let Some(frame) = r.session.prepared(name).cloned() else {
        return false;
    };
    if let Some((known, read)) = r.named_reads.get(name) {
        if *known == frame {
            return *read;
        }
    }
    let sql = frame
        .get(5..)
        .and_then(read_cstr)
        .and_then(|(_, rest)| read_cstr(rest))
        .map_or("", |(s, _)| s);
    let read = classify(sql) == Kind::Read && !pins(sql, Kind::Read);
    if r.named_reads.len() >= NAMED_READS {
        r.named_reads.clear();
    }
    r.named_reads.insert(name.to_string(), (frame, read));
    read
}

/// Largest server message the tracked pump accepts (PostgreSQL's own limit
/// for a field is 1 GB; a DataRow may carry several).
const SERVER_MAX_MESSAGE: usize = i32::MAX as usize;

/// The client's startup parameters for a replica read connection, with
/// `default_transaction_read_only` on: a statement taken for a read that
/// writes after all (through a view over a volatile function, say) fails
/// there with SQLSTATE 25006 instead of changing the replica behind the
/// master's back.
fn read_only(params: &[(String, String)]) -> Vec<(String, String)> {
    const READ_ONLY: &str = "-c default_transaction_read_only=on";
    let mut out: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "options")
        .cloned()
        .collect();
    let options = params.iter().find(|(k, _)| k == "options").map_or_else(
        || READ_ONLY.to_string(),
        |(_, v)| format!("{v} {READ_ONLY}"),
    );
    out.push(("options".into(), options));
    out
}

/// How long a session leaves a failed replica alone.
const REPLICA_RETRY: Duration = Duration::from_secs(5);

/// Forwards one answer (up to and including its ReadyForQuery) from the
/// replica, less its first `skip` CloseComplete and ParseComplete messages
/// (answers to what Ferry sent before the client's cycle; an error ends
/// them: the server skips the rest up to the Sync). Fails, without
/// forwarding it, on a FATAL or PANIC error (the replica is shutting down
/// or crashed) and on a broken connection.
async fn relay_replica_answer(
    rr: &mut OwnedReadHalf,
    rbuf: &mut BytesMut,
    rscan: &mut FrameScanner,
    cw: &mut tokio::net::tcp::WriteHalf<'_>,
    mut skip: usize,
) -> Result<(), std::io::Error> {
    loop {
        let mut at = 0;
        let mut done = false;
        loop {
            let step = rscan
                .step(&rbuf[at..], SERVER_MAX_MESSAGE, |t| {
                    matches!(t, b'Z' | b'E') || (skip > 0 && matches!(t, b'1' | b'3'))
                })
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            match step {
                Step::Pass(n) => at += n,
                Step::Frame { tag: b'E', len } => {
                    if fatal_error(&rbuf[at + 5..at + len]) {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "the replica ended the connection",
                        ));
                    }
                    skip = 0;
                    at += len;
                }
                Step::Frame {
                    tag: b'1' | b'3',
                    len,
                } => {
                    cw.write_all(&rbuf[..at]).await?;
                    rbuf.advance(at + len);
                    at = 0;
                    skip = skip.saturating_sub(1);
                }
                Step::Frame { len, .. } => {
                    at += len;
                    done = true;
                    break;
                }
                Step::More => break,
            }
        }
        if at > 0 {
            cw.write_all(&rbuf[..at]).await?;
            rbuf.advance(at);
        }
        if done {
            return Ok(());
        }
        rbuf.reserve(16 * 1024);
        if rr.read_buf(rbuf).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the replica closed the connection",
            ));
        }
    }
}

/// Whether a FATAL error from the master means the server is lost to the
/// session rather than the session ended on purpose: a crash of another
/// backend (57P02), a server not accepting sessions (57P03), the death of
/// the postmaster, or a termination after Ferry replaced that master (all
/// 57P01). Any other FATAL — an operator's `pg_terminate_backend` or a
/// shutdown of a master still in place ("administrator command"), a
/// timeout — reaches the client and ends the session.
fn server_lost(body: &[u8], replaced: &(dyn Fn() -> bool + Sync)) -> bool {
    match error_field(body, b'C') {
        Some("57P02" | "57P03") => true,
        Some("57P01") => {
            let by_operator =
                error_field(body, b'M').is_some_and(|m| m.contains("administrator command"));
            !by_operator || replaced()
        }
        _ => false,
    }
}

/// What replaces a server message after the session's transaction was
/// lost with its server: the first error in the failed transaction the
/// new server stands in, or the ROLLBACK that answers a COMMIT there,
/// becomes SQLSTATE 40001.
fn lost_transaction_answer(tag: u8, body: &[u8], r: &Route) -> Option<BytesMut> {
    if !r.lost_transaction {
        return None;
    }
    let replace = match tag {
        b'E' => error_field(body, b'C') == Some("25P02"),
        b'C' => body.starts_with(b"ROLLBACK") && r.session.next_commits(),
        _ => false,
    };
    replace.then(|| {
        let mut out = BytesMut::new();
        backend::error_response(&mut out, "ERROR", "40001", LOST_TRANSACTION);
        out
    })
}

/// The message of SQLSTATE 40001 for a transaction lost with its master.
pub(crate) const LOST_TRANSACTION: &str = "the transaction was open on a master that failed \
     or was switched over before its COMMIT was sent: it did not commit; roll back and retry it";

/// One field of an ErrorResponse body.
fn error_field(body: &[u8], wanted: u8) -> Option<&str> {
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let (value, after) = read_cstr(tail)?;
        if field == wanted {
            return Some(value);
        }
        rest = after;
    }
    None
}

/// Whether an ErrorResponse body has severity FATAL or PANIC.
fn fatal_error(body: &[u8]) -> bool {
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let Some((value, after)) = read_cstr(tail) else {
            break;
        };
        if field == b'V' || field == b'S' {
            return matches!(value, "FATAL" | "PANIC");
        }
        rest = after;
    }
    false
}

fn invalid_data(e: ferry_wire::FrameError) -> PumpError {
    PumpError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_connections_are_read_only() {
        let plain = read_only(&[("application_name".into(), "app".into())]);
        assert!(plain.contains(&(
            "options".into(),
            "-c default_transaction_read_only=on".into()
        )));
        let merged = read_only(&[("options".into(), "-c search_path=s".into())]);
        assert_eq!(
            merged,
            vec![(
                "options".to_string(),
                "-c search_path=s -c default_transaction_read_only=on".to_string()
            )]
        );
    }

    #[test]
    fn a_lost_server_is_told_from_a_session_ended_on_purpose() {
        let fatal = |code: &str, message: &str| {
            let mut out = BytesMut::new();
            backend::error_response(&mut out, "FATAL", code, message);
            out
        };
        let kept = || false;
        let replaced = || true;
        let crash = fatal(
            "57P02",
            "terminating connection because of crash of another server process",
        );
        let postmaster = fatal(
            "57P01",
            "terminating connection due to unexpected postmaster exit",
        );
        let operator = fatal(
            "57P01",
            "terminating connection due to administrator command",
        );
        let timeout = fatal(
            "25P03",
            "terminating connection due to idle-in-transaction timeout",
        );
        assert!(server_lost(&crash[5..], &kept));
        assert!(server_lost(&postmaster[5..], &kept));
        assert!(!server_lost(&operator[5..], &kept));
        assert!(server_lost(&operator[5..], &replaced));
        assert!(!server_lost(&timeout[5..], &replaced));
    }

    #[test]
    fn fatal_errors_are_told_from_others() {
        let mut fatal = BytesMut::new();
        backend::error_response(&mut fatal, "FATAL", "57P01", "terminating connection");
        let mut plain = BytesMut::new();
        backend::error_response(&mut plain, "ERROR", "42P01", "no such table");
        assert!(fatal_error(&fatal[5..]));
        assert!(!fatal_error(&plain[5..]));
        assert!(!fatal_error(b""));
        assert!(!fatal_error(b"S"));
    }
}
