//! Prometheus metrics of the replication path.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

pub use ferry_cluster::ReplicaLabel;

/// Counters and gauges the batcher updates; registered once at start.
#[derive(Clone)]
pub struct Metrics {
    pub batches_cut: Counter,
    pub batches_applied: Family<ReplicaLabel, Counter>,
    pub rows_shipped: Family<ReplicaLabel, Counter>,
    pub bytes_shipped: Family<ReplicaLabel, Counter>,
    pub apply_errors: Family<ReplicaLabel, Counter>,
    pub apply_seconds: Histogram,
    pub cut_seconds: Histogram,
    /// Ticks at which the probe found nothing that could have changed, so
    /// no cut ran.
    pub idle_ticks: Counter,
    /// Bytes of batch data written to spill files (batches larger than
    /// what Ferry holds in memory, see `payload`).
    pub spilled_bytes: Counter,
    pub lag_batches: Family<ReplicaLabel, Gauge>,
    pub lag_rows: Family<ReplicaLabel, Gauge>,
    /// Bytes of outbox changes kept for a replica (not applied yet).
    pub kept_bytes: Family<ReplicaLabel, Gauge>,
    /// For an unreachable replica, the most the changes kept for it can
    /// be aged (0 otherwise).
    pub kept_age_seconds: Family<ReplicaLabel, Gauge<f64, AtomicU64>>,
    /// Distinct keys among the changes kept for a replica away or
    /// suspended (0 otherwise).
    pub kept_keys: Family<ReplicaLabel, Gauge>,
    /// At the current rate, seconds until a `[retention]` bound releases
    /// an unreachable replica (no sample when none is projected).
    pub released_in_seconds: Family<ReplicaLabel, Gauge<f64, AtomicU64>>,
    /// 1 while what is kept for a replica passed 80 % of `[retention]
    /// max_bytes`.
    pub kept_near_bound: Family<ReplicaLabel, Gauge>,
    /// Compaction passes, and the superseded changes they removed.
    pub compactions: Counter,
    pub compacted_rows: Counter,
    /// 1 for a replica only `ferry resync` brings back.
    pub needs_resync: Family<ReplicaLabel, Gauge>,
    pub lag_seconds: Family<ReplicaLabel, Gauge<f64, AtomicU64>>,
    pub outbox_rows: Gauge,
    pub divergent_tables: Family<ReplicaLabel, Gauge>,
    pub verify_chunks: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them under `ferry_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            batches_cut: Counter::default(),
            batches_applied: Family::default(),
            rows_shipped: Family::default(),
            bytes_shipped: Family::default(),
            apply_errors: Family::default(),
            apply_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            cut_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            idle_ticks: Counter::default(),
            spilled_bytes: Counter::default(),
            lag_batches: Family::default(),
            lag_rows: Family::default(),
            kept_bytes: Family::default(),
            kept_age_seconds: Family::default(),
            needs_resync: Family::default(),
            kept_near_bound: Family::default(),
            kept_keys: Family::default(),
            released_in_seconds: Family::default(),
            compactions: Counter::default(),
            compacted_rows: Counter::default(),
            lag_seconds: Family::default(),
            outbox_rows: Gauge::default(),
            divergent_tables: Family::default(),
            verify_chunks: Counter::default(),
        };
        registry.register(
            "ferry_idle_ticks",
            "Ticks at which nothing could have changed on the master, so no cut ran",
            m.idle_ticks.clone(),
        );
        registry.register(
            "ferry_spilled_bytes",
            "Bytes of batch data written to spill files instead of memory",
            m.spilled_bytes.clone(),
        );
        registry.register(
            "ferry_batches_cut",
            "Batches cut on the master",
            m.batches_cut.clone(),
        );
        registry.register(
            "ferry_batches_applied",
            "Batches applied per replica",
            m.batches_applied.clone(),
        );
        registry.register(
            "ferry_rows_shipped",
            "Netted rows shipped per replica",
            m.rows_shipped.clone(),
        );
        registry.register(
            "ferry_bytes_shipped",
            "COPY bytes shipped per replica",
            m.bytes_shipped.clone(),
        );
        registry.register(
            "ferry_apply_errors",
            "Failed batch applies per replica",
            m.apply_errors.clone(),
        );
        registry.register(
            "ferry_apply_seconds",
            "Time from sending a batch to its replica commit",
            m.apply_seconds.clone(),
        );
        registry.register(
            "ferry_cut_seconds",
            "Time a cut takes on the master (snapshot, materialise, COPY out, commit), \
             with or without changes",
            m.cut_seconds.clone(),
        );
        registry.register(
            "ferry_lag_batches",
            "Batches cut but not applied per replica",
            m.lag_batches.clone(),
        );
        registry.register(
            "ferry_lag_rows",
            "Outbox rows a replica has not applied",
            m.lag_rows.clone(),
        );
        registry.register(
            "ferry_replica_kept_bytes",
            "Bytes of outbox changes the master keeps for a replica (not applied yet)",
            m.kept_bytes.clone(),
        );
        registry.register(
            "ferry_replica_kept_age_seconds",
            "For an unreachable replica, how long ago the master last recorded its position; \
             for a suspended one, how long since its instant (the changes kept for it are at \
             most this old); 0 otherwise",
            m.kept_age_seconds.clone(),
        );
        registry.register(
            "ferry_replica_needs_resync",
            "1 when only ferry resync brings a replica back (the master stopped keeping changes \
             for it, or its position is older than the outbox clean-up)",
            m.needs_resync.clone(),
        );
        registry.register(
            "ferry_replica_kept_keys",
            "Distinct keys among the changes the master keeps for a replica away or suspended \
             (what its catch-up ships at most); 0 otherwise",
            m.kept_keys.clone(),
        );
        registry.register(
            "ferry_replica_released_in_seconds",
            "At the rate what is kept for an unreachable replica grows, seconds until a \
             [retention] bound releases it (no sample when none is projected)",
            m.released_in_seconds.clone(),
        );
        registry.register(
            "ferry_replica_kept_near_bound",
            "1 while the changes kept for an unreachable replica passed 80% of [retention] max_bytes",
            m.kept_near_bound.clone(),
        );
        registry.register(
            "ferry_compactions",
            "Compaction passes over what the master keeps for replicas away or suspended",
            m.compactions.clone(),
        );
        registry.register(
            "ferry_compacted_rows",
            "Superseded changes removed by compaction (changes of a key netted to its last)",
            m.compacted_rows.clone(),
        );
        registry.register(
            "ferry_lag_seconds",
            "Seconds a replica is behind",
            m.lag_seconds.clone(),
        );
        registry.register(
            "ferry_divergent_tables",
            "Tables in which the background check found a replica different from the master",
            m.divergent_tables.clone(),
        );
        registry.register(
            "ferry_verify_chunks",
            "Chunks the background check compared",
            m.verify_chunks.clone(),
        );
        registry.register(
            "ferry_outbox_rows",
            "Rows in the master's outbox",
            m.outbox_rows.clone(),
        );
        m
    }
}
