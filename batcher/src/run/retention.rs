//! The bound on what the master keeps for a replica that stays away
//! (`[retention] max_bytes`). Past it the master stops keeping changes for
//! that replica: the outbox clean-up no longer waits for it, and it is
//! refused batches until `ferry resync` copies the master's tables to it
//! (see `schema::RELEASE_REPLICA`). The master's disk never depends on an
//! absent replica — the bound PostgreSQL's `max_slot_wal_keep_size` sets
//! for a replication slot.

use super::{Batcher, Replica};
use crate::housekeeping as outbox;
use crate::suspend::Suspensions;
use crate::BatchError;
use ferry_sql::{schema, TableShape};
use tokio_postgres::Client;
use tracing::{error, warn};

impl Batcher {
    /// Marks, per housekeeping pass: which replicas the master no longer
    /// keeps changes for (marks survive restarts), and releases an
    /// unreachable one whose kept changes passed the bound. `in_use`: the
    /// outboxes that may hold rows.
    pub(super) async fn bound_retention(
        &self,
        control: &Client,
        replicas: &mut [Replica],
        susp: &Suspensions,
        in_use: &[&TableShape],
    ) -> Result<(), BatchError> {
        let master = &self.cfg.master.name;
        let released: Vec<String> = control
            .query(schema::RELEASED_REPLICAS, &[])
            .await
            .map_err(BatchError::pg(master))?
            .iter()
            .filter_map(|r| r.try_get(0).ok())
            .collect();
        for r in replicas.iter_mut() {
            r.released = r.session.is_none() && released.contains(&r.node.name);
        }
        let Some(max) = self.cfg.retention_max_bytes else {
            return Ok(());
        };
        for r in replicas.iter_mut() {
            let away = r.session.is_none() && r.last_error.is_some();
            let suspended = susp.get(&r.node.name).is_some_and(|s| s.holds());
            if !away || suspended || r.released {
                r.near_bound = false;
                continue;
            }
            if r.position.is_none() {
                // Unreachable since Ferry started: what the master recorded.
                if let Some(row) = control
                    .query_opt(schema::RECORDED_POSITION, &[&r.node.name])
                    .await
                    .map_err(BatchError::pg(master))?
                {
                    let snap: String = row.try_get(0).map_err(BatchError::pg(master))?;
                    let kept = outbox::pending(master, control, in_use, &snap).await?;
                    r.lag_rows = kept.rows;
                    r.kept_bytes = kept.bytes;
                }
            }
            let kept = u64::try_from(r.kept_bytes).unwrap_or(0);
            if kept > max {
                let marked = control
                    .execute(schema::RELEASE_REPLICA, &[&r.node.name])
                    .await
                    .map_err(BatchError::pg(master))?;
                if marked > 0 {
                    error!(node = %r.node.name, kept_bytes = kept, max_bytes = max,
                        "the master stopped keeping changes for replica {}: {kept} bytes kept while it is \
                         unreachable passed [retention] max_bytes ({max}); it gets no more batches and \
                         comes back only by `ferry resync {}`", r.node.name, r.node.name);
                    r.released = true;
                }
            } else if kept > max / 10 * 8 && !r.near_bound {
                warn!(node = %r.node.name, kept_bytes = kept, max_bytes = max,
                    "the changes kept for unreachable replica {} passed 80% of [retention] max_bytes; \
                     past it the master stops keeping them and the replica needs `ferry resync`",
                    r.node.name);
                r.near_bound = true;
            } else if kept <= max / 10 * 8 {
                r.near_bound = false;
            }
        }
        for r in replicas.iter_mut().filter(|r| r.released) {
            // Nothing is kept for it any more.
            r.kept_bytes = 0;
        }
        Ok(())
    }
}
