//! Schema changes as the batcher sees them: the ones a batch carries are
//! logged and shown in `/status`; ones logged on the master end the
//! session when they changed the replicated tables, so the next session
//! works with the new shapes; replicas the master records but the
//! configuration lacks are named once.

use super::{Batcher, Replica};
use crate::cutter::Batch;
use crate::status::SchemaChange;
use crate::BatchError;
use ferry_sql::{ddl, schema, TableShape};
use tracing::{info, warn};

impl Batcher {
    /// Reports schema changes logged on the master since `seen`; when they
    /// changed the replicated tables or sequences, ends the session so that
    /// the next one works with the new shapes and re-checks every replica
    /// (the changes themselves travel in the batch stream; a replica whose
    /// tables differ with none on their way to it is paused with the
    /// differences).
    pub(super) async fn check_schema(
        &self,
        control: &tokio_postgres::Client,
        (shapes, sequences): (&[TableShape], &[String]),
        seen: &mut i64,
    ) -> Result<(), BatchError> {
        let node = &self.cfg.master.name;
        let rows = control
            .query(ddl::READ_LOG, &[&*seen])
            .await
            .map_err(BatchError::pg(node))?;
        if rows.is_empty() {
            return Ok(());
        }
        let changes: Vec<SchemaChange> = rows
            .iter()
            .map(|r| SchemaChange {
                at: r.get(1),
                tag: r.get(2),
                object: r.get(3),
                query: r.get(4),
                replicated: r.get(5),
                seq: None,
            })
            .collect();
        *seen = rows.last().map_or(*seen, |r| r.get(0));
        let now =
            crate::catalog::replicated_tables(control, node, &self.cfg.include, &self.cfg.exclude)
                .await?;
        let now_sequences = crate::catalog::replicated_sequences(
            control,
            node,
            &self.cfg.include,
            &self.cfg.exclude,
        )
        .await?;
        let changed = now.as_slice() != shapes || now_sequences.as_slice() != sequences;
        // Replicated changes are reported as their batches ship.
        for c in changes.iter().filter(|c| !c.replicated) {
            info!(node = %node, tag = %c.tag, object = %c.object,
                "schema change on the master outside the replicated tables; not replicated");
            self.report(c.clone());
        }
        // A replicated change restarts the session once its batch has
        // shipped; anything else that moved the shapes restarts it now.
        if changed && changes.iter().all(|c| !c.replicated) {
            let what = changes
                .iter()
                .map(|c| format!("{} {}", c.tag, c.object))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(BatchError::SchemaChanged(what));
        }
        Ok(())
    }

    /// Keeps a schema change in /status (the last 20), once.
    pub(super) fn report(&self, change: SchemaChange) {
        if let Ok(mut s) = self.status.write() {
            if s.schema_changes.iter().any(|c| c.is_same_change(&change)) {
                return;
            }
            s.schema_changes.push(change);
            let excess = s.schema_changes.len().saturating_sub(20);
            s.schema_changes.drain(..excess);
        }
    }

    /// Says, once per node and process, which replicas the master records
    /// that the configuration lacks: they get no batches from this Ferry
    /// (the usual cause is a node added with `ferry add-node` whose
    /// `[[nodes]]` entry was not written into the configuration file before
    /// a restart). Their positions do not hold back the outbox clean-up.
    pub(super) async fn warn_unconfigured(
        &self,
        control: &tokio_postgres::Client,
        replicas: &[Replica],
    ) -> Result<(), BatchError> {
        let master = &self.cfg.master.name;
        let names: Vec<&str> = replicas
            .iter()
            .map(|r| r.node.name.as_str())
            .chain(std::iter::once(master.as_str()))
            .collect();
        let rows = control
            .query(schema::UNCONFIGURED_REPLICAS, &[&names])
            .await
            .map_err(BatchError::pg(master))?;
        let mut warned = self.unconfigured.lock().unwrap_or_else(|p| p.into_inner());
        for row in rows {
            let name: String = row.get(0);
            let recorded: String = row.get(1);
            if warned.insert(name.clone()) {
                warn!(node = %name, last_recorded = %recorded,
                    "the master records replica {name}, which is not in the configuration: it gets no batches \
                     from this Ferry and no longer holds back the outbox clean-up (a node added with \
                     `ferry add-node` needs its [[nodes]] entry in the configuration file before a restart); \
                     once the clean-up has passed its position it is refused if it comes back, and joins \
                     again through `ferry add-node` once its replicated tables are dropped");
            }
        }
        Ok(())
    }

    /// Logs and reports the schema changes a cut batch carries; returns
    /// their tags.
    pub(super) fn report_batch_changes(&self, batch: &Batch) -> Vec<String> {
        let master = &self.cfg.master;
        let mut tags = Vec::new();
        for change in batch.schema_changes() {
            tags.push(change.tag.clone());
            let replayed = change.statement.is_some();
            if replayed {
                info!(node = %master.name, batch = batch.id, tag = %change.tag, object = %change.object,
                    "schema change on the master; it ships to the replicas in the batch stream");
            } else {
                warn!(node = %master.name, batch = batch.id, tag = %change.tag, query = %change.query,
                    "schema change not replayed on the replicas: Ferry cannot tell which statement made it \
                     (DDL inside a function or DO block); make the same change on every replica");
            }
            self.report(SchemaChange {
                at: change.at.clone(),
                tag: change.tag.clone(),
                object: if replayed {
                    change.object.clone()
                } else {
                    format!(
                        "{} (not replayed in batch {}: make this change on every replica)",
                        change.object, batch.id
                    )
                },
                query: change.query.clone(),
                replicated: replayed,
                seq: Some(change.seq),
            });
        }
        tags
    }
}
