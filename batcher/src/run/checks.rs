//! The background check's part in the loop: which chunk a cut also
//! checksums, and the answers each replica gives for it (see
//! [`crate::verify`]).

use super::{Batcher, Replica};
use crate::verify::{ChunkCheck, ChunkRequest, Verifier};
use crate::BatchError;
use ferry_sql::TableShape;
use std::time::Instant;
use tracing::warn;

impl Batcher {
    /// The background check's state (a poisoned lock reads as it was).
    pub(super) fn verifier(&self) -> std::sync::MutexGuard<'_, Verifier> {
        self.cfg.verify.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The chunk this tick's cut should read (one request per table it
    /// spans; none when none is due); a new pass first estimates the rows
    /// of each table.
    pub(super) async fn chunk_due(
        &self,
        control: &tokio_postgres::Client,
        shapes: &[TableShape],
    ) -> Result<Vec<ChunkRequest>, BatchError> {
        let now = Instant::now();
        if !self.verifier().starting(now) {
            return Ok(self.verifier().due(now, Vec::new));
        }
        let names: Vec<String> = shapes.iter().map(|s| s.table.quoted()).collect();
        let estimates: Vec<i64> = control
            .query_one(ferry_sql::verify::ESTIMATE_ROWS, &[&names])
            .await
            .map_err(BatchError::pg(&self.cfg.master.name))?
            .try_get(0)
            .map_err(BatchError::pg(&self.cfg.master.name))?;
        Ok(self.verifier().due(now, || estimates))
    }

    /// Takes a replica's results for the chunk a batch carried (one check
    /// per table it spans) and reports a new difference.
    pub(super) async fn collect_checks(&self, r: &mut Replica, checks: &[ChunkCheck]) {
        let Some(session) = r.session.as_mut() else {
            return;
        };
        let results = match session.take_checks().await {
            Ok(results) => results,
            Err(e) => {
                warn!(node = %r.node.name, error = %e, "could not read the background check's results");
                return;
            }
        };
        let matching = checks.iter().flat_map(|check| {
            let table = check.table.quoted();
            results
                .iter()
                .filter(move |g| {
                    g.table == table && g.after == check.after && g.through == check.through
                })
                .map(move |got| (check, got))
        });
        for (check, got) in matching {
            let found = self.verifier().record(&r.node.name, check, got);
            if let Some(d) = found {
                warn!(node = %r.node.name, table = %d.table, after = d.after.as_deref().unwrap_or("(start)"),
                    through = d.through.as_deref().unwrap_or("(end)"), master_rows = d.master_rows,
                    replica_rows = d.replica_rows, batch = d.batch,
                    "replica differs from the master in a key range (found by the background check); \
                     run `ferry repair {} {}` to copy the master's rows there", r.node.name, d.table);
            }
        }
    }
}
