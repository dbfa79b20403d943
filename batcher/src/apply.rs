//! The replica side: one long-lived apply session per replica.
//!
//! Every statement is prepared once per session: those of every batch when
//! it opens, a table's (its batch table too) before the first batch that
//! carries its rows — a session over 2,000 tables prepares what its
//! workload writes. A batch then goes out in one flight of Bind/Execute
//! messages, without waiting for any answer, and one Sync:
//!
//! ```text
//! BEGIN
//! SELECT ferry.begin_apply(origin, from, to, snap, epoch)
//! COPY pg_temp.b_x FROM STDIN (FORMAT binary)   CopyData… CopyDone   (per table)
//! DELETE …; INSERT … ON CONFLICT …                                   (per table)
//! DELETE FROM pg_temp.b_x (now and then TRUNCATE)                     (per table)
//! SELECT setval(…) for sequences not at the master's positions
//! COMMIT
//! Sync
//! ```
//!
//! If any step fails, the server skips every message up to the Sync — the
//! stray COPY data included — and the transaction is left aborted; the
//! shipper sends ROLLBACK. A batch applies wholly or not at all, and the
//! ledger check in `begin_apply` makes a batch that already applied fail
//! harmlessly. Prepared statements spare the replica parsing and planning
//! about ten statements per batch.

use crate::cutter::{Batch, Step};
use crate::verify::{CheckResult, RepairPart};
use crate::BatchError;
use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use ferry_sql::apply::Kind;
use ferry_sql::batch::Emptying;
use ferry_sql::{apply, batch, ddl, schema, sequences, verify, TableShape};
use ferry_wire::{ServerConn, Target};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use postgres_protocol::IsNull;
use std::time::Duration;

/// What happened to a shipped batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Applied now.
    Now,
    /// The ledger shows it applied earlier (for example before a restart).
    Already,
}

/// A replica's apply session with its temporary tables.
pub struct ApplySession {
    node: String,
    conn: ServerConn,
    /// Per table, once its batch table is made and its statements are
    /// prepared: their text (to name the one that failed).
    tables: Vec<Option<TableSql>>,
    /// Per table, whether a batch empties its batch table with DELETE or
    /// TRUNCATE.
    emptying: Vec<Emptying>,
    /// The tables' shapes, in the batcher's order.
    shapes: Vec<TableShape>,
}

impl ApplySession {
    /// Connects and prepares the session: replica role, temporary tables.
    pub async fn open(
        node: &str,
        target: &Target,
        shapes: &[TableShape],
    ) -> Result<Self, BatchError> {
        let mut conn = ServerConn::connect(target, &[], Duration::from_secs(5))
            .await
            .map_err(BatchError::conn(node))?;
        conn.simple_query(schema::APPLY_SESSION_SETUP)
            .await
            .map_err(BatchError::conn(node))?;
        let mut out = BytesMut::new();
        let mut prepare =
            |name: &str, sql: &str| frontend::parse(name, sql, [], &mut out).map_err(io(node));
        prepare(BEGIN, schema::APPLY_BEGIN)?;
        prepare(GUARD, schema::BEGIN_APPLY)?;
        prepare(CHECK, verify::CHECK_ON_REPLICA)?;
        prepare(COMMIT, schema::APPLY_COMMIT)?;
        prepare(SEQUENCES, sequences::ADVANCE)?;
        frontend::sync(&mut out);
        let mut session = Self {
            node: node.to_string(),
            conn,
            tables: vec![None; shapes.len()],
            emptying: vec![Emptying::default(); shapes.len()],
            shapes: shapes.to_vec(),
        };
        session.setup(&out).await?;
        Ok(session)
    }

    /// Sends set-up messages ending in one Sync and waits for the answer.
    async fn setup(&mut self, out: &[u8]) -> Result<(), BatchError> {
        let node = &self.node;
        self.conn
            .write_all(out)
            .await
            .map_err(BatchError::conn(node))?;
        if let (Some(e), _) = self
            .conn
            .read_until_ready(1)
            .await
            .map_err(BatchError::conn(node))?
        {
            return Err(BatchError::Conn {
                node: node.to_string(),
                source: ferry_wire::ConnError::Server(e),
            });
        }
        Ok(())
    }

    /// Makes the batch tables and prepares the statements of the tables in
    /// `wanted` that the session lacks, in one round trip, outside any
    /// batch's transaction (a batch that fails would take the tables
    /// along while the statements stay prepared).
    async fn make_ready(&mut self, wanted: &[usize]) -> Result<(), BatchError> {
        let missing: Vec<usize> = wanted
            .iter()
            .copied()
            .filter(|&i| self.tables.get(i).is_some_and(Option::is_none))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let node = self.node.clone();
        let mut out = BytesMut::new();
        let mut made = Vec::new();
        for &i in &missing {
            let shape = &self.shapes[i];
            let sql = TableSql {
                copy: apply::copy_in(shape),
                apply: apply::apply(shape),
            };
            frontend::parse("", &batch::create_temp(shape), [], &mut out).map_err(io(&node))?;
            run("", &[], &mut out).map_err(io(&node))?;
            frontend::parse(&copy_name(i), &sql.copy, [], &mut out).map_err(io(&node))?;
            for (j, (_, statement)) in sql.apply.iter().enumerate() {
                frontend::parse(&apply_name(i, j), statement, [], &mut out).map_err(io(&node))?;
            }
            frontend::parse(&empty_name(i), &batch::empty(shape), [], &mut out)
                .map_err(io(&node))?;
            frontend::parse(
                &truncate_name(i),
                &batch::truncate_temp(shape),
                [],
                &mut out,
            )
            .map_err(io(&node))?;
            made.push((i, sql));
        }
        frontend::sync(&mut out);
        self.setup(&out).await?;
        for (i, sql) in made {
            if let Some(slot) = self.tables.get_mut(i) {
                *slot = Some(sql);
            }
        }
        Ok(())
    }

    /// Whether the replica ended this idle session (it shut down or
    /// terminated it): checked at every tick, so that a replica that goes
    /// away while nothing ships stops counting as reachable, serving reads
    /// and holding sync commits at once, not at the next batch.
    pub fn ended_while_idle(&mut self) -> bool {
        self.conn.ended_while_idle()
    }

    /// The replica's ledger: the last batch id applied and the master
    /// snapshot it reached.
    pub async fn ledger(&mut self) -> Result<(i64, String), BatchError> {
        let rows = self.simple_rows(schema::READ_LEDGER).await?;
        let cols = rows.into_iter().next().ok_or_else(|| BatchError::Conn {
            node: self.node.clone(),
            source: ferry_wire::ConnError::Protocol(
                "the replica has no ledger row; run ferry init".into(),
            ),
        })?;
        match (
            cols.first().cloned().flatten(),
            cols.get(1).cloned().flatten(),
        ) {
            (Some(id), Some(snap)) => Ok((id.parse().unwrap_or(0), snap)),
            _ => Err(BatchError::Conn {
                node: self.node.clone(),
                source: ferry_wire::ConnError::Protocol("malformed ledger row".into()),
            }),
        }
    }

    /// The background check's results the replica recorded with the
    /// batches it applied (see [`ferry_sql::verify`]), taken.
    pub async fn take_checks(&mut self) -> Result<Vec<CheckResult>, BatchError> {
        let rows = self.simple_rows(verify::TAKE_CHECKS).await?;
        let text = |cols: &[Option<String>], i: usize| cols.get(i).cloned().flatten();
        let key = |cols: &[Option<String>], i: usize| text(cols, i).filter(|k| !k.is_empty());
        let number = |cols: &[Option<String>], i: usize| {
            text(cols, i)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(-1)
        };
        Ok(rows
            .iter()
            .map(|c| CheckResult {
                batch: number(c, 0),
                table: text(c, 1).unwrap_or_default(),
                after: key(c, 2),
                through: key(c, 3),
                master_rows: number(c, 4),
                master_sum: text(c, 5).unwrap_or_default(),
                rows: number(c, 6),
                sum: text(c, 7).unwrap_or_default(),
            })
            .collect())
    }

    /// Runs a simple query on the idle session; returns its rows (text).
    async fn simple_rows(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, BatchError> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).map_err(io(&self.node))?;
        self.conn
            .write_all(&out)
            .await
            .map_err(BatchError::conn(&self.node))?;
        let mut rows = Vec::new();
        loop {
            match self
                .conn
                .read_message()
                .await
                .map_err(BatchError::conn(&self.node))?
            {
                Message::DataRow(body) => {
                    let buf = body.buffer();
                    let mut cols = Vec::new();
                    let mut ranges = body.ranges();
                    while let Ok(Some(r)) = ranges.next() {
                        cols.push(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                    }
                    rows.push(cols);
                }
                Message::ErrorResponse(e) => {
                    let e = ferry_wire::ServerError::from_fields(&mut e.fields());
                    self.conn
                        .read_until_ready(1)
                        .await
                        .map_err(BatchError::conn(&self.node))?;
                    return Err(BatchError::Conn {
                        node: self.node.clone(),
                        source: ferry_wire::ConnError::Server(e),
                    });
                }
                Message::ReadyForQuery(_) => return Ok(rows),
                _ => {}
            }
        }
    }

    /// The warnings Ferry's own SQL raised on the replica since the last
    /// call (a schema change it skipped, or ran as another role).
    pub fn take_notices(&mut self) -> Vec<String> {
        self.conn.take_notices()
    }

    /// Ships and applies one batch in one round trip.
    pub async fn apply(
        &mut self,
        origin: &str,
        epoch: i64,
        b: &Batch,
    ) -> Result<Applied, BatchError> {
        if !b.steps.is_empty() {
            return self.apply_steps(origin, epoch, b).await;
        }
        let wanted: Vec<usize> = b
            .parts
            .iter()
            .map(|p| p.table)
            .chain(b.repairs.iter().map(|r| r.table))
            .collect();
        self.make_ready(&wanted).await?;
        let node = self.node.clone();
        // The statements in the order they run, each completing once.
        let mut sent: Vec<&str> = vec![schema::APPLY_BEGIN, schema::BEGIN_APPLY];
        let mut out = BytesMut::with_capacity(b.bytes() as usize + 4096);
        let params = [
            origin.to_string(),
            b.from.to_string(),
            b.id.to_string(),
            b.snap.clone(),
            epoch.to_string(),
        ];
        run(BEGIN, &[], &mut out).map_err(io(&node))?;
        run(GUARD, &params, &mut out).map_err(io(&node))?;
        for part in &b.parts {
            run(&copy_name(part.table), &[], &mut out).map_err(io(&node))?;
            sent.push(
                self.tables
                    .get(part.table)
                    .and_then(Option::as_ref)
                    .map_or("COPY", |t| t.copy.as_str()),
            );
            for chunk in &part.data {
                frontend::CopyData::new(&chunk[..])
                    .map_err(io(&node))?
                    .write(&mut out);
            }
            frontend::copy_done(&mut out);
        }
        for part in &b.parts {
            for (j, (kind, sql)) in self
                .tables
                .get(part.table)
                .and_then(Option::as_ref)
                .into_iter()
                .flat_map(|t| t.apply.iter())
                .enumerate()
            {
                if kind.has_work(&part.ops) {
                    run(&apply_name(part.table, j), &[], &mut out).map_err(io(&node))?;
                    sent.push(sql);
                }
            }
        }
        // The batch tables are emptied in the transaction that filled them.
        for part in &b.parts {
            let truncate = self
                .emptying
                .get_mut(part.table)
                .is_some_and(|e| e.truncate_after(part.ops.rows()));
            if truncate {
                run(&truncate_name(part.table), &[], &mut out).map_err(io(&node))?;
                sent.push("TRUNCATE (batch table)");
            } else {
                run(&empty_name(part.table), &[], &mut out).map_err(io(&node))?;
                sent.push("DELETE (batch table)");
            }
        }
        if let Some(params) = sequence_params(b) {
            run(SEQUENCES, &params, &mut out).map_err(io(&node))?;
            sent.push(sequences::ADVANCE);
        }
        for repair in &b.repairs {
            self.rewrite_range(repair, &mut out, &mut sent)
                .map_err(io(&node))?;
        }
        for check in &b.checks {
            let params = [
                Some(b.id.to_string()),
                Some(check.table.quoted()),
                check.after.clone(),
                check.through.clone(),
                Some(check.rows.to_string()),
                Some(check.sum.clone()),
            ];
            run_nullable(CHECK, &params, &mut out).map_err(io(&node))?;
            sent.push(verify::CHECK_ON_REPLICA);
        }
        run(COMMIT, &[], &mut out).map_err(io(&node))?;
        sent.push(schema::APPLY_COMMIT);
        frontend::sync(&mut out);
        let sent: Vec<String> = sent.into_iter().map(str::to_string).collect();
        for repair in &b.repairs {
            if let Some(e) = self.emptying.get_mut(repair.table) {
                e.truncated();
            }
        }
        self.fly(b, &out, &sent).await
    }
}

impl ApplySession {
    /// Ships and applies a batch that carries schema changes, also in one
    /// round trip: its steps in order, each with statements of its own
    /// (unnamed: the shapes change within the batch), in one transaction.
    async fn apply_steps(
        &mut self,
        origin: &str,
        epoch: i64,
        b: &Batch,
    ) -> Result<Applied, BatchError> {
        let node = self.node.clone();
        self.replay_ahead(b).await?;
        let mut sent: Vec<String> = Vec::new();
        let mut out = BytesMut::with_capacity(b.bytes() as usize + 4096);
        let guard = [
            origin.to_string(),
            b.from.to_string(),
            b.id.to_string(),
            b.snap.clone(),
            epoch.to_string(),
        ];
        // Each statement runs once, unnamed; `sent` names it for errors.
        let mut once = |sql: &str, params: &[String], out: &mut BytesMut| {
            sent.push(sql.to_string());
            frontend::parse("", sql, [], out)?;
            run("", params, out)
        };
        let mut replayed: Vec<String> = Vec::new();
        once(schema::APPLY_BEGIN, &[], &mut out).map_err(io(&node))?;
        once(schema::BEGIN_APPLY, &guard, &mut out).map_err(io(&node))?;
        for (k, step) in b.steps.iter().enumerate() {
            match step {
                Step::Rows { shape, data, .. } => {
                    let name = format!("ferry_step_{k}");
                    let temp = batch::step_temp(&name);
                    once(&batch::create_step_temp(shape, &name), &[], &mut out)
                        .map_err(io(&node))?;
                    once(&apply::copy_into(&temp), &[], &mut out).map_err(io(&node))?;
                    for chunk in data {
                        frontend::CopyData::new(&chunk[..])
                            .map_err(io(&node))?
                            .write(&mut out);
                    }
                    frontend::copy_done(&mut out);
                    for (_, sql) in apply::apply_from(shape, &temp) {
                        once(&sql, &[], &mut out).map_err(io(&node))?;
                    }
                }
                Step::Ddl(change) => {
                    let Some(statement) = change
                        .statement
                        .as_ref()
                        .filter(|_| !change.commits_first())
                    else {
                        continue;
                    };
                    once(
                        ddl::REPLAY,
                        &[
                            statement.clone(),
                            change.search_path.clone(),
                            change.settings.clone(),
                        ],
                        &mut out,
                    )
                    .map_err(io(&node))?;
                    replayed.push(statement.clone());
                }
            }
        }
        if let Some(params) = sequence_params(b) {
            once(sequences::ADVANCE, &params, &mut out).map_err(io(&node))?;
        }
        once(schema::APPLY_COMMIT, &[], &mut out).map_err(io(&node))?;
        frontend::sync(&mut out);
        // A failing replay is named by its statement, not by the call.
        let mut names = sent;
        for statement in &replayed {
            if let Some(slot) = names.iter_mut().find(|s| s.as_str() == ddl::REPLAY) {
                *slot = statement.clone();
            }
        }
        self.fly(b, &out, &names).await
    }

    /// Adds to a batch's flight the statements that rewrite a key range with
    /// the master's rows (`ferry repair`): the range's rows go, the
    /// master's come in through the table's batch table.
    fn rewrite_range<'a>(
        &'a self,
        repair: &RepairPart,
        out: &mut BytesMut,
        sent: &mut Vec<&'a str>,
    ) -> Result<(), std::io::Error> {
        let t = repair.table;
        let (Some(shape), Some(sql)) = (self.shapes.get(t), self.sql(t)) else {
            return Ok(());
        };
        let (copy, statements) = (&sql.copy, &sql.apply);
        frontend::parse("", &verify::repair_delete(shape), [], out)?;
        run_nullable("", &[repair.after.clone(), repair.through.clone()], out)?;
        sent.push("DELETE (the repaired range)");
        run(&copy_name(t), &[], out)?;
        sent.push(copy);
        for chunk in &repair.data {
            frontend::CopyData::new(&chunk[..])?.write(out);
        }
        frontend::copy_done(out);
        if let Some(j) = statements.iter().position(|(k, _)| *k == Kind::Upsert) {
            run(&apply_name(t, j), &[], out)?;
            sent.push(&statements[j].1);
        }
        run(&truncate_name(t), &[], out)?;
        sent.push("TRUNCATE (batch table)");
        Ok(())
    }

    /// Replays, each in a transaction of its own, the batch's changes that
    /// must be committed before its rows can use them (see
    /// [`crate::schema_steps::DdlChange::commits_first`]). One that the
    /// replica already has (the batch was tried before) is skipped there.
    async fn replay_ahead(&mut self, b: &Batch) -> Result<(), BatchError> {
        for change in b.schema_changes().filter(|c| c.commits_first()) {
            let Some(statement) = &change.statement else {
                continue;
            };
            let mut out = BytesMut::new();
            frontend::parse("", ddl::REPLAY, [], &mut out).map_err(io(&self.node))?;
            run(
                "",
                &[
                    statement.clone(),
                    change.search_path.clone(),
                    change.settings.clone(),
                ],
                &mut out,
            )
            .map_err(io(&self.node))?;
            frontend::sync(&mut out);
            self.conn
                .write_all(&out)
                .await
                .map_err(BatchError::conn(&self.node))?;
            let (error, _) = self
                .conn
                .read_until_ready(1)
                .await
                .map_err(BatchError::conn(&self.node))?;
            if let Some(error) = error {
                return Err(BatchError::Apply {
                    node: self.node.clone(),
                    batch: b.id,
                    error: Box::new(error),
                    statement: statement.clone(),
                });
            }
        }
        Ok(())
    }

    /// Sends a batch's flight (ending in Sync) and reads the answers; rolls
    /// back an aborted transaction and tells what happened. `names[i]` is
    /// the i-th statement of the flight, to name the one that failed.
    async fn fly(
        &mut self,
        b: &Batch,
        out: &[u8],
        names: &[String],
    ) -> Result<Applied, BatchError> {
        let node = self.node.clone();
        self.conn
            .write_all(out)
            .await
            .map_err(BatchError::conn(&node))?;
        let (error, status) = self
            .conn
            .read_pipeline()
            .await
            .map_err(BatchError::conn(&node))?;
        if status != b'I' {
            self.conn
                .simple_query("ROLLBACK")
                .await
                .map_err(BatchError::conn(&node))?;
        }
        match error {
            None if status == b'I' => Ok(Applied::Now),
            None => Err(BatchError::Conn {
                node,
                source: ferry_wire::ConnError::Protocol("batch transaction did not end".into()),
            }),
            Some((e, _)) if e.code == schema::ALREADY_APPLIED => Ok(Applied::Already),
            Some((error, at)) => Err(BatchError::Apply {
                node,
                batch: b.id,
                error: Box::new(error),
                statement: names.get(at).cloned().unwrap_or_else(|| "COMMIT".into()),
            }),
        }
    }
}

/// One table's prepared statements' text on the replica.
#[derive(Clone)]
struct TableSql {
    copy: String,
    apply: Vec<(Kind, String)>,
}

impl ApplySession {
    /// A table's statements, once prepared.
    fn sql(&self, table: usize) -> Option<&TableSql> {
        self.tables.get(table)?.as_ref()
    }
}

/// The parameters of [`sequences::ADVANCE`] for a batch's sequence
/// positions; None when it carries none.
fn sequence_params(b: &Batch) -> Option<[String; 2]> {
    if b.sequences.is_empty() {
        return None;
    }
    let names: Vec<&str> = b.sequences.iter().map(|(n, _)| n.as_str()).collect();
    let positions: Vec<Option<i64>> = b.sequences.iter().map(|(_, p)| *p).collect();
    Some([
        sequences::array_literal(&names),
        sequences::positions_literal(&positions),
    ])
}

/// Names of the session's prepared statements.
const BEGIN: &str = "ferry_begin";
const GUARD: &str = "ferry_guard";
const CHECK: &str = "ferry_check";
const COMMIT: &str = "ferry_commit";
const SEQUENCES: &str = "ferry_sequences";

fn copy_name(table: usize) -> String {
    format!("ferry_copy_{table}")
}

fn apply_name(table: usize, statement: usize) -> String {
    format!("ferry_apply_{table}_{statement}")
}

fn empty_name(table: usize) -> String {
    format!("ferry_empty_{table}")
}

fn truncate_name(table: usize) -> String {
    format!("ferry_truncate_{table}")
}

/// Bind and Execute of a prepared statement with text parameters.
fn run(statement: &str, params: &[String], out: &mut BytesMut) -> Result<(), std::io::Error> {
    frontend::bind(
        "",
        statement,
        [0i16],
        params.iter(),
        |p, buf| {
            buf.extend_from_slice(p.as_bytes());
            Ok(IsNull::No)
        },
        [0i16],
        out,
    )
    .map_err(|_| std::io::Error::other("bind encoding"))?;
    frontend::execute("", 0, out)
}

/// [`run`] with parameters that may be NULL.
fn run_nullable(
    statement: &str,
    params: &[Option<String>],
    out: &mut BytesMut,
) -> Result<(), std::io::Error> {
    frontend::bind(
        "",
        statement,
        [0i16],
        params.iter(),
        |p, buf| match p {
            Some(p) => {
                buf.extend_from_slice(p.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        },
        [0i16],
        out,
    )
    .map_err(|_| std::io::Error::other("bind encoding"))?;
    frontend::execute("", 0, out)
}

fn io(node: &str) -> impl Fn(std::io::Error) -> BatchError + '_ {
    move |e| BatchError::Conn {
        node: node.to_string(),
        source: ferry_wire::ConnError::Io(e),
    }
}
