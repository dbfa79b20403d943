//! Synchronous commit and causal reads: the meeting point of client
//! sessions that wait for their commits to reach `k` replicas (or want to
//! know which replica already has them) and the batcher that ships them.
//!
//! The batcher numbers its ticks. A tick's cuts take their snapshots after
//! the tick number was raised, so a transaction whose commit a session saw
//! complete before it read tick number `t` is in a batch cut at tick `t + 1`
//! or earlier. The batcher publishes, after each tick, the highest tick
//! through which at least `k` replicas have applied everything; a session
//! waits for that to reach `t + 1`. Many sessions waiting for the same tick
//! share its batch (group commit), and a waiting session wakes the batcher
//! so it cuts at once instead of at its next tick.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

/// Slots kept for nodes added while Ferry runs (`ferry add-node`).
const SPARE_SLOTS: usize = 8;

/// What a session does when `k` replicas do not confirm in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// Keep waiting, however long it takes.
    Wait,
    /// After the timeout, acknowledge without the replicas and keep doing so
    /// (asynchronous, logged and shown) until `k` replicas are current again.
    Async(Duration),
}

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `k` replicas applied the transaction's batch.
    Replicated,
    /// Acknowledged without them (asynchronous fallback in effect).
    Degraded,
}

/// Shared by the batcher and every client session.
pub struct SyncPoint {
    k: usize,
    fallback: Fallback,
    /// Ticks started by the batcher.
    started: AtomicU64,
    /// Highest tick through which `k` replicas have applied everything.
    confirmed: watch::Sender<u64>,
    /// Per replica (in configuration order), the tick through which it has
    /// applied everything.
    applied: Vec<AtomicU64>,
    /// Per node, the highest tick it was ever seen to have applied through
    /// (not reset when it stops being a replica): a node promoted to master
    /// holds everything it applied as a replica.
    reached: Vec<AtomicU64>,
    /// Per replica: connected and shipping (not suspended), so it may
    /// serve reads.
    serving: Vec<AtomicBool>,
    /// The node of each slot (slots past the end are spare, for nodes
    /// added while Ferry runs).
    nodes: std::sync::RwLock<Vec<String>>,
    /// Slots in use (the spare ones past it hold nothing).
    assigned: std::sync::atomic::AtomicUsize,
    /// Wakes the batcher for an immediate cut.
    kick: Notify,
    degraded: AtomicBool,
    metrics: SyncMetrics,
}

/// Counters for `/metrics`.
#[derive(Clone, Default)]
struct SyncMetrics {
    waits: Counter,
    fallbacks: Counter,
    waiting: Gauge,
    degraded: Gauge,
}

impl std::fmt::Debug for SyncPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncPoint")
            .field("k", &self.k)
            .field("fallback", &self.fallback)
            .field("started", &self.started)
            .field("confirmed", &*self.confirmed.borrow())
            .field("degraded", &self.degraded)
            .finish()
    }
}

impl SyncPoint {
    /// `k` replicas must confirm each writing commit; with `k = 0` nothing
    /// waits and the point only tracks which replica holds what (for causal
    /// reads). `nodes` names every configured node: slots are kept per node,
    /// whatever role it plays (roles change on failover).
    pub fn new(k: usize, fallback: Fallback, nodes: Vec<String>, registry: &mut Registry) -> Self {
        let assigned = std::sync::atomic::AtomicUsize::new(nodes.len());
        let replicas = nodes.len() + SPARE_SLOTS;
        let metrics = SyncMetrics::default();
        if k > 0 {
            metrics.register(registry);
        }
        Self {
            k,
            fallback,
            started: AtomicU64::new(0),
            confirmed: watch::channel(0).0,
            applied: (0..replicas).map(|_| AtomicU64::new(0)).collect(),
            reached: (0..replicas).map(|_| AtomicU64::new(0)).collect(),
            serving: (0..replicas).map(|_| AtomicBool::new(false)).collect(),
            nodes: std::sync::RwLock::new(nodes),
            assigned,
            kick: Notify::new(),
            degraded: AtomicBool::new(false),
            metrics,
        }
    }

    /// The tick a commit that completed on the master just now needs: a
    /// replica that applied everything through it has the commit.
    pub fn commit_tick(&self) -> u64 {
        self.started.load(Ordering::SeqCst) + 1
    }

    /// The node of each slot in use (a poisoned lock reads as it was).
    fn names(&self) -> std::sync::RwLockReadGuard<'_, Vec<String>> {
        self.nodes.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The slot of a node, by name.
    pub fn slot(&self, node: &str) -> Option<usize> {
        self.names().iter().position(|n| n == node)
    }

    /// Gives a node added while Ferry runs a slot (its own if it has one);
    /// None when every spare slot is taken.
    pub fn add_node(&self, node: &str) -> Option<usize> {
        let mut nodes = self.nodes.write().ok()?;
        if let Some(i) = nodes.iter().position(|n| n == node) {
            return Some(i);
        }
        if nodes.len() >= self.applied.len() {
            return None;
        }
        nodes.push(node.to_string());
        self.assigned.store(nodes.len(), Ordering::SeqCst);
        Some(nodes.len() - 1)
    }

    /// Whether replica `i` (configuration order) has applied everything
    /// through `tick`.
    pub fn replica_has(&self, i: usize, tick: u64) -> bool {
        i < self.assigned.load(Ordering::SeqCst)
            && self
                .applied
                .get(i)
                .is_some_and(|a| a.load(Ordering::SeqCst) >= tick)
    }

    /// Whether `node` was ever seen to have applied everything through
    /// `tick` (as a replica; it keeps that when it is promoted).
    pub fn has_reached(&self, node: &str, tick: u64) -> bool {
        self.slot(node)
            .and_then(|i| self.reached.get(i))
            .is_some_and(|t| t.load(Ordering::SeqCst) >= tick)
    }

    /// Whether replica `i` is connected and shipping (not suspended): only
    /// then may it serve reads.
    pub fn serves(&self, i: usize) -> bool {
        self.serving
            .get(i)
            .is_some_and(|s| s.load(Ordering::SeqCst))
    }

    /// Records which replicas (by name) are connected and shipping; every
    /// other node serves no reads.
    pub fn report_serving(&self, serving: &[&str]) {
        for (slot, n) in self.serving.iter().zip(self.names().iter()) {
            slot.store(serving.contains(&n.as_str()), Ordering::SeqCst);
        }
    }
}

impl SyncMetrics {
    fn register(&self, registry: &mut Registry) {
        let metrics = self;
        registry.register(
            "ferry_sync_commit_waits",
            "Commits that waited for sync replicas",
            metrics.waits.clone(),
        );
        registry.register(
            "ferry_sync_fallbacks",
            "Commits acknowledged without sync replicas (sync_fallback = async)",
            metrics.fallbacks.clone(),
        );
        registry.register(
            "ferry_sync_waiting",
            "Commits waiting for sync replicas now",
            metrics.waiting.clone(),
        );
        registry.register(
            "ferry_sync_degraded",
            "1 while sync replication has fallen back to async",
            metrics.degraded.clone(),
        );
    }
}

impl SyncPoint {
    /// Replicas that must confirm.
    pub fn replicas_required(&self) -> usize {
        self.k
    }

    /// Whether commits are currently acknowledged without replicas.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::SeqCst)
    }

    /// Commits waiting now.
    pub fn waiting(&self) -> i64 {
        self.metrics.waiting.get()
    }

    /// Called by a session after the master confirmed a commit that may
    /// have written, before the client hears of it.
    pub async fn wait_for_commit(&self) -> Outcome {
        self.wait_for(self.commit_tick()).await
    }

    /// Waits until `k` replicas have applied everything through `need` (a
    /// [`Self::commit_tick`] taken after the commit completed).
    pub async fn wait_for(&self, need: u64) -> Outcome {
        // Nothing confirmed can be past `need` yet (confirmed <= started).
        let mut rx = self.confirmed.subscribe();
        self.metrics.waits.inc();
        if self.is_degraded() {
            self.metrics.fallbacks.inc();
            self.kick.notify_one();
            return Outcome::Degraded;
        }
        self.metrics.waiting.inc();
        self.kick.notify_one();
        let reached = rx.wait_for(|&t| t >= need);
        let outcome = match self.fallback {
            Fallback::Wait => {
                let _ = reached.await;
                Outcome::Replicated
            }
            Fallback::Async(limit) => match tokio::time::timeout(limit, reached).await {
                Ok(_) => Outcome::Replicated,
                Err(_) => {
                    self.metrics.fallbacks.inc();
                    if !self.degraded.swap(true, Ordering::SeqCst) {
                        self.metrics.degraded.set(1);
                        warn!(
                            replicas_required = self.k,
                            timeout_ms = limit.as_millis() as u64,
                            "sync replication degraded: fewer than the required replicas confirm; \
                             commits continue asynchronously"
                        );
                    }
                    Outcome::Degraded
                }
            },
        };
        self.metrics.waiting.dec();
        outcome
    }

    /// The batcher starts a tick; returns its number.
    pub fn start_tick(&self) -> u64 {
        self.started.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Waits until replica `node` has applied everything through `tick`,
    /// waking the batcher so that it cuts at once; false after `limit`.
    pub async fn until_replica_has(&self, node: &str, tick: u64, limit: Duration) -> bool {
        let Some(i) = self.slot(node) else {
            return false;
        };
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.replica_has(i, tick) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            self.kick.notify_one();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The batcher waits for its next tick, or less when a commit waits.
    pub async fn until_kicked(&self) {
        self.kick.notified().await
    }

    /// The batcher reports, per replica (by name), the tick through which
    /// it has applied everything (0 for one that is not current); nodes it
    /// does not name (the master, fenced nodes) count as holding nothing.
    pub fn report(&self, replicas: &[(&str, u64)]) {
        let applied: Vec<u64> = self
            .names()
            .iter()
            .map(|n| {
                replicas
                    .iter()
                    .find(|(name, _)| name == n)
                    .map_or(0, |(_, t)| *t)
            })
            .collect();
        for ((slot, reached), &tick) in self.applied.iter().zip(&self.reached).zip(&applied) {
            slot.store(tick, Ordering::SeqCst);
            reached.fetch_max(tick, Ordering::SeqCst);
        }
        self.confirm(applied);
    }

    /// Reports at once that one replica has applied everything through
    /// `tick`, while the batcher still waits for the others: commits that
    /// need only this replica are answered without waiting for the slowest.
    pub fn applied_one(&self, node: &str, tick: u64) {
        let Some(slot) = self.slot(node).and_then(|i| self.applied.get(i)) else {
            return;
        };
        slot.fetch_max(tick, Ordering::SeqCst);
        if let Some(reached) = self.slot(node).and_then(|i| self.reached.get(i)) {
            reached.fetch_max(tick, Ordering::SeqCst);
        }
        let applied: Vec<u64> = self
            .applied
            .iter()
            .take(self.assigned.load(Ordering::SeqCst))
            .map(|a| a.load(Ordering::SeqCst))
            .collect();
        self.confirm(applied);
    }

    /// Moves the confirmed tick to the k-th highest of `applied`.
    fn confirm(&self, mut sorted: Vec<u64>) {
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let point = if self.k == 0 {
            self.started.load(Ordering::SeqCst)
        } else {
            sorted.get(self.k - 1).copied().unwrap_or(0)
        };
        self.confirmed.send_if_modified(|t| {
            let moved = point > *t;
            if moved {
                *t = point;
            }
            moved
        });
        // Back to synchronous once k replicas hold the latest tick.
        let current = point > 0 && point >= self.started.load(Ordering::SeqCst);
        if current && self.degraded.swap(false, Ordering::SeqCst) {
            self.metrics.degraded.set(0);
            info!(
                replicas_required = self.k,
                "sync replication restored: the required replicas are current"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_commit_waits_for_the_next_tick_on_k_replicas() {
        let nodes = ["a", "b", "c", "d"].map(String::from).to_vec();
        let sync = Arc::new(SyncPoint::new(
            2,
            Fallback::Wait,
            nodes,
            &mut Registry::default(),
        ));
        let t1 = sync.start_tick();
        sync.report(&[("b", t1), ("c", t1), ("d", t1)]);
        let waiter = tokio::spawn({
            let sync = sync.clone();
            async move { sync.wait_for_commit().await }
        });
        tokio::task::yield_now().await;
        let t2 = sync.start_tick();
        sync.report(&[("b", t2), ("c", t1), ("d", 0)]); // one replica is not enough
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        sync.report(&[("b", t2), ("c", t2), ("d", 0)]);
        assert_eq!(waiter.await.ok(), Some(Outcome::Replicated));
        // Which replica holds what (by node slot), for causal reads; the
        // master ("a") holds nothing as a replica.
        assert!(sync.replica_has(1, t2) && sync.replica_has(2, t2));
        assert!(!sync.replica_has(3, 1) && !sync.replica_has(0, 1) && !sync.replica_has(7, 0));
        sync.report_serving(&["c"]);
        assert!(sync.serves(2) && !sync.serves(1) && !sync.serves(0));
        assert_eq!(sync.commit_tick(), t2 + 1);
        // A node added while running takes a spare slot and is reported
        // like the others.
        assert_eq!(sync.add_node("e"), Some(4));
        assert_eq!(sync.add_node("e"), Some(4));
        assert!(!sync.replica_has(4, 1));
        sync.report(&[("e", t2)]);
        assert!(sync.replica_has(4, t2) && sync.slot("e") == Some(4));
    }

    #[tokio::test]
    async fn the_first_replica_to_apply_answers_a_k_of_1_commit() {
        let nodes = ["a", "b", "c"].map(String::from).to_vec();
        let sync = Arc::new(SyncPoint::new(
            1,
            Fallback::Wait,
            nodes,
            &mut Registry::default(),
        ));
        let t1 = sync.start_tick();
        sync.report(&[("b", t1), ("c", t1)]);
        let waiter = tokio::spawn({
            let sync = sync.clone();
            async move { sync.wait_for_commit().await }
        });
        tokio::task::yield_now().await;
        let t2 = sync.start_tick();
        // "c" is still applying; "b" alone answers the commit.
        sync.applied_one("b", t2);
        assert_eq!(waiter.await.ok(), Some(Outcome::Replicated));
        assert!(sync.replica_has(1, t2) && !sync.replica_has(2, t2));
        // An older report never moves a replica back.
        sync.applied_one("b", t1);
        assert!(sync.replica_has(1, t2));
        sync.applied_one("nobody", t2);
    }

    #[tokio::test]
    async fn async_fallback_degrades_then_recovers() {
        let sync = SyncPoint::new(
            1,
            Fallback::Async(Duration::from_millis(30)),
            vec!["a".into(), "b".into()],
            &mut Registry::default(),
        );
        let t = sync.start_tick();
        sync.report(&[("b", 0)]);
        assert_eq!(sync.wait_for_commit().await, Outcome::Degraded);
        assert!(sync.is_degraded());
        // While degraded, commits do not wait at all.
        assert_eq!(sync.wait_for_commit().await, Outcome::Degraded);
        sync.report(&[("b", t)]);
        assert!(!sync.is_degraded());
    }
}
