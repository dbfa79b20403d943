//! Building the `_xid` index of outboxes that keep many rows for a replica
//! that is away (why the index is not built with the outbox:
//! [`ferry_sql::outbox_index`]). On a connection of its own, beside the
//! batcher's loop: `CREATE INDEX CONCURRENTLY` lets the table's writers
//! (its capture triggers) go on, and waits for transactions older than it.

use crate::BatchError;
use ferry_sql::{capture, outbox_index, TableName};
use ferry_wire::Target;
use std::time::{Duration, Instant};

/// Rows an outbox holds, while the master keeps changes for a replica that
/// is away, past which its index is built: a cut's scan of the whole
/// outbox then costs more than a millisecond.
pub const INDEX_AFTER: i64 = 10_000;

/// What one build did: the tables whose outbox has its index now.
#[derive(Debug, Default)]
pub struct Built {
    pub tables: Vec<TableName>,
    pub took: Duration,
}

/// Builds the index of each of `tables`' outboxes that lacks a valid one
/// (one a build that did not finish left invalid is dropped first).
pub async fn build(
    node: &str,
    target: &Target,
    tables: Vec<TableName>,
) -> Result<Built, BatchError> {
    let started = Instant::now();
    let client = crate::install::connect(node, target, "ferry outbox index").await?;
    let err = || BatchError::pg(node);
    // Ferry's own DDL: not the application's schema change.
    client
        .batch_execute(&format!("{}; SET lock_timeout = '10s'", capture::QUIET))
        .await
        .map_err(err())?;
    for t in &tables {
        let state = client
            .query_opt(outbox_index::STATE, &[&outbox_index::qualified(t)])
            .await
            .map_err(err())?
            .map(|row| row.try_get::<_, bool>(0))
            .transpose()
            .map_err(err())?;
        match state {
            Some(true) => continue,
            Some(false) => client
                .batch_execute(&outbox_index::drop_invalid(t))
                .await
                .map_err(err())?,
            None => {}
        }
        client
            .batch_execute(&outbox_index::create(t))
            .await
            .map_err(err())?;
    }
    Ok(Built {
        tables,
        took: started.elapsed(),
    })
}
