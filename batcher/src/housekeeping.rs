//! Periodic work on the master between cuts: outbox clean-up and backlog.
//!
//! Rows whose transaction id is below the oldest replica position's xmin
//! have reached every replica and are deleted; that horizon is recorded
//! first (`ferry.cleaned`), so that a replica standing below it — one that
//! was out of the configuration meanwhile — is refused, not shipped
//! batches with holes. The outbox tables carry
//! aggressive autovacuum settings, so the space is reused at once instead
//! of accumulating as bloat.

use crate::BatchError;
use ferry_sql::{batch, schema, TableShape};
use tokio_postgres::Client;

/// Deletes shipped rows from the outboxes of `shapes` (those that may hold
/// any) and from `ferry.touched`; returns the horizon below which nothing
/// remains (None when there is none yet).
pub async fn clean(
    node: &str,
    client: &Client,
    shapes: &[&TableShape],
    replicas: &[String],
) -> Result<Option<String>, BatchError> {
    let horizon: Option<String> = client
        .query_one(schema::CLEANUP_HORIZON, &[&replicas])
        .await
        .map_err(BatchError::pg(node))?
        .get(0);
    let Some(horizon) = horizon else {
        return Ok(None);
    };
    // Recorded before the rows go: a replica that comes back from below it
    // is refused rather than shipped batches with holes.
    client
        .execute(schema::RECORD_CLEANED, &[&horizon])
        .await
        .map_err(BatchError::pg(node))?;
    for s in shapes {
        client
            .execute(&batch::cleanup(s), &[&horizon])
            .await
            .map_err(BatchError::pg(node))?;
    }
    // After the outboxes: a row of ferry.touched outlives the rows it
    // names (a pass that fails between the two forgets nothing).
    client
        .execute(batch::CLEANUP_TOUCHED, &[&horizon])
        .await
        .map_err(BatchError::pg(node))?;
    Ok(Some(horizon))
}

/// Rows in each outbox of `shapes`, in their order.
pub async fn backlog(
    node: &str,
    client: &Client,
    shapes: &[&TableShape],
) -> Result<Vec<i64>, BatchError> {
    let mut rows = Vec::with_capacity(shapes.len());
    for s in shapes {
        let n: i64 = client
            .query_one(&batch::backlog(s), &[])
            .await
            .map_err(BatchError::pg(node))?
            .try_get(0)
            .map_err(BatchError::pg(node))?;
        rows.push(n);
    }
    Ok(rows)
}

/// What the outbox keeps for a replica at `snap`: the rows it has not
/// applied, and their bytes.
pub async fn pending(
    node: &str,
    client: &Client,
    shapes: &[&TableShape],
    snap: &str,
) -> Result<Kept, BatchError> {
    let mut kept = Kept::default();
    for s in shapes {
        let row = client
            .query_one(&batch::pending(s), &[&snap])
            .await
            .map_err(BatchError::pg(node))?;
        let rows: i64 = row.try_get(0).map_err(BatchError::pg(node))?;
        let bytes: i64 = row.try_get(1).map_err(BatchError::pg(node))?;
        kept.rows += rows;
        kept.bytes += bytes;
    }
    Ok(kept)
}

/// Rows and bytes of outbox changes kept for one replica.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kept {
    pub rows: i64,
    pub bytes: i64,
}

/// Distinct keys among a replica's pending changes, over every table.
pub async fn pending_keys(
    node: &str,
    client: &Client,
    shapes: &[&TableShape],
    snap: &str,
) -> Result<i64, BatchError> {
    sum_per_table(node, client, shapes, snap, batch::pending_keys).await
}

/// Sums a per-table count query (parameter: the replica's snapshot).
async fn sum_per_table(
    node: &str,
    client: &Client,
    shapes: &[&TableShape],
    snap: &str,
    sql: fn(&TableShape) -> String,
) -> Result<i64, BatchError> {
    let mut total = 0;
    for s in shapes {
        let n: i64 = client
            .query_one(&sql(s), &[&snap])
            .await
            .map_err(BatchError::pg(node))?
            .get(0);
        total += n;
    }
    Ok(total)
}
