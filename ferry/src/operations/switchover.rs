//! A planned switchover (`ferry switchover [--to NODE]`, `POST
//! /switchover`): another node becomes master without a failed statement
//! or a lost commit.
//!
//! 1. **Hold.** The gate closes: every new statement that would start
//!    outside a transaction waits, new sessions wait before connecting.
//! 2. **Drain.** Transactions and statements under way finish on the old
//!    master (bounded by `switchover.drain_timeout_ms`).
//! 3. **Ship.** The batcher cuts at once; the chosen replica (and the
//!    others) apply everything the old master committed (bounded by
//!    `switchover.catch_up_timeout_ms`).
//! 4. **Promote.** The coordinator fences the old epoch, promotes the
//!    replica, makes the old master its replica, publishes the new roles.
//! 5. **Resume.** The gate opens; held statements run on the new master,
//!    where every session has moved with its settings.
//!
//! A step that cannot be completed cancels the whole switchover: the gate
//! opens on the old arrangement and the caller is told why.

use super::coordinator;
use super::refusal::Refusal;
use crate::frontend::hold::Gate;
use ferry_batcher::SharedStatus;
use ferry_cluster::coordinator::Control;
use ferry_cluster::SyncPoint;
use ferry_cluster::Topology;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{info, info_span, warn, Instrument};

/// One completed switchover, as `/status` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwitchoverReport {
    pub from: String,
    pub to: String,
    pub epoch: i64,
    /// From closing the gate to the last busy session going idle.
    pub drain_ms: u64,
    /// From then to the new master having applied the last batch.
    pub catch_up_ms: u64,
    /// Promotion by the coordinator.
    pub promote_ms: u64,
    /// How long new statements were held in all.
    pub held_ms: u64,
}

/// What a switchover needs of the running process.
pub struct Switchover {
    pub roles: watch::Receiver<Topology>,
    pub gate: Arc<Gate>,
    pub ticks: Arc<SyncPoint>,
    pub control: mpsc::Sender<Control>,
    pub replication: SharedStatus,
    pub drain_timeout: Duration,
    pub catch_up_timeout: Duration,
    /// One switchover at a time.
    pub running: tokio::sync::Mutex<()>,
    pub last: RwLock<Option<SwitchoverReport>>,
}

impl Switchover {
    /// Runs a switchover to `to` (or to the best replica).
    pub async fn run(&self, to: Option<String>) -> Result<SwitchoverReport, Refusal> {
        let Ok(_one) = self.running.try_lock() else {
            return Err(Refusal::conflict(
                "switchover_running",
                "a switchover is already under way",
            ));
        };
        let target = self.choose(to)?;
        let from = self.roles.borrow().master.name.clone();
        let span = info_span!("switchover", from = %from, to = %target);
        let result = self.switch(&from, &target).instrument(span).await;
        self.gate.open();
        match result {
            Ok(report) => {
                info!(from = %report.from, to = %report.to, epoch = report.epoch,
                    drain_ms = report.drain_ms, catch_up_ms = report.catch_up_ms,
                    promote_ms = report.promote_ms, held_ms = report.held_ms, "switchover complete");
                if let Ok(mut last) = self.last.write() {
                    *last = Some(report.clone());
                }
                Ok(report)
            }
            Err(r) => {
                warn!(to = %target, reason = %r, "switchover cancelled; nothing changed");
                Err(r)
            }
        }
    }

    /// The node to promote: the one named, which must be a current replica,
    /// or the current replica with the best priority.
    fn choose(&self, to: Option<String>) -> Result<String, Refusal> {
        let topo = self.roles.borrow().clone();
        if let Some(why) = &topo.waiting {
            return Err(Refusal::conflict(
                "no_master",
                format!("no master now: {why}"),
            ));
        }
        let status = self
            .replication
            .read()
            .map(|s| s.clone())
            .unwrap_or_default();
        if let Some(r) = status.replicas.iter().find(|r| r.suspension.is_some()) {
            return Err(Refusal::conflict(
                "replica_suspended",
                format!(
                    "replica {} has a suspension (scheduled, held or resyncing): resume or cancel it first",
                    r.name
                ),
            ));
        }
        let current = |name: &str| self.ticks.slot(name).is_some_and(|i| self.ticks.serves(i));
        match to {
            Some(name) => {
                if name == topo.master.name {
                    return Err(Refusal::conflict(
                        "already_master",
                        format!("node {name} is the master"),
                    ));
                }
                if topo.fenced.iter().any(|(n, _)| n.name == name) {
                    return Err(Refusal::conflict(
                        "fenced",
                        format!("node {name} is fenced out of the cluster: resync it first"),
                    ));
                }
                if !topo.replicas.iter().any(|n| n.name == name) {
                    return Err(Refusal::not_found(
                        "unknown_node",
                        format!("no node named {name:?}"),
                    ));
                }
                if !current(&name) {
                    return Err(Refusal::conflict(
                        "replica_unavailable",
                        format!("replica {name} is not connected and shipping"),
                    ));
                }
                Ok(name)
            }
            None => topo
                .replicas
                .iter()
                .enumerate()
                .filter(|(_, n)| current(&n.name))
                .min_by_key(|(i, n)| (n.priority, *i))
                .map(|(_, n)| n.name.clone())
                .ok_or_else(|| {
                    Refusal::conflict(
                        "replica_unavailable",
                        "no replica is connected and shipping",
                    )
                }),
        }
    }

    async fn switch(&self, from: &str, to: &str) -> Result<SwitchoverReport, Refusal> {
        let started = Instant::now();
        self.gate.close();
        info!("holding new statements; waiting for transactions under way");
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        loop {
            let busy = self.gate.busy_sessions();
            if busy == 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Refusal::conflict(
                    "drain_timeout",
                    format!(
                        "{busy} session(s) still in a transaction or a statement after {} ms; \
                         switchover cancelled",
                        self.drain_timeout.as_millis()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let drained = Instant::now();
        // Every commit so far is in a cut of this tick or earlier.
        let tick = self.ticks.commit_tick();
        let replicas: Vec<String> = self
            .roles
            .borrow()
            .replicas
            .iter()
            .map(|n| n.name.clone())
            .collect();
        if !self
            .ticks
            .until_replica_has(to, tick, self.catch_up_timeout)
            .await
        {
            return Err(Refusal::conflict(
                "catch_up_timeout",
                format!(
                    "replica {to} did not apply the master's last batch within {} ms; switchover cancelled",
                    self.catch_up_timeout.as_millis()
                ),
            ));
        }
        let caught_up = Instant::now();
        // The other replicas get what is left of the time; one that is
        // still behind is fenced out by the coordinator (resync).
        let left = self.catch_up_timeout.saturating_sub(drained.elapsed());
        for r in replicas.iter().filter(|r| r.as_str() != to) {
            let _ = self.ticks.until_replica_has(r, tick, left).await;
        }
        let epoch = coordinator::ask(&self.control, "cannot_promote", |reply| {
            Control::SwitchOver {
                node: to.to_string(),
                reply,
            }
        })
        .await?;
        let ms = |d: Duration| d.as_millis() as u64;
        Ok(SwitchoverReport {
            from: from.to_string(),
            to: to.to_string(),
            epoch,
            drain_ms: ms(drained - started),
            catch_up_ms: ms(caught_up - drained),
            promote_ms: ms(caught_up.elapsed()),
            held_ms: ms(started.elapsed()),
        })
    }
}
