//! A table's batch table and statements on the master, made the first time
//! a cut finds the table written: a session over 2,000 tables makes the
//! few its workload writes, not 2,000 temporary tables and 4,000 prepared
//! statements at start.
//!
//! Made outside the cut's transaction (a rollback would take the table
//! along while the statements stay prepared).

use super::Cutter;
use crate::BatchError;
use ferry_sql::batch;
use futures_util::future::try_join_all;
use tokio_postgres::Statement;

/// One table's prepared statements on its batch table.
#[derive(Clone)]
pub(super) struct TableStatements {
    /// Streams the batch table out in binary.
    pub copy_out: Statement,
    /// Empties it and gives back its space (see [`batch::Emptying`]).
    pub truncate: Statement,
}

impl Cutter {
    /// Makes the batch tables and statements of `tables` that the session
    /// lacks.
    pub(super) async fn make_ready(&self, tables: &[usize]) -> Result<(), BatchError> {
        let missing: Vec<usize> = {
            let ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
            tables
                .iter()
                .copied()
                .filter(|&i| ready.get(i).is_some_and(Option::is_none))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let create: Vec<String> = missing
            .iter()
            .map(|&i| batch::create_temp(&self.shapes[i]))
            .collect();
        self.client
            .batch_execute(&create.join(";"))
            .await
            .map_err(self.pg())?;
        let made = try_join_all(missing.iter().map(|&i| async move {
            let shape = &self.shapes[i];
            let (copy_sql, truncate_sql) = (batch::copy_out(shape), batch::truncate_temp(shape));
            let (copy_out, truncate) = tokio::join!(
                self.client.prepare(&copy_sql),
                self.client.prepare(&truncate_sql),
            );
            Ok::<_, tokio_postgres::Error>((
                i,
                TableStatements {
                    copy_out: copy_out?,
                    truncate: truncate?,
                },
            ))
        }))
        .await
        .map_err(self.pg())?;
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        for (i, statements) in made {
            if let Some(slot) = ready.get_mut(i) {
                *slot = Some(statements);
            }
        }
        tracing::debug!(node = %self.node, tables = missing.len(), "batch tables made");
        Ok(())
    }

    /// Whether every one of `tables` has its batch table.
    pub(super) fn all_ready(&self, tables: &[usize]) -> bool {
        let ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        tables
            .iter()
            .all(|&i| ready.get(i).is_some_and(Option::is_some))
    }
}
