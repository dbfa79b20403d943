//! Cancel keys. Ferry hands each client its own (pid, secret) pair and
//! remembers which server session it stands for, so a CancelRequest that
//! arrives on a new connection reaches the right server.

use ferry_wire::Target;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Where a client's cancel request must go.
#[derive(Clone, Debug)]
pub struct ServerKey {
    pub target: Target,
    pub pid: i32,
    pub secret: i32,
}

/// Client key → server key, for live sessions.
#[derive(Clone, Default)]
pub struct CancelRegistry {
    inner: Arc<Mutex<HashMap<i32, (i32, ServerKey)>>>,
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
                map.insert(pid, (secret, server));
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

    /// Forgets a session that ended.
    pub fn remove(&self, pid: i32) {
        if let Ok(mut map) = self.inner.lock() {
            map.remove(&pid);
        }
    }

    /// The server key for a client's (pid, secret), if both match.
    pub fn lookup(&self, pid: i32, secret: i32) -> Option<ServerKey> {
        let map = self.inner.lock().ok()?;
        map.get(&pid)
            .filter(|(s, _)| *s == secret)
            .map(|(_, k)| k.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_secret_cancels_nothing() {
        let reg = CancelRegistry::default();
        let target = Target::from_dsn("postgresql://u@h:1/d").unwrap();
        let (pid, secret) = reg.register(ServerKey {
            target,
            pid: 42,
            secret: 7,
        });
        assert_eq!(reg.lookup(pid, secret).map(|k| k.pid), Some(42));
        assert!(reg.lookup(pid, secret.wrapping_add(1)).is_none());
        reg.remove(pid);
        assert!(reg.lookup(pid, secret).is_none());
    }
}
