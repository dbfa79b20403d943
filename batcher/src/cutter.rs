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
            shipped_sequences: Mutex::new(vec![None; sequences.len()]),
            sequences,
            read_sequences,
        })
    }

    /// Wraps a server error with this session's node name.
    fn pg(&self) -> impl FnOnce(tokio_postgres::Error) -> BatchError + '_ {
        BatchError::pg(&self.node)
    }

    /// Cuts the batch of everything committed since `from_snap` (the cut
    /// the replicas at ledger `from_id` stand at). `None` if nothing changed.
    ///
    /// Two round trips to the master (a sync commit waits for them): the
    /// first flight opens the transaction, takes its snapshot — the cut —
    /// and materialises every table; the second takes a batch id, copies
    /// out the tables that have rows and ends the transaction.
    pub async fn cut(&self, from_id: i64, from_snap: &str) -> Result<Option<Batch>, BatchError> {
        let cut_at = Instant::now();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&from_snap];
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
        let first = begun
            .and(snap)
            .and_then(|snap| Ok((snap, counts?, positions?)));
        let sequences_moved = |positions: &Vec<Option<i64>>| {
            let shipped = self
                .shipped_sequences
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            *positions != *shipped
        };
        let (snap, counts, positions) = match first {
            Ok((row, counts, positions))
                if counts.iter().any(|&n| n > 0) || sequences_moved(&positions) =>
            {
                (row.get::<_, String>(0), counts, positions)
            }
            other => {
                let ended = self.client.batch_execute("ROLLBACK").await;
                other.map_err(self.pg())?;
                ended.map_err(self.pg())?;
                return Ok(None);
            }
        };
        let (id, parts, ended) = tokio::join!(
            self.client.query_one(&self.next_id, &[]),
            try_join_all(counts.iter().enumerate().filter(|(_, &rows)| rows > 0).map(
                |(table, &rows)| async move {
                    let stream = self.client.copy_out(&self.copy_out[table]).await?;
                    let data: Vec<Bytes> = stream.try_collect().await?;
                    Ok::<_, tokio_postgres::Error>(TablePart { table, rows, data })
                }
            ),),
            self.client.batch_execute("COMMIT"),
        );
        let id: i64 = id.map_err(self.pg())?.get(0);
        let parts = parts.map_err(self.pg())?;
        ended.map_err(self.pg())?;
        let sequences = self
            .sequences
            .iter()
            .zip(&positions)
            .filter_map(|(name, pos)| pos.map(|p| (name.clone(), p)))
            .collect();
        *self
            .shipped_sequences
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = positions;
        Ok(Some(Batch {
            from: from_id,
            id,
            snap,
            parts,
            sequences,
            cut_at,
        }))
    }
}
