//! What a cut batch carries besides netted rows: the steps of a window
//! that holds schema changes (row changes before each change, the change,
//! row changes after it; see [`crate::schema_steps`]) and the master's
//! rows of the ranges a `ferry repair` asked for. Both run inside the
//! cut's transaction, at its snapshot.

use super::{Cutter, Step};
use crate::payload::Payload;
use crate::schema_steps::{plan, LogEntry, Planned};
use crate::verify::{RepairPart, RepairRange};
use crate::BatchError;
use ferry_sql::batch;

impl Cutter {
    /// The steps of a group's batch when its window holds schema changes:
    /// runs the plan of [`crate::schema_steps::plan`] inside the cut's
    /// transaction, materialising each segment into a step table of its own.
    /// None when a segment's outbox is held, or was rewritten after the
    /// cut's snapshot, by a schema change (the cut waits for the next tick).
    pub(super) async fn steps(
        &self,
        group: usize,
        from_snap: &String,
        counts: &[u64],
        rows: &[tokio_postgres::Row],
    ) -> Result<Option<Vec<Step>>, BatchError> {
        let mut entries = Vec::new();
        for r in rows {
            let tables: String = r.get(6);
            entries.push(LogEntry {
                seq: r.get(0),
                at: r.get(7),
                object: r.get(8),
                xid: r.get(1),
                tag: r.get(2),
                query: r.get(3),
                search_path: r.get(4),
                settings: r.get(9),
                replicate: r.get(5),
                tables: LogEntry::parse_tables(&tables).map_err(|e| BatchError::Catalog {
                    node: self.node.clone(),
                    detail: format!("schema change log entry {}: {e}", r.get::<_, i64>(0)),
                })?,
            });
        }
        for e in &entries {
            tracing::debug!(node = %self.node, seq = e.seq, xid = %e.xid, tag = %e.tag, tables = e.tables.len(),
                from = %from_snap, "schema change in a batch's window");
        }
        let mut steps = Vec::new();
        for (k, planned) in plan(&entries, &self.shapes, counts).into_iter().enumerate() {
            match planned {
                Planned::Session(i) => {
                    let n = counts.get(i).copied().unwrap_or(0);
                    tracing::debug!(node = %self.node, table = %self.shapes[i].table, rows = n,
                        from = %from_snap, "untouched table of a batch with schema changes");
                    let copy_out = self
                        .ready
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(i)
                        .and_then(|r| r.as_ref().map(|r| r.copy_out.clone()));
                    if let Some(copy_out) = copy_out.filter(|_| n > 0) {
                        let stream = self.client.copy_out(&copy_out).await.map_err(self.pg())?;
                        let data = self.collect(stream).await?;
                        steps.push(Step::Rows {
                            shape: self.shapes[i].clone(),
                            rows: n,
                            data,
                        });
                    }
                }
                Planned::Segment {
                    shape,
                    after,
                    before,
                } => {
                    if !self.outbox_as_seen(&shape).await? {
                        return Ok(None);
                    }
                    let name = format!("ferry_step_{group}_{k}");
                    let temp = batch::step_temp(&name);
                    let present: Vec<String> = self
                        .client
                        .query_one(batch::OUTBOX_COLUMNS, &[&shape.table.outbox()])
                        .await
                        .map_err(self.pg())?
                        .get(0);
                    self.client
                        .batch_execute(&batch::create_step_temp(&shape, &name))
                        .await
                        .map_err(self.pg())?;
                    let n = self
                        .client
                        .execute(
                            &batch::materialise_step(&shape, &temp, &present),
                            &[from_snap, &after, &before],
                        )
                        .await
                        .map_err(self.pg())?;
                    tracing::debug!(node = %self.node, table = %shape.table, after, before, rows = n,
                        from = %from_snap, "segment of a batch with schema changes");
                    if n > 0 {
                        let data = self.copy_out_temp(&temp).await?;
                        steps.push(Step::Rows {
                            shape,
                            rows: n,
                            data,
                        });
                    }
                }
                Planned::Ddl(change) => steps.push(Step::Ddl(change)),
            }
        }
        Ok(Some(steps))
    }

    /// Locks a segment's outbox (the cut locked the outboxes of the tables
    /// it knew before its snapshot; a segment's table may be one a schema
    /// change in the window created) and checks that it is the one the
    /// snapshot sees: false when a schema change holds it or rewrote it
    /// since.
    async fn outbox_as_seen(&self, shape: &ferry_sql::TableShape) -> Result<bool, BatchError> {
        let outbox = shape.table.outbox();
        let exists = self
            .client
            .query_opt(batch::OUTBOX_AS_SEEN, &[&outbox])
            .await
            .map_err(self.pg())?;
        if exists.is_none() {
            // No outbox at the snapshot (or now): nothing to lose.
            return Ok(true);
        }
        let single = [shape];
        match self.client.batch_execute(&batch::lock(&single)).await {
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                return Ok(false)
            }
            other => other.map_err(self.pg())?,
        }
        let row = self
            .client
            .query_opt(batch::OUTBOX_AS_SEEN, &[&outbox])
            .await
            .map_err(self.pg())?;
        Ok(row.is_none_or(|r| r.get::<_, bool>(0)))
    }

    /// The master's rows of each repair range, at the cut's snapshot (in
    /// its transaction).
    pub(super) async fn repair_parts(
        &self,
        ranges: &[RepairRange],
    ) -> Result<Vec<RepairPart>, BatchError> {
        let mut parts = Vec::new();
        for (k, range) in ranges.iter().enumerate() {
            let Some(table) = self.shapes.iter().position(|s| s.table == range.table) else {
                continue;
            };
            let shape = &self.shapes[table];
            let free: bool = self
                .client
                .query_one(ferry_sql::verify::TRY_SHARE_LOCK, &[&shape.table.quoted()])
                .await
                .map_err(self.pg())?
                .get(0);
            if !free {
                // A schema change holds the table: the repair waits for
                // the next cut, whole.
                return Ok(Vec::new());
            }
            let name = format!("ferry_repair_{k}");
            let temp = batch::step_temp(&name);
            self.client
                .batch_execute(&batch::create_step_temp(shape, &name))
                .await
                .map_err(self.pg())?;
            let rows = self
                .client
                .execute(
                    &ferry_sql::verify::repair_rows(shape, &temp),
                    &[&range.after, &range.through],
                )
                .await
                .map_err(self.pg())?;
            let data = self.copy_out_temp(&temp).await?;
            parts.push(RepairPart {
                table,
                after: range.after.clone(),
                through: range.through.clone(),
                rows,
                data,
            });
        }
        Ok(parts)
    }

    /// Copies one step or repair table out, in binary.
    async fn copy_out_temp(&self, temp: &str) -> Result<Payload, BatchError> {
        let stream = self
            .client
            .copy_out(&batch::copy_out_of(temp))
            .await
            .map_err(self.pg())?;
        self.collect(stream).await
    }
}
