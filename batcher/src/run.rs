//! The batcher's main loop: cut, ship to every replica, record, repeat.

mod repair;
mod suspensions;

use crate::apply::{Applied, ApplySession};
use crate::cutter::{Batch, Cut, Cutter};
use crate::install::{connect, install_master, prepare_replica};
use crate::metrics::{Metrics, ReplicaLabel};
use crate::pattern::Pattern;
use crate::status::{ReplicaStatus, SchemaChange, SharedStatus};
use crate::suspend::{Command, State, Suspensions};
use crate::sync::SyncPoint;
use crate::verify::{ChunkCheck, ChunkRequest, Verifier};
use crate::{housekeeping, BatchError};
use ferry_sql::{ddl, schema, TableShape};
use ferry_wire::Target;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, info_span, warn, Instrument};

/// A node by name and connection target.
#[derive(Clone, Debug)]
pub struct NodeTarget {
    pub name: String,
    pub target: Target,
}

/// What the batcher needs to know; built by the binary from its config.
#[derive(Clone, Debug)]
pub struct BatcherConfig {
    pub master: NodeTarget,
    pub replicas: Vec<NodeTarget>,
    pub include: Vec<Pattern>,
    pub exclude: Vec<Pattern>,
    /// Interval between cuts.
    pub tick: Duration,
    /// Interval between outbox clean-ups and backlog counts.
    pub housekeeping: Duration,
    /// A replica that does not finish a batch within this is dropped and
    /// reconnected.
    pub apply_timeout: Duration,
    /// Tick bookkeeping for synchronous commit (`mode = "sync"`) and
    /// causal reads: which replica has applied which tick.
    pub sync: Option<Arc<SyncPoint>>,
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
    node: NodeTarget,
    session: Option<ApplySession>,
    /// Ledger position: last applied batch id and master snapshot.
    position: Option<(i64, String)>,
    retry_at: Instant,
    behind_since: Option<Instant>,
    last_lag: Duration,
    lag_rows: i64,
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
}

/// The replica the outbox is kept for, with its pending rows (None when
/// unknown): among the replicas that could not be reached (a connection
/// attempt or an apply failed; not suspended), the one with the oldest
/// position that has changes pending — one whose position this batcher never
/// learnt (unreachable since Ferry started) counts as the oldest.
fn kept_for(replicas: &[Replica], susp: &Suspensions) -> Option<(String, Option<i64>)> {
    replicas
        .iter()
        .filter(|r| r.session.is_none() && r.last_error.is_some())
        .filter(|r| susp.get(&r.node.name).is_none_or(|s| !s.holds()))
        .filter_map(|r| match &r.position {
            None => Some((i64::MIN, r, None)),
            Some(p) if r.lag_rows > 0 => Some((p.0, r, Some(r.lag_rows))),
            Some(_) => None,
        })
        .min_by_key(|(id, _, _)| *id)
        .map(|(_, r, rows)| (r.node.name.clone(), rows))
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
                last_error: None,
                applied_tick: 0,
                failed: None,
                connecting: None,
                quarantined: 0,
                behind_cleanup: false,
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
        let master = &self.cfg.master;
        let control = connect(&master.name, &master.target, "ferry control").await?;
        let shapes =
            install_master(&master.name, &control, &self.cfg.include, &self.cfg.exclude).await?;
        let batch_client = connect(&master.name, &master.target, "ferry batcher").await?;
        let sequences = crate::catalog::replicated_sequences(
            &control,
            &master.name,
            &self.cfg.include,
            &self.cfg.exclude,
        )
        .await?;
        let cutter = Cutter::new(&master.name, batch_client, &shapes, sequences.clone()).await?;
        let last_batch: i64 = control
            .query_one(schema::LAST_BATCH_ID, &[])
            .await
            .map_err(BatchError::pg(&master.name))?
            .get(0);
        self.warn_unconfigured(&control, replicas).await?;
        if let Ok(mut s) = self.status.write() {
            s.master = master.name.clone();
            s.master_reachable = true;
            s.tables = shapes.len();
            s.error = None;
            s.last_batch = last_batch;
        }
        info!(
            tables = shapes.len(),
            replicas = replicas.len(),
            "replicating"
        );
        let names: Vec<String> = replicas.iter().map(|r| r.node.name.clone()).collect();
        self.verifier()
            .set_tables(shapes.iter().map(|s| s.table.clone()).collect());
        // Schema changes are reported from here on; earlier ones were
        // already taken into account by the install above.
        let mut seen_ddl: i64 = control
            .query_one(ddl::LAST, &[])
            .await
            .map_err(BatchError::pg(&master.name))?
            .get(0);
        let mut last_batch = last_batch;
        let mut next_housekeeping = Instant::now();
        self.load_suspensions(&control, susp).await?;
        loop {
            let tick_start = Instant::now();
            let mut joined = false;
            for r in replicas.iter_mut() {
                let had = r.session.is_some();
                self.connect_replica(r, &shapes).await;
                joined |= !had && r.session.is_some();
            }
            if joined {
                cutter.resend_sequences();
            }
            // Suspensions whose instant has come: this tick's cut is their
            // consistent point.
            self.start_due(&control, replicas, susp).await?;
            let held: BTreeSet<String> = susp
                .iter()
                .filter(|(_, s)| s.holds())
                .map(|(n, _)| n.clone())
                .collect();
            // Every cut of this tick takes its snapshot after this point.
            let tick = self.cfg.sync.as_ref().map_or(0, |s| s.start_tick());
            // Replicas standing at the same ledger position form a group;
            // one cut brings every group to the same new position.
            let mut groups: BTreeMap<i64, String> = BTreeMap::new();
            for r in replicas.iter().filter(|r| !held.contains(&r.node.name)) {
                if let (Some(_), Some((id, snap))) = (&r.session, &r.position) {
                    groups.entry(*id).or_insert_with(|| snap.clone());
                }
            }
            let groups: Vec<(i64, String)> = groups.into_iter().collect();
            let chunk = self.chunk_due(&control, &shapes).await?;
            let cut_started = Instant::now();
            let repairs = self.repair_ranges();
            let cut = cutter.cut(&groups, chunk.as_ref(), &repairs).await?;
            if !groups.is_empty() {
                self.metrics
                    .cut_seconds
                    .observe(cut_started.elapsed().as_secs_f64());
            }
            let (batches, unchanged) = match cut {
                Cut::Batches(batches) => (batches, false),
                Cut::Unchanged => (Vec::new(), true),
                Cut::Busy => (Vec::new(), false),
            };
            if groups.is_empty() {
                // Nothing was asked of the master.
            } else if let Ok(mut s) = self.status.write() {
                s.master = master.name.clone();
                s.master_contact = Some(Instant::now());
            }
            if unchanged {
                // Nothing committed since any position: every replica holds
                // everything this tick's snapshot shows.
                for r in replicas.iter_mut() {
                    if r.session.is_some() && !held.contains(&r.node.name) {
                        r.applied_tick = tick;
                    }
                }
            }
            if let Some(check) = batches.first().and_then(|b| b.check.as_ref()) {
                self.verifier().sent(check, Instant::now());
                self.metrics.verify_chunks.inc();
            }
            let mut schema_changed = Vec::new();
            for batch in &batches {
                self.metrics.batches_cut.inc();
                last_batch = last_batch.max(batch.id);
                for change in batch.schema_changes() {
                    schema_changed.push(change.tag.clone());
                    let replayed = change.statement.is_some();
                    if replayed {
                        info!(node = %master.name, batch = batch.id, tag = %change.tag, object = %change.object,
                            "schema change on the master; it ships to the replicas in the batch stream");
                    } else {
                        warn!(node = %master.name, batch = batch.id, tag = %change.tag, query = %change.query,
                            "schema change not replayed on the replicas: Ferry cannot tell which statement made it \
                             (DDL inside a function or DO block); make the same change on every replica");
                    }
                    self.report(SchemaChange {
                        at: change.at.clone(),
                        tag: change.tag.clone(),
                        object: if replayed {
                            change.object.clone()
                        } else {
                            format!(
                                "{} (not replayed in batch {}: make this change on every replica)",
                                change.object, batch.id
                            )
                        },
                        query: change.query.clone(),
                        replicated: replayed,
                        seq: Some(change.seq),
                    });
                }
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
            self.finish_suspending(&control, replicas, susp, &batches)
                .await?;
            if let Some(sync) = &self.cfg.sync {
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
            for r in replicas.iter_mut() {
                let applied = r.position.as_ref().map(|p| p.0).unwrap_or(0);
                if applied < last_batch && r.behind_since.is_none() {
                    r.behind_since = Some(Instant::now());
                }
            }
            if !schema_changed.is_empty() {
                self.publish(replicas, last_batch, susp);
                return Err(BatchError::SchemaChanged(schema_changed.join("; ")));
            }
            if Instant::now() >= next_housekeeping {
                next_housekeeping = Instant::now() + self.cfg.housekeeping;
                // Positions on the master only bound clean-up (each replica's
                // ledger is the truth), so recording them once per pass is
                // enough; a stale one merely keeps rows a little longer.
                // Only what a connected replica's ledger says: the position
                // of one that went away may not have survived it (see
                // `schema::RECORD_POSITION`).
                for r in replicas.iter().filter(|r| r.session.is_some()) {
                    if let Some((id, snap)) = &r.position {
                        control
                            .execute(schema::RECORD_POSITION, &[&r.node.name, id, snap])
                            .await
                            .map_err(BatchError::pg(&master.name))?;
                    }
                }
                self.check_schema(&control, (&shapes, &sequences), &mut seen_ddl)
                    .await?;
                housekeeping::clean(&master.name, &control, &shapes, &names).await?;
                let backlog = housekeeping::backlog(&master.name, &control, &shapes).await?;
                self.metrics.outbox_rows.set(backlog);
                for r in replicas.iter_mut() {
                    if let Some((_, snap)) = &r.position {
                        r.lag_rows =
                            housekeeping::pending(&master.name, &control, &shapes, snap).await?;
                        if let Some(s) = susp.get_mut(&r.node.name).filter(|s| s.holds()) {
                            s.pending_keys =
                                housekeeping::pending_keys(&master.name, &control, &shapes, snap)
                                    .await?;
                        }
                    }
                }
                // An unreachable replica, else a node pinned for a resync
                // (a failed master, fenced out: its pin holds the clean-up).
                let mut kept_for = kept_for(replicas, susp);
                let fenced = kept_for.is_none();
                if fenced {
                    kept_for = control
                        .query_opt(schema::PINNED_FOR_RESYNC, &[&names])
                        .await
                        .map_err(BatchError::pg(&master.name))?
                        .map(|row| (row.get(0), None));
                }
                self.report_kept_for(kept_for.as_ref(), backlog, fenced);
                if let Ok(mut s) = self.status.write() {
                    s.outbox_backlog = backlog;
                    s.outbox_kept_for = kept_for.map(|(name, _)| name);
                }
            }
            self.publish(replicas, last_batch, susp);
            let wait = self.cfg.tick.saturating_sub(tick_start.elapsed());
            let kicked = async {
                match &self.cfg.sync {
                    Some(sync) => sync.until_kicked().await,
                    None => std::future::pending().await,
                }
            };
            let next_due = susp
                .values()
                .filter(|s| s.state == State::Scheduled)
                .map(|s| s.due)
                .min();
            let due = async {
                match next_due {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let hooks_running = susp
                .values()
                .any(|s| s.hook.is_some() && !s.resume_waiting.is_empty());
            let wait = if hooks_running {
                wait.min(Duration::from_millis(100))
            } else {
                wait
            };
            let command = {
                let mut commands = self.commands.lock().await;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => None,
                    _ = kicked => None,
                    _ = due => None,
                    Some(cmd) = commands.recv() => Some(cmd),
                    _ = shutdown.changed() => return Ok(()),
                }
            };
            if let Some(cmd) = command {
                self.handle(cmd, &control, replicas, susp).await;
            }
            self.poll_hooks(&control, susp).await?;
        }
    }

    /// Reports schema changes logged on the master since `seen`; when they
    /// changed the replicated tables or sequences, ends the session so that
    /// the next one works with the new shapes and re-checks every replica
    /// (the changes themselves travel in the batch stream; a replica whose
    /// tables differ with none on their way to it is paused with the
    /// differences).
    async fn check_schema(
        &self,
        control: &tokio_postgres::Client,
        (shapes, sequences): (&[TableShape], &[String]),
        seen: &mut i64,
    ) -> Result<(), BatchError> {
        let node = &self.cfg.master.name;
        let rows = control
            .query(ddl::READ_LOG, &[&*seen])
            .await
            .map_err(BatchError::pg(node))?;
        if rows.is_empty() {
            return Ok(());
        }
        let changes: Vec<SchemaChange> = rows
            .iter()
            .map(|r| SchemaChange {
                at: r.get(1),
                tag: r.get(2),
                object: r.get(3),
                query: r.get(4),
                replicated: r.get(5),
                seq: None,
            })
            .collect();
        *seen = rows.last().map_or(*seen, |r| r.get(0));
        let now =
            crate::catalog::replicated_tables(control, node, &self.cfg.include, &self.cfg.exclude)
                .await?;
        let now_sequences = crate::catalog::replicated_sequences(
            control,
            node,
            &self.cfg.include,
            &self.cfg.exclude,
        )
        .await?;
        let changed = now.as_slice() != shapes || now_sequences.as_slice() != sequences;
        // Replicated changes are reported as their batches ship.
        for c in changes.iter().filter(|c| !c.replicated) {
            info!(node = %node, tag = %c.tag, object = %c.object,
                "schema change on the master outside the replicated tables; not replicated");
            self.report(c.clone());
        }
        // A replicated change restarts the session once its batch has
        // shipped; anything else that moved the shapes restarts it now.
        if changed && changes.iter().all(|c| !c.replicated) {
            let what = changes
                .iter()
                .map(|c| format!("{} {}", c.tag, c.object))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(BatchError::SchemaChanged(what));
        }
        Ok(())
    }

    /// Keeps a schema change in /status (the last 20), once.
    fn report(&self, change: SchemaChange) {
        if let Ok(mut s) = self.status.write() {
            if s.schema_changes.iter().any(|c| c.is_same_change(&change)) {
                return;
            }
            s.schema_changes.push(change);
            let excess = s.schema_changes.len().saturating_sub(20);
            s.schema_changes.drain(..excess);
        }
    }

    /// Logs when the outbox starts being kept for an unreachable replica
    /// (and again every ten minutes while it is), and when that ends.
    fn report_kept_for(
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

    /// Says, once per node and process, which replicas the master records
    /// that the configuration lacks: they get no batches from this Ferry
    /// (the usual cause is a node added with `ferry add-node` whose
    /// `[[nodes]]` entry was not written into the configuration file before
    /// a restart). Their positions do not hold back the outbox clean-up.
    async fn warn_unconfigured(
        &self,
        control: &tokio_postgres::Client,
        replicas: &[Replica],
    ) -> Result<(), BatchError> {
        let master = &self.cfg.master.name;
        let names: Vec<&str> = replicas
            .iter()
            .map(|r| r.node.name.as_str())
            .chain(std::iter::once(master.as_str()))
            .collect();
        let rows = control
            .query(schema::UNCONFIGURED_REPLICAS, &[&names])
            .await
            .map_err(BatchError::pg(master))?;
        let mut warned = self.unconfigured.lock().unwrap_or_else(|p| p.into_inner());
        for row in rows {
            let name: String = row.get(0);
            let recorded: String = row.get(1);
            if warned.insert(name.clone()) {
                warn!(node = %name, last_recorded = %recorded,
                    "the master records replica {name}, which is not in the configuration: it gets no batches \
                     from this Ferry and no longer holds back the outbox clean-up (a node added with \
                     `ferry add-node` needs its [[nodes]] entry in the configuration file before a restart); \
                     once the clean-up has passed its position it is refused if it comes back, and joins \
                     again through `ferry add-node` once its replicated tables are dropped");
            }
        }
        Ok(())
    }

    /// Starts, or collects, a replica's connection attempt: checking and
    /// preparing the replica and opening its apply session run in a task of
    /// their own (with their own master connection), so a replica that
    /// hangs does not hold up the loop. A session the replica ended while
    /// idle (a shutdown) is noticed here, at every tick.
    async fn connect_replica(&self, r: &mut Replica, shapes: &[TableShape]) {
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
                    }
                    Err(e) => {
                        if r.last_error.as_deref() != Some(&e.to_string()) {
                            warn!(node = %name, error = %e, "replica unavailable; retrying");
                        }
                        r.behind_cleanup = matches!(e, BatchError::BehindCleanup { .. });
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
    async fn ship(
        &self,
        batch: &Batch,
        replicas: &mut [Replica],
        tick: u64,
        held: &BTreeSet<String>,
    ) {
        let origin = &self.cfg.master.name;
        let timeout = self.cfg.apply_timeout;
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
                    if let Some(check) = &batch.check {
                        self.collect_check(r, check).await;
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

    /// The background check's state (a poisoned lock reads as it was).
    fn verifier(&self) -> std::sync::MutexGuard<'_, Verifier> {
        self.cfg.verify.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The chunk this tick's cut should read, if one is due; a new pass
    /// first estimates the rows it covers.
    async fn chunk_due(
        &self,
        control: &tokio_postgres::Client,
        shapes: &[TableShape],
    ) -> Result<Option<ChunkRequest>, BatchError> {
        let now = Instant::now();
        if !self.verifier().starting(now) {
            return Ok(self.verifier().due(now, || 0));
        }
        let names: Vec<String> = shapes.iter().map(|s| s.table.quoted()).collect();
        let estimate: i64 = control
            .query_one(ferry_sql::verify::ESTIMATE_ROWS, &[&names])
            .await
            .map_err(BatchError::pg(&self.cfg.master.name))?
            .get(0);
        Ok(self.verifier().due(now, || estimate))
    }

    /// Takes a replica's results for the chunk a batch carried and reports
    /// a new difference.
    async fn collect_check(&self, r: &mut Replica, check: &ChunkCheck) {
        let Some(session) = r.session.as_mut() else {
            return;
        };
        let results = match session.take_checks().await {
            Ok(results) => results,
            Err(e) => {
                warn!(node = %r.node.name, error = %e, "could not read the background check's results");
                return;
            }
        };
        for got in results
            .iter()
            .filter(|g| g.after == check.after && g.through == check.through)
        {
            let found = self.verifier().record(&r.node.name, check, got);
            if let Some(d) = found {
                warn!(node = %r.node.name, table = %d.table, after = d.after.as_deref().unwrap_or("(start)"),
                    through = d.through.as_deref().unwrap_or("(end)"), master_rows = d.master_rows,
                    replica_rows = d.replica_rows, batch = d.batch,
                    "replica differs from the master in a key range (found by the background check); \
                     run `ferry repair {} {}` to copy the master's rows there", r.node.name, d.table);
            }
        }
    }

    fn publish(&self, replicas: &[Replica], last_batch: i64, susp: &Suspensions) {
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
                    lag_seconds,
                    last_error: r.last_error.clone(),
                    failed_batch: r.failed.as_ref().map(|f| f.0),
                    failed_statement: r.failed.as_ref().map(|f| f.1.clone()),
                    suspension: susp.get(&r.node.name).map(|s| s.status(r.lag_rows)),
                    quarantined: r.quarantined,
                    behind_cleanup: r.behind_cleanup,
                    divergent: verifier.divergent(&r.node.name).to_vec(),
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
