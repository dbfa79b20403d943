//! Holding, as users call it: a client statement waits instead of failing
//! while the master changes.
//!
//! - **The switchover gate** ([`gate`]): while a planned switchover closes
//!   it, sessions hold each new statement that would start outside a
//!   transaction (and new sessions hold before they connect), while the
//!   statements and transactions already under way finish. Once no session
//!   is busy, the switchover ships the last batches and promotes; then the
//!   gate opens and the held statements run on the new master.
//! - **Waiting for a master** ([`master`]): while there is no master (a
//!   failover under way, a cluster waiting for the node that was master
//!   last) or it cannot be reached, a session — new, or moving after its
//!   master was lost — waits up to `hold_timeout` for one.
//!
//! A commit held in sync mode until the replicas have it is the pump's
//! (see [`super::pump`]).

mod gate;
mod master;

pub use gate::Gate;
pub(crate) use master::master;
