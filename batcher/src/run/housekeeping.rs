//! Housekeeping, every `housekeeping` interval rather than every tick:
//! replicas' positions recorded on the master, schema changes logged there
//! checked, capture checked whole (see [`super::intact`]), the outbox
//! cleaned up to what every replica applied, lag in rows counted, what is
//! kept for a replica away bounded ([`super::retention`]) and compacted
//! ([`super::compaction`]), and the replica (or fenced node) the outbox is
//! kept for reported.

use super::session::Session;
use super::{Batcher, Replica};
use crate::housekeeping as outbox;
use crate::suspend::Suspensions;
use crate::BatchError;
use ferry_sql::schema;
use std::time::{Duration, Instant};
use tracing::{info, warn};

impl Batcher {
    pub(super) async fn housekeeping(
        &self,
        s: &mut Session,
        replicas: &mut [Replica],
        susp: &mut Suspensions,
    ) -> Result<(), BatchError> {
        let master = &self.cfg.master.name;
        // Before what is kept is counted: the counts after a compaction are
        // the floor the next one is measured from.
        self.collect_compaction(&mut s.compaction, replicas).await;
        let control = &s.control;
        // Positions on the master only bound clean-up (each replica's
        // ledger is the truth), so recording them once per pass is enough;
        // a stale one merely keeps rows a little longer. Only what a
        // connected replica's ledger says: the position of one that went
        // away may not have survived it (see `schema::RECORD_POSITION`).
        for r in replicas.iter().filter(|r| r.session.is_some()) {
            if let Some((id, snap)) = &r.position {
                control
                    .execute(schema::RECORD_POSITION, &[&r.node.name, id, snap])
                    .await
                    .map_err(BatchError::pg(master))?;
            }
        }
        self.check_schema(control, (&s.shapes, &s.sequences), &mut s.seen_ddl)
            .await?;
        self.keep_capture_intact(control).await?;
        // Only the outboxes that may hold rows: a pass costs what was
        // written, not how many tables there are.
        s.cutter.refresh_outboxes().await?;
        let in_use = s.cutter.outboxes_in_use();
        if let Some(horizon) = outbox::clean(master, control, &in_use, &s.names).await? {
            s.cutter.cleaned_up_to(&horizon);
        }
        let in_use = s.cutter.outboxes_in_use();
        // Every batch cut so far committed before the count began.
        let counted_at = s.last_batch;
        let backlog = outbox::backlog(master, control, &in_use).await?;
        self.metrics.outbox_rows.set(backlog);
        for r in replicas.iter_mut() {
            if let Some((_, snap)) = &r.position {
                let kept = outbox::pending(master, control, &in_use, snap).await?;
                r.lag_rows = kept.rows;
                r.kept_bytes = kept.bytes;
                if let Some(h) = susp.get_mut(&r.node.name).filter(|h| h.holds()) {
                    h.pending_keys = outbox::pending_keys(master, control, &in_use, snap).await?;
                }
            }
        }
        self.bound_retention(control, replicas, susp, &in_use)
            .await?;
        let pinned = self.pinned(control, &s.names, &in_use).await?;
        self.compact_if_due(&mut s.compaction, replicas, susp, &in_use, &pinned);
        // An unreachable replica, else a node pinned for a resync (a failed
        // master, fenced out: its pin holds the clean-up).
        let mut kept_for = kept_for(replicas, susp);
        let fenced = kept_for.is_none();
        if fenced {
            kept_for = pinned.first().map(|p| (p.name.clone(), Some(p.kept.rows)));
        }
        self.report_kept_for(kept_for.as_ref(), backlog, fenced);
        if let Ok(mut st) = self.status.write() {
            st.outbox_backlog = backlog;
            st.outbox_counted_at_batch = Some(counted_at);
            st.outbox_kept_for = kept_for.map(|(name, _)| name);
        }
        Ok(())
    }

    /// Logs when the outbox starts being kept for an unreachable replica
    /// (and again every ten minutes while it is), and when that ends.
    pub(super) fn report_kept_for(
        &self,
        kept_for: Option<&(String, Option<i64>)>,
        backlog: i64,
        fenced: bool,
    ) {
        let mut last = self.kept_for.lock().unwrap_or_else(|p| p.into_inner());
        match (kept_for, last.as_ref()) {
            (Some((name, rows)), previous) => {
                let again = previous
                    .is_none_or(|(n, at)| n != name || at.elapsed() >= Duration::from_secs(600));
                if again && fenced {
                    warn!(node = %name, outbox_rows = backlog,
                        "the outbox keeps every change since node {name} was pinned for a resync or an \
                         addition; it is cleaned up once that node has joined (a failed master joins with \
                         `ferry resync {name}`)");
                } else if again {
                    warn!(node = %name, pending_rows = ?rows, outbox_rows = backlog,
                        "the outbox keeps every change replica {name} has not applied while it is unreachable; \
                         it catches up when it returns; if it left for good, remove it from the configuration \
                         so that the clean-up goes on");
                }
                if again {
                    *last = Some((name.clone(), Instant::now()));
                }
            }
            (None, Some((name, _))) => {
                info!(node = %name, "the outbox is no longer kept for replica {name}");
                *last = None;
            }
            (None, None) => {}
        }
    }
}

/// A node outside the replicas whose resync pin holds the outbox clean-up
/// back, and what is kept for it (see [`Batcher::pinned`]).
pub(super) struct Pinned {
    pub name: String,
    pub kept: outbox::Kept,
    pub keys: i64,
}

impl Batcher {
    /// The nodes pinned for a resync (a failed master fenced out keeps its
    /// pin until it is resynced, for as long as it stays away) and what is
    /// kept for each: compaction nets it like a replica's.
    async fn pinned(
        &self,
        control: &tokio_postgres::Client,
        names: &[String],
        in_use: &[&ferry_sql::TableShape],
    ) -> Result<Vec<Pinned>, BatchError> {
        let master = &self.cfg.master.name;
        let rows = control
            .query(schema::PINNED_FOR_RESYNC, &[&names])
            .await
            .map_err(BatchError::pg(master))?;
        let mut pinned = Vec::with_capacity(rows.len());
        for row in rows {
            let name: String = row.try_get(0).map_err(BatchError::pg(master))?;
            let snap: String = row.try_get(1).map_err(BatchError::pg(master))?;
            pinned.push(Pinned {
                name,
                kept: outbox::pending(master, control, in_use, &snap).await?,
                keys: outbox::pending_keys(master, control, in_use, &snap).await?,
            });
        }
        Ok(pinned)
    }
}

/// The replica the outbox is kept for, with its pending rows (None when
/// unknown): among the replicas that could not be reached (a connection
/// attempt or an apply failed; not suspended), the one with the oldest
/// position that has changes pending — one whose position this batcher never
/// learnt (unreachable since Ferry started) counts as the oldest.
fn kept_for(replicas: &[Replica], susp: &Suspensions) -> Option<(String, Option<i64>)> {
    replicas
        .iter()
        .filter(|r| r.session.is_none() && r.last_error.is_some() && !r.released)
        .filter(|r| susp.get(&r.node.name).is_none_or(|s| !s.holds()))
        .filter_map(|r| match &r.position {
            None => Some((i64::MIN, r, None)),
            Some(p) if r.lag_rows > 0 => Some((p.0, r, Some(r.lag_rows))),
            Some(_) => None,
        })
        .min_by_key(|(id, _, _)| *id)
        .map(|(_, r, rows)| (r.node.name.clone(), rows))
}
