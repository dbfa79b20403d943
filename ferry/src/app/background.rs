//! The jobs that run beside the proxy for as long as Ferry runs: the
//! batcher, restarted for each new topology, and the record of the
//! master's state-priority.

use ferry_batcher::install::connect;
use ferry_batcher::{Batcher, BatcherConfig, Metrics, SharedStatus};
use ferry_cluster::{Role, Topology};
use std::time::Duration;
use tokio::sync::watch;
use tracing::info;

/// Keeps the master's recorded state-priority current: 2 while a replica
/// holds everything the master shipped (it could take over without loss),
/// 1 while none does. After a total outage this tells whether a replica may
/// have taken over later (see `ferry_cluster::coordinator::decide`).
pub(super) async fn record_master_priority(
    mut roles: watch::Receiver<Topology>,
    status: SharedStatus,
    mut shutdown: watch::Receiver<bool>,
) {
    use ferry_cluster::record::{master_priority, Recorded};
    let mut recorded: Option<(String, i64, i32)> = None;
    let mut client: Option<(String, tokio_postgres::Client)> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = roles.changed() => {}
            _ = shutdown.changed() => return,
        }
        let topo = roles.borrow().clone();
        if topo.waiting.is_some() {
            continue;
        }
        let caught_up = status.read().is_ok_and(|s| {
            s.master == topo.master.name
                && s.replicas
                    .iter()
                    .any(|r| r.reachable && r.lag_batches == 0 && r.suspension.is_none())
        });
        let want = (
            topo.master.name.clone(),
            topo.epoch,
            master_priority(caught_up),
        );
        if recorded.as_ref() == Some(&want) {
            continue;
        }
        if client.as_ref().is_none_or(|(n, _)| *n != topo.master.name) {
            client = connect(&topo.master.name, &topo.master.target, "ferry control")
                .await
                .ok()
                .map(|c| (topo.master.name.clone(), c));
        }
        let Some((_, c)) = &client else { continue };
        let r = Recorded {
            node: topo.master.name.clone(),
            epoch: topo.epoch,
            state: Role::Master,
            state_priority: want.2,
            master: topo.master.name.clone(),
            forced: topo.forced,
        };
        match ferry_cluster::record::write(c, &r).await {
            Ok(()) => {
                info!(node = %r.node, state_priority = r.state_priority, "master's state-priority recorded");
                recorded = Some(want);
            }
            Err(_) => client = None,
        }
    }
}

/// Runs the batcher for the current topology, and again for each new one
/// (a failover): the old one is stopped first (a second's grace, then
/// aborted: a batch it was applying rolls back, and replicas fenced at the
/// new epoch refuse its batches anyway).
pub(super) async fn supervise_batcher(
    base: BatcherConfig,
    mut roles: watch::Receiver<Topology>,
    (status, metrics): (SharedStatus, Metrics),
    commands: ferry_batcher::run::Commands,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let topo = roles.borrow_and_update().clone();
        if topo.waiting.is_some() {
            // No master: nothing to replicate from until one is decided.
            tokio::select! {
                r = roles.changed() => if r.is_ok() { continue } else { return },
                _ = shutdown.changed() => return,
            }
        }
        let mut cfg = base.clone();
        cfg.master = topo.master.clone();
        cfg.replicas = topo.replicas.clone();
        cfg.epoch = topo.epoch;
        let (stop, stopped) = watch::channel(false);
        let batcher = Batcher::new(cfg, status.clone(), metrics.clone(), commands.clone());
        let mut run = tokio::spawn(batcher.run(stopped));
        // A closed topology channel is Ferry stopping too.
        let again = tokio::select! {
            r = roles.changed() => r.is_ok() && !*shutdown.borrow(),
            _ = shutdown.changed() => false,
            _ = &mut run => return,
        };
        let _ = stop.send(true);
        if tokio::time::timeout(Duration::from_secs(1), &mut run)
            .await
            .is_err()
        {
            run.abort();
        }
        if !again {
            return;
        }
        info!(master = %roles.borrow().master.name, epoch = roles.borrow().epoch, "batcher restarting for the new topology");
    }
}
