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

mod flight;
mod plain;
mod steps;

use flight::run;

use crate::verify::CheckResult;
use crate::BatchError;
use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use ferry_sql::apply::Kind;
use ferry_sql::batch::Emptying;
use ferry_sql::{apply, batch, schema, sequences, verify, TableShape};
use ferry_wire::{ServerConn, Target};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
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

/// Names of the session's prepared statements.
pub(super) const BEGIN: &str = "ferry_begin";
pub(super) const GUARD: &str = "ferry_guard";
pub(super) const CHECK: &str = "ferry_check";
pub(super) const COMMIT: &str = "ferry_commit";
pub(super) const SEQUENCES: &str = "ferry_sequences";

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

fn io(node: &str) -> impl Fn(std::io::Error) -> BatchError + '_ {
    move |e| BatchError::Conn {
        node: node.to_string(),
        source: ferry_wire::ConnError::Io(e),
    }
}
