//! One tick of the loop: replicas (re)connected, suspensions whose
//! instant has come started, one cut for every group of replicas standing
//! at the same position, each batch shipped, the sync point told.

use super::session::Session;
use super::{Batcher, Replica};
use crate::cutter::Cut;
use crate::suspend::Suspensions;
use crate::BatchError;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

impl Batcher {
    pub(super) async fn tick(
        &self,
        s: &mut Session,
        replicas: &mut [Replica],
        susp: &mut Suspensions,
    ) -> Result<(), BatchError> {
        let mut joined = false;
        for r in replicas.iter_mut() {
            let had = r.session.is_some();
            self.connect_replica(r, &s.shapes).await;
            joined |= !had && r.session.is_some();
        }
        if joined {
            s.cutter.resend_sequences();
        }
        // Suspensions whose instant has come: this tick's cut is their
        // consistent point.
        self.start_due(&s.control, replicas, susp).await?;
        let held: BTreeSet<String> = susp
            .iter()
            .filter(|(_, s)| s.holds())
            .map(|(n, _)| n.clone())
            .collect();
        // Every cut of this tick takes its snapshot after this point.
        let tick = self.cfg.sync.as_ref().map_or(0, |s| s.start_tick());
        let groups = groups(replicas, &held);
        let chunk = self.chunk_due(&s.control, &s.shapes).await?;
        let cut_started = Instant::now();
        let repairs = self.repair_ranges();
        let cut = s.cutter.cut(&groups, &chunk, &repairs).await?;
        if !groups.is_empty() {
            if matches!(cut, Cut::Idle) {
                self.metrics.idle_ticks.inc();
            } else {
                self.metrics
                    .cut_seconds
                    .observe(cut_started.elapsed().as_secs_f64());
            }
            if let Ok(mut st) = self.status.write() {
                st.master = self.cfg.master.name.clone();
                st.master_contact = Some(Instant::now());
            }
        }
        let batches = match cut {
            Cut::Batches(batches) => batches,
            Cut::Unchanged | Cut::Idle => {
                // Nothing committed since any position: every replica holds
                // everything this tick's snapshot shows.
                for r in replicas.iter_mut() {
                    if r.session.is_some() && !held.contains(&r.node.name) {
                        r.applied_tick = tick;
                    }
                }
                Vec::new()
            }
            Cut::Busy => Vec::new(),
        };
        if let Some(checks) = batches.first().map(|b| &b.checks).filter(|c| !c.is_empty()) {
            self.verifier().sent(checks, Instant::now());
            self.metrics.verify_chunks.inc();
        }
        let mut schema_changed = Vec::new();
        for batch in &batches {
            self.metrics.batches_cut.inc();
            self.metrics.spilled_bytes.inc_by(batch.spilled_bytes());
            s.last_batch = s.last_batch.max(batch.id);
            schema_changed.extend(self.report_batch_changes(batch));
            self.ship(batch, replicas, tick, &held).await;
            if !batch.steps.is_empty() {
                // Replicas that applied it now have new shapes: their
                // sessions reopen with prepared statements for them.
                for r in replicas.iter_mut() {
                    if r.position.as_ref().map(|p| p.0) == Some(batch.id) {
                        r.session = None;
                    }
                }
            }
        }
        self.finish_repair(&batches, replicas);
        self.finish_suspending(&s.control, replicas, susp, &batches)
            .await?;
        self.report_sync(replicas, &held);
        for r in replicas.iter_mut() {
            let applied = r.position.as_ref().map(|p| p.0).unwrap_or(0);
            if applied < s.last_batch && r.behind_since.is_none() {
                r.behind_since = Some(Instant::now());
            }
        }
        if !schema_changed.is_empty() {
            self.publish(replicas, s.last_batch, susp);
            return Err(BatchError::SchemaChanged(schema_changed.join("; ")));
        }
        Ok(())
    }

    /// Tells the sync point which replicas serve and which tick each has
    /// applied through.
    fn report_sync(&self, replicas: &[Replica], held: &BTreeSet<String>) {
        let Some(sync) = &self.cfg.sync else {
            return;
        };
        let serving: Vec<&Replica> = replicas
            .iter()
            .filter(|r| r.session.is_some() && !held.contains(&r.node.name))
            .collect();
        let applied: Vec<(&str, u64)> = serving
            .iter()
            .map(|r| (r.node.name.as_str(), r.applied_tick))
            .collect();
        sync.report(&applied);
        let names: Vec<&str> = serving.iter().map(|r| r.node.name.as_str()).collect();
        sync.report_serving(&names);
    }
}

/// Replicas standing at the same ledger position form a group (its batch
/// id and snapshot); one cut brings every group to the same new position.
/// Held replicas (suspended) are left out.
fn groups(replicas: &[Replica], held: &BTreeSet<String>) -> Vec<(i64, String)> {
    let mut groups: BTreeMap<i64, String> = BTreeMap::new();
    for r in replicas.iter().filter(|r| !held.contains(&r.node.name)) {
        if let (Some(_), Some((id, snap))) = (&r.session, &r.position) {
            groups.entry(*id).or_insert_with(|| snap.clone());
        }
    }
    groups.into_iter().collect()
}
