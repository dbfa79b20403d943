//! What the loop tells the rest of Ferry after each tick: each replica's
//! position, lag and problems in `/status` and the metrics.

use super::{Batcher, Replica};
use crate::metrics::ReplicaLabel;
use crate::status::ReplicaStatus;
use crate::suspend::Suspensions;

impl Batcher {
    pub(super) fn publish(&self, replicas: &[Replica], last_batch: i64, susp: &Suspensions) {
        let verifier = self.verifier();
        let statuses: Vec<ReplicaStatus> = replicas
            .iter()
            .map(|r| {
                let applied = r.position.as_ref().map(|p| p.0).unwrap_or(0);
                let lag_seconds = r
                    .behind_since
                    .map(|t| t.elapsed())
                    .unwrap_or(r.last_lag)
                    .as_secs_f64();
                let label = ReplicaLabel::new(&r.node.name);
                let lag_batches = (last_batch - applied).max(0);
                self.metrics
                    .lag_batches
                    .get_or_create(&label)
                    .set(lag_batches);
                self.metrics.lag_rows.get_or_create(&label).set(r.lag_rows);
                let needs_resync = r.behind_cleanup || r.released;
                // A suspended replica's kept changes are counted with its
                // suspension, and are as old as its instant at most.
                let held = susp.get(&r.node.name).filter(|h| h.holds());
                let kept_keys = held.map(|h| h.pending_keys).or(r.kept_keys);
                let kept_age = match held {
                    Some(h) => Some(std::time::Instant::now().saturating_duration_since(h.due)),
                    None => r.away_for,
                };
                self.metrics
                    .kept_keys
                    .get_or_create(&label)
                    .set(kept_keys.unwrap_or(0));
                match r.released_in {
                    Some(d) => {
                        self.metrics
                            .released_in_seconds
                            .get_or_create(&label)
                            .set(d.as_secs_f64());
                    }
                    None => {
                        self.metrics.released_in_seconds.remove(&label);
                    }
                }
                self.metrics
                    .kept_bytes
                    .get_or_create(&label)
                    .set(r.kept_bytes);
                self.metrics
                    .kept_age_seconds
                    .get_or_create(&label)
                    .set(kept_age.map_or(0.0, |d| d.as_secs_f64()));
                self.metrics
                    .kept_near_bound
                    .get_or_create(&label)
                    .set(i64::from(r.near_bound));
                self.metrics
                    .needs_resync
                    .get_or_create(&label)
                    .set(i64::from(needs_resync));
                self.metrics
                    .lag_seconds
                    .get_or_create(&label)
                    .set(lag_seconds);
                ReplicaStatus {
                    name: r.node.name.clone(),
                    reachable: r.session.is_some(),
                    applied_batch: applied,
                    lag_batches,
                    lag_rows: r.lag_rows,
                    kept_bytes: r.kept_bytes,
                    kept_age_seconds: kept_age.map(|d| d.as_secs_f64()),
                    kept_keys,
                    released_in_seconds: r.released_in.map(|d| d.as_secs_f64()),
                    kept_near_bound: r.near_bound,
                    needs_resync,
                    lag_seconds,
                    last_error: r.last_error.clone(),
                    failed_batch: r.failed.as_ref().map(|f| f.0),
                    failed_statement: r.failed.as_ref().map(|f| f.1.clone()),
                    suspension: susp.get(&r.node.name).map(|s| s.status(r.lag_rows)),
                    quarantined: r.quarantined,
                    divergent: verifier.divergent(&r.node.name).to_vec(),
                    schema_warnings: r.warnings.clone(),
                }
            })
            .collect();
        for r in replicas {
            self.metrics
                .divergent_tables
                .get_or_create(&ReplicaLabel::new(&r.node.name))
                .set(verifier.divergent_tables(&r.node.name).len() as i64);
        }
        let verify = verifier.status();
        drop(verifier);
        if let Ok(mut s) = self.status.write() {
            s.verify = verify;
            s.last_batch = last_batch;
            s.replicas = statuses;
            s.master_reachable = true;
            s.error = None;
        }
    }
}
