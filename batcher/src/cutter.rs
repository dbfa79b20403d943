//! The master side of the batch path.
//!
//! One long-lived session on the master. A cut runs in a REPEATABLE READ
//! transaction whose snapshot *is* the new cut: the outbox rows it can see
//! and that were not visible in the previous cut are exactly the
//! transactions that committed in between. They are netted per key into
//! the session's temporary tables and copied out in binary.
//!
//! A cut reads only the outboxes of the tables written in its window, as
//! `ferry.touched` names them ([`window`]), and a tick at which nothing can
//! have changed runs no cut at all: what a tick costs follows what
//! changed, not how many tables there are.

mod extras;
mod positions;
mod ready;
mod window;

use crate::payload::{Budget, Payload, PayloadError, MEMORY_PER_BATCH};
use crate::schema_steps::DdlChange;
use crate::verify::{ChunkCheck, ChunkRequest, RepairPart, RepairRange};
use crate::BatchError;
use ferry_sql::batch::{Emptying, Ops};
use ferry_sql::{batch, TableShape};
use futures_util::future::try_join_all;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio_postgres::{Client, Statement};
use window::Filled;

/// One table's part of a batch: its binary COPY stream.
#[derive(Debug)]
pub struct TablePart {
    /// Index into the batcher's table shapes.
    pub table: usize,
    /// Its rows by operation (the replica skips apply statements without work).
    pub ops: Ops,
    pub data: Payload,
}

/// A step of a batch that carries schema changes.
#[derive(Debug)]
pub enum Step {
    /// Row changes of one table, in the shape it has at this point.
    Rows {
        shape: TableShape,
        rows: u64,
        data: Payload,
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
    /// The chunk (per table it spans) the replica compares with the master's after the
    /// batch's rows (see [`crate::verify`]).
    pub checks: Vec<ChunkCheck>,
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
        let steps = self.steps.iter().filter_map(|s| match s {
            Step::Rows { data, .. } => Some(data.bytes()),
            Step::Ddl(_) => None,
        });
        let repairs = self.repairs.iter().map(|r| r.data.bytes());
        self.parts
            .iter()
            .map(|p| p.data.bytes())
            .chain(steps)
            .chain(repairs)
            .sum()
    }

    /// Bytes of COPY data the batch keeps in spill files.
    pub fn spilled_bytes(&self) -> u64 {
        let steps = self.steps.iter().filter_map(|s| match s {
            Step::Rows { data, .. } => Some(data),
            Step::Ddl(_) => None,
        });
        self.parts
            .iter()
            .map(|p| &p.data)
            .chain(steps)
            .chain(self.repairs.iter().map(|r| &r.data))
            .filter(|d| d.spilled())
            .map(Payload::bytes)
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
    /// Nothing can have changed since the position of the one group, as
    /// the tick's probe found without a cut (see [`ferry_sql::batch::probe`]):
    /// as [`Cut::Unchanged`], at the cost of one small statement.
    Idle,
    /// A schema change holds an outbox (it is being rewritten): nothing
    /// was read, and nothing may be concluded; cut again at the next tick.
    Busy,
}

/// The master's batch session.
pub struct Cutter {
    node: String,
    client: Client,
    shapes: Vec<TableShape>,
    /// Table index by the stem `ferry.touched` names it with.
    by_stem: HashMap<String, usize>,
    /// Per table, its batch table's statements once the session has made
    /// it (on the first cut that finds the table written).
    ready: Mutex<Vec<Option<ready::TableStatements>>>,
    /// The tick's question whether anything changed ([`batch::probe`]).
    probe: Statement,
    /// Takes the cut, per set of tables it expects written: materialises
    /// them and reads the snapshot, the tables written, the schema-change
    /// flag and the sequences (see [`ferry_sql::batch::materialise_set`]);
    /// kept prepared for up to [`KEPT_STATEMENTS`] sets.
    materialise: tokio::sync::Mutex<HashMap<Vec<usize>, Statement>>,
    /// The schema changes in a window (see [`crate::schema_steps`]).
    ddl_window: Statement,
    /// Reads a chunk for the background check ([`ferry_sql::verify`]).
    chunk: Statement,
    /// Ends a cut: empties the batch tables that had rows and takes the
    /// batch id, one statement per set of tables (see
    /// [`ferry_sql::batch::finish_cut`]), prepared when first needed.
    finish: tokio::sync::Mutex<HashMap<Vec<usize>, Statement>>,
    emptying: Mutex<Vec<Emptying>>,
    /// The tables the last cut found written: what a cut that runs without
    /// a probe expects. While they are some, the next tick cuts at once
    /// (under a steady stream of writes a probe would only find them
    /// again, at the price of a round trip); the first cut that finds none
    /// lets the probes resume.
    expected: Mutex<Vec<usize>>,
    /// Tables whose outbox may hold rows, each with the `xmax` of the
    /// latest snapshot that found it written: the housekeeping's work.
    outboxes: Mutex<window::Written>,
    /// Replicated sequences: which a cut reads, and where they shipped.
    positions: Mutex<positions::Positions>,
    /// Where a batch's COPY data goes beyond [`payload::MEMORY_PER_BATCH`].
    spill_dir: PathBuf,
    /// The memory the cut being taken may still hold its COPY data in.
    budget: Mutex<Arc<Budget>>,
}

/// Sets of tables whose materialising and finishing statements are kept
/// prepared; a cut with another set once that many are kept prepares one
/// for itself alone (a schema whose batches touch ever new sets of tables).
const KEPT_STATEMENTS: usize = 64;

impl Cutter {
    /// Prepares the session: its settings and the statements every cut
    /// uses; a table's batch table and statements wait until a cut finds
    /// it written (a database of 2,000 tables starts as fast as one of 4).
    pub async fn new(
        node: &str,
        client: Client,
        shapes: &[TableShape],
        sequences: Vec<String>,
        ties: Vec<Vec<usize>>,
        spill_dir: &Path,
    ) -> Result<Self, BatchError> {
        let err = BatchError::pg;
        client
            .batch_execute(batch::CUT_SESSION_SETUP)
            .await
            .map_err(err(node))?;
        let (probe, touched) = (batch::probe(), batch::touched());
        let (ddl_window, chunk, probe, touched) = tokio::join!(
            client.prepare(ferry_sql::ddl::IN_WINDOW),
            client.prepare(ferry_sql::verify::CHUNK_ON_MASTER),
            client.prepare(&probe),
            client.query_one(&touched, &[]),
        );
        let by_stem: HashMap<String, usize> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| (s.table.stem(), i))
            .collect();
        let touched = touched.map_err(err(node))?;
        let stems: Vec<String> = touched.try_get(1).map_err(err(node))?;
        let outboxes = window::Written::at_start(
            &window::tables(&by_stem, &stems),
            touched.try_get(0).map_err(err(node))?,
        );
        Ok(Self {
            node: node.to_string(),
            shapes: shapes.to_vec(),
            by_stem,
            ready: Mutex::new(vec![None; shapes.len()]),
            probe: probe.map_err(err(node))?,
            materialise: tokio::sync::Mutex::new(HashMap::new()),
            ddl_window: ddl_window.map_err(err(node))?,
            chunk: chunk.map_err(err(node))?,
            finish: tokio::sync::Mutex::new(HashMap::new()),
            emptying: Mutex::new(vec![Emptying::default(); shapes.len()]),
            expected: Mutex::new(Vec::new()),
            outboxes: Mutex::new(outboxes),
            positions: Mutex::new(positions::Positions::new(sequences, ties)),
            spill_dir: spill_dir.to_path_buf(),
            budget: Mutex::new(Arc::new(Budget::new(MEMORY_PER_BATCH, spill_dir))),
            client,
        })
    }

    /// Makes the next batch carry every sequence position again, moved or
    /// not: a replica that just connected has not had them (positions
    /// travel only when they move, and it may have missed the batch that
    /// last carried them).
    pub fn resend_sequences(&self) {
        self.positions().resend();
    }

    fn positions(&self) -> std::sync::MutexGuard<'_, positions::Positions> {
        self.positions.lock().unwrap_or_else(|p| p.into_inner())
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
    /// With one group, nothing else asked for and no table written in the
    /// previous cut's window, a probe outside any transaction comes first:
    /// when no table was written, no schema changed and no sequence moved
    /// since the group's position, there is no cut ([`Cut::Idle`]);
    /// otherwise the cut expects the tables the probe found written.
    ///
    /// A cut costs two round trips to the master (a sync commit waits
    /// for them): the first flight opens the transaction, locks the
    /// outboxes it expects to read, takes its snapshot — the cut — and
    /// materialises those tables; the second copies out the tables that
    /// have rows, takes the batch id and commits. A table written but not
    /// expected adds a round trip (or, the first time the session meets
    /// it, a new attempt after its batch table is made). Each further
    /// group adds a round trip to empty and refill the batch tables and
    /// one to copy them out.
    ///
    /// With `chunk`, the cut also reads that chunk (of each table it spans)
    /// at its snapshot, and every batch carries it (a batch is cut for it
    /// even when nothing changed), unless the window holds schema changes.
    pub async fn cut(
        &self,
        groups: &[(i64, String)],
        chunk: &[ChunkRequest],
        repairs: &[RepairRange],
    ) -> Result<Cut, BatchError> {
        if groups.is_empty() {
            return Ok(Cut::Unchanged);
        }
        let expected = self
            .expected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let quiet =
            groups.len() == 1 && chunk.is_empty() && repairs.is_empty() && expected.is_empty();
        let mut expect = if quiet {
            match self.probe(&groups[0].1).await? {
                Some(written) => written,
                None => return Ok(Cut::Idle),
            }
        } else {
            expected
        };
        loop {
            self.make_ready(&expect).await?;
            let attempt = self.cut_groups(groups, chunk, repairs, &expect).await;
            let outcome = match attempt {
                Ok(Attempt::Done(Cut::Batches(batches))) => return Ok(Cut::Batches(batches)),
                Ok(Attempt::Done(other)) => Ok(other),
                Ok(Attempt::Unready(more)) => {
                    expect.extend(more);
                    expect.sort_unstable();
                    expect.dedup();
                    Err(None)
                }
                Err(e) => Err(Some(e)),
            };
            let ended = self.client.batch_execute("ROLLBACK").await;
            match outcome {
                Ok(cut) => {
                    ended.map_err(self.pg())?;
                    return Ok(cut);
                }
                Err(Some(e)) => return Err(e),
                Err(None) => ended.map_err(self.pg())?,
            }
        }
    }

    /// The cut's transaction; anything but batches (or an error) leaves it
    /// for the caller to roll back.
    async fn cut_groups(
        &self,
        groups: &[(i64, String)],
        chunk: &[ChunkRequest],
        repairs: &[RepairRange],
        expect: &[usize],
    ) -> Result<Attempt, BatchError> {
        let cut_at = Instant::now();
        *self.budget.lock().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(Budget::new(MEMORY_PER_BATCH, &self.spill_dir));
        let first = &groups[0].1;
        let begin = {
            let shapes: Vec<&TableShape> = expect.iter().map(|&i| &self.shapes[i]).collect();
            batch::begin_cut(&shapes)
        };
        // join! polls in argument order, so both requests go out in one
        // write: BEGIN with the outbox locks (which take no snapshot), then
        // the materialisation, the transaction's first statement that needs
        // a snapshot, which fixes it.
        let read = self.positions().to_read(expect, &[], Instant::now());
        let (locked, taken) = tokio::join!(
            self.client.batch_execute(&begin),
            self.materialise(expect, first, &read),
        );
        if let Err(e) = locked {
            if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
                tracing::debug!(node = %self.node, "an outbox is locked by a schema change; cutting at the next tick");
                return Ok(Attempt::Done(Cut::Busy));
            }
            return Err(self.pg()(e));
        }
        let mut filled: Vec<usize> = expect.to_vec();
        let mut taken = match self.fill_unexpected(taken?, &mut filled, first).await? {
            Filled::Done(m) => m,
            Filled::Unready(more) => return Ok(Attempt::Unready(more)),
            Filled::Rewritten => return Ok(Attempt::Done(Cut::Busy)),
        };
        self.read_tied_sequences(&mut taken).await?;
        let snap = taken.snap.clone();
        let written = taken.written.clone();
        let read = std::mem::take(&mut taken.read);
        let positions = std::mem::take(&mut taken.sequences);
        let moved = self.positions().moved(&read, &positions);
        let mut contents: Vec<(Vec<TablePart>, Vec<Step>)> = Vec::new();
        let mut any_ddl = false;
        for (g, (_, from_snap)) in groups.iter().enumerate() {
            if g > 0 {
                taken = match self.refill(&mut filled, from_snap).await? {
                    Filled::Done(m) => m,
                    Filled::Unready(more) => return Ok(Attempt::Unready(more)),
                    Filled::Rewritten => return Ok(Attempt::Done(Cut::Busy)),
                };
            }
            let Materialised { ops, ddl, .. } = &taken;
            let last = g + 1 == groups.len();
            any_ddl |= !ddl.is_empty();
            if !ddl.is_empty() {
                let counts: Vec<u64> = ops.iter().map(Ops::rows).collect();
                let Some(steps) = self.steps(g, from_snap, &counts, ddl).await? else {
                    return Ok(Attempt::Done(Cut::Busy));
                };
                contents.push((Vec::new(), steps));
            } else if ops.iter().any(|o| o.rows() > 0) && !last {
                contents.push((self.copy_outs(ops).await?, Vec::new()));
            } else if !last {
                contents.push((Vec::new(), Vec::new()));
            }
        }
        let Materialised { ops, ddl, .. } = taken;
        let here = ops.iter().any(|o| o.rows() > 0) && ddl.is_empty();
        let earlier = contents
            .iter()
            .any(|(parts, steps)| !parts.is_empty() || !steps.is_empty());
        // Not in a batch that changes shapes: its steps apply outside
        // the session's statements.
        let chunk = if any_ddl { &[] } else { chunk };
        let repairs = if any_ddl {
            Vec::new()
        } else {
            self.repair_parts(repairs).await?
        };
        // Groups at different positions are cut even when nothing
        // changed: the step brings them to one batch id, as equal in
        // their ledgers as in their rows (a failover compares ledgers).
        let merge = groups.len() > 1;
        if !(here || moved || earlier || merge || !chunk.is_empty() || !repairs.is_empty()) {
            self.expect_next(&written, &snap);
            return Ok(Attempt::Done(Cut::Unchanged));
        }
        let ended = self.finish_cut(&ops, here, chunk).await?;
        if ddl.is_empty() {
            contents.push((ended.parts, Vec::new()));
        }
        self.expect_next(&written, &snap);
        let sequences = {
            let mut p = self.positions();
            p.read(&read, &positions, Instant::now());
            p.carried(&read, &positions)
        };
        let batches = groups
            .iter()
            .zip(contents)
            .map(|((from, _), (parts, steps))| Batch {
                from: *from,
                id: ended.id,
                snap: snap.clone(),
                parts,
                sequences: sequences.clone(),
                steps,
                checks: ended.checks.clone(),
                repairs: repairs.clone(),
                cut_at,
            })
            .collect();
        Ok(Attempt::Done(Cut::Batches(batches)))
    }

    /// Ends the cut's transaction: copies out the last group's batch
    /// tables (`copy`), reads the background check's chunk, empties the
    /// batch tables, takes the batch id and commits, in one flight.
    async fn finish_cut(
        &self,
        ops: &[Ops],
        copy: bool,
        chunk: &[ChunkRequest],
    ) -> Result<Ended, BatchError> {
        let copy_last = async {
            if copy {
                self.copy_outs(ops).await
            } else {
                Ok(Vec::new())
            }
        };
        // The batch tables are emptied in the transaction that filled
        // them (after their COPY OUT, which goes out first): by the
        // statement that takes the batch id, or by TRUNCATE.
        let (deleted, truncated) = self.emptying_plan(ops);
        let finish = self.finish_statement(deleted).await?;
        let read_chunk = try_join_all(chunk.iter().map(|c| async move {
            let row = self
                .client
                .query_one(&self.chunk, &[&c.table.quoted(), &c.after, &c.limit])
                .await?;
            chunk_check(c, row)
        }));
        let (parts, checked, id, emptied, ended) = tokio::join!(
            copy_last,
            read_chunk,
            self.client.query_one(&finish, &[]),
            try_join_all(truncated.iter().map(|st| self.client.execute(st, &[]))),
            self.client.batch_execute("COMMIT"),
        );
        let checks: Vec<ChunkCheck> = checked.map_err(self.pg())?.into_iter().flatten().collect();
        let id: i64 = id.map_err(self.pg())?.get(0);
        let parts = parts?;
        emptied.map_err(self.pg())?;
        ended.map_err(self.pg())?;
        Ok(Ended { parts, checks, id })
    }

    /// How each batch table is emptied in the cut's transaction: by the
    /// statement that takes the batch id (the tables listed), or by
    /// TRUNCATE (those statements) once a table has been worn enough.
    fn emptying_plan(&self, ops: &[Ops]) -> (Vec<usize>, Vec<Statement>) {
        let mut deleted: Vec<usize> = Vec::new();
        let mut truncated: Vec<Statement> = Vec::new();
        let mut wear = self.emptying.lock().unwrap_or_else(|p| p.into_inner());
        let ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        let tables = ops.iter().zip(wear.iter_mut()).zip(ready.iter());
        for (i, ((o, e), statements)) in tables.enumerate() {
            if o.rows() == 0 {
                continue;
            }
            match statements {
                Some(st) if e.truncate_after(o.rows()) => truncated.push(st.truncate.clone()),
                _ => deleted.push(i),
            }
        }
        (deleted, truncated)
    }

    /// Copies out the batch tables that have rows, pipelined.
    async fn copy_outs(&self, ops: &[Ops]) -> Result<Vec<TablePart>, BatchError> {
        let statements: Vec<(usize, Ops, Statement)> = {
            let ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
            ops.iter()
                .enumerate()
                .filter(|(_, o)| o.rows() > 0)
                .filter_map(|(i, &o)| Some((i, o, ready.get(i)?.as_ref()?.copy_out.clone())))
                .collect()
        };
        try_join_all(statements.into_iter().map(|(table, ops, st)| async move {
            let stream = self.client.copy_out(&st).await.map_err(self.pg())?;
            let data = self.collect(stream).await?;
            Ok(TablePart { table, ops, data })
        }))
        .await
    }

    /// Collects a COPY OUT stream within the cut's memory budget (see
    /// [`crate::payload`]).
    async fn collect(&self, stream: tokio_postgres::CopyOutStream) -> Result<Payload, BatchError> {
        let budget = self
            .budget
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Payload::collect(stream, &budget)
            .await
            .map_err(|e| match e {
                PayloadError::Stream(e) => self.pg()(e),
                PayloadError::Spill { dir, source } => BatchError::Spill {
                    node: self.node.clone(),
                    dir,
                    source,
                },
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
        if kept.len() < KEPT_STATEMENTS {
            kept.insert(deleted, st.clone());
        }
        Ok(st)
    }

    /// After a cut that committed or found nothing: the tables it found
    /// written are what the next cut without a probe expects, and their
    /// outboxes hold rows until the clean-up passes the cut.
    fn expect_next(&self, written: &[usize], snap: &str) {
        *self.expected.lock().unwrap_or_else(|p| p.into_inner()) = written.to_vec();
        self.outboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .found(written, snap);
    }

    /// The tables whose outboxes may hold rows (the housekeeping's work).
    pub fn outboxes_in_use(&self) -> Vec<&TableShape> {
        let tables = self
            .outboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tables();
        tables
            .into_iter()
            .filter_map(|i| self.shapes.get(i))
            .collect()
    }

    /// The clean-up removed every outbox row below `horizon` (an xid8).
    pub fn cleaned_up_to(&self, horizon: &str) {
        self.outboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cleaned(horizon);
    }
}

/// What one attempt at a cut came to.
enum Attempt {
    Done(Cut),
    /// Tables written in the window whose batch tables the session has not
    /// made yet (that cannot happen inside the cut's transaction, whose
    /// rollback would take them along): made, the cut is tried again
    /// expecting them.
    Unready(Vec<usize>),
}

/// The end of a cut's transaction.
struct Ended {
    /// The last group's tables.
    parts: Vec<TablePart>,
    checks: Vec<ChunkCheck>,
    id: i64,
}

/// What the cut's first statement read.
struct Materialised {
    /// The cut's snapshot, as text.
    snap: String,
    /// Per table, what its batch table holds.
    ops: Vec<Ops>,
    /// The tables written in the window.
    written: Vec<usize>,
    /// The schema changes in the window (rows of
    /// [`ferry_sql::ddl::IN_WINDOW`]).
    ddl: Vec<tokio_postgres::Row>,
    /// The sequences read (see [`positions`]), and their last values.
    read: Vec<usize>,
    sequences: Vec<Option<i64>>,
}

/// The background check's answer for one table of the chunk a cut also
/// read (None when the table could not be read: gone meanwhile).
fn chunk_check(
    c: &ChunkRequest,
    row: tokio_postgres::Row,
) -> Result<Option<ChunkCheck>, tokio_postgres::Error> {
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
