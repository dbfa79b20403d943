//! Cancel keys. Ferry hands each client its own (pid, secret) pair and
//! remembers which server sessions it stands for, so a CancelRequest that
//! arrives on a new connection reaches the right server: the master
//! session, and the replica session that serves the client's reads, if it
//! has one (the statement to cancel may be running on either).

use ferry_wire::{ServerConn, Target};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Where a client's cancel request must go.
#[derive(Clone, Debug)]
pub struct ServerKey {
    pub target: Target,
    pub pid: i32,
    pub secret: i32,
}

impl ServerKey {
    /// The key of a server session Ferry opened at `target`.
    pub fn of(target: &Target, conn: &ServerConn) -> Self {
        ServerKey {
            target: target.clone(),
            pid: conn.pid,
            secret: conn.secret,
        }
    }
}

/// A live session's keys: its secret, its master session, its read session.
type Entry = (i32, ServerKey, Option<ServerKey>);

/// Client key → server keys, for live sessions.
#[derive(Clone, Default)]
pub struct CancelRegistry {
    inner: Arc<Mutex<HashMap<i32, Entry>>>,
}

impl CancelRegistry {
    /// Registers a session; returns the (pid, secret) to give the client.
    pub fn register(&self, server: ServerKey) -> (i32, i32) {
        let Ok(mut map) = self.inner.lock() else {
            return (0, 0);
        };
        loop {
            let pid = rand::random::<i32>() & 0x7fff_ffff;
            if pid != 0 && !map.contains_key(&pid) {
                let secret = rand::random::<i32>();
                map.insert(pid, (secret, server, None));
                return (pid, secret);
            }
        }
    }

    /// Points a session's key at a new server session (the session moved).
    pub fn update(&self, pid: i32, server: ServerKey) {
        if let Ok(mut map) = self.inner.lock() {
            if let Some(entry) = map.get_mut(&pid) {
                entry.1 = server;
            }
        }
    }

    /// Records the replica session that now serves the session's reads.
    pub fn set_reader(&self, pid: i32, reader: ServerKey) {
        if let Ok(mut map) = self.inner.lock() {
            if let Some(entry) = map.get_mut(&pid) {
                entry.2 = Some(reader);
            }
        }
    }

    /// Forgets a session that ended.
    pub fn remove(&self, pid: i32) {
        if let Ok(mut map) = self.inner.lock() {
            map.remove(&pid);
        }
    }

    /// The server keys for a client's (pid, secret), if both match: the
    /// master session's, then the read session's. A server ignores a
    /// cancel for a session that runs nothing, so both are sent.
    pub fn lookup(&self, pid: i32, secret: i32) -> Vec<ServerKey> {
        let Ok(map) = self.inner.lock() else {
            return Vec::new();
        };
        map.get(&pid)
            .filter(|(s, _, _)| *s == secret)
            .map(|(_, master, reader)| std::iter::once(master).chain(reader).cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pid: i32) -> ServerKey {
        ServerKey {
            target: Target::from_dsn("postgresql://u@h:1/d").unwrap(),
            pid,
            secret: 7,
        }
    }

    #[test]
    fn wrong_secret_cancels_nothing() {
        let reg = CancelRegistry::default();
        let (pid, secret) = reg.register(key(42));
        let pids = |s| reg.lookup(pid, s).iter().map(|k| k.pid).collect::<Vec<_>>();
        assert_eq!(pids(secret), [42]);
        assert!(pids(secret.wrapping_add(1)).is_empty());
        reg.remove(pid);
        assert!(pids(secret).is_empty());
    }

    #[test]
    fn a_session_reading_on_a_replica_cancels_there_too() {
        let reg = CancelRegistry::default();
        let (pid, secret) = reg.register(key(42));
        reg.set_reader(pid, key(43));
        reg.update(pid, key(44));
        let pids: Vec<i32> = reg.lookup(pid, secret).iter().map(|k| k.pid).collect();
        assert_eq!(pids, [44, 43]);
    }
}
