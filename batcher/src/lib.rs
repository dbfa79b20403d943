//! Ferry's replication path: capture, batch, ship, apply.
//!
//! - [`install`] puts the `ferry` schema and generated capture on the nodes.
//! - [`cutter`] runs on the master: it cuts a batch between two snapshots,
//!   materialises it into local temporary tables netted per key and copies
//!   it out in binary.
//! - [`apply`] runs one session per replica: it ships a batch in one flight
//!   (COPY data, apply statements and COMMIT pipelined) into temporary
//!   tables of the same shape and applies it in one transaction guarded by
//!   the ledger, so each batch is applied exactly once.
//! - [`schema_steps`] orders a batch whose window holds schema changes:
//!   row changes before each change, the change, row changes after it.
//! - [`run`] ties them together and keeps [`status`] and [`metrics`].
//! - [`suspend`] holds a replica at a snapshot taken at a chosen instant
//!   and resumes it with only what changed.
//! - [`resync`] copies the master's tables to a node fenced out, and
//!   [`add_node`] prepares a new, empty node the same way.
//! - The batcher reports which replica applied which tick to the sync
//!   point ([`ferry_cluster::SyncPoint`]), where client sessions wait for
//!   their commits in synchronous mode.
//! - [`verify`] paces the background check that compares each table,
//!   chunk by chunk, on every replica with the master, at the same point
//!   of the batch stream.

pub mod add_node;
pub mod apply;
pub mod catalog;
pub mod compact;
pub mod cutter;
pub mod error;
pub mod housekeeping;
pub mod install;
pub mod metrics;
pub mod outbox_index;
pub mod pattern;
pub mod payload;
pub mod resync;
pub mod run;
pub mod schema_steps;
pub mod status;
pub mod suspend;
pub mod verify;

pub use error::BatchError;
pub use metrics::Metrics;
pub use run::{Batcher, BatcherConfig};
pub use status::{ReplicaStatus, ReplicationStatus, SharedStatus};
