//! Each node's own record of its role: the cluster epoch it last saw (its
//! fence), its state and its state-priority, written before a transition
//! takes effect, so that after a total outage the nodes themselves tell
//! who was master last.
//!
//! State-priorities: a master without a caught-up replica 1, a master with
//! caught-up replicas 2, a replica 3.

/// The node's record. Returns `(node, epoch, state, state_priority, master,
/// forced)`, or no row before Ferry first recorded one.
pub const READ_STATE: &str =
    "SELECT node, epoch, state, state_priority, master, forced FROM ferry.node_state";

/// Records a state; never moves the epoch back (a node already fenced at a
/// later epoch keeps its record). Parameters: node, epoch, state,
/// state_priority, master, forced. Returns the number of rows written.
pub const RECORD_STATE: &str = "INSERT INTO ferry.node_state AS s \
     (node, epoch, state, state_priority, master, forced) VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (singleton) DO UPDATE SET node = EXCLUDED.node, epoch = EXCLUDED.epoch, \
     state = EXCLUDED.state, state_priority = EXCLUDED.state_priority, master = EXCLUDED.master, \
     forced = EXCLUDED.forced, recorded_at = now() WHERE s.epoch <= EXCLUDED.epoch";

/// Raises a node's fence to an epoch (keeping its state). Parameters:
/// epoch, node name.
pub const FENCE: &str =
    "INSERT INTO ferry.node_state AS s (node, epoch, state, state_priority, master) \
     VALUES ($2, $1, 'replica', 3, '') \
     ON CONFLICT (singleton) DO UPDATE SET epoch = EXCLUDED.epoch, recorded_at = now() \
     WHERE s.epoch < EXCLUDED.epoch";

/// Apply sessions on a node in a transaction now. No parameters. Returns
/// one bigint.
pub const APPLIES_UNDER_WAY: &str = "SELECT count(*) FROM pg_stat_activity \
     WHERE datname = current_database() AND pid <> pg_backend_pid() \
     AND application_name = 'ferry apply' AND state <> 'idle'";

/// Ends the apply sessions on a node just fenced that are still in a
/// transaction after a grace (see `ferry_cluster::record::fence`): a batch
/// of the older epoch waiting on a lock a query holds, say, would hold the
/// node's ledger and keep the failover from reading and recording it; it
/// rolls back. No parameters.
pub const END_OLD_APPLIES: &str = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
     WHERE datname = current_database() AND pid <> pg_backend_pid() \
     AND application_name = 'ferry apply' AND state <> 'idle'";

/// Ends every other session on a node (a fenced master's clients), except
/// Ferry's own control sessions. No parameters.
pub const TERMINATE_SESSIONS: &str = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
     WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'";

/// On a promoted node: batch ids continue after the highest its ledger
/// holds. Parameter: that id.
pub const CONTINUE_BATCH_IDS: &str = "SELECT setval('ferry.batch_ids', greatest($1::bigint, 1))";

/// On a node that holds exactly what the new master holds (a replica as
/// current as it, or the old master after a switchover, which may have no
/// ledger yet): its ledger now counts from the new master. Parameters:
/// origin, batch id, snapshot.
pub const REBASE_LEDGER: &str = "INSERT INTO ferry.applied AS a (origin, batch_id, snap) \
     VALUES ($1, $2, ($3::text)::pg_snapshot) \
     ON CONFLICT (singleton) DO UPDATE SET origin = EXCLUDED.origin, batch_id = EXCLUDED.batch_id, \
     snap = EXCLUDED.snap, applied_at = now()";
