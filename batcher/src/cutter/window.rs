//! What a cut reads of its window: which tables were written (from
//! `ferry.touched`), their netted rows, the schema-change flag and the
//! sequences — and, at a quiet tick, whether a cut is needed at all.
//!
//! A cut expects a set of tables (those the probe, or the previous cut,
//! found written), locks their outboxes before its snapshot and fills
//! their batch tables in its first statement, which also says which
//! tables the window really holds. Tables written but not expected (a
//! transaction that committed between the probe and the cut) are filled
//! by a second statement after their outboxes are locked — after the
//! snapshot, so that statement also checks that no schema change rewrote
//! one in between ([`batch::materialise_more`]).

use super::{Cutter, Materialised};
use crate::BatchError;
use ferry_sql::batch::{self, Ops};
use ferry_sql::TableShape;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::Statement;

/// What filling the batch tables for a window came to.
pub(super) enum Filled {
    Done(Materialised),
    /// Tables written in the window whose batch tables the session lacks.
    Unready(Vec<usize>),
    /// A schema change holds, or rewrote after the snapshot, an outbox the
    /// window needs: nothing may be concluded from this cut.
    Rewritten,
}

impl Cutter {
    /// The tick's question: has anything changed since `from`? None when
    /// no table was written, no schema changed and no sequence moved;
    /// otherwise the tables written.
    /// Every sequence is read when that is due (see [`super::positions`]).
    pub(super) async fn probe(&self, from: &String) -> Result<Option<Vec<usize>>, BatchError> {
        let now = Instant::now();
        let (read, names) = {
            let p = self.positions();
            let read = p.to_read(&[], &[], now);
            let names = p.names(&read);
            (read, names)
        };
        let row = self
            .client
            .query_one(&self.probe, &[from, &names])
            .await
            .map_err(self.pg())?;
        let stems: Vec<String> = row.try_get(0).map_err(self.pg())?;
        let ddl: bool = row.try_get(1).map_err(self.pg())?;
        let positions: Vec<Option<i64>> = row.try_get(2).map_err(self.pg())?;
        let written = tables(&self.by_stem, &stems);
        let moved = self.positions().moved(&read, &positions);
        if written.is_empty() && !ddl && !moved {
            // Every sequence read stands where it shipped.
            self.positions().read(&read, &positions, now);
            return Ok(None);
        }
        Ok(Some(written))
    }

    /// Reads, in the cut's transaction (after its snapshot), the positions
    /// of the sequences tied to tables found written but not expected.
    pub(super) async fn read_tied_sequences(&self, m: &mut Materialised) -> Result<(), BatchError> {
        let (more, names) = {
            let p = self.positions();
            let more = p.to_read(&m.written, &m.read, Instant::now());
            let names = p.names(&more);
            (more, names)
        };
        if more.is_empty() {
            return Ok(());
        }
        let row = self
            .client
            .query_one(&batch::read_sequences(), &[&names])
            .await
            .map_err(self.pg())?;
        let positions: Vec<Option<i64>> = row.try_get(0).map_err(self.pg())?;
        m.read.extend(more);
        m.sequences.extend(positions);
        Ok(())
    }

    /// Fills the batch tables of `expect` from the window since `from`,
    /// with what else the cut reads (see [`batch::materialise_set`]); the
    /// schema changes in the window are read only when there are some.
    pub(super) async fn materialise(
        &self,
        expect: &[usize],
        from: &String,
        read: &[usize],
    ) -> Result<Materialised, BatchError> {
        let statement = self.materialise_statement(expect).await?;
        let names = self.positions().names(read);
        let row = self
            .client
            .query_one(&statement, &[from, &names])
            .await
            .map_err(self.pg())?;
        let mut ops = vec![Ops::default(); self.shapes.len()];
        let all: Vec<i64> = row.try_get(batch::COUNTS_COLUMN).map_err(self.pg())?;
        for (k, &table) in expect.iter().enumerate() {
            if let Some(slot) = ops.get_mut(table) {
                *slot = counts(&all, k);
            }
        }
        let stems: Vec<String> = row.try_get(1).map_err(self.pg())?;
        let changes: bool = row.try_get(2).map_err(self.pg())?;
        let ddl = if changes {
            self.client
                .query(&self.ddl_window, &[from])
                .await
                .map_err(self.pg())?
        } else {
            Vec::new()
        };
        Ok(Materialised {
            snap: row.try_get(0).map_err(self.pg())?,
            ops,
            written: tables(&self.by_stem, &stems),
            ddl,
            read: read.to_vec(),
            sequences: row.try_get(3).map_err(self.pg())?,
        })
    }

    /// Completes a materialisation with the tables written in the window
    /// that were not expected; `filled` (sorted) gains them.
    pub(super) async fn fill_unexpected(
        &self,
        mut m: Materialised,
        filled: &mut Vec<usize>,
        from: &String,
    ) -> Result<Filled, BatchError> {
        let more: Vec<usize> = m
            .written
            .iter()
            .copied()
            .filter(|t| filled.binary_search(t).is_err())
            .collect();
        if more.is_empty() {
            return Ok(Filled::Done(m));
        }
        if !self.all_ready(&more) {
            return Ok(Filled::Unready(more));
        }
        let shapes: Vec<&TableShape> = more.iter().map(|&i| &self.shapes[i]).collect();
        let (lock, fill) = (batch::lock(&shapes), batch::materialise_more(&shapes));
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [from];
        let (locked, row) = tokio::join!(
            self.client.batch_execute(&lock),
            self.client.query_one(&fill, &params),
        );
        match locked {
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                return Ok(Filled::Rewritten)
            }
            other => other.map_err(self.pg())?,
        }
        let row = row.map_err(self.pg())?;
        let as_seen: bool = row.try_get(0).map_err(self.pg())?;
        if !as_seen {
            tracing::info!(node = %self.node, "an outbox was rewritten by a schema change during the cut; cutting at the next tick");
            return Ok(Filled::Rewritten);
        }
        let all: Vec<i64> = row.try_get(batch::MORE_COUNTS_COLUMN).map_err(self.pg())?;
        for (k, &table) in more.iter().enumerate() {
            if let Some(slot) = m.ops.get_mut(table) {
                *slot = counts(&all, k);
            }
        }
        filled.extend(more);
        filled.sort_unstable();
        Ok(Filled::Done(m))
    }

    /// Empties the batch tables `filled` and fills them again from the
    /// window since `from` (the next group of replicas), with any table
    /// that window adds.
    pub(super) async fn refill(
        &self,
        filled: &mut Vec<usize>,
        from: &String,
    ) -> Result<Filled, BatchError> {
        let shapes: Vec<&TableShape> = filled.iter().map(|&i| &self.shapes[i]).collect();
        let empty = batch::empty_all(&shapes);
        let (emptied, refilled) = tokio::join!(
            self.client.batch_execute(&empty),
            self.materialise(filled, from, &[]),
        );
        emptied.map_err(self.pg())?;
        {
            let mut wear = self.emptying.lock().unwrap_or_else(|p| p.into_inner());
            for &i in filled.iter() {
                if let Some(e) = wear.get_mut(i) {
                    e.truncated();
                }
            }
        }
        self.fill_unexpected(refilled?, filled, from).await
    }

    /// Reads which tables were written since the last look (cuts do not
    /// run while every replica is away or suspended, yet the outboxes
    /// fill), so that [`Cutter::outboxes_in_use`] names them all.
    pub async fn refresh_outboxes(&self) -> Result<(), BatchError> {
        let seen = self
            .outboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .seen
            .clone();
        let row = self
            .client
            .query_one(&batch::touched_since(), &[&seen])
            .await
            .map_err(self.pg())?;
        let snap: String = row.try_get(0).map_err(self.pg())?;
        let stems: Vec<String> = row.try_get(1).map_err(self.pg())?;
        let mut written = self.outboxes.lock().unwrap_or_else(|p| p.into_inner());
        written.found(&tables(&self.by_stem, &stems), &snap);
        written.seen = snap;
        Ok(())
    }

    /// The materialising statement for a set of tables, prepared once per
    /// set (up to [`super::KEPT_STATEMENTS`] sets).
    async fn materialise_statement(&self, tables: &[usize]) -> Result<Statement, BatchError> {
        let mut kept = self.materialise.lock().await;
        if let Some(st) = kept.get(tables) {
            return Ok(st.clone());
        }
        let shapes: Vec<&TableShape> = tables.iter().map(|&i| &self.shapes[i]).collect();
        let st = self
            .client
            .prepare(&batch::materialise_set(&shapes))
            .await
            .map_err(self.pg())?;
        if kept.len() < super::KEPT_STATEMENTS {
            kept.insert(tables.to_vec(), st.clone());
        }
        Ok(st)
    }
}

/// The `k`-th table's three counts from a materialising statement's
/// counts array.
fn counts(all: &[i64], k: usize) -> Ops {
    let at = batch::counts_at(k);
    let count = |i: usize| all.get(at + i).map_or(0, |&n| n.max(0) as u64);
    Ops {
        upserts: count(0),
        deletes: count(1),
        truncates: count(2),
    }
}

/// The tables (indices, sorted) that `stems` name; a stem the session
/// does not replicate (a table created in the window: its schema change
/// carries it) is left out.
pub(super) fn tables(by_stem: &HashMap<String, usize>, stems: &[String]) -> Vec<usize> {
    let mut out: Vec<usize> = stems
        .iter()
        .filter_map(|s| by_stem.get(s).copied())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Tables whose outboxes may hold rows, each with the `xmax` of the latest
/// snapshot that found it written: every row captured for it so far is
/// below that, so once the clean-up horizon reaches it the outbox is empty
/// until a later cut finds the table written again.
#[derive(Debug, Default)]
pub(super) struct Written {
    tables: BTreeMap<usize, u64>,
    /// The snapshot through which `ferry.touched` was read.
    seen: String,
}

impl Written {
    /// What `ferry.touched` names at the batcher's start, read in `snap`.
    pub fn at_start(tables: &[usize], snap: String) -> Self {
        let mut w = Self::default();
        w.found(tables, &snap);
        w.seen = snap;
        w
    }

    /// `tables` were found written in a snapshot `snap`.
    pub fn found(&mut self, tables: &[usize], snap: &str) {
        let xmax = snapshot_xmax(snap).unwrap_or(u64::MAX);
        for &t in tables {
            let at = self.tables.entry(t).or_insert(xmax);
            *at = (*at).max(xmax);
        }
    }

    /// The clean-up removed every row below `horizon` (an xid8 as text).
    pub fn cleaned(&mut self, horizon: &str) {
        if let Ok(h) = horizon.parse::<u64>() {
            self.tables.retain(|_, xmax| *xmax > h);
        }
    }

    pub fn tables(&self) -> Vec<usize> {
        self.tables.keys().copied().collect()
    }
}

/// The `xmax` of a snapshot's text form (`xmin:xmax:xip,…`).
fn snapshot_xmax(snap: &str) -> Option<u64> {
    snap.split(':').nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outbox_counts_as_in_use_until_the_clean_up_passes_its_last_writer() {
        let mut w = Written::default();
        w.found(&[1, 4], "100:105:101,103");
        w.found(&[4], "110:120:");
        assert_eq!(w.tables(), vec![1, 4]);
        w.cleaned("104");
        assert_eq!(w.tables(), vec![1, 4]);
        w.cleaned("105");
        assert_eq!(w.tables(), vec![4]);
        w.cleaned("120");
        assert!(w.tables().is_empty());
        // A snapshot that cannot be read keeps the table for good rather
        // than lose track of it.
        w.found(&[2], "garbage");
        w.cleaned("999999");
        assert_eq!(w.tables(), vec![2]);
    }

    #[test]
    fn stems_of_tables_outside_the_session_are_left_out() {
        let by_stem: HashMap<String, usize> = [("a".to_string(), 0), ("b".to_string(), 1)].into();
        let stems = ["b", "zzz", "a", "b"].map(String::from);
        assert_eq!(tables(&by_stem, &stems), vec![0, 1]);
    }
}
