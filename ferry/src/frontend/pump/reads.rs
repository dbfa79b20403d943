//! Reads on replicas (`proxy.reads`): which replica a read goes to, and
//! when a session's reads must stay on the master.
//!
//! A read goes to the session's replica when it arrives while the session
//! is idle outside a transaction, not pinned, with nothing outstanding, and
//! the replica serves — in `causal` mode only once the replica has applied
//! the session's last writing commit.

use super::route::Route;
use crate::frontend::read_balance::{Lease, ReaderCounts};
use crate::frontend::read_cycle;
use bytes::Bytes;
use ferry_cluster::SyncPoint;
use ferry_sql::classify::{classify, pins_session, Kind};
use ferry_sql::set_config::{self, Scope};
use ferry_wire::codec::read_cstr;
use ferry_wire::stream::OwnedWriteHalf;
use ferry_wire::tag::frontend::{PARSE, QUERY};
use ferry_wire::Target;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `proxy.reads`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// Any replica, whatever its lag.
    Replicas,
    /// A replica that has the session's last commit.
    Causal,
}

/// Read-routing counters.
#[derive(Clone, Default)]
pub struct ReadMetrics {
    pub replica: Counter,
    pub master: Counter,
}

impl ReadMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "ferry_reads_replica",
            "Read-only statements served by a replica",
            m.replica.clone(),
        );
        registry.register(
            "ferry_reads_master",
            "Read-only statements outside transactions served by the master \
             (no replica qualified, or the session is pinned)",
            m.master.clone(),
        );
        m
    }
}

/// What every routing session shares.
pub struct ReadRouting {
    pub mode: ReadMode,
    /// Every node by [`SyncPoint`] slot (the batcher reports which of them
    /// serve as replicas); nodes added while Ferry runs are appended.
    pub replicas: std::sync::RwLock<Vec<(String, Target)>>,
    /// Which replica has applied which batcher tick.
    pub ticks: Arc<SyncPoint>,
    pub metrics: ReadMetrics,
    /// Sessions reading from each replica, to spread them.
    pub readers: Arc<ReaderCounts>,
    pub connect_timeout: Duration,
}

impl ReadRouting {
    /// The node in slot `i`.
    pub(super) fn replica(&self, i: usize) -> Option<(String, Target)> {
        self.replicas.read().ok()?.get(i).cloned()
    }

    /// A lease on the serving replica with the fewest reading sessions;
    /// None when no replica serves.
    fn lease(&self, seed: usize) -> Option<Lease> {
        let slots = self.replicas.read().map_or(0, |r| r.len());
        let serving: Vec<usize> = (0..slots).filter(|&i| self.ticks.serves(i)).collect();
        self.readers
            .lease(&serving, seed, |i| self.replica(i).map(|(name, _)| name))
    }

    /// Puts a node added while Ferry runs in its slot.
    pub fn add(&self, slot: usize, name: &str, target: &Target) {
        if let Ok(mut all) = self.replicas.write() {
            if all.len() == slot {
                all.push((name.to_string(), target.clone()));
            }
        }
    }
}

/// The client side's connection to the session's replica, if it has one.
#[derive(Default)]
pub(super) struct ReplicaLink {
    /// The writing half (the reading half is handed to the server side).
    pub write: Option<OwnedWriteHalf>,
    /// Named statements made on the replica connection, as parsed.
    pub parsed: HashMap<String, Bytes>,
    /// A replica that failed is left alone until then.
    pub down_until: Option<Instant>,
}

impl ReplicaLink {
    /// The connection failed: reads use the master for a while.
    pub fn fail(&mut self) {
        self.write = None;
        self.down_until = Some(Instant::now() + REPLICA_RETRY);
    }
}

/// How long a session leaves a failed replica alone.
const REPLICA_RETRY: Duration = Duration::from_secs(5);

/// Whether a statement leaves state in the master's server session that a
/// replica session would lack: settings (`SET`, a session `set_config()`),
/// prepared statements, listens, temporary tables, advisory locks — alone
/// or among other statements of a query string (`SET search_path = app;
/// INSERT …` is a write, and sets the path all the same). Reads of such a
/// session stay on the master from then on.
pub(super) fn pins(sql: &str, kind: Kind) -> bool {
    kind == Kind::Session
        || pins_session(sql)
        || set_config::scope(sql) != Scope::None
        || !ferry_sql::session_effect::effects(sql).is_empty()
}

/// Keeps a session's reads on the master from now on: its replica place
/// and connection go.
pub(super) fn pin(r: &mut Route, replica: &mut ReplicaLink) {
    r.pinned = true;
    r.slot = None;
    replica.write = None;
}

/// Where a read goes, decided when it arrives: the session's replica (its
/// routing and slot) when it is a read that arrives while the session is
/// idle outside a transaction, not pinned, with nothing outstanding, and
/// the replica serves (in `causal` mode: and has the session's last
/// commit); otherwise None, for the master. Leases a replica at the
/// session's first read and again when its replica stopped serving; a
/// replica connection that failed is dropped here.
pub(super) fn choose<'a>(
    r: &mut Route,
    routing: Option<&'a ReadRouting>,
    kind: Kind,
    seed: usize,
    replica: &mut ReplicaLink,
) -> Option<(&'a ReadRouting, usize)> {
    if std::mem::take(&mut r.replica_broken) {
        replica.fail();
    }
    let read_here = kind == Kind::Read && r.idle() && !r.pinned;
    let up = replica.down_until.is_none_or(|t| Instant::now() >= t);
    if let (true, Some(routing)) = (read_here, routing) {
        let stale = r
            .slot
            .as_ref()
            .is_none_or(|l| !routing.ticks.serves(l.slot()));
        if stale {
            // A first read, or the replica stopped serving: read from the
            // least loaded one that serves, on a new connection.
            let before = r.slot.take().map(|l| l.slot());
            r.slot = routing.lease(seed);
            let after = r.slot.as_ref().map(Lease::slot);
            if after.is_some() && after != before {
                replica.write = None;
                replica.down_until = None;
            }
        }
    }
    let slot = r.slot.as_ref().map(Lease::slot);
    let chosen = routing.zip(slot).filter(|&(routing, i)| {
        read_here
            && up
            && routing.ticks.serves(i)
            && (routing.mode == ReadMode::Replicas || routing.ticks.replica_has(i, r.need))
    });
    if let (true, None, Some(routing)) = (read_here, chosen, routing) {
        routing.metrics.master.inc();
    }
    chosen
}

/// A read that was to go to a replica goes to the master after all (only
/// reads are routed: it cannot write): `sent` is the Query, or the
/// extended-protocol cycle.
pub(super) fn read_on_master(r: &mut Route, routing: &ReadRouting, sent: &[u8]) {
    routing.metrics.master.inc();
    match sent.first().copied() {
        Some(QUERY) => r.tracker.query(false),
        first => {
            for (tag, body) in read_cycle::frames(sent) {
                r.tracker.client_message(tag, body);
            }
            if first == Some(PARSE) {
                r.unnamed_on_replica = None;
            }
        }
    }
    r.queue.push_back(super::route::Dest::Master);
}

/// Whether a Bind message runs, in the unnamed portal, a read the session
/// prepared under a name, while the session is idle and not pinned: the
/// start of a cycle that may go to a replica.
pub(super) fn named_read(r: &mut Route, body: &[u8]) -> bool {
    if !r.idle() || r.pinned {
        return false;
    }
    let Some(("", rest)) = read_cstr(body) else {
        return false;
    };
    let Some((name, _)) = read_cstr(rest).filter(|(n, _)| !n.is_empty()) else {
        return false;
    };
    let Some(frame) = r.session.prepared(name).cloned() else {
        return false;
    };
    if let Some((known, read)) = r.named_reads.get(name) {
        if *known == frame {
            return *read;
        }
    }
    let sql = frame
        .get(5..)
        .and_then(read_cstr)
        .and_then(|(_, rest)| read_cstr(rest))
        .map_or("", |(s, _)| s);
    let read = classify(sql) == Kind::Read && !pins(sql, Kind::Read);
    if r.named_reads.len() >= super::route::NAMED_READS {
        r.named_reads.clear();
    }
    r.named_reads.insert(name.to_string(), (frame, read));
    read
}

/// The client's startup parameters for a replica read connection, with
/// `default_transaction_read_only` on: a statement taken for a read that
/// writes after all (through a view over a volatile function, say) fails
/// there with SQLSTATE 25006 instead of changing the replica behind the
/// master's back.
pub(super) fn read_only(params: &[(String, String)]) -> Vec<(String, String)> {
    const READ_ONLY: &str = "-c default_transaction_read_only=on";
    let mut out: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "options")
        .cloned()
        .collect();
    let options = params.iter().find(|(k, _)| k == "options").map_or_else(
        || READ_ONLY.to_string(),
        |(_, v)| format!("{v} {READ_ONLY}"),
    );
    out.push(("options".into(), options));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_connections_are_read_only() {
        let plain = read_only(&[("application_name".into(), "app".into())]);
        assert!(plain.contains(&(
            "options".into(),
            "-c default_transaction_read_only=on".into()
        )));
        let merged = read_only(&[("options".into(), "-c search_path=s".into())]);
        assert_eq!(
            merged,
            vec![(
                "options".to_string(),
                "-c search_path=s -c default_transaction_read_only=on".to_string()
            )]
        );
    }
}
