//! The gate a planned switchover (and a stop) closes: new statements that
//! would start outside a transaction wait behind it while the busy
//! sessions finish.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::watch;

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
