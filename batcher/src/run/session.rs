//! Opening a session on the master: Ferry's schema and capture (re)installed,
//! the cutter's connection, the replicated tables and sequences read, the
//! last batch id and schema change known, suspensions loaded.

use super::{Batcher, Replica};
use crate::cutter::Cutter;
use crate::install::{connect, install_master};
use crate::suspend::Suspensions;
use crate::BatchError;
use ferry_sql::{ddl, schema, TableShape};
use std::time::Instant;
use tracing::info;

/// One session's state on the master.
pub(super) struct Session {
    /// Catalog reads, positions, clean-up, suspensions.
    pub control: tokio_postgres::Client,
    pub shapes: Vec<TableShape>,
    pub sequences: Vec<String>,
    pub cutter: Cutter,
    /// The configured replicas' names.
    pub names: Vec<String>,
    /// The latest schema change logged on the master already reported.
    pub seen_ddl: i64,
    pub last_batch: i64,
    pub next_housekeeping: Instant,
    /// Compaction: a pass under way, what is kept for pinned nodes (see
    /// [`super::compaction`]).
    pub compaction: super::compaction::Compaction,
    /// Counts of what is kept for each replica, beside the loop.
    pub tally: super::tally::Tally,
    /// What is kept for each node pinned for a resync, as last counted.
    pub pinned: Vec<super::housekeeping::Pinned>,
    /// Outbox indexes built beside the loop.
    pub indexing: super::indexing::Indexing,
}

impl Batcher {
    pub(super) async fn open(
        &self,
        replicas: &[Replica],
        susp: &mut Suspensions,
    ) -> Result<Session, BatchError> {
        let master = &self.cfg.master;
        let control = connect(&master.name, &master.target, "ferry control").await?;
        let shapes =
            install_master(&master.name, &control, &self.cfg.include, &self.cfg.exclude).await?;
        let batch_client = connect(&master.name, &master.target, "ferry batcher").await?;
        let sequences = crate::catalog::replicated_sequences(
            &control,
            &master.name,
            &self.cfg.include,
            &self.cfg.exclude,
        )
        .await?;
        let ties =
            crate::catalog::sequence_ties(&control, &master.name, &shapes, &sequences).await?;
        let cutter = Cutter::new(
            &master.name,
            batch_client,
            &shapes,
            sequences.clone(),
            ties,
            &self.cfg.spill_dir,
        )
        .await?;
        let last_batch: i64 = control
            .query_one(schema::LAST_BATCH_ID, &[])
            .await
            .map_err(BatchError::pg(&master.name))?
            .get(0);
        self.warn_unconfigured(&control, replicas).await?;
        if let Ok(mut s) = self.status.write() {
            s.master = master.name.clone();
            s.master_reachable = true;
            s.tables = shapes.len();
            s.error = None;
            s.last_batch = last_batch;
        }
        info!(
            tables = shapes.len(),
            replicas = replicas.len(),
            "replicating"
        );
        self.verifier()
            .set_tables(shapes.iter().map(|s| s.table.clone()).collect());
        // Schema changes are reported from here on; earlier ones were
        // already taken into account by the install above.
        let seen_ddl: i64 = control
            .query_one(ddl::LAST, &[])
            .await
            .map_err(BatchError::pg(&master.name))?
            .get(0);
        self.load_suspensions(&control, susp).await?;
        Ok(Session {
            control,
            shapes,
            sequences,
            cutter,
            names: replicas.iter().map(|r| r.node.name.clone()).collect(),
            seen_ddl,
            last_batch,
            next_housekeeping: Instant::now(),
            compaction: Default::default(),
            tally: Default::default(),
            pinned: Vec::new(),
            indexing: Default::default(),
        })
    }
}
