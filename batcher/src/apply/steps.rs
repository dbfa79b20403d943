//! A batch that carries schema changes (see [`crate::schema_steps`]): its
//! steps in order, each with unnamed statements of its own (the shapes
//! change within the batch), in one transaction; a change that must be
//! committed before rows can use it is replayed ahead, on its own.

use super::flight::{run, Flight};
use super::plain::sequence_params;
use super::{io, Applied, ApplySession};
use crate::cutter::{Batch, Step};
use crate::BatchError;
use bytes::BytesMut;
use ferry_sql::{apply, batch, ddl, schema, sequences};
use postgres_protocol::message::frontend;

impl ApplySession {
    /// Ships and applies a batch that carries schema changes, also in one
    /// round trip: its steps in order, each with statements of its own
    /// (unnamed: the shapes change within the batch), in one transaction.
    pub(super) async fn apply_steps(
        &mut self,
        origin: &str,
        epoch: i64,
        b: &Batch,
    ) -> Result<Applied, BatchError> {
        let node = self.node.clone();
        self.replay_ahead(b).await?;
        let mut sent: Vec<String> = Vec::new();
        let mut flight = Flight::new();
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
        once(schema::APPLY_BEGIN, &[], flight.out()).map_err(io(&node))?;
        once(schema::BEGIN_APPLY, &guard, flight.out()).map_err(io(&node))?;
        for (k, step) in b.steps.iter().enumerate() {
            match step {
                Step::Rows { shape, data, .. } => {
                    let name = format!("ferry_step_{k}");
                    let temp = batch::step_temp(&name);
                    once(&batch::create_step_temp(shape, &name), &[], flight.out())
                        .map_err(io(&node))?;
                    once(&apply::copy_into(&temp), &[], flight.out()).map_err(io(&node))?;
                    flight.copy(data).map_err(io(&node))?;
                    for (_, sql) in apply::apply_from(shape, &temp) {
                        once(&sql, &[], flight.out()).map_err(io(&node))?;
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
                        flight.out(),
                    )
                    .map_err(io(&node))?;
                    replayed.push(statement.clone());
                }
            }
        }
        if let Some(params) = sequence_params(b) {
            once(sequences::ADVANCE, &params, flight.out()).map_err(io(&node))?;
        }
        once(schema::APPLY_COMMIT, &[], flight.out()).map_err(io(&node))?;
        frontend::sync(flight.out());
        // A failing replay is named by its statement, not by the call.
        let mut names = sent;
        for statement in &replayed {
            if let Some(slot) = names.iter_mut().find(|s| s.as_str() == ddl::REPLAY) {
                *slot = statement.clone();
            }
        }
        self.fly(b, flight, &names).await
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
}
