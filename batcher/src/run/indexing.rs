//! When the loop has an outbox's `_xid` index built (see
//! [`crate::outbox_index`]): at a housekeeping pass, while the master keeps
//! changes for a replica that is away (or suspended, or a node pinned for
//! a resync), for each outbox that holds more than
//! [`INDEX_AFTER`](crate::outbox_index::INDEX_AFTER) rows and has not been
//! seen indexed in this batcher session. One build at a time; the loop
//! collects its result at a later pass.

use super::beside::Beside;
use super::Batcher;
use crate::outbox_index::{self, Built, INDEX_AFTER};
use crate::BatchError;
use ferry_sql::{TableName, TableShape};
use std::collections::BTreeSet;
use tracing::{info, warn};

/// The loop's side of index builds, kept for a batcher session.
#[derive(Default)]
pub(super) struct Indexing {
    /// A build under way (dropped with the session: the server rolls it
    /// back, and the next session finds the invalid index and builds it
    /// again).
    running: Option<Beside<Result<Built, BatchError>>>,
    /// Outboxes whose index is known to be there.
    indexed: BTreeSet<TableName>,
    /// The latest failure, logged once until it changes.
    last_error: Option<String>,
}

impl Batcher {
    /// Collects a finished build, then starts one for the outboxes of
    /// `in_use` (with `rows` each, in the same order) that need it, when
    /// the master keeps changes for a node that is away (`keeping`).
    pub(super) async fn index_outboxes(
        &self,
        ix: &mut Indexing,
        in_use: &[&TableShape],
        rows: &[i64],
        keeping: bool,
    ) {
        let master = &self.cfg.master.name;
        if let Some(task) = ix.running.take_if(|t| t.is_finished()) {
            match task.finish().await {
                Ok(Ok(built)) => {
                    info!(node = %master, tables = built.tables.len(), seconds = built.took.as_secs_f64(),
                        "outboxes that keep many rows for a replica away are indexed by transaction now");
                    ix.indexed.extend(built.tables);
                    ix.last_error = None;
                }
                Ok(Err(e)) => self.index_failed(ix, e.to_string()),
                Err(e) => self.index_failed(ix, format!("the index build failed: {e}")),
            }
        }
        if !keeping || ix.running.is_some() {
            return;
        }
        let due: Vec<TableName> = in_use
            .iter()
            .zip(rows)
            .filter(|(s, n)| **n > INDEX_AFTER && !ix.indexed.contains(&s.table))
            .map(|(s, _)| s.table.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        let (master, target) = (master.clone(), self.cfg.master.target.clone());
        ix.running = Some(Beside::spawn(async move {
            outbox_index::build(&master, &target, due).await
        }));
    }

    fn index_failed(&self, ix: &mut Indexing, e: String) {
        if ix.last_error.as_ref() != Some(&e) {
            warn!(node = %self.cfg.master.name, error = %e,
                "indexing a large outbox failed; its cuts scan it whole meanwhile; trying again at later passes");
        }
        ix.last_error = Some(e);
    }
}
