//! Shipping: each replica's apply session, opened beside the loop (a
//! frozen server must not hold up the others), and a batch sent to every
//! replica standing at its start, concurrently (see [`crate::apply`]).

use super::{Batcher, Replica};
use crate::apply::{Applied, ApplySession};
use crate::cutter::Batch;
use crate::install::{connect, prepare_replica};
use crate::metrics::ReplicaLabel;
use crate::BatchError;
use ferry_sql::TableShape;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tracing::{info, info_span, warn, Instrument};

impl Batcher {
    /// Starts, or collects, a replica's connection attempt: checking and
    /// preparing the replica and opening its apply session run in a task of
    /// their own (with their own master connection), so a replica that
    /// hangs does not hold up the loop. A session the replica ended while
    /// idle (a shutdown) is noticed here, at every tick.
    pub(super) async fn connect_replica(&self, r: &mut Replica, shapes: &[TableShape]) {
        if r.session
            .as_mut()
            .is_some_and(ApplySession::ended_while_idle)
        {
            warn!(node = %r.node.name, "the replica ended its apply session; reconnecting");
            r.last_error = Some("the replica closed the connection".to_string());
            r.session = None;
            r.retry_at = Instant::now() + Duration::from_secs(1);
        }
        if r.session.is_some() {
            return;
        }
        let name = r.node.name.clone();
        match r.connecting.take() {
            Some(attempt) if attempt.is_finished() => {
                let result = attempt.await.unwrap_or_else(|e| {
                    Err(BatchError::Conn {
                        node: name.clone(),
                        source: ferry_wire::ConnError::Protocol(format!("connection task: {e}")),
                    })
                });
                match result {
                    Ok((session, position, quarantined)) => {
                        info!(node = %name, batch = position.0, "replica connected");
                        r.session = Some(session);
                        r.position = Some(position);
                        r.quarantined = quarantined;
                        r.last_error = None;
                        r.behind_cleanup = false;
                        r.released = false;
                    }
                    Err(e) => {
                        if r.last_error.as_deref() != Some(&e.to_string()) {
                            warn!(node = %name, error = %e, "replica unavailable; retrying");
                        }
                        r.behind_cleanup = matches!(
                            e,
                            BatchError::BehindCleanup { .. } | BatchError::Released { .. }
                        );
                        r.last_error = Some(e.to_string());
                        r.retry_at = Instant::now() + Duration::from_secs(1);
                    }
                }
            }
            Some(attempt) => r.connecting = Some(attempt),
            None if Instant::now() >= r.retry_at => {
                let master = self.cfg.master.clone();
                let target = r.node.target.clone();
                let shapes = shapes.to_vec();
                let (include, exclude) = (self.cfg.include.clone(), self.cfg.exclude.clone());
                r.connecting = Some(tokio::spawn(async move {
                    let m = connect(&master.name, &master.target, "ferry control").await?;
                    let control = connect(&name, &target, "ferry control").await?;
                    let (_, session_shapes) = prepare_replica(
                        (&master.name, &m),
                        &shapes,
                        (&name, &control),
                        &include,
                        &exclude,
                    )
                    .await?;
                    let mut session = ApplySession::open(&name, &target, &session_shapes).await?;
                    let position = session.ledger().await?;
                    let quarantined: i64 = control
                        .query_one(ferry_sql::resync::QUARANTINED, &[])
                        .await
                        .map_or(0, |r| r.get(0));
                    Ok((session, position, quarantined))
                }));
            }
            None => {}
        }
    }

    /// Ships one batch to every replica standing at its start, concurrently.
    pub(super) async fn ship(
        &self,
        batch: &Batch,
        replicas: &mut [Replica],
        tick: u64,
        held: &BTreeSet<String>,
    ) {
        let origin = &self.cfg.master.name;
        // A large batch takes longer: a second more per MB it carries (a
        // replica slower than that is taken for stuck).
        let timeout = self.cfg.apply_timeout + Duration::from_secs(batch.bytes() >> 20);
        // Connected, not suspended, and standing where the batch starts.
        let takes = |r: &Replica| {
            r.session.is_some()
                && !held.contains(&r.node.name)
                && r.position.as_ref().map(|p| p.0) == Some(batch.from)
        };
        let targets: Vec<&mut Replica> = replicas.iter_mut().filter(|r| takes(r)).collect();
        let mut pending: FuturesUnordered<_> = targets
            .into_iter()
            .map(|r| async move {
                let span = info_span!("apply", node = %r.node.name, batch = batch.id);
                let started = Instant::now();
                let result = match r.session.as_mut() {
                    Some(session) => {
                        match tokio::time::timeout(
                            timeout,
                            session.apply(origin, self.cfg.epoch, batch),
                        )
                        .instrument(span)
                        .await
                        {
                            Ok(r) => r,
                            Err(_) => Err(BatchError::Timeout {
                                node: r.node.name.clone(),
                                secs: timeout.as_secs(),
                            }),
                        }
                    }
                    None => return (r, Ok(Applied::Already), started),
                };
                (r, result, started)
            })
            .collect();
        // Once one replica has applied the batch, the others get a grace of
        // four times as long (at least a second); one that takes longer is
        // disconnected and catches up on its own later, instead of holding
        // up every replica until apply_timeout.
        let mut results = Vec::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let next = match deadline {
                None => pending.next().await,
                Some(at) => match tokio::time::timeout_at(at, pending.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
            };
            let Some(done) = next else { break };
            if let (Some(sync), Ok(_)) = (&self.cfg.sync, &done.1) {
                sync.applied_one(&done.0.node.name, tick);
            }
            if deadline.is_none() {
                let grace = (done.2.elapsed() * 4).max(Duration::from_secs(1));
                deadline = Some(tokio::time::Instant::now() + grace);
            }
            results.push(done);
        }
        drop(pending);
        let finished: Vec<String> = results
            .iter()
            .map(|(r, _, _)| r.node.name.clone())
            .collect();
        for (r, result, started) in results {
            let label = ReplicaLabel::new(&r.node.name);
            match result {
                Ok(how) => {
                    self.metrics
                        .apply_seconds
                        .observe(started.elapsed().as_secs_f64());
                    if how == Applied::Now {
                        self.metrics.batches_applied.get_or_create(&label).inc();
                        self.metrics
                            .rows_shipped
                            .get_or_create(&label)
                            .inc_by(batch.rows());
                        self.metrics
                            .bytes_shipped
                            .get_or_create(&label)
                            .inc_by(batch.bytes());
                    }
                    r.position = Some((batch.id, batch.snap.clone()));
                    r.applied_tick = tick;
                    note_warnings(r, batch.id);
                    if !batch.checks.is_empty() {
                        self.collect_checks(r, &batch.checks).await;
                    }
                    r.failed = None;
                    r.behind_since = None;
                    r.last_lag = batch.cut_at.elapsed();
                    r.last_error = None;
                }
                Err(e) => {
                    warn!(node = %r.node.name, batch = batch.id, error = %e, "batch not applied; replica paused");
                    if let BatchError::Apply { statement, .. } = &e {
                        r.failed = Some((batch.id, statement.clone()));
                    }
                    self.metrics.apply_errors.get_or_create(&label).inc();
                    r.last_error = Some(e.to_string());
                    r.session = None;
                    r.retry_at = Instant::now()
                        + if matches!(e, BatchError::Apply { .. }) {
                            Duration::from_secs(5)
                        } else {
                            Duration::from_secs(1)
                        };
                }
            }
        }
        for r in replicas.iter_mut() {
            let straggler = takes(r) && !finished.contains(&r.node.name);
            if straggler {
                warn!(node = %r.node.name, batch = batch.id, "replica far slower than the others on this batch; disconnected, it catches up on its own");
                self.metrics
                    .apply_errors
                    .get_or_create(&ReplicaLabel::new(&r.node.name))
                    .inc();
                r.last_error = Some(format!(
                    "batch {} took far longer than on the other replicas; reconnecting",
                    batch.id
                ));
                r.session = None;
                r.retry_at = Instant::now() + Duration::from_secs(1);
            }
        }
    }
}

/// Schema changes the replica did not apply as the master did (a GRANT to
/// a role it lacks, a change made as Ferry's role): logged, and kept for
/// `/status` (the latest ten).
fn note_warnings(r: &mut Replica, batch: i64) {
    let Some(session) = r.session.as_mut() else {
        return;
    };
    for notice in session.take_notices() {
        warn!(node = %r.node.name, batch, warning = %notice,
            "a schema change did not apply on the replica as it did on the master");
        r.warnings.push(notice);
    }
    let extra = r.warnings.len().saturating_sub(10);
    r.warnings.drain(..extra);
}
