//! Compaction: what the master keeps for replicas that stay away (or are
//! suspended) netted per key, so that it grows with the keys changed, not
//! with the changes (issue 19; the prospective-suspend idea of keeping only
//! *which* items changed). Why it is safe for every replica and every cut:
//! [`ferry_sql::compact`].
//!
//! A pass runs on a connection of its own, beside the batcher's loop, so
//! the replicas that are present are not held up by it; one table at a
//! time, each in its own statement.

use crate::housekeeping::Kept;
use crate::BatchError;
use ferry_sql::{compact, TableShape};
use ferry_wire::Target;
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;
use tracing::debug;

/// `[retention] compact_after`: how much more the master may keep for a
/// replica that is away than it kept after the previous compaction before
/// it nets that replica's changes again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactAfter {
    /// Never compact.
    Off,
    Rows(u64),
    Bytes(u64),
}

impl CompactAfter {
    /// Whether what is kept grew by the threshold from `floor`.
    pub fn passed(self, floor: Kept, now: Kept) -> bool {
        match self {
            Self::Off => false,
            Self::Rows(n) => now.rows.saturating_sub(floor.rows) >= n as i64,
            Self::Bytes(n) => now.bytes.saturating_sub(floor.bytes) >= n as i64,
        }
    }
}

/// What one compaction pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Superseded changes deleted.
    pub rows: u64,
    /// Tables compacted, and those skipped (a schema change held them).
    pub tables: usize,
    pub skipped: usize,
    pub took: Duration,
}

/// Nets the changes in the outboxes of `shapes` (those that may hold
/// rows) visible in `bound` (the oldest position of the replicas present;
/// None: none is, everything committed may be netted).
pub async fn run(
    node: &str,
    target: &Target,
    shapes: &[TableShape],
    bound: Option<String>,
) -> Result<Compacted, BatchError> {
    let started = Instant::now();
    let client = crate::install::connect(node, target, "ferry compaction").await?;
    client
        .batch_execute(compact::SESSION)
        .await
        .map_err(BatchError::pg(node))?;
    let bound = match bound {
        Some(snap) => snap,
        None => client
            .query_one(compact::SNAPSHOT_NOW, &[])
            .await
            .map_err(BatchError::pg(node))?
            .try_get(0)
            .map_err(BatchError::pg(node))?,
    };
    let mut done = Compacted::default();
    for shape in shapes {
        let Some(sql) = compact::superseded(shape) else {
            continue;
        };
        match client.execute(&sql, &[&bound]).await {
            Ok(rows) => {
                done.rows += rows;
                done.tables += 1;
            }
            // A schema change holds the outbox (or dropped it, or changed
            // its key since the batcher read the shapes): the next pass
            // takes it up with the new shapes.
            Err(e)
                if [
                    &SqlState::LOCK_NOT_AVAILABLE,
                    &SqlState::UNDEFINED_TABLE,
                    &SqlState::UNDEFINED_COLUMN,
                ]
                .iter()
                .any(|code| e.code() == Some(*code)) =>
            {
                debug!(node, table = %shape.table, error = %e, "outbox not compacted at this pass");
                done.skipped += 1;
            }
            Err(e) => return Err(BatchError::pg(node)(e)),
        }
    }
    done.took = started.elapsed();
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threshold_counts_the_growth_since_the_last_compaction() {
        let floor = Kept {
            rows: 10_000,
            bytes: 500_000,
        };
        let grown = Kept {
            rows: 15_000,
            bytes: 750_000,
        };
        assert!(CompactAfter::Rows(5_000).passed(floor, grown));
        assert!(!CompactAfter::Rows(5_001).passed(floor, grown));
        assert!(CompactAfter::Bytes(250_000).passed(floor, grown));
        assert!(!CompactAfter::Bytes(250_001).passed(floor, grown));
        assert!(!CompactAfter::Off.passed(Kept::default(), grown));
    }
}
