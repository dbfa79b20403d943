//! Housekeeping, every `housekeeping` interval rather than every tick:
//! replicas' positions recorded on the master, schema changes logged there
//! checked, capture checked whole (see [`super::intact`]), the outbox
//! cleaned up to what every replica applied, lag in rows counted, what is
//! kept for a replica away bounded ([`super::retention`]) and compacted
//! ([`super::compaction`]), and the replica (or fenced node) the outbox is
//! kept for reported.

use super::session::Session;
use super::tally::{Ask, Figure};
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
        let per_outbox = outbox::backlog(master, control, &in_use).await?;
        let backlog = per_outbox.iter().sum();
        self.metrics.outbox_rows.set(backlog);
        // What is kept for each replica and pinned node: the figures of the
        // latest count (see [`super::tally`]); with no outbox in use,
        // nothing is kept, and nothing needs counting.
        let pinned = control
            .query(schema::PINNED_FOR_RESYNC, &[&s.names])
            .await
            .map_err(BatchError::pg(master))?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<Vec<(String, String)>, tokio_postgres::Error>>()
            .map_err(BatchError::pg(master))?;
        let fresh = if in_use.is_empty() {
            s.tally.cancel();
            Some(Vec::new())
        } else {
            s.tally.take(master).await
        };
        if let Some(figures) = &fresh {
            apply(figures, replicas, susp, &mut s.pinned, &pinned);
        }
        self.bound_retention(control, replicas, susp, fresh.is_some())
            .await?;
        if fresh.is_some() {
            self.compact_if_due(
                &mut s.compaction,
                (replicas, susp),
                &in_use,
                &s.pinned,
                s.last_batch,
            );
        }
        if !in_use.is_empty() && !s.tally.is_running() {
            let asks = asks(replicas, susp, &pinned);
            let shapes = in_use.iter().map(|s| (*s).clone()).collect();
            s.tally.start(master, &self.cfg.master.target, shapes, asks);
        }
        // An unreachable replica, else a node pinned for a resync (a failed
        // master, fenced out: its pin holds the clean-up).
        let mut kept_for = kept_for(replicas, susp);
        let fenced = kept_for.is_none();
        if fenced {
            kept_for = pinned.first().map(|(name, _)| {
                let rows = s
                    .pinned
                    .iter()
                    .find(|p| &p.name == name)
                    .map(|p| p.kept.rows);
                (name.clone(), rows)
            });
        }
        self.report_kept_for(kept_for.as_ref(), backlog, fenced);
        self.index_outboxes(&mut s.indexing, &in_use, &per_outbox, kept_for.is_some())
            .await;
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
/// back (a failed master fenced out keeps its pin until it is resynced,
/// for as long as it stays away), and what is kept for it: compaction nets
/// it like a replica's.
#[derive(Clone, Debug)]
pub(super) struct Pinned {
    pub name: String,
    pub kept: outbox::Kept,
    pub keys: i64,
}

/// Takes up a count's figures (none at all: nothing is kept for anyone).
/// A replica or node the count did not ask about keeps its figures.
fn apply(
    figures: &[Figure],
    replicas: &mut [Replica],
    susp: &mut Suspensions,
    pinned_now: &mut Vec<Pinned>,
    pinned: &[(String, String)],
) {
    // Nothing kept: no rows, no bytes, and no keys for those whose keys
    // are counted (away, suspended, pinned).
    let find = |name: &str, keyed: bool| {
        if figures.is_empty() {
            Some(Figure {
                name: name.to_string(),
                kept: outbox::Kept::default(),
                keys: keyed.then_some(0),
            })
        } else {
            figures.iter().find(|f| f.name == name).cloned()
        }
    };
    for r in replicas.iter_mut() {
        let held = susp.get_mut(&r.node.name).filter(|h| h.holds());
        let Some(f) = find(&r.node.name, r.session.is_none() || held.is_some()) else {
            continue;
        };
        r.lag_rows = f.kept.rows;
        r.kept_bytes = f.kept.bytes;
        r.kept_keys = f.keys;
        if let Some(h) = held {
            h.pending_keys = f.keys.unwrap_or(0);
        }
    }
    *pinned_now = pinned
        .iter()
        .filter_map(|(name, _)| find(name, true))
        .map(|f| Pinned {
            name: f.name,
            kept: f.kept,
            keys: f.keys.unwrap_or(0),
        })
        .collect();
}

/// What the next count asks: every replica with a known position (its
/// distinct keys too when it is away or suspended; one the master has
/// released is not counted: nothing is kept for it), and every pinned node.
fn asks(replicas: &[Replica], susp: &Suspensions, pinned: &[(String, String)]) -> Vec<Ask> {
    let mut asks: Vec<Ask> = replicas
        .iter()
        .filter(|r| !r.released)
        .filter_map(|r| {
            let snap = r
                .position
                .as_ref()
                .map(|p| p.1.clone())
                .or_else(|| r.recorded.clone())?;
            let held = susp.get(&r.node.name).is_some_and(|h| h.holds());
            Some(Ask {
                name: r.node.name.clone(),
                snap,
                keys: r.session.is_none() || held,
            })
        })
        .collect();
    asks.extend(pinned.iter().map(|(name, snap)| Ask {
        name: name.clone(),
        snap: snap.clone(),
        keys: true,
    }));
    asks
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
