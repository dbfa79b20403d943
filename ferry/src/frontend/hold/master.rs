//! Waiting for a master: a session, new or moving, connects to the master
//! there is now, or waits up to `hold_timeout` for one.

use crate::frontend::client_stream::ClientStream;
use crate::frontend::fatal;
use crate::frontend::shared::Shared;
use ferry_cluster::Node;
use ferry_wire::{ConnError, Login, ServerConn};
use std::time::Duration;
use tracing::{debug, warn};

/// Opens the session's server connection on the master. While there is
/// no master (a failover under way, or a cluster waiting for the node that
/// was master last) or it cannot be reached, the session waits — up to
/// `hold_timeout` — for the topology to change and tries again; then it
/// gets SQLSTATE 57P03 saying why. A server that answers with an error
/// (authentication, too many connections) fails the session at once.
/// During a switchover it waits for the new master first. The session
/// logs in as `login`, its own role.
pub(crate) async fn master(
    shared: &Shared,
    params: &[(String, String)],
    login: &Login,
    client: &mut ClientStream,
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
            None => match ServerConn::connect(
                &master.target.with_login(login),
                params,
                shared.connect_timeout,
            )
            .await
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
