//! Which replica a session reads from.
//!
//! A routed session reads from one replica at a time (its read connection
//! is a server session of its own). Sessions are spread by load, not by
//! chance: a new reader takes the serving replica with the fewest reading
//! sessions, so that eight sessions over two replicas read four and four —
//! a random choice leaves six on one and two on the other about a third of
//! the time, which halves the read capacity of the busy one. A session
//! whose replica stops serving (down, suspended, promoted) takes a lease on
//! another serving replica at its next read instead of reading on the
//! master for good.

use ferry_cluster::ReplicaLabel;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};

/// How many sessions read from each replica slot.
#[derive(Default)]
pub struct ReaderCounts {
    /// Readers by slot (grows with the slots that have had readers).
    counts: Mutex<Vec<usize>>,
    gauge: Family<ReplicaLabel, Gauge>,
}

impl ReaderCounts {
    /// Creates the counts and registers `ferry_read_sessions`.
    pub fn register(registry: &mut Registry) -> Self {
        let me = Self::default();
        registry.register(
            "ferry_read_sessions",
            "Client sessions reading from each replica (reads = \"replicas\" or \"causal\")",
            me.gauge.clone(),
        );
        me
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Vec<usize>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the least loaded of the `serving` slots (ties go by `seed`),
    /// counted until the lease is dropped; `name` names a slot's node for
    /// the gauge.
    pub fn lease(
        self: &Arc<Self>,
        serving: &[usize],
        seed: usize,
        name: impl Fn(usize) -> Option<String>,
    ) -> Option<Lease> {
        let mut counts = self.counts();
        let slot = least_loaded(serving, &counts, seed)?;
        if counts.len() <= slot {
            counts.resize(slot + 1, 0);
        }
        counts[slot] += 1;
        let node = name(slot);
        self.show(node.as_ref(), counts[slot]);
        Some(Lease {
            counts: self.clone(),
            slot,
            node,
        })
    }

    fn release(&self, slot: usize, node: Option<&String>) {
        let mut counts = self.counts();
        if let Some(c) = counts.get_mut(slot) {
            *c = c.saturating_sub(1);
            self.show(node, *c);
        }
    }

    /// Sets the gauge of a slot's node.
    fn show(&self, node: Option<&String>, readers: usize) {
        if let Some(node) = node {
            self.gauge
                .get_or_create(&ReplicaLabel::new(node))
                .set(readers as i64);
        }
    }
}

/// A session's claim on a replica slot; released when dropped (the
/// session ended or moved to another replica).
pub struct Lease {
    counts: Arc<ReaderCounts>,
    slot: usize,
    node: Option<String>,
}

impl Lease {
    /// The replica slot the session reads from.
    pub fn slot(&self) -> usize {
        self.slot
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.counts.release(self.slot, self.node.as_ref());
    }
}

/// The slot among `serving` with the fewest readers; among equals, the
/// first at or after `seed` (modulo their number), so that ties spread.
fn least_loaded(serving: &[usize], counts: &[usize], seed: usize) -> Option<usize> {
    let load = |slot: usize| counts.get(slot).copied().unwrap_or(0);
    let least = serving.iter().map(|&s| load(s)).min()?;
    let tied: Vec<usize> = serving
        .iter()
        .copied()
        .filter(|&s| load(s) == least)
        .collect();
    tied.get(seed % tied.len()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(slot: usize) -> Option<String> {
        Some(format!("n{slot}"))
    }

    #[test]
    fn sessions_spread_evenly_whatever_their_seeds() {
        let counts = Arc::new(ReaderCounts::default());
        // Eight sessions whose seeds would all pick slot 1 by modulo.
        let leases: Vec<Lease> = (0..8)
            .map(|i| counts.lease(&[1, 2], i * 2, names).unwrap())
            .collect();
        let on = |s| leases.iter().filter(|l| l.slot() == s).count();
        assert_eq!((on(1), on(2)), (4, 4));
    }

    #[test]
    fn a_released_slot_is_taken_next() {
        let counts = Arc::new(ReaderCounts::default());
        let a = counts.lease(&[1, 2], 0, names).unwrap();
        let b = counts.lease(&[1, 2], 0, names).unwrap();
        assert_ne!(a.slot(), b.slot());
        let freed = a.slot();
        drop(a);
        assert_eq!(counts.lease(&[1, 2], 7, names).unwrap().slot(), freed);
    }

    #[test]
    fn only_serving_slots_are_leased() {
        let counts = Arc::new(ReaderCounts::default());
        let _busy = counts.lease(&[2], 0, names).unwrap();
        // Slot 2 is loaded, but slot 1 does not serve: 2 it is.
        assert_eq!(counts.lease(&[2], 0, names).unwrap().slot(), 2);
        assert!(counts.lease(&[], 0, names).is_none());
    }

    #[test]
    fn ties_spread_by_seed() {
        assert_eq!(least_loaded(&[1, 2, 3], &[], 4), Some(2));
        assert_eq!(least_loaded(&[1, 2, 3], &[0, 1, 0, 1], 5), Some(2));
    }
}
