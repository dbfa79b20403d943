//! The master side of the batch path.
//!
//! One long-lived session on the master. A cut runs in a REPEATABLE READ
//! transaction whose snapshot *is* the new cut: the outbox rows it can see
//! and that were not visible in the previous cut are exactly the
//! transactions that committed in between. They are netted per key into
//! the session's temporary tables (created once) and copied out in binary.

use crate::BatchError;
use bytes::Bytes;
use ferry_sql::{batch, schema, TableShape};
use futures_util::future::try_join_all;
use futures_util::TryStreamExt;
use std::sync::Mutex;
use std::time::Instant;
use tokio_postgres::{Client, Statement};

/// One table's part of a batch: its binary COPY stream.
#[derive(Debug)]
pub struct TablePart {
    /// Index into the batcher's table shapes.
    pub table: usize,
    pub rows: u64,
    pub data: Vec<Bytes>,
}

/// A cut batch, ready to ship to every replica standing at `from`.
#[derive(Debug)]
pub struct Batch {
    /// The batch id the replica ledger must hold for this batch to apply.
    pub from: i64,
    /// The batch id the ledger holds afterwards.
    pub id: i64,
    /// The master snapshot this batch reaches, as text.
    pub snap: String,
    pub parts: Vec<TablePart>,
    /// Every replicated sequence's position on the master, as
    /// `(regclass text, last value)`.
    pub sequences: Vec<(String, i64)>,
    pub cut_at: Instant,
}

impl Batch {
    /// Rows in the batch, after netting.
    pub fn rows(&self) -> u64 {
        self.parts.iter().map(|p| p.rows).sum()
    }

    /// Bytes of COPY data in the batch.
    pub fn bytes(&self) -> u64 {
        self.parts
            .iter()
            .flat_map(|p| p.data.iter())
            .map(|b| b.len() as u64)
            .sum()
    }
}

/// The master's batch session.
pub struct Cutter {
    node: String,
    client: Client,
    snapshot: Statement,
    next_id: Statement,
    materialise: Vec<Statement>,
    copy_out: Vec<Statement>,
    /// Empties every batch table (between two groups of one cut).
    empty_batch_tables: String,
    /// Replicated sequences, and the positions the last batch carried.
    sequences: Vec<String>,
    read_sequences: Statement,
    shipped_sequences: Mutex<Vec<Option<i64>>>,
}

impl Cutter {
    /// Prepares the session: temporary tables and statements, once.
    pub async fn new(
        node: &str,
        client: Client,
        shapes: &[TableShape],
        sequences: Vec<String>,
    ) -> Result<Self, BatchError> {
        let err = BatchError::pg;
        // Custom plans: the cut's `_xid >= xmin(previous cut)` can then use
        // the outbox index with the actual value (a generic plan cannot).
        let mut setup = String::from(
            "SET application_name = 'ferry batcher'; SET plan_cache_mode = force_custom_plan;",
        );
        for s in shapes {
            setup += &batch::create_temp(s);
            setup.push(';');
        }
        client.batch_execute(&setup).await.map_err(err(node))?;
        let snapshot = client
            .prepare(schema::CURRENT_SNAPSHOT)
            .await
            .map_err(err(node))?;
        let next_id = client
            .prepare(schema::NEXT_BATCH_ID)
            .await
            .map_err(err(node))?;
        let read_sequences = client
            .prepare(ferry_sql::sequences::READ)
            .await
            .map_err(err(node))?;
        let mut materialise = Vec::new();
        let mut copy_out = Vec::new();
        for s in shapes {
            materialise.push(
                client
                    .prepare(&batch::materialise(s))
                    .await
                    .map_err(err(node))?,
            );
            copy_out.push(
                client
                    .prepare(&batch::copy_out(s))
                    .await
                    .map_err(err(node))?,
            );
        }
        Ok(Self {
            node: node.to_string(),
            client,
            snapshot,
            next_id,
            materialise,
            copy_out,
            empty_batch_tables: batch::empty_all(shapes),
            shipped_sequences: Mutex::new(vec![None; sequences.len()]),
            sequences,
            read_sequences,
        })
    }

    /// Wraps a server error with this session's node name.
    fn pg(&self) -> impl FnOnce(tokio_postgres::Error) -> BatchError + '_ {
        BatchError::pg(&self.node)
    }

    /// Cuts, at one snapshot, the batches that bring every group of
    /// replicas — those standing at the same ledger position `(batch id,
    /// snapshot)` — to one new position: all of them or none (nothing
    /// changed for any). Groups that catch up after an outage thus join the
    /// others instead of being cut separately ever after; a group for which
    /// nothing changed gets an empty batch (a ledger step).
    ///
    /// One group costs two round trips to the master (a sync commit waits
    /// for them): the first flight opens the transaction, takes its
    /// snapshot — the cut — and materialises every table; the second copies
    /// out the tables that have rows, takes the batch id and commits. Each
    /// further group adds a round trip to empty and refill the batch tables
    /// and one to copy them out.
    pub async fn cut(&self, groups: &[(i64, String)]) -> Result<Vec<Batch>, BatchError> {
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        match self.cut_groups(groups).await {
            Ok(Some(batches)) => Ok(batches),
            other => {
                let ended = self.client.batch_execute("ROLLBACK").await;
                other?;
                ended.map_err(self.pg())?;
                Ok(Vec::new())
            }
        }
    }

    /// The cut's transaction; `None` (or an error) leaves it for the caller
    /// to roll back.
    async fn cut_groups(&self, groups: &[(i64, String)]) -> Result<Option<Vec<Batch>>, BatchError> {
        let cut_at = Instant::now();
        let first = &groups[0].1;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [first];
        // join! polls in argument order, so the requests go out in this
        // order in one write: BEGIN, then the snapshot (the transaction's
        // first statement, which fixes it), then the materialisations.
        let (begun, snap, counts, positions) = tokio::join!(
            self.client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ"),
            self.client.query_one(&self.snapshot, &[]),
            try_join_all(
                self.materialise
                    .iter()
                    .map(|stmt| self.client.execute(stmt, &params)),
            ),
            // Read after the snapshot: at least every value the batch's
            // transactions used.
            async {
                if self.sequences.is_empty() {
                    return Ok(Vec::new());
                }
                let rows = self
                    .client
                    .query(&self.read_sequences, &[&self.sequences])
                    .await?;
                Ok(rows.iter().map(|r| r.get::<_, Option<i64>>(0)).collect())
            },
        );
        begun.map_err(self.pg())?;
        let snap: String = snap.map_err(self.pg())?.get(0);
        let mut counts = counts.map_err(self.pg())?;
        let positions: Vec<Option<i64>> = positions.map_err(self.pg())?;
        let moved = {
            let shipped = self
                .shipped_sequences
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            positions != *shipped
        };
        let mut parts: Vec<Vec<TablePart>> = Vec::new();
        for (g, (_, from_snap)) in groups.iter().enumerate() {
            if g > 0 {
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [from_snap];
                let (emptied, refilled) = tokio::join!(
                    self.client.batch_execute(&self.empty_batch_tables),
                    try_join_all(
                        self.materialise
                            .iter()
                            .map(|stmt| self.client.execute(stmt, &params)),
                    ),
                );
                emptied.map_err(self.pg())?;
                counts = refilled.map_err(self.pg())?;
            }
            let here = counts.iter().any(|&n| n > 0);
            if g + 1 < groups.len() {
                parts.push(if here {
                    self.copy_outs(&counts).await.map_err(self.pg())?
                } else {
                    Vec::new()
                });
                continue;
            }
            if !(here || moved || parts.iter().any(|p| !p.is_empty())) {
                return Ok(None);
            }
            let (id, last, ended) = tokio::join!(
                self.client.query_one(&self.next_id, &[]),
                self.copy_outs(&counts),
                self.client.batch_execute("COMMIT"),
            );
            let id: i64 = id.map_err(self.pg())?.get(0);
            parts.push(last.map_err(self.pg())?);
            ended.map_err(self.pg())?;
            let sequences: Vec<(String, i64)> = self
                .sequences
                .iter()
                .zip(&positions)
                .filter_map(|(name, pos)| pos.map(|p| (name.clone(), p)))
                .collect();
            *self
                .shipped_sequences
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = positions;
            let batches = groups
                .iter()
                .zip(parts)
                .map(|((from, _), parts)| Batch {
                    from: *from,
                    id,
                    snap: snap.clone(),
                    parts,
                    sequences: sequences.clone(),
                    cut_at,
                })
                .collect();
            return Ok(Some(batches));
        }
        Ok(None)
    }

    /// Copies out the batch tables that have rows, pipelined.
    async fn copy_outs(&self, counts: &[u64]) -> Result<Vec<TablePart>, tokio_postgres::Error> {
        try_join_all(counts.iter().enumerate().filter(|(_, &rows)| rows > 0).map(
            |(table, &rows)| async move {
                let stream = self.client.copy_out(&self.copy_out[table]).await?;
                let data: Vec<Bytes> = stream.try_collect().await?;
                Ok(TablePart { table, rows, data })
            },
        ))
        .await
    }
}
