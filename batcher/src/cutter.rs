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
    materialise: Vec<Statement>,
    copy_out: Vec<Statement>,
}

impl Cutter {
    /// Prepares the session: temporary tables and statements, once.
    pub async fn new(
        node: &str,
        client: Client,
        shapes: &[TableShape],
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
            materialise,
            copy_out,
        })
    }

    /// Wraps a server error with this session's node name.
    fn pg(&self) -> impl FnOnce(tokio_postgres::Error) -> BatchError + '_ {
        BatchError::pg(&self.node)
    }

    /// Cuts the batch of everything committed since `from_snap` (the cut
    /// the replicas at ledger `from_id` stand at). `None` if nothing changed.
    pub async fn cut(&self, from_id: i64, from_snap: &str) -> Result<Option<Batch>, BatchError> {
        self.client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            .await
            .map_err(self.pg())?;
        let result = self.cut_in_transaction(from_id, from_snap).await;
        let end = if result.as_ref().is_ok_and(|b| b.is_some()) {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        let ended = self.client.batch_execute(end).await.map_err(self.pg());
        let batch = result?;
        ended?;
        Ok(batch)
    }

    async fn cut_in_transaction(
        &self,
        from_id: i64,
        from_snap: &str,
    ) -> Result<Option<Batch>, BatchError> {
        let cut_at = Instant::now();
        // First statement: fixes the transaction snapshot, which is the cut.
        let snap: String = self
            .client
            .query_one(schema::CURRENT_SNAPSHOT, &[])
            .await
            .map_err(self.pg())?
            .get(0);
        // Pipelined: tokio-postgres sends all of them before reading replies.
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&from_snap];
        let counts = try_join_all(
            self.materialise
                .iter()
                .map(|stmt| self.client.execute(stmt, &params)),
        )
        .await
        .map_err(self.pg())?;
        if counts.iter().all(|&n| n == 0) {
            return Ok(None);
        }
        let id: i64 = self
            .client
            .query_one(schema::NEXT_BATCH_ID, &[])
            .await
            .map_err(self.pg())?
            .get(0);
        let mut parts = Vec::new();
        for (table, &rows) in counts.iter().enumerate() {
            if rows == 0 {
                continue;
            }
            let stream = self
                .client
                .copy_out(&self.copy_out[table])
                .await
                .map_err(self.pg())?;
            let data: Vec<Bytes> = stream.try_collect().await.map_err(self.pg())?;
            parts.push(TablePart { table, rows, data });
        }
        Ok(Some(Batch {
            from: from_id,
            id,
            snap,
            parts,
            cut_at,
        }))
    }
}
