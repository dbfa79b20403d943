//! The batcher's main loop. A session on the master is opened
//! ([`session`]), then each tick:
//!
//! 1. **Cut** ([`tick`]): replicas (re)connected, suspensions due started,
//!    one cut for every group of replicas at the same position.
//! 2. **Ship** ([`ship`]): each batch to every replica standing at its
//!    start, concurrently; schema changes it carries reported ([`schema`]).
//! 3. **Report**: the sync point and `/status` ([`publish`]).
//! 4. **Housekeeping** now and then ([`housekeeping`]): positions, the
//!    outbox clean-up, lag in rows, schema changes logged on the master,
//!    the bounds on what is kept for a replica away ([`retention`]) and its
//!    compaction ([`compaction`]), which runs beside the loop.
//! 5. **Wait** ([`wait`]) for the next tick, a sync commit, a suspension
//!    instant or an operator's request.
//!
//! A failed session (a lost master, changed tables) ends; [`Batcher::run`]
//! opens the next one.

mod beside;
mod checks;
mod compaction;
mod housekeeping;
mod indexing;
mod intact;
mod publish;
mod repair;
mod retention;
mod schema;
mod session;
mod ship;
mod suspensions;
mod tally;
mod tick;
mod wait;

use wait::Woken;

use crate::apply::ApplySession;
use crate::metrics::Metrics;
use crate::pattern::Pattern;
use crate::status::SharedStatus;
use crate::suspend::{Command, Suspensions};
use crate::verify::Verifier;
use crate::BatchError;
use ferry_cluster::{Node, SyncPoint};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, info_span, warn, Instrument};

/// What the batcher needs to know; built by the binary from its config.
#[derive(Clone, Debug)]
pub struct BatcherConfig {
    pub master: Node,
    pub replicas: Vec<Node>,
    pub include: Vec<Pattern>,
    pub exclude: Vec<Pattern>,
    /// Interval between cuts.
    pub tick: Duration,
    /// Interval between outbox clean-ups and backlog counts.
    pub housekeeping: Duration,
    /// A replica that does not finish a batch within this (plus a second
    /// per MB the batch carries) is dropped and reconnected.
    pub apply_timeout: Duration,
    /// Where batches spill their data beyond what they hold in memory (see
    /// [`crate::payload`]).
    pub spill_dir: std::path::PathBuf,
    /// Tick bookkeeping for synchronous commit (`mode = "sync"`) and
    /// causal reads: which replica has applied which tick.
    pub sync: Option<Arc<SyncPoint>>,
    /// `[retention] max_bytes`: past this much kept for an unreachable
    /// replica, the master stops keeping changes for it.
    pub retention_max_bytes: Option<u64>,
    /// `[retention] max_age_s`: likewise once it has been away this long
    /// with changes kept for it.
    pub retention_max_age: Option<Duration>,
    /// `[retention] compact_after`: when what is kept for a replica that is
    /// away is netted per key again (see [`crate::compact`]).
    pub compact_after: crate::compact::CompactAfter,
    pub suspend: SuspendConfig,
    /// The cluster epoch this batcher works in: replicas fenced at a later
    /// one refuse its batches.
    pub epoch: i64,
    /// The background check, kept across batchers (a failover restarts
    /// the batcher; the pass goes on).
    pub verify: Arc<Mutex<Verifier>>,
}

/// Settings of suspensions (see [`crate::suspend`]).
#[derive(Clone, Debug, Default)]
pub struct SuspendConfig {
    /// How far ahead a suspension must be scheduled.
    pub min_lead: Duration,
    /// A command run once a replica is suspended and consistent.
    pub hook: Option<String>,
    /// Each replica's DSN, for the hook's environment.
    pub dsns: BTreeMap<String, String>,
}

/// One replica as the loop tracks it.
struct Replica {
    node: Node,
    session: Option<ApplySession>,
    /// Ledger position: last applied batch id and master snapshot.
    position: Option<(i64, String)>,
    retry_at: Instant,
    behind_since: Option<Instant>,
    last_lag: Duration,
    lag_rows: i64,
    /// Bytes of the outbox rows it has not applied.
    kept_bytes: i64,
    /// Unreachable: how long ago the master last recorded its position
    /// (every change kept for it is younger).
    away_for: Option<Duration>,
    /// Away or suspended: distinct keys among the changes kept for it
    /// (what a catch-up by netted images would ship at most).
    kept_keys: Option<i64>,
    /// Unreachable: the position the master recorded for it (what is kept
    /// for it is counted from there when this batcher never learnt one).
    recorded: Option<String>,
    /// Unreachable, with a `[retention]` bound: what was kept at the
    /// previous pass, and when (for the rate of growth).
    kept_before: Option<(i64, Instant)>,
    /// At the current rate, how long until a bound releases it.
    released_in: Option<Duration>,
    /// The master stopped keeping changes for it (`[retention]
    /// max_bytes`): refused until `ferry resync`.
    released: bool,
    /// What is kept for it passed 80 % of `[retention] max_bytes` (warned
    /// once in the log; shown in `/status` and the metrics meanwhile).
    near_bound: bool,
    /// Away or suspended: what was kept after the latest compaction.
    compact: compaction::Tracking,
    last_error: Option<String>,
    /// Tick through which this replica has applied everything.
    applied_tick: u64,
    /// The batch that last failed to apply, and its failing statement.
    failed: Option<(i64, String)>,
    /// A connection attempt running beside the loop (a frozen server must
    /// not hold up the other replicas).
    connecting: Option<JoinHandle<Result<Connected, BatchError>>>,
    /// Rows in the replica's `ferry.quarantine` (read at connect).
    quarantined: i64,
    /// The last connection attempt was refused: the replica stands before
    /// the master's outbox clean-up.
    behind_cleanup: bool,
    /// The latest schema changes that did not apply there as on the master
    /// (newest last).
    warnings: Vec<String>,
}

/// A replica's opened apply session, its ledger position and the rows it
/// holds in quarantine.
type Connected = (ApplySession, (i64, String), i64);

/// The admin endpoint's requests, shared by the batchers a process runs
/// one after another (a failover restarts the batcher with new roles).
pub type Commands = Arc<tokio::sync::Mutex<mpsc::Receiver<Command>>>;

/// Runs replication from the master to every replica until shut down.
pub struct Batcher {
    cfg: BatcherConfig,
    status: SharedStatus,
    metrics: Metrics,
    /// Requests from the admin endpoint (suspend, cancel, resume).
    commands: Commands,
    /// Recorded replicas missing from the configuration, already reported.
    unconfigured: Mutex<BTreeSet<String>>,
    /// The replica the outbox was last reported kept for, and when.
    kept_for: Mutex<Option<(String, Instant)>>,
    /// A `ferry repair` waiting for its batch.
    repair: Mutex<Option<repair::PendingRepair>>,
    /// Where the capture check's next slice of tables starts (a table
    /// oid; 0: the first), see [`intact`].
    intact_after: Mutex<i64>,
}

impl Batcher {
    pub fn new(
        cfg: BatcherConfig,
        status: SharedStatus,
        metrics: Metrics,
        commands: Commands,
    ) -> Self {
        Self {
            cfg,
            status,
            metrics,
            commands,
            unconfigured: Mutex::new(BTreeSet::new()),
            kept_for: Mutex::new(None),
            repair: Mutex::new(None),
            intact_after: Mutex::new(0),
        }
    }

    /// Runs until `shutdown` turns true. A lost master connection restarts
    /// the session after a pause; replicas reconnect on their own.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut replicas: Vec<Replica> = self
            .cfg
            .replicas
            .iter()
            .map(|n| Replica {
                node: n.clone(),
                session: None,
                position: None,
                retry_at: Instant::now(),
                behind_since: None,
                last_lag: Duration::ZERO,
                lag_rows: 0,
                kept_bytes: 0,
                away_for: None,
                kept_keys: None,
                recorded: None,
                kept_before: None,
                released_in: None,
                released: false,
                near_bound: false,
                compact: compaction::Tracking::default(),
                last_error: None,
                applied_tick: 0,
                failed: None,
                connecting: None,
                quarantined: 0,
                behind_cleanup: false,
                warnings: Vec::new(),
            })
            .collect();
        let mut susp = Suspensions::new();
        loop {
            let span = info_span!("batcher", node = %self.cfg.master.name);
            let result = self
                .session(&mut replicas, &mut susp, &mut shutdown)
                .instrument(span)
                .await;
            match result {
                Ok(()) => return,
                Err(e) => {
                    let schema_changed = matches!(e, BatchError::SchemaChanged(_));
                    if schema_changed {
                        // A normal event: the session restarts to read the
                        // new definitions, and the master is still there.
                        info!(node = %self.cfg.master.name, change = %e, "replicated tables changed; batcher re-reads them");
                    } else {
                        warn!(node = %self.cfg.master.name, error = %e, "batcher session failed; retrying in 1s");
                    }
                    if let Ok(mut s) = self.status.write() {
                        s.master_reachable = schema_changed;
                        if !schema_changed {
                            s.error = Some(e.to_string());
                        }
                    }
                    for r in &mut replicas {
                        r.session = None;
                        if let Some(attempt) = r.connecting.take() {
                            attempt.abort();
                        }
                    }
                    // A schema change restarts at once: the next batches
                    // wait for it.
                    let pause = if schema_changed {
                        Duration::from_millis(10)
                    } else {
                        Duration::from_secs(1)
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }

    async fn session(
        &self,
        replicas: &mut [Replica],
        susp: &mut Suspensions,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), BatchError> {
        let mut s = self.open(replicas, susp).await?;
        loop {
            let tick_start = Instant::now();
            self.tick(&mut s, replicas, susp).await?;
            if Instant::now() >= s.next_housekeeping {
                s.next_housekeeping = Instant::now() + self.cfg.housekeeping;
                self.housekeeping(&mut s, replicas, susp).await?;
            }
            self.publish(replicas, s.last_batch, susp);
            match self.wait(tick_start, susp, shutdown).await {
                Woken::Stop => return Ok(()),
                Woken::Command(cmd) => {
                    self.handle(cmd, &s.control, replicas, susp).await;
                    // `/status` shows what the operator was just told.
                    self.publish(replicas, s.last_batch, susp);
                }
                Woken::Tick => {}
            }
            self.poll_hooks(&s.control, susp).await?;
        }
    }
}
