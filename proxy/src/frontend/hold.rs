//! Holding, as users call it: a client statement waits instead of failing
//! while the master changes.
//!
//! - **The switchover gate** ([`Gate`]): while a planned switchover closes
//!   it, sessions hold each new statement that would start outside a
//!   transaction (and new sessions hold before they connect), while the
//!   statements and transactions already under way finish. Once no session
//!   is busy, the switchover ships the last batches and promotes; then the
//!   gate opens and the held statements run on the new master.
//! - **Waiting for a master** ([`master`]): while there is no master (a
//!   failover under way, a cluster waiting for the node that was master
//!   last) or it cannot be reached, a session — new, or moving after its
//!   master was lost — waits up to `hold_timeout` for one.
//!
//! A commit held in sync mode until the replicas have it is the pump's
//! (see [`super::pump`]).

use super::fatal;
use super::shared::Shared;
use ferry_cluster::Node;
use ferry_wire::{ConnError, ServerConn};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, warn};

/// Shared by every session and the switchover.
pub struct Gate {
    closed: watch::Sender<bool>,
    /// One flag per live session: inside a transaction or owed answers.
    busy: Mutex<Vec<Weak<AtomicBool>>>,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            closed: watch::channel(false).0,
            busy: Mutex::new(Vec::new()),
        }
    }
}

impl Gate {
    /// A new session's busy flag, counted until the session drops it.
    pub fn register(&self) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        if let Ok(mut all) = self.busy.lock() {
            all.retain(|w| w.strong_count() > 0);
            all.push(Arc::downgrade(&flag));
        }
        flag
    }

    /// Sessions inside a transaction or waiting for answers now.
    pub fn busy_sessions(&self) -> usize {
        let Ok(mut all) = self.busy.lock() else {
            return 0;
        };
        all.retain(|w| w.strong_count() > 0);
        all.iter()
            .filter_map(Weak::upgrade)
            .filter(|f| f.load(Ordering::SeqCst))
            .count()
    }

    /// Holds new statements from now on.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Lets held statements go.
    pub fn open(&self) {
        self.closed.send_replace(false);
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Returns once the gate is open.
    pub async fn until_open(&self) {
        let mut rx = self.closed.subscribe();
        let _ = rx.wait_for(|closed| !closed).await;
    }
}

/// Opens the session's server connection on the master. While there is
/// no master (a failover under way, or a cluster waiting for the node that
/// was master last) or it cannot be reached, the session waits — up to
/// `hold_timeout` — for the topology to change and tries again; then it
/// gets SQLSTATE 57P03 saying why. A server that answers with an error
/// (authentication, too many connections) fails the session at once.
/// During a switchover it waits for the new master first.
pub(crate) async fn master(
    shared: &Shared,
    params: &[(String, String)],
    client: &mut TcpStream,
) -> Option<(Node, ServerConn)> {
    let deadline = tokio::time::Instant::now() + shared.hold_timeout;
    let mut roles = shared.roles.clone();
    loop {
        if *shared.stopping.borrow() {
            fatal(
                client,
                "57P01",
                "terminating connection because Ferry is shutting down",
            )
            .await;
            return None;
        }
        if shared.gate.is_closed() {
            debug!("switchover under way; holding the session");
            let _ = tokio::time::timeout_at(deadline, shared.gate.until_open()).await;
        }
        let (master, waiting) = {
            let t = roles.borrow_and_update();
            (t.master.clone(), t.waiting.clone())
        };
        let why = match waiting {
            Some(why) => why,
            None => match ServerConn::connect(&master.target, params, shared.connect_timeout).await
            {
                Ok(s) => return Some((master, s)),
                // Starting up, shutting down, recovering after a crash:
                // the master may be back (or replaced) soon.
                Err(ConnError::Server(e)) if e.code.starts_with("57P") => {
                    format!("master {} does not accept sessions now ({e})", master.name)
                }
                Err(e @ ConnError::Server(_)) => {
                    warn!(node = %master.name, error = %e, "cannot open a server session");
                    fatal(
                        client,
                        "08006",
                        &format!("could not connect to master node {}: {e}", master.name),
                    )
                    .await;
                    return None;
                }
                Err(e) => format!("master {} is unreachable ({e})", master.name),
            },
        };
        debug!(reason = %why, "no master now; holding the session");
        // Wait for the topology to change; a master that is unreachable
        // but not (yet) replaced is tried again now and then (it may be
        // back, as after a quick restart).
        let retry = tokio::time::Instant::now() + RECONNECT_INTERVAL;
        let changed = tokio::time::timeout_at(deadline.min(retry), roles.changed()).await;
        let closed = matches!(changed, Ok(Err(_)));
        if closed || tokio::time::Instant::now() >= deadline {
            fatal(
                client,
                "57P03",
                &format!(
                    "no master available: {why}; nothing changed within {} ms",
                    shared.hold_timeout.as_millis()
                ),
            )
            .await;
            return None;
        }
    }
}

/// How often a holding session tries a master that is unreachable but
/// not replaced.
const RECONNECT_INTERVAL: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn busy_sessions_are_counted_while_they_live() {
        let gate = Gate::default();
        let a = gate.register();
        let b = gate.register();
        a.store(true, Ordering::SeqCst);
        b.store(true, Ordering::SeqCst);
        assert_eq!(gate.busy_sessions(), 2);
        drop(b);
        assert_eq!(gate.busy_sessions(), 1);
        a.store(false, Ordering::SeqCst);
        assert_eq!(gate.busy_sessions(), 0);
        let gate = Arc::new(gate);
        gate.close();
        assert!(gate.is_closed());
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.until_open().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "held while closed");
        gate.open();
        assert!(waiter.await.is_ok());
    }
}
