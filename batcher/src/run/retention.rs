//! The bounds on what the master keeps for a replica that stays away
//! (`[retention] max_bytes`, `max_age_s`). Past one, the master stops
//! keeping changes for that replica: the outbox clean-up no longer waits
//! for it, and it is refused batches until `ferry resync` copies the
//! master's tables to it (see `schema::RELEASE_REPLICA`). The master's
//! disk never depends on an absent replica — the bound PostgreSQL's
//! `max_slot_wal_keep_size` sets for a replication slot.

use super::{Batcher, Replica};
use crate::suspend::Suspensions;
use crate::BatchError;
use ferry_sql::schema;
use std::time::{Duration, Instant};
use tokio_postgres::Client;
use tracing::{error, warn};

impl Batcher {
    /// Per housekeeping pass: reads which replicas the master no longer
    /// keeps changes for (marks survive restarts), how long each
    /// unreachable one has been away, and releases one past a bound.
    /// `fresh`: what is kept was counted again since the previous pass
    /// (the projection to the bound follows the counts).
    pub(super) async fn bound_retention(
        &self,
        control: &Client,
        replicas: &mut [Replica],
        susp: &Suspensions,
        fresh: bool,
    ) -> Result<(), BatchError> {
        let master = &self.cfg.master.name;
        // Only a replica without a session can be released: with every
        // replica connected, a pass costs nothing here.
        let released: Vec<String> = if replicas.iter().any(|r| r.session.is_none()) {
            control
                .query(schema::RELEASED_REPLICAS, &[])
                .await
                .map_err(BatchError::pg(master))?
                .iter()
                .filter_map(|r| r.try_get(0).ok())
                .collect()
        } else {
            Vec::new()
        };
        for r in replicas.iter_mut() {
            r.released = r.session.is_none() && released.contains(&r.node.name);
            r.away_for = None;
            r.recorded = None;
            let away = r.session.is_none() && r.last_error.is_some();
            let suspended = susp.get(&r.node.name).is_some_and(|s| s.holds());
            if !away || suspended || r.released {
                r.near_bound = false;
                r.kept_before = None;
                r.released_in = None;
                continue;
            }
            self.read_away(control, r).await?;
            if fresh {
                self.project(r);
            }
            if let Some(why) = self.past_bound(r) {
                let marked = control
                    .execute(schema::RELEASE_REPLICA, &[&r.node.name])
                    .await
                    .map_err(BatchError::pg(master))?;
                if marked > 0 {
                    error!(node = %r.node.name, kept_bytes = r.kept_bytes, kept_rows = r.lag_rows,
                        "the master stopped keeping changes for replica {}: {why}; it gets no more \
                         batches and comes back only by `ferry resync {}`", r.node.name, r.node.name);
                    r.released = true;
                }
            }
        }
        for r in replicas.iter_mut().filter(|r| r.released) {
            // Nothing is kept for it any more.
            r.kept_bytes = 0;
        }
        Ok(())
    }

    /// How long an unreachable replica has been away, from the position
    /// the master recorded (what is kept for it is counted from that
    /// position when this batcher never learnt one: unreachable since
    /// Ferry started).
    async fn read_away(&self, control: &Client, r: &mut Replica) -> Result<(), BatchError> {
        let master = &self.cfg.master.name;
        let Some(row) = control
            .query_opt(schema::RECORDED_POSITION, &[&r.node.name])
            .await
            .map_err(BatchError::pg(master))?
        else {
            return Ok(());
        };
        let recorded: String = row.try_get(0).map_err(BatchError::pg(master))?;
        let seconds: f64 = row.try_get(1).map_err(BatchError::pg(master))?;
        r.away_for = Some(Duration::from_secs_f64(seconds.max(0.0)));
        r.recorded = Some(recorded);
        Ok(())
    }

    /// At the rate what is kept for `r` grew since the previous pass (and
    /// the time it has been away), how long until a bound releases it.
    fn project(&self, r: &mut Replica) {
        let now = Instant::now();
        let by_bytes = self.cfg.retention_max_bytes.and_then(|max| {
            let (before, at) = r.kept_before?;
            let grown = r.kept_bytes - before;
            let secs = now.duration_since(at).as_secs_f64();
            let left = i64::try_from(max).ok()? - r.kept_bytes;
            (grown > 0 && secs > 0.0 && left > 0)
                .then(|| Duration::from_secs_f64(left as f64 / (grown as f64 / secs)))
        });
        let by_age = self
            .cfg
            .retention_max_age
            .zip(r.away_for)
            .filter(|_| r.lag_rows > 0)
            .map(|(max, away)| max.saturating_sub(away));
        r.released_in = match (by_bytes, by_age) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        r.kept_before = Some((r.kept_bytes, now));
    }

    /// Why the master should stop keeping changes for unreachable
    /// replica `r`, if a bound is passed; warns once past 80 % of
    /// `max_bytes`.
    fn past_bound(&self, r: &mut Replica) -> Option<String> {
        let kept = u64::try_from(r.kept_bytes).unwrap_or(0);
        if let Some(max) = self.cfg.retention_max_bytes {
            if kept > max {
                return Some(format!(
                    "{kept} bytes kept while it is unreachable passed [retention] max_bytes ({max})"
                ));
            }
            let near = kept > max / 10 * 8;
            if near && !r.near_bound {
                warn!(node = %r.node.name, kept_bytes = kept, max_bytes = max,
                    "the changes kept for unreachable replica {} passed 80% of [retention] max_bytes; \
                     past it the master stops keeping them and the replica needs `ferry resync`",
                    r.node.name);
            }
            r.near_bound = near;
        }
        let max_age = self.cfg.retention_max_age?;
        let away = r.away_for?;
        (r.lag_rows > 0 && away > max_age).then(|| {
            format!(
                "it has been unreachable for {}s with changes kept for it, past [retention] max_age_s ({})",
                away.as_secs(),
                max_age.as_secs()
            )
        })
    }
}
