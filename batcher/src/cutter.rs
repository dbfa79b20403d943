//! The master side of the batch path.
//!
//! One long-lived session on the master. A cut runs in a REPEATABLE READ
//! transaction whose snapshot *is* the new cut: the outbox rows it can see
//! and that were not visible in the previous cut are exactly the
//! transactions that committed in between. They are netted per key into
//! the session's temporary tables (created once) and copied out in binary.

mod extras;

use crate::schema_steps::DdlChange;
use crate::verify::{ChunkCheck, ChunkRequest, RepairPart, RepairRange};
use crate::BatchError;
use bytes::Bytes;
use ferry_sql::batch::{Emptying, Ops};
use ferry_sql::{batch, TableShape};
use futures_util::future::try_join_all;
use futures_util::TryStreamExt;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;
use tokio_postgres::{Client, Statement};

/// One table's part of a batch: its binary COPY stream.
#[derive(Debug)]
pub struct TablePart {
    /// Index into the batcher's table shapes.
    pub table: usize,
    /// Its rows by operation (the replica skips apply statements without work).
    pub ops: Ops,
    pub data: Vec<Bytes>,
}

/// A step of a batch that carries schema changes.
#[derive(Debug)]
pub enum Step {
    /// Row changes of one table, in the shape it has at this point.
    Rows {
        shape: TableShape,
        rows: u64,
        data: Vec<Bytes>,
    },
    /// A schema change to replay (or, without a statement, to report).
    Ddl(DdlChange),
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
    /// `(regclass text, last value)`: None for one that hands out its
    /// start value next (never used, or restarted: `TRUNCATE ... RESTART
    /// IDENTITY`).
    pub sequences: Vec<(String, Option<i64>)>,
    /// When the window holds schema changes, the batch is these steps, in
    /// order, instead of `parts` (see [`crate::schema_steps`]).
    pub steps: Vec<Step>,
    /// A chunk of a table the replica compares with the master's after the
    /// batch's rows (see [`crate::verify`]).
    pub check: Option<ChunkCheck>,
    /// Key ranges the replica rewrites with the master's rows after the
    /// batch's (`ferry repair`).
    pub repairs: Vec<RepairPart>,
    pub cut_at: Instant,
}

impl Batch {
    /// Rows in the batch, after netting.
    pub fn rows(&self) -> u64 {
        let steps: u64 = self
            .steps
            .iter()
            .map(|s| match s {
                Step::Rows { rows, .. } => *rows,
                Step::Ddl(_) => 0,
            })
            .sum();
        self.parts.iter().map(|p| p.ops.rows()).sum::<u64>() + steps
    }

    /// Bytes of COPY data in the batch.
    pub fn bytes(&self) -> u64 {
        let steps = self.steps.iter().flat_map(|s| match s {
            Step::Rows { data, .. } => data.iter(),
            Step::Ddl(_) => [].iter(),
        });
        self.parts
            .iter()
            .flat_map(|p| p.data.iter())
            .chain(steps)
            .map(|b| b.len() as u64)
            .sum()
    }

    /// The schema changes the batch carries.
    pub fn schema_changes(&self) -> impl Iterator<Item = &DdlChange> {
        self.steps.iter().filter_map(|s| match s {
            Step::Ddl(d) => Some(d),
            Step::Rows { .. } => None,
        })
    }
}

/// What a cut came to.
#[derive(Debug)]
pub enum Cut {
    /// Batches for the groups that asked (see [`Cutter::cut`]).
    Batches(Vec<Batch>),
    /// Nothing committed since any group's position.
    Unchanged,
    /// A schema change holds an outbox (it is being rewritten): nothing
    /// was read, and nothing may be concluded; cut again at the next tick.
    Busy,
}

/// The master's batch session.
pub struct Cutter {
    node: String,
    client: Client,
    /// Opens the cut's transaction and locks the session's outboxes before
    /// its snapshot (see [`ferry_sql::batch::begin_cut`]).
    begin: String,
    /// Takes the cut: materialises every table and reads the snapshot, the
    /// schema-change flag and the sequences (see
    /// [`ferry_sql::batch::materialise_all`]).
    materialise: Statement,
    copy_out: Vec<Statement>,
    /// The schema changes in a window (see [`crate::schema_steps`]).
    ddl_window: Statement,
    /// Reads a chunk for the background check ([`ferry_sql::verify`]).
    chunk: Statement,
    /// Ends a cut: empties the batch tables that had rows and takes the
    /// batch id, one statement per set of tables (see
    /// [`ferry_sql::batch::finish_cut`]), prepared when first needed.
    finish: tokio::sync::Mutex<HashMap<Vec<usize>, Statement>>,
    /// Per table, the TRUNCATE that empties its batch table instead of the
    /// DELETE when its [`Emptying`] says so (see
    /// [`ferry_sql::batch::create_temp`]).
    truncate: Vec<Statement>,
    emptying: Mutex<Vec<Emptying>>,
    shapes: Vec<TableShape>,
    /// Empties every batch table (between two groups of one cut).
    empty_batch_tables: String,
    /// Replicated sequences, and the positions the last batch carried.
    sequences: Vec<String>,
    shipped_sequences: Mutex<Vec<Option<i64>>>,
}

/// Sets of tables whose finishing statement is kept prepared; a cut with
/// another set once that many are kept prepares one for itself alone (a
/// schema whose batches touch ever new sets of tables).
const FINISH_STATEMENTS: usize = 64;

impl Cutter {
    /// Prepares the session: temporary tables and statements, once.
    pub async fn new(
        node: &str,
        client: Client,
        shapes: &[TableShape],
        sequences: Vec<String>,
    ) -> Result<Self, BatchError> {
        let err = BatchError::pg;
        let mut setup = String::from(batch::CUT_SESSION_SETUP);
        for s in shapes {
            setup += &batch::create_temp(s);
            setup.push(';');
        }
        client.batch_execute(&setup).await.map_err(err(node))?;
        let ddl_window = client
            .prepare(ferry_sql::ddl::IN_WINDOW)
            .await
            .map_err(err(node))?;
        let chunk = client
            .prepare(ferry_sql::verify::CHUNK_ON_MASTER)
            .await
            .map_err(err(node))?;
        let materialise = client
            .prepare(&batch::materialise_all(shapes))
            .await
            .map_err(err(node))?;
        let mut copy_out = Vec::new();
        let mut truncate = Vec::new();
        for s in shapes {
            truncate.push(
                client
                    .prepare(&batch::truncate_temp(s))
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
            begin: batch::begin_cut(shapes),
            materialise,
            copy_out,
            ddl_window,
            chunk,
            finish: tokio::sync::Mutex::new(HashMap::new()),
            truncate,
            emptying: Mutex::new(vec![Emptying::default(); shapes.len()]),
            shapes: shapes.to_vec(),
            empty_batch_tables: batch::empty_all(shapes),
            shipped_sequences: Mutex::new(vec![None; sequences.len()]),
            sequences,
        })
    }

    /// Makes the next batch carry every sequence position again, moved or
    /// not: a replica that just connected has not had them (positions
    /// travel only when they move, and it may have missed the batch that
    /// last carried them).
    pub fn resend_sequences(&self) {
        let mut shipped = self
            .shipped_sequences
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        shipped.iter_mut().for_each(|s| *s = None);
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
    ///
    /// With `chunk`, the cut also reads that chunk of a table at its
    /// snapshot, and every batch carries it (a batch is cut for it even
    /// when nothing changed), unless the window holds schema changes.
    pub async fn cut(
        &self,
        groups: &[(i64, String)],
        chunk: Option<&ChunkRequest>,
        repairs: &[RepairRange],
    ) -> Result<Cut, BatchError> {
        if groups.is_empty() {
            return Ok(Cut::Unchanged);
        }
        match self.cut_groups(groups, chunk, repairs).await {
            Ok(Cut::Batches(batches)) => Ok(Cut::Batches(batches)),
            other => {
                let ended = self.client.batch_execute("ROLLBACK").await;
                let outcome = other?;
                ended.map_err(self.pg())?;
                Ok(outcome)
            }
        }
    }

    /// The cut's transaction; anything but batches (or an error) leaves it
    /// for the caller to roll back.
    async fn cut_groups(
        &self,
        groups: &[(i64, String)],
        chunk: Option<&ChunkRequest>,
        repairs: &[RepairRange],
    ) -> Result<Cut, BatchError> {
        let cut_at = Instant::now();
        let first = &groups[0].1;
        // join! polls in argument order, so both requests go out in one
        // write: BEGIN with the outbox locks (which take no snapshot), then
        // the materialisation, the transaction's first statement that needs
        // a snapshot, which fixes it.
        let (locked, taken) = tokio::join!(
            self.client.batch_execute(&self.begin),
            self.materialise_all(first),
        );
        if let Err(e) = locked {
            if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
                tracing::debug!(node = %self.node, "an outbox is locked by a schema change; cutting at the next tick");
                return Ok(Cut::Busy);
            }
            return Err(self.pg()(e));
        }
        let Materialised {
            snap,
            mut ops,
            mut ddl,
            sequences: positions,
        } = taken?;
        let moved = {
            let shipped = self
                .shipped_sequences
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            positions != *shipped
        };
        let mut contents: Vec<(Vec<TablePart>, Vec<Step>)> = Vec::new();
        let mut any_ddl = false;
        for (g, (_, from_snap)) in groups.iter().enumerate() {
            if g > 0 {
                let (emptied, refilled) = tokio::join!(
                    self.client.batch_execute(&self.empty_batch_tables),
                    self.materialise_all(from_snap),
                );
                emptied.map_err(self.pg())?;
                for e in self
                    .emptying
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter_mut()
                {
                    e.truncated();
                }
                let refilled = refilled?;
                ops = refilled.ops;
                ddl = refilled.ddl;
            }
            let last = g + 1 == groups.len();
            any_ddl |= !ddl.is_empty();
            if !ddl.is_empty() {
                let counts: Vec<u64> = ops.iter().map(Ops::rows).collect();
                let steps = self.steps(g, from_snap, &counts, &ddl).await?;
                contents.push((Vec::new(), steps));
            } else if ops.iter().any(|o| o.rows() > 0) && !last {
                contents.push((self.copy_outs(&ops).await.map_err(self.pg())?, Vec::new()));
            } else if !last {
                contents.push((Vec::new(), Vec::new()));
            }
            if !last {
                continue;
            }
            let here = ops.iter().any(|o| o.rows() > 0) && ddl.is_empty();
            let earlier = contents
                .iter()
                .any(|(parts, steps)| !parts.is_empty() || !steps.is_empty());
            // Not in a batch that changes shapes: its steps apply outside
            // the session's statements.
            let chunk = chunk.filter(|_| !any_ddl);
            let repairs = if any_ddl {
                Vec::new()
            } else {
                self.repair_parts(repairs).await?
            };
            // Groups at different positions are cut even when nothing
            // changed: the step brings them to one batch id, as equal in
            // their ledgers as in their rows (a failover compares ledgers).
            let merge = groups.len() > 1;
            if !(here || moved || earlier || merge || chunk.is_some() || !repairs.is_empty()) {
                return Ok(Cut::Unchanged);
            }
            let copy_last = async {
                if here {
                    self.copy_outs(&ops).await
                } else {
                    Ok(Vec::new())
                }
            };
            // The batch tables are emptied in the transaction that filled
            // them (after their COPY OUT, which goes out first): by the
            // statement that takes the batch id, or by TRUNCATE.
            let (deleted, truncated) = self.emptying_plan(&ops);
            let finish = self.finish_statement(deleted).await?;
            let read_chunk = async {
                match chunk {
                    Some(c) => self
                        .client
                        .query_one(&self.chunk, &[&c.table.quoted(), &c.after, &c.limit])
                        .await
                        .map(Some),
                    None => Ok(None),
                }
            };
            let (last_parts, checked, id, emptied, ended) = tokio::join!(
                copy_last,
                read_chunk,
                self.client.query_one(&finish, &[]),
                try_join_all(truncated.into_iter().map(|st| self.client.execute(st, &[]))),
                self.client.batch_execute("COMMIT"),
            );
            let check = chunk_check(chunk, checked.map_err(self.pg())?).map_err(self.pg())?;
            let id: i64 = id.map_err(self.pg())?.get(0);
            let last_parts = last_parts.map_err(self.pg())?;
            emptied.map_err(self.pg())?;
            ended.map_err(self.pg())?;
            if ddl.is_empty() {
                contents.push((last_parts, Vec::new()));
            }
            let sequences: Vec<(String, Option<i64>)> = self
                .sequences
                .iter()
                .cloned()
                .zip(positions.iter().copied())
                .collect();
            *self
                .shipped_sequences
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = positions;
            let batches = groups
                .iter()
                .zip(contents)
                .map(|((from, _), (parts, steps))| Batch {
                    from: *from,
                    id,
                    snap: snap.clone(),
                    parts,
                    sequences: sequences.clone(),
                    steps,
                    check: check.clone(),
                    repairs: repairs.clone(),
                    cut_at,
                })
                .collect();
            return Ok(Cut::Batches(batches));
        }
        Ok(Cut::Unchanged)
    }

    /// How each batch table is emptied in the cut's transaction: by the
    /// statement that takes the batch id (the tables listed), or by
    /// TRUNCATE (those statements) once a table has been worn enough.
    fn emptying_plan(&self, ops: &[Ops]) -> (Vec<usize>, Vec<&Statement>) {
        let mut deleted: Vec<usize> = Vec::new();
        let mut truncated: Vec<&Statement> = Vec::new();
        let mut wear = self.emptying.lock().unwrap_or_else(|p| p.into_inner());
        let tables = ops.iter().zip(wear.iter_mut()).zip(&self.truncate);
        for (i, ((o, e), truncate)) in tables.enumerate() {
            if o.rows() == 0 {
                continue;
            }
            if e.truncate_after(o.rows()) {
                truncated.push(truncate);
            } else {
                deleted.push(i);
            }
        }
        (deleted, truncated)
    }

    /// Copies out the batch tables that have rows, pipelined.
    async fn copy_outs(&self, ops: &[Ops]) -> Result<Vec<TablePart>, tokio_postgres::Error> {
        try_join_all(ops.iter().enumerate().filter(|(_, o)| o.rows() > 0).map(
            |(table, &ops)| async move {
                let stream = self.client.copy_out(&self.copy_out[table]).await?;
                let data: Vec<Bytes> = stream.try_collect().await?;
                Ok(TablePart { table, ops, data })
            },
        ))
        .await
    }

    /// Materialises every table's batch from the outbox since `from` (the
    /// previous cut) in one statement, with what else the cut reads (see
    /// [`ferry_sql::batch::materialise_all`]); the schema changes in the
    /// window are read only when there are some.
    async fn materialise_all(&self, from: &String) -> Result<Materialised, BatchError> {
        let row = self
            .client
            .query_one(&self.materialise, &[from, &self.sequences])
            .await
            .map_err(self.pg())?;
        let count = |i: usize| row.try_get::<_, i64>(i).map(|n| n.max(0) as u64);
        let ops = (0..self.shapes.len())
            .map(|t| {
                let at = batch::counts_column(t);
                Ok(Ops {
                    upserts: count(at)?,
                    deletes: count(at + 1)?,
                    truncates: count(at + 2)?,
                })
            })
            .collect::<Result<Vec<Ops>, tokio_postgres::Error>>()
            .map_err(self.pg())?;
        let flag = batch::schema_flag_column(self.shapes.len());
        let changes: bool = row.try_get(flag).map_err(self.pg())?;
        let sequences: Vec<Option<i64>> = row.try_get(flag + 1).map_err(self.pg())?;
        let ddl = if changes {
            self.client
                .query(&self.ddl_window, &[from])
                .await
                .map_err(self.pg())?
        } else {
            Vec::new()
        };
        Ok(Materialised {
            snap: row.try_get(0).map_err(self.pg())?,
            ops,
            ddl,
            sequences,
        })
    }

    /// The statement that ends a cut whose batch tables `deleted` are
    /// emptied by DELETE (see [`ferry_sql::batch::finish_cut`]).
    async fn finish_statement(&self, deleted: Vec<usize>) -> Result<Statement, BatchError> {
        let mut kept = self.finish.lock().await;
        if let Some(st) = kept.get(&deleted) {
            return Ok(st.clone());
        }
        let st = self
            .client
            .prepare(&batch::finish_cut(&self.shapes, &deleted))
            .await
            .map_err(self.pg())?;
        if kept.len() < FINISH_STATEMENTS {
            kept.insert(deleted, st.clone());
        }
        Ok(st)
    }
}

/// What the cut's first statement read.
struct Materialised {
    /// The cut's snapshot, as text.
    snap: String,
    /// Per table, what its batch table holds.
    ops: Vec<Ops>,
    /// The schema changes in the window (rows of
    /// [`ferry_sql::ddl::IN_WINDOW`]).
    ddl: Vec<tokio_postgres::Row>,
    /// Each replicated sequence's last value.
    sequences: Vec<Option<i64>>,
}

/// The background check's answer for the chunk a cut also read (None
/// when it asked for none, or the chunk was empty).
fn chunk_check(
    chunk: Option<&ChunkRequest>,
    row: Option<tokio_postgres::Row>,
) -> Result<Option<ChunkCheck>, tokio_postgres::Error> {
    let (Some(c), Some(row)) = (chunk, row) else {
        return Ok(None);
    };
    let Some(rows) = row.try_get::<_, Option<i64>>(0).ok().flatten() else {
        return Ok(None);
    };
    let last: Option<String> = row.try_get(2)?;
    Ok(Some(ChunkCheck {
        table: c.table.clone(),
        after: c.after.clone(),
        // A short chunk reaches the table's end.
        through: last.filter(|_| rows >= c.limit),
        rows,
        sum: row.try_get(1)?,
    }))
}
