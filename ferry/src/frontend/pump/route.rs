//! Where one session stands: shared by the two directions of its pump
//! and kept by the session across the servers it moves between.

use crate::frontend::commit_tracker::CommitTracker;
use crate::frontend::read_balance::Lease;
use crate::frontend::session_state::SessionState;
use bytes::Bytes;
use ferry_wire::TransactionStatus;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Which server answers a cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dest {
    Master,
    /// The replica, whose answer starts with `skip` CloseComplete and
    /// ParseComplete messages the client did not ask for (a named
    /// statement made on the replica connection before it runs).
    Replica {
        skip: usize,
    },
}

/// One session's state, shared by the two directions of its pump.
pub(crate) struct Route {
    /// What is needed to move the session to another server.
    pub session: SessionState,
    /// Raised while the session is busy (see [`crate::frontend::hold`]).
    busy: Arc<AtomicBool>,
    /// Client bytes scanned and being written to the server: if that
    /// write does not complete they count as sent (their answers owed).
    pub unsent: usize,
    /// The transaction was lost with its server: see [`super::lost`].
    pub lost_transaction: bool,
    pub(super) tracker: CommitTracker,
    /// Destinations of the ReadyForQuery messages still owed, in order.
    pub(super) queue: VecDeque<Dest>,
    /// The master's last transaction status.
    pub(super) status: TransactionStatus,
    /// Reads stay on the master for good (see [`super::reads::pins`]).
    pub(super) pinned: bool,
    /// Causal: the tick the session's last writing commit needs.
    pub(super) need: u64,
    /// Sync mode: a commit that completed on the master and waits for the
    /// replicas, by the tick it needs; its ReadyForQuery has not reached
    /// the client. A session that moves meanwhile answers it itself (see
    /// [`crate::frontend::moving`]).
    pub held_commit: Option<u64>,
    /// The replica connection failed; the client side drops it and reads
    /// go to the master until a new one is opened.
    pub(super) replica_broken: bool,
    /// The replica (slot of `ReadRouting::replicas`) this session reads
    /// from: the least loaded among those serving at its first read, and
    /// again whenever it stops serving.
    pub(super) slot: Option<Lease>,
    /// The Parse message (whole) of the unnamed statement, when the client
    /// last parsed it in a cycle that ran on a replica: should the client
    /// bind it again without parsing it anew, the master parses it first.
    pub(super) unnamed_on_replica: Option<Bytes>,
    /// The ParseComplete of such a parse, which the client must not see, is
    /// owed after this many more ReadyForQuery from the master (at most one
    /// is owed: the next parse on a replica needs the session idle). A
    /// ReadyForQuery when none are left ends the wait: the parse failed.
    pub(super) swallow_parse_complete: Option<usize>,
    /// Whether each named statement is a read, with the Parse it was made
    /// by: classified once, not at every execution (kept for at most
    /// [`NAMED_READS`] names: drivers like tokio-postgres make a name per
    /// query).
    pub(super) named_reads: HashMap<String, (Bytes, bool)>,
}

/// Named statements whose kind a session keeps.
pub(super) const NAMED_READS: usize = 256;

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
            status: TransactionStatus::Idle,
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
        self.status = if self.lost_transaction {
            TransactionStatus::Failed
        } else {
            TransactionStatus::Idle
        };
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

    /// Idle outside a transaction with nothing outstanding: the only
    /// moment a read may go to a replica.
    pub(super) fn idle(&self) -> bool {
        self.status == TransactionStatus::Idle && self.queue.is_empty()
    }
}
