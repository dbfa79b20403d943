//! `ferry repair NODE [TABLE]`: the key ranges the background check found
//! different on a replica (or a whole table) are rewritten there with the
//! master's rows, inside the next batch — whose snapshot is the one the
//! master's rows are read at, so the replica holds exactly the master's
//! rows of those ranges at that point of the stream — and shipping goes on.

use super::{Batcher, Replica};
use crate::cutter::Batch;
use crate::suspend::{Repaired, RepairedRange, SuspendError};
use crate::verify::RepairRange;
use ferry_sql::TableName;
use tokio::sync::oneshot;
use tracing::{info, warn};

/// A repair waiting for its batch.
pub(super) struct PendingRepair {
    pub replica: String,
    pub ranges: Vec<RepairRange>,
    pub reply: oneshot::Sender<Result<Repaired, SuspendError>>,
}

impl Batcher {
    /// Takes a repair request: refuses what cannot be done now, else keeps
    /// it for the next cut.
    pub(super) fn request_repair(
        &self,
        replica: String,
        table: Option<String>,
        reply: oneshot::Sender<Result<Repaired, SuspendError>>,
        replicas: &[Replica],
    ) {
        let mut pending = self.repair.lock().unwrap_or_else(|p| p.into_inner());
        let ranges = if pending.is_some() {
            Err(SuspendError::RepairRunning(replica.clone()))
        } else {
            self.ranges_to_repair(&replica, table, replicas)
        };
        match ranges {
            Err(e) => {
                let _ = reply.send(Err(e));
            }
            Ok(ranges) => {
                info!(node = %replica, ranges = ranges.len(), "repair requested; the master's rows go in the next batch");
                *pending = Some(PendingRepair {
                    replica,
                    ranges,
                    reply,
                });
            }
        }
    }

    /// What a repair of `replica` rewrites, or why it cannot be done.
    fn ranges_to_repair(
        &self,
        replica: &str,
        table: Option<String>,
        replicas: &[Replica],
    ) -> Result<Vec<RepairRange>, SuspendError> {
        let r = replicas
            .iter()
            .find(|r| r.node.name == replica)
            .ok_or_else(|| SuspendError::UnknownReplica(replica.to_string()))?;
        if r.session.is_none() {
            let why = r
                .last_error
                .clone()
                .unwrap_or_else(|| "not connected".into());
            return Err(SuspendError::ReplicaUnavailable(replica.to_string(), why));
        }
        let verifier = self.verifier();
        let table = match table {
            Some(name) => {
                Some(find_table(verifier.tables(), &name).ok_or(SuspendError::UnknownTable(name))?)
            }
            None => None,
        };
        let ranges = verifier.repair_ranges(replica, table.as_ref());
        if ranges.is_empty() {
            return Err(SuspendError::NothingToRepair(replica.to_string()));
        }
        Ok(ranges)
    }

    /// The ranges the next cut reads for a repair.
    pub(super) fn repair_ranges(&self) -> Vec<RepairRange> {
        self.repair
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|p| p.ranges.clone())
            .unwrap_or_default()
    }

    /// After a cut's batches shipped: answers the repair they carried by
    /// what its replica did with them.
    pub(super) fn finish_repair(&self, batches: &[Batch], replicas: &[Replica]) {
        let Some(batch) = batches.iter().find(|b| !b.repairs.is_empty()) else {
            return;
        };
        let Some(pending) = self.repair.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let r = replicas.iter().find(|r| r.node.name == pending.replica);
        let applied = r.is_some_and(|r| r.position.as_ref().is_some_and(|p| p.0 >= batch.id));
        let answer = if applied {
            let mut verifier = self.verifier();
            for range in &pending.ranges {
                verifier.clear(&pending.replica, Some(&range.table));
            }
            let rows: u64 = batch.repairs.iter().map(|p| p.rows).sum();
            info!(node = %pending.replica, batch = batch.id, rows, "repair applied: the ranges hold the master's rows");
            Ok(Repaired {
                replica: pending.replica.clone(),
                batch: batch.id,
                rows,
                ranges: pending
                    .ranges
                    .iter()
                    .map(|r| RepairedRange {
                        table: r.table.to_string(),
                        after: r.after.clone(),
                        through: r.through.clone(),
                    })
                    .collect(),
            })
        } else {
            let why = r
                .and_then(|r| r.last_error.clone())
                .unwrap_or_else(|| "the replica did not apply the batch".into());
            warn!(node = %pending.replica, batch = batch.id, error = %why, "repair failed");
            Err(SuspendError::RepairFailed(pending.replica.clone(), why))
        };
        let _ = pending.reply.send(answer);
    }
}

/// A replicated table by `schema.name`, or by name alone in `public`.
fn find_table(tables: &[TableName], name: &str) -> Option<TableName> {
    tables
        .iter()
        .find(|t| t.to_string() == name || (t.schema == "public" && t.name == name))
        .cloned()
}
